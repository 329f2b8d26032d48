"""DCINet whole-model weights <-> a PyTorch state dict (docs/weights.md#dcinet).

DCINet has no public code, so its format is the one `dcinet export` writes: the layout
of FGCrossNet's public network (PKU-ICST-MIPL/FGCrossNet_ACMMM2019 `model.py`), which is
the same network DCINet builds on. Why that layout: a PyTorch user can load our DCINet
into that model class, and a torchvision ResNet checkpoint already fits its backbone.

    conv1, bn1, layer1..layer4, fc     <-> params|batch_stats/backbone (torchvision names)
    embed.weight (V, 16)               <-> params/text_net/embedding          copy
    conv01.weight (H, 16, 3) + bias    <-> params/text_net/conv1 kernel (3, 16, H)   conv1d
    conv02.weight (L, H, 3) + bias     <-> params/text_net/conv2 kernel (3, H, L)    conv1d
    conv0.weight (3, 1, 3, 3) + bias   <-> params/text_net/conv3 kernel (3, 3, 1, 3)  conv2d
    text_bn.*  (model.text_norm='batch' only; ours) <-> text_bn BatchNorm

Only the ResNet backbone family has this layout; VGG/ViT backbones load through
`model.pretrained` only.
"""

from __future__ import annotations

from typing import Any

from dcinet_jax.models.backbones import registry as backbones
from dcinet_jax.weights import layout
from dcinet_jax.weights.layout import Entry

FORMAT = 'dcinet-pytorch'
ALLOWED_GLOBALS: tuple = ()
# (our TextNet name, public name, kind) of the char-CNN text net.
TEXT_LAYERS = (('conv1', 'conv01', 'conv1d'), ('conv2', 'conv02', 'conv1d'),
               ('conv3', 'conv0', 'conv2d'))
EMBED_KEY = 'embed.weight'


def network_entries(variables: dict, config: Any, prefix: tuple[str, ...] = ()) -> list[Entry]:
    """The table of a DCINet network (backbone + text net + text BN) at Flax `prefix`."""
    fam = backbones.family(config.model.backbone)
    if fam != 'resnet':
        raise ValueError(f'config.model.backbone={config.model.backbone!r}: whole-model weights '
                         'are supported for ResNet backbones only (load VGG/ViT backbones with '
                         'model.pretrained)')
    entries = layout.torchvision_entries(variables, prefix + ('backbone',))
    params = variables['params']
    for p in prefix:
        params = params[p]
    if 'text_net' in params:
        text = prefix + ('text_net',)
        entries.append(Entry(EMBED_KEY, 'params', text + ('embedding',), 'copy'))
        for ours, public, kind in TEXT_LAYERS:
            entries += layout.dense_entries(public, text + (ours,), kind=kind)
    if 'text_bn' in params:
        entries += layout.batchnorm_entries('text_bn', prefix + ('text_bn',))
    return entries


def import_state(obj: Any, variables: dict, config: Any, *, source: str = 'weights') -> dict:
    return layout.import_entries(obj, network_entries(variables, config), variables,
                                 source=source)


def export_state(variables: dict, config: Any) -> dict:
    return layout.export_entries(variables, network_entries(variables, config))
