"""DCINet with another shared backbone: the paper's Table 4 as one parameterised config.

    --config=configs/backbones.py:VARIANT[@BASE]

VARIANT: resnet50 (the paper's default), vgg16, vgg19, vgg16_bn, vgg19_bn, vit_b16.
BASE:    paper (default: configs/dcinet_fgxmedia.py, 448 px, full-size networks) or demo
         (configs/demo.py: 112 px and narrow networks that train on the demo data on a
         CPU: VGG at 1/8 width with 1024-wide fc6/fc7, ViT with 2 blocks of width 64).

Every backbone is cut at `layer4` (VGG: after pool5, 14 x 14 x 512 at 448; ViT: after
the last block, 28 x 28 tokens resized to 14 x 14), so CMSI draws the same 7 x 7 box
(lambda 0.75) as with ResNet50. See docs/model.md#backbone-contract.
"""

from configs import dcinet_fgxmedia, demo

VARIANTS = ('resnet50', 'vgg16', 'vgg19', 'vgg16_bn', 'vgg19_bn', 'vit_b16')
BASES = {'paper': dcinet_fgxmedia, 'demo': demo}


def get_config(arg: str = 'vgg16'):
    variant, _, base = arg.partition('@')
    if variant not in VARIANTS:
        raise ValueError(f'backbone variant {variant!r}: expected one of {VARIANTS}')
    base = base or 'paper'
    if base not in BASES:
        raise ValueError(f'backbone base {base!r}: expected one of {sorted(BASES)}')
    c = BASES[base].get_config()
    m = c.model
    m.backbone, m.cut = variant, 'layer4'
    if base == 'paper':
        m.num_filters = 64
        return c
    if variant.startswith('vgg'):
        m.num_filters = 8       # conv widths 8 .. 64
        # fc6/fc7 start from torchvision's N(0, 0.01): a narrow fc7 would start the logits
        # near zero and barely learn, so the demo keeps them wide.
        m.head_hidden = 1024
        c.optim.learning_rate = 0.01
    elif variant.startswith('vit'):
        m.vit_width, m.vit_depth, m.vit_heads, m.vit_mlp_dim = 64, 2, 2, 128
        m.vit_patch = 16        # 112 px -> 7 x 7 tokens, resized to the 4 x 4 map of ResNet's layer4
        c.optim.learning_rate = 0.03
    return c
