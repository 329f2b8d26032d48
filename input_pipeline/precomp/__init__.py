"""SCAN's "precomp" image-text format (HSLM): memory-mapped region features per split and five
captions per image, with the tokenizer and vocabulary; written up in docs/hslm_data.md."""
