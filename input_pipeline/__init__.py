"""Everything that reads data files, one subpackage per format: `fgxmedia/` (lists, decoding,
TFDS preparation, tf.data), `vegas_ave/` (h5 features), `precomp/` (region features and
captions) and `demo/` (generated demo data); `spec`, `errors` and `samplers` are shared.

Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
