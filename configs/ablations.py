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

from configs import dcinet_fgxmedia, demo, demo_hard

VARIANTS = {
    'baseline': (False, False),
    'cmsi': (True, False),
    'cmci': (False, True),
    'both': (True, True),
}
CUTS = ('layer1', 'layer2', 'layer3', 'layer4')
BASES = {'paper': dcinet_fgxmedia, 'demo': demo, 'demo_hard': demo_hard}


def get_config(arg: str = 'both'):
    spec, _, base = arg.partition('@')
    variant, _, cut = spec.partition('-')
    if variant not in VARIANTS:
        raise ValueError(f'ablation variant {variant!r}: expected one of {sorted(VARIANTS)}')
    cut = cut or 'layer4'
    if cut not in CUTS:
        raise ValueError(f'ablation cut {cut!r}: expected one of {CUTS}')
    base = base or 'paper'
    if base not in BASES:
        raise ValueError(f'ablation base {base!r}: expected one of {sorted(BASES)}')
    c = BASES[base].get_config()
    c.interaction.cmsi, c.interaction.cmci = VARIANTS[variant]
    c.model.cut = cut
    return c
