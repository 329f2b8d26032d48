"""PKU FG-XMedia: 200 bird classes in image, text, audio (spectrogram PNGs) and video frames.

Raw list files -> TFDS `prepare` -> tf.data batches; written up in docs/data.md.
"""
