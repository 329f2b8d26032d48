"""The DCINet ablation variants (paper Tables 1-3), shared by configs/ablations.py and
configs/demo_hard.py.

A spec is VARIANT[-CUT]: VARIANT names the interactions that are on (baseline, cmsi,
cmci, both), CUT the CCRN cut point (layer1..layer4, default layer4). Both config files
apply it to their own base config through `apply`, so neither imports the other.
"""

VARIANTS = {          # variant -> (cmsi, cmci)
    'baseline': (False, False),
    'cmsi': (True, False),
    'cmci': (False, True),
    'both': (True, True),
}
CUTS = ('layer1', 'layer2', 'layer3', 'layer4')


def apply(c, spec: str):
    """`c` with the interactions and the cut of `spec` (VARIANT[-CUT]) set."""
    variant, _, cut = spec.partition('-')
    if variant not in VARIANTS:
        raise ValueError(f'ablation variant {variant!r}: expected one of {sorted(VARIANTS)}')
    cut = cut or 'layer4'
    if cut not in CUTS:
        raise ValueError(f'ablation cut {cut!r}: expected one of {CUTS}')
    c.interaction.cmsi, c.interaction.cmci = VARIANTS[variant]
    c.model.cut = cut
    return c
