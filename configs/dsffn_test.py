"""Tiny DSFFN for unit tests: visual 64-d, audio 16-d, encoder width 256 (stem -> 32,
pool -> 16; branch lengths 8, 4, 2), channels 8/16/32 (MFA width 32), head 96 -> 32 -> 8,
3 classes, batch 16 (docs/dsffn.md#cost)."""

from configs import dsffn_vegas


def get_config():
    c = dsffn_vegas.get_config()
    c.data_dir = '/tmp/dsffn_test'
    c.data.num_classes = 3
    c.data.visual_dim = 64
    c.data.audio_dim = 16
    c.data.batch_per_modality = 16
    c.model.encoder_width = 256
    c.model.channels = (8, 16, 32)
    c.model.head_hidden = 32
    c.model.embed_dim = 8
    c.eval.batch_size = 64
    c.num_epochs = 1
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.eval_every_steps = 0
    return c
