"""DCINet on the hard demo data (`dcinet demo-data --difficulty hard`), sized for ablations
on a 2-core CPU (about a minute per run when the machine is idle).

    --config=configs/demo_hard.py[:VARIANT[-CUT][+random]]

Without an ARG: both interactions on, class-aligned batches (the demo's settings).
VARIANT and CUT as in configs/ablations.py (baseline, cmsi, cmci, both; layer1..4;
the table is configs/dcinet_variants.py);
`+random` draws random batches (the paper's sampler) instead of class-aligned ones.
Examples: `demo_hard.py:baseline`, `demo_hard.py:both+random`. The same variants are
`configs/ablations.py:VARIANT@demo_hard`. Calibration and the ablation table:
docs/ablation_demo.md.

Sizes: 64 px crops (a 2x2 layer4 map, so the CMSI box is 1x1 and lam = 0.75, the
paper's ratio), 64-character texts, the demo's narrow one-block-per-stage ResNet.
"""

from configs import dcinet_variants, demo

SAMPLERS = ('aligned', 'random')


def get_config(arg: str = ''):
    spec, _, sampler = arg.partition('+')
    sampler = sampler or 'aligned'
    if sampler not in SAMPLERS:
        raise ValueError(f'demo_hard sampler {sampler!r}: expected one of {SAMPLERS}')
    c = demo.get_config()
    c.data.image_size = 64
    c.data.resize_size = 72
    c.data.text_length = 64
    c.optim.learning_rate = 0.02   # 0.05 and 0.1 collapse audio and text here
    c.model.text_norm = 'none'     # measured without the demo's text BatchNorm
    c.num_epochs = 16              # 592 steps of 8 per modality (37 per epoch)
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    if spec:
        dcinet_variants.apply(c, spec)
    c.data.class_aligned = sampler == 'aligned'
    return c
