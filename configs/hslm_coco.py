"""HSLM on MS-COCO "precomp" features (docs/hslm.md): the paper's settings.

As configs/hslm_f30k.py, but 113,287 train images (566,435 captions), learning rate
x 0.1 after epoch 15 [paper], validation on the first 1,000 dev images, and the test
on `testall` (5,000 images x 25,000 captions): the 5-fold 1K average and the 5K table.
"""

from configs import hslm_f30k


def get_config():
    c = hslm_f30k.get_config()
    c.data.name = 'coco'
    c.data_dir = 'data/coco_precomp'
    c.model.vocab_size = 11353       # without data only: the reference COCO vocab
    c.optim.decay_epoch = 15
    c.eval.dataset = 'coco'
    c.eval.protocol = ('coco_5fold', '5k')   # the 5-fold 1K average, then the 5K table
    c.eval.test_split = 'testall'
    c.checkpoint_every_steps = c.eval_every_steps = 4425   # one epoch
    return c
