"""VEGAS and AVE audio-visual features (DSFFN): one HDF5 file of 1024-d visual and 128-d audio
vectors per split, read by `reader`; written up in docs/dsffn.md."""
