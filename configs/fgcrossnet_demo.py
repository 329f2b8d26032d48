"""FGCrossNet on the built-in demo data, all four media, sized for a 2-core CPU.

    dcinet demo-data --out /tmp/demo_raw
    dcinet prepare --manual_dir /tmp/demo_raw --data_dir /tmp/demo_fgx \
        --config configs/fgcrossnet_demo.py
    dcinet train --config configs/fgcrossnet_demo.py:stage1 --workdir /tmp/fgx1 \
        --config.data_dir=/tmp/demo_fgx
    dcinet train --config configs/fgcrossnet_demo.py:stage2 --workdir /tmp/fgx2 \
        --config.data_dir=/tmp/demo_fgx --config.init_from=/tmp/fgx1

Without an ARG the config is stage 1 (trained from scratch: the demo has no ImageNet
stage 0). Stage 2 starts from stage 1's weights; without `init_from` it stops at
start-up with the stage-1 command instead of training the ranking stage from scratch.

Same code paths as configs/fgcrossnet_fgxmedia.py (four media, b = 4 per medium,
centre and ranking losses, halving schedule, reference text reading); only sizes shrink:
112 px, a narrow one-block-per-stage ResNet, 10 classes, a larger learning rate (and a
centre-gradient scale that keeps the centres' step at the paper's lr x scale = 1), and
one addition of ours: the text image gets its own BatchNorm (`model.text_norm='batch'`).
"""

from configs import fgcrossnet_fgxmedia


def get_config(arg: str = 'stage1', config_file: str = 'configs/fgcrossnet_demo.py'):
    c = fgcrossnet_fgxmedia.get_config(arg, config_file)
    if arg == 'stage1':
        c.previous_stage = ''     # no stage 0 here: stage 1 trains from scratch
    c.data.num_classes = 10
    c.data.image_size = 112
    c.data.resize_size = 128
    c.data.text_length = 112
    c.data.eval_batch_size = 64
    c.model.backbone = 'custom'
    c.model.stage_sizes = (1, 1, 1, 1)
    c.model.block = 'bottleneck'
    c.model.num_filters = 8
    c.optim.learning_rate = 0.05
    # Standardise the text image by its own BatchNorm (ours, docs/fgcrossnet.md#text-scale):
    # without it the text branch never leaves chance on the demo data.
    c.model.text_norm = 'batch'
    # The centres' step is lr x centre_grad_scale = 1 in the paper (1e-3 x 1000); keep
    # that at the larger demo learning rate (at 0.05 x 1000 the centres oscillate).
    c.loss.centre_grad_scale = 1.0 / c.optim.learning_rate
    c.optim.halve_every_epochs = 10
    c.num_epochs = 30
    c.log_every_steps = 10
    c.checkpoint_every_steps = 150
    c.compilation_cache_dir = ''
    return c
