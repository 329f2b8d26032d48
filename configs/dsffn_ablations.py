"""The paper's ablations (Tables III-IV) over DSFFN's loss terms and fusion.

    --config=configs/dsffn_ablations.py:VARIANT[@BASE]

VARIANT: mfa, intra, dis, intra+mfa, dis+mfa, dis+intra, all (the rows of the tables;
the paired-distance term stays on in every row). BASE: vegas (default), ave, demo.
"""

from configs import dsffn_ave, dsffn_demo, dsffn_vegas

VARIANTS = {          # (use_mfa, use_dis, use_intra)
    'mfa': (True, False, False),
    'intra': (False, False, True),
    'dis': (False, True, False),
    'intra+mfa': (True, False, True),
    'dis+mfa': (True, True, False),
    'dis+intra': (False, True, True),
    'all': (True, True, True),
}
BASES = {'vegas': dsffn_vegas, 'ave': dsffn_ave, 'demo': dsffn_demo}


def get_config(arg: str = 'all'):
    variant, _, base = arg.partition('@')
    if variant not in VARIANTS:
        raise ValueError(f'ablation variant {variant!r}: expected one of {sorted(VARIANTS)}')
    if (base or 'vegas') not in BASES:
        raise ValueError(f'ablation base {base!r}: expected one of {sorted(BASES)}')
    c = BASES[base or 'vegas'].get_config()
    c.loss.use_mfa, c.loss.use_dis, c.loss.use_intra = VARIANTS[variant]
    return c
