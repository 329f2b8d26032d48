"""DSFFN on AVE features (docs/dsffn.md): 15 classes, beta 1e-4, 120 epochs.

`data_dir` holds `ave_feature_norm.h5` (or `dcinet demo-data --format ave`).
"""

from configs import dsffn_vegas


def get_config():
    c = dsffn_vegas.get_config()
    c.data.name = 'ave'
    c.data_dir = 'data/ave'
    c.data.num_classes = 15
    c.loss.center_weight = 1e-4
    c.num_epochs = 120
    c.eval.reference_batch = 189     # the reference's AVE test batch
    c.log_every_steps = 10
    c.eval_every_steps = c.checkpoint_every_steps = 50   # AVE is small: a few epochs
    return c
