"""Tiny DCINet for the built-in demo dataset on a 2-core CPU (about 3 minutes end to end).

Same code paths as the paper config: three modalities, shared ResNet with bottleneck
blocks cut after layer4, CMSI and CMCI on. Sizes shrink: a narrow one-block-per-stage
ResNet, 112 px crops (a 4x4 layer4 map, so the CMSI box is 2x2 and lam = 0.75, the
paper's ratio), 112-character texts and 10 classes. Two settings of ours make it learn
every task on every seed tried: a BatchNorm of its own on the text image and lr 0.05
(docs/training.md#the-demo-config).
"""

from configs import dcinet_fgxmedia


def get_config():
    c = dcinet_fgxmedia.get_config()
    c.data.num_classes = 10
    c.data.image_size = 112
    c.data.resize_size = 128
    c.data.text_length = 112
    c.data.batch_per_modality = 8
    c.data.class_aligned = True
    c.data.classes_per_batch = 4
    c.data.eval_batch_size = 64

    c.model.backbone = 'custom'
    c.model.stage_sizes = (1, 1, 1, 1)
    c.model.block = 'bottleneck'
    c.model.num_filters = 8
    # Ours: the text image gets its own BatchNorm (docs/fgcrossnet.md#text-scale) and the lr
    # is 0.05, not 0.1. At lr 0.1 without it, 3 of 5 seeds failed (one at chance, two never
    # learned text); with it at lr 0.1, seed 2 still missed text. docs/training.md#the-demo-config
    c.model.text_norm = 'batch'

    c.optim.learning_rate = 0.05
    c.optim.schedule = 'cosine'
    c.optim.warmup_steps = 20

    c.num_epochs = 60
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    c.eval_every_steps = 0
    c.compilation_cache_dir = ''
    return c
