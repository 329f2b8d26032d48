"""The paper's Table 4 ablations of HSLM on Flickr30K (docs/hslm.md#ablations).

    --config=configs/hslm_ablations.py:VARIANT[@BASE]

VARIANT names which similarity branches are on (global, local, or both) and which
correlation modules: none, `+self` (one text self-attention block), `+mgcn` (the
relation modules without the first text block: 4 image relation blocks and text blocks
2-4, i.e. 3 text blocks) or `+both` (4 + 4, the full model; `full` is
`global+local+both`). BASE: f30k (default), coco, demo.
"""

from configs import hslm_coco, hslm_demo, hslm_f30k

BRANCHES = {'global': (False, True), 'local': (True, False), 'global+local': (True, True)}
MODULES = {                # (num_relation_blocks, num_text_blocks)
    '': (0, 0), '+self': (0, 1), '+mgcn': (4, 3), '+both': (4, 4)}
VARIANTS = {f'{b}{m}': (*BRANCHES[b], *MODULES[m]) for b in BRANCHES for m in MODULES}
VARIANTS['full'] = VARIANTS.pop('global+local+both')
# Flickr30K rsum of each row [paper, Table 4].
PAPER_RSUM = {'global': 431.0, 'global+self': 437.5, 'global+mgcn': 438.7,
              'global+both': 444.2, 'local': 481.0, 'local+self': 483.2, 'local+mgcn': 485.0,
              'local+both': 489.5, 'global+local': 484.6, 'global+local+self': 487.3,
              'global+local+mgcn': 494.6, 'full': 497.8}
BASES = {'f30k': hslm_f30k, 'coco': hslm_coco, 'demo': hslm_demo}


def get_config(arg: str = 'full'):
    variant, _, base = arg.partition('@')
    if variant not in VARIANTS:
        raise ValueError(f'ablation variant {variant!r}: expected one of {sorted(VARIANTS)}')
    if (base or 'f30k') not in BASES:
        raise ValueError(f'ablation base {base!r}: expected one of {sorted(BASES)}')
    c = BASES[base or 'f30k'].get_config()
    use_local, use_global, relation, text = VARIANTS[variant]
    c.model.use_local, c.model.use_global = use_local, use_global
    if base == 'demo':   # the demo's smaller stacks keep their proportions
        relation = min(relation, c.model.num_relation_blocks)
        text = min(text, c.model.num_text_blocks) if text != 3 else c.model.num_text_blocks - 1
    c.model.num_relation_blocks, c.model.num_text_blocks = relation, text
    return c
