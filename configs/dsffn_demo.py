"""DSFFN on the synthetic VEGAS-format file, sized for a 2-core CPU (about half a minute).

    dcinet demo-data --format vegas --out /tmp/vegas_demo
    dcinet train --config configs/dsffn_demo.py --workdir /tmp/dsffn_run \
        --config.data_dir=/tmp/vegas_demo

Same code paths as configs/dsffn_vegas.py on the real 1024-d / 128-d inputs; only the
widths shrink: encoders 256, MSN channels 16/32/64 (MFA width 64), head 192 -> 128 -> 64,
batch 32, a larger learning rate, a few epochs, and inputs standardised with the
train statistics (the reference feeds raw features: `data.input_norm='none'`).
"""

from configs import dsffn_vegas


def get_config():
    c = dsffn_vegas.get_config()
    c.data_dir = '/tmp/vegas_demo'
    c.data.batch_per_modality = 32
    c.model.encoder_width = 256
    c.model.channels = (16, 32, 64)
    c.model.head_hidden = 128
    c.model.embed_dim = 64
    c.data.input_norm = 'standardize'   # the synthetic features are offset, non-negative
    c.optim.learning_rate = 1e-3
    c.eval.batch_size = 256
    c.num_epochs = 6
    c.log_every_steps = 10
    c.checkpoint_every_steps = 60
    c.eval_every_steps = 0
    return c
