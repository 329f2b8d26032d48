"""Constants of the data format shared by the input pipeline and the accelerator side.

This module imports nothing but the standard library, so the model code (JAX) can read
alphabet sizes, text shifts and modality ids without pulling in TensorFlow. The
meaning of each constant is written up in `docs/data.md`.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- modalities

# Order fixes the stored modality id (the `modality` feature of prepared examples).
MODALITIES: tuple[str, ...] = ('image', 'audio', 'text', 'video')
MODALITY_IDS: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}
SPLITS: tuple[str, ...] = ('train', 'test')

# ----------------------------------------------------------------------------- text

_ORIGINAL = ('abcdefghijklmnopqrstuvwxyz0123456789'
             ',;.!?:\'"/\\|_@#$%^&*~`+-=<>()[]{}')

ALPHABETS: dict[str, str] = {
    # The char-CNN alphabet: 68 characters, no space, case kept (upper case is dropped).
    'original': _ORIGINAL,
    # Later reference code: leading space (69 characters) and lower-cased text. Default.
    'lower_space': ' ' + _ORIGINAL,
}

# Embedding rows per alphabet: its characters plus the padding index 0.
VOCAB_SIZES: dict[str, int] = {name: len(chars) + 1 for name, chars in ALPHABETS.items()}

# Train-time position shifts: prepend k padding zeros, k drawn uniformly from these.
TEXT_SHIFTS: tuple[int, ...] = (0, 2, 4, 6, 8)

# How a text file becomes one sample: the whole file, or the reference's last line.
TEXT_MODES: tuple[str, ...] = ('whole', 'last_line')

# What to do with bytes that are not UTF-8 (Python's `errors=` of bytes.decode).
TEXT_ERRORS: tuple[str, ...] = ('strict', 'replace', 'ignore')


# ----------------------------------------------------------------------------- images

def center_offset(size: int, crop: int) -> int:
    """Offset of a centred `crop` window in a `size` side, torchvision's CenterCrop
    rule: round((size - crop) / 2) with Python's round-half-to-even."""
    return int(round((size - crop) / 2.0))
