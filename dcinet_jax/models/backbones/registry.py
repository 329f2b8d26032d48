"""The two-part backbone contract and the registry `config.model.backbone` selects
(docs/model.md#backbone-contract).

A backbone is a Flax module holding one variables tree and exposing:

    part1(x, train) -> h                 sub-module 1: normalised NHWC image batch
                                         [B, S, S, 3] -> map at the cut [B, h, w, C]
    part2(h, train) -> (logits, pooled)  sub-module 2: map -> f32[B, K] logits and the
                                         f32[B, D] pooled feature; applied to the
                                         original and to the interacted map alike
    __call__(x, train) -> logits         the uncut network (= part2(part1(x))[0])
    cut                                  the chosen cut point (a field)
    cut_points                           the cut points it accepts
    cut_channels                         C at the cut (CMCI splits it into N groups)
    input_mean, input_std                per-channel statistics the uint8 input is
                                         normalised with: (u / 255 - mean) / std

Families: `resnet` (CCRN: resnet18..152, or `custom`), `vgg` (vgg16, vgg19 and their
`_bn` versions), `vit` (vit_ti16, vit_s16, vit_b16, vit_b32, vit_l16). `family` names the
family of a backbone name; `backbone_kwargs` turns `config.model` into the module's
fields; `create` builds the module.
"""

from __future__ import annotations

from typing import Any

import jax

from dcinet_jax.models.ccrn import CCRN, CUT_POINTS
from dcinet_jax.models.backbones.resnet import BLOCK_EXPANSION, CONV1X1_MODES, RESNET_SPECS
from dcinet_jax.models.backbones.vgg import VGG, VGG_CFGS, VGG_CUT_POINTS, VGG_HEADS
from dcinet_jax.models.backbones.vit import VIT_SPECS, ViT, vit_cut_points

VGG_NAMES = tuple(sorted([*VGG_CFGS, *(f'{n}_bn' for n in VGG_CFGS)]))
FAMILIES = {'resnet': CCRN, 'vgg': VGG, 'vit': ViT}
BACKBONE_NAMES = tuple(sorted(RESNET_SPECS)) + ('custom',) + VGG_NAMES + tuple(sorted(VIT_SPECS))
# `model.conv1x1='auto'` by `jax.default_backend()`: the faster path where it was measured
# (benchmarks/RESULTS.md); 'conv' on every backend not listed until its bench says otherwise.
CONV1X1_AUTO = {'cpu': 'einsum'}


def resolve_conv1x1(value: str, backend: str | None = None) -> str:
    """'conv' or 'einsum' for a `config.model.conv1x1` value ('auto' picks by backend)."""
    value = str(value)
    if value == 'auto':
        return CONV1X1_AUTO.get(backend or jax.default_backend(), 'conv')
    if value not in CONV1X1_MODES:
        raise ValueError(f"config.model.conv1x1 must be 'auto' or one of {CONV1X1_MODES}, "
                         f'got {value!r}')
    return value


def family(name: str) -> str:
    """'resnet', 'vgg' or 'vit' for a `config.model.backbone` value."""
    if name in RESNET_SPECS or name == 'custom':
        return 'resnet'
    if name in VGG_NAMES:
        return 'vgg'
    if name in VIT_SPECS:
        return 'vit'
    raise ValueError(f'config.model.backbone must be one of {list(BACKBONE_NAMES)}, got {name!r}')


def resnet_layout(mc: Any) -> tuple[str, tuple[int, ...]]:
    """(block, stage_sizes) of a ResNet-family `config.model` (a named ResNet or 'custom')."""
    if mc.backbone == 'custom':
        block, stages = str(mc.block), tuple(int(s) for s in mc.stage_sizes)
        if block not in BLOCK_EXPANSION:
            raise ValueError(f"config.model.block must be 'basic' or 'bottleneck' for a custom "
                             f'backbone, got {block!r}')
        if not stages or min(stages) < 1 or len(stages) > 4:
            raise ValueError(f'config.model.stage_sizes must hold 1-4 positive ints for a custom '
                             f'backbone, got {tuple(mc.stage_sizes)!r}')
        return block, stages
    if mc.backbone not in RESNET_SPECS:
        raise ValueError(f'config.model.backbone must be one of {sorted(RESNET_SPECS)} or '
                         f"'custom' for a ResNet, got {mc.backbone!r}")
    return RESNET_SPECS[mc.backbone]


