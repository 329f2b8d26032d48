"""Smallest config that exercises every code path; used by the test suite."""

from configs import demo


def get_config():
    c = demo.get_config()
    c.data.num_classes = 4
    c.data.image_size = 64     # layer4 map 2x2: CMSI box 1x1, lam 0.75
    c.data.resize_size = 72
    c.data.text_length = 64
    c.data.batch_per_modality = 8   # 2 per device on the 4 CPU devices of the tests
    c.data.classes_per_batch = 2
    c.data.eval_batch_size = 16
    c.model.num_filters = 4
    # The demo's settings before its text BatchNorm and lr 0.05, with which the suite's
    # expectations were set (docs/training.md#the-demo-config).
    c.model.text_norm = 'none'
    c.optim.learning_rate = 0.1
    c.num_epochs = 1
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    return c
