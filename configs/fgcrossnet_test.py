"""Smallest FGCrossNet config for the test suite: configs/test.py's sizes and text
reading (so it shares the test suite's prepared demo data), four media."""

from configs import fgcrossnet_demo


def get_config(arg: str = 'stage1'):
    c = fgcrossnet_demo.get_config(arg, config_file='configs/fgcrossnet_test.py')
    c.data.num_classes = 4
    c.data.image_size = 64
    c.data.resize_size = 72
    c.data.text_length = 64
    c.data.alphabet = 'lower_space'   # the project's reading (configs/test.py's prepared variant)
    c.data.text_mode = 'whole'
    c.data.eval_batch_size = 16
    c.model.num_filters = 4
    c.num_epochs = 4
    c.log_every_steps = 4
    c.checkpoint_every_steps = 12
    return c