def _get(mc: Any, field: str, default: Any) -> Any:
    return mc.get(field, default) if hasattr(mc, 'get') else getattr(mc, field, default)


def vit_grid(mc: Any, image_size: int) -> int:
    """Side of the ViT map handed to CMSI/CMCI: `model.vit_grid`, or when 0 the grid a
    ResNet has after layer4 at this input size (ceil(S / 32): 14 at 448)."""
    g = int(_get(mc, 'vit_grid', 0))
    return g if g > 0 else max(1, -(-image_size // 32))


def backbone_kwargs(mc: Any, image_size: int) -> tuple[str, dict[str, Any]]:
    """(family, fields of its module except num_classes/dtype/bn_axis_name) from config.model.

    Raises ValueError naming the config field for an unknown backbone, cut or head."""
    fam = family(str(mc.backbone))
    cut = str(mc.cut)
    if int(mc.num_filters) < 1:
        raise ValueError('config.model.num_filters must be >= 1')
    if fam == 'resnet':
        block, stages = resnet_layout(mc)
        names = CUT_POINTS[:len(stages)]
        kwargs = dict(stage_sizes=stages, block=block, num_filters=int(mc.num_filters),
                      zero_init_last_bn=bool(mc.zero_init_last_bn), cut=cut,
                      conv1x1=resolve_conv1x1(_get(mc, 'conv1x1', 'auto')))
    elif fam == 'vgg':
        names = VGG_CUT_POINTS
        head = str(_get(mc, 'head', 'tv'))
        if head not in VGG_HEADS:
            raise ValueError(f'config.model.head must be one of {VGG_HEADS} for a VGG, got {head!r}')
        kwargs = dict(arch=mc.backbone.removesuffix('_bn'), batch_norm=mc.backbone.endswith('_bn'),
                      width=int(mc.num_filters), hidden=int(_get(mc, 'head_hidden', 4096)),
                      head_kind=head, cut=cut)
    else:
        width, depth, heads, mlp, patch = VIT_SPECS[mc.backbone]
        over = {k: int(_get(mc, f'vit_{k}', 0)) for k in ('width', 'depth', 'heads', 'mlp_dim', 'patch')}
        kwargs = dict(width=over['width'] or width, depth=over['depth'] or depth,
                      heads=over['heads'] or heads, mlp_dim=over['mlp_dim'] or mlp,
                      patch=over['patch'] or patch, image_size=int(image_size),
                      grid=vit_grid(mc, int(image_size)), cut=cut)
        names = vit_cut_points(kwargs['depth'])
        if kwargs['width'] % kwargs['heads']:
            raise ValueError(f"config.model.vit_width ({kwargs['width']}) must be a multiple of "
                             f"vit_heads ({kwargs['heads']})")
        if image_size % kwargs['patch']:
            raise ValueError(f"config.data.image_size ({image_size}) must be a multiple of the "
                             f"ViT patch ({kwargs['patch']})")
    if cut not in names:
        shown = names if len(names) <= 6 else (*names[:2], '...', *names[-2:])
        raise ValueError(f'config.model.cut must be one of {tuple(shown)} for {mc.backbone}, got {cut!r}')
    return fam, kwargs


def create(fam: str, kwargs: dict[str, Any], *, num_classes: int, dtype: Any,
           bn_axis_name: str | None = None, name: str | None = None):
    """The backbone module of family `fam` (unbound)."""
    extra = dict(num_classes=num_classes, dtype=dtype)
    if fam in ('resnet', 'vgg'):
        extra['bn_axis_name'] = bn_axis_name
    return FAMILIES[fam](**kwargs, **extra, name=name)
