"""The paper's ablations (Tables 1-3) as one parameterised config.

    --config=configs/ablations.py:VARIANT[-CUT][@BASE]

VARIANT: baseline (no interaction), cmsi, cmci, both (DCINet).
CUT:     layer1 | layer2 | layer3 | layer4 (default layer4), the CCRN cut point.
BASE:    paper (default, configs/dcinet_fgxmedia.py), demo (configs/demo.py, for a
         quick CPU run on the demo data) or demo_hard (configs/demo_hard.py, the hard
         demo data; docs/ablation_demo.md).

Examples: `ablations.py:baseline` (Table 1, first row), `ablations.py:both-layer2`
(Table 3), `ablations.py:cmci@demo`.
"""

from configs import dcinet_fgxmedia, dcinet_variants, demo, demo_hard

VARIANTS = dcinet_variants.VARIANTS
CUTS = dcinet_variants.CUTS
BASES = {'paper': dcinet_fgxmedia, 'demo': demo, 'demo_hard': demo_hard}


def get_config(arg: str = 'both'):
    spec, _, base = arg.partition('@')
    base = base or 'paper'
    if base not in BASES:
        raise ValueError(f'ablation base {base!r}: expected one of {sorted(BASES)}')
    return dcinet_variants.apply(BASES[base].get_config(), spec)
