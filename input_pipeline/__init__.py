"""Everything that reads files: FG-XMedia lists, decoding, TFDS preparation, tf.data.

Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
