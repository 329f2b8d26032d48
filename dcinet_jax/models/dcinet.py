"""DCINet: one shared two-part backbone plus the text network (docs/model.md#overview).

The backbone is any member of the registry in `dcinet_jax.models.backbones.registry` (ResNet/CCRN,
VGG, ViT; docs/model.md#backbone-contract); it is always the submodule `backbone`.
`DCINet.__call__` takes a dict of per-modality batches, turns each into an NHWC image
batch on the device (uint8 images normalised with the backbone's own statistics), concatenates them along the batch axis in config
order, and runs sub-module 1 once. It returns the cut-point feature map (for CMSI /
CMCI) and the original-branch logits; `DCINet.head` runs sub-module 2 on interacted
features. The ml_collections config is only read by `build_model` /
`init_variables` (duck-typed: this module never imports ml_collections).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dcinet_jax.models.backbones import registry as backbones
from dcinet_jax.models.ccrn import CCRN
from dcinet_jax.models.text_net import TextNet
from input_pipeline.spec import VOCAB_SIZES

Array = jax.Array

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
TEXT_NORMS = ('none', 'batch')


class DCINet(nn.Module):
    """Shared backbone over image-like modalities and text (the text net feeds the same backbone).

    Every modality except 'text' is an image-like batch: uint8 [b, H, W, 3] (normalised
    here with the backbone's `input_mean`/`input_std`) or float [b, H, W, 3] (taken as
    normalised). 'text' is int [b, L] character ids.

    `arch` is a backbone family ('resnet', 'vgg', 'vit'); for 'resnet' the fields
    `stage_sizes` .. `cut` describe the CCRN, for the others `arch_kwargs` holds the
    module's fields as sorted (name, value) pairs (see `backbones.backbone_kwargs`).
    """

    modalities: Sequence[str]
    num_classes: int
    stage_sizes: Sequence[int]
    block: str = 'bottleneck'
    num_filters: int = 64
    cut: str = 'layer4'
    dtype: Any = jnp.float32
    zero_init_last_bn: bool = False
    conv1x1: str = 'conv'       # ResNet 1x1 convolutions: 'conv' | 'einsum' (resolved, no 'auto')
    text_length: int = 448
    text_vocab_size: int = VOCAB_SIZES['lower_space']
    text_embed_dim: int = 16
    text_hidden: int = 0
    text_norm: str = 'none'     # 'none' (paper, code) | 'batch': BatchNorm on the text image
    bn_axis_name: str | None = None
    arch: str = 'resnet'
    arch_kwargs: tuple = ()

    def setup(self) -> None:
        if self.arch == 'resnet':
            self.backbone = CCRN(stage_sizes=tuple(self.stage_sizes), block=self.block,
                                 num_filters=self.num_filters, num_classes=self.num_classes,
                                 dtype=self.dtype, zero_init_last_bn=self.zero_init_last_bn,
                                 bn_axis_name=self.bn_axis_name, cut=self.cut,
                                 conv1x1=self.conv1x1)
        else:
            self.backbone = backbones.create(self.arch, dict(self.arch_kwargs),
                                             num_classes=self.num_classes, dtype=self.dtype,
                                             bn_axis_name=self.bn_axis_name)
        if 'text' in self.modalities:
            self.text_net = TextNet(vocab_size=self.text_vocab_size, length=self.text_length,
                                    embed_dim=self.text_embed_dim, hidden=self.text_hidden,
                                    dtype=self.dtype)
            if self.text_norm not in TEXT_NORMS:
                raise ValueError(f'config.model.text_norm={self.text_norm!r}: expected one of '
                                 f'{TEXT_NORMS}')
            if self.text_norm == 'batch':
                self.text_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                                            param_dtype=jnp.float32,
                                            axis_name=self.bn_axis_name)

    def _to_image(self, name: str, x: Array, train: bool = False) -> Array:
        """One modality's batch -> normalised NHWC batch in the compute dtype.

        The text image can be standardised by its own BatchNorm (`text_norm='batch'`,
        docs/fgcrossnet.md#text-scale): the text net's output is an order of magnitude
        smaller than a normalised photo and nearly the same for every text, so in a batch
        shared with images the backbone's first BatchNorm scales the differences between
        texts down to almost nothing and the text branch may never start learning."""
        if name == 'text':
            x = self.text_net(x).astype(self.dtype)
            if self.text_norm == 'batch':
                x = self.text_bn(x, use_running_average=not train)
            return x
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"DCINet input {name!r} must be [b, H, W, 3], got shape {x.shape}")
        if x.dtype == jnp.uint8:
            mean = jnp.asarray(type(self.backbone).input_mean, jnp.float32)
            std = jnp.asarray(type(self.backbone).input_std, jnp.float32)
            x = (x.astype(jnp.float32) / 255.0 - mean) / std
        elif not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"DCINet input {name!r} must be uint8 or float, got {x.dtype}")
        return x.astype(self.dtype)

    def __call__(self, inputs: Mapping[str, Array], train: bool) -> dict[str, Array]:
        """Returns {'logits' f32[B,K] (original branch), 'features' [B,h,w,C] (cut-point
        map), 'pooled' f32[B,C_final], 'modality' int32[B] (index in `modalities`)}."""
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f'DCINet got inputs {unknown} not among modalities {tuple(self.modalities)}')
        present = [m for m in self.modalities if m in inputs]
        if not present:
            raise ValueError('DCINet got no inputs')
        images, ids = [], []
        for m in present:
            img = self._to_image(m, inputs[m], train)
            images.append(img)
            ids.append(jnp.full((img.shape[0],), self.modalities.index(m), jnp.int32))
        shapes = {m: img.shape[1:] for m, img in zip(present, images)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f'DCINet inputs differ in image shape: {shapes}')
        x = jnp.concatenate(images, axis=0) if len(images) > 1 else images[0]
        features = self.backbone.part1(x, train)
        logits, pooled = self.backbone.part2(features, train)
        return {'logits': logits, 'features': features, 'pooled': pooled,
                'modality': jnp.concatenate(ids)}

    def head(self, features: Array, train: bool) -> Array:
        """Sub-module 2 on (interacted) cut-point features -> f32[B,K] logits."""
        return self.backbone.part2(features, train)[0]


def backbone_layout(mc: Any) -> tuple[str, tuple[int, ...]]:
    """(block, stage_sizes) from config.model (a named ResNet or 'custom'; ResNets only)."""
    return backbones.resnet_layout(mc)


def build_model(config: Any, bn_axis_name: str | None = None) -> DCINet:
    """DCINet from an ml_collections config (`config.model`, `config.data`).

    `bn_axis_name`: mapped axis for synchronised BatchNorm (e.g. 'data' under shard_map),
    None for per-device statistics.
    """
    mc, dc = config.model, config.data
    fam, kwargs = backbones.backbone_kwargs(mc, int(dc.image_size))
    if mc.dtype not in DTYPES:
        raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {mc.dtype!r}')
    modalities = tuple(dc.modalities)
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f'config.data.modalities must be non-empty and distinct, got {modalities!r}')
    if 'text' in modalities:
        if dc.alphabet not in VOCAB_SIZES:
            raise ValueError(f'config.data.alphabet must be one of {sorted(VOCAB_SIZES)}, '
                             f'got {dc.alphabet!r}')
        if dc.text_length != dc.image_size:
            raise ValueError(f'config.data.text_length ({dc.text_length}) must equal '
                             f'config.data.image_size ({dc.image_size}): the text network '
                             f'outputs a text_length x text_length image')
    if int(mc.num_filters) < 1 or int(dc.num_classes) < 1:
        raise ValueError('config.model.num_filters and config.data.num_classes must be >= 1')
    common = dict(
        modalities=modalities,
        num_classes=int(dc.num_classes),
        cut=str(mc.cut),
        dtype=DTYPES[mc.dtype],
        text_length=int(dc.text_length),
        text_vocab_size=VOCAB_SIZES.get(dc.alphabet, 1),
        text_embed_dim=int(mc.text_embed_dim),
        text_hidden=int(mc.text_hidden),
        text_norm=str(mc.get('text_norm', 'none')),
        bn_axis_name=bn_axis_name,
    )
    if fam == 'resnet':
        return DCINet(stage_sizes=kwargs['stage_sizes'], block=kwargs['block'],
                      num_filters=kwargs['num_filters'],
                      zero_init_last_bn=kwargs['zero_init_last_bn'],
                      conv1x1=kwargs['conv1x1'], **common)
    return DCINet(stage_sizes=(), arch=fam, arch_kwargs=tuple(sorted(kwargs.items())), **common)


def dummy_inputs(model: DCINet, config: Any, batch_per_modality: int = 1) -> dict[str, Array]:
    """Zero inputs of the right shapes and dtypes for every modality (init, tracing)."""
    size = int(config.data.image_size)
    out = {}
    for m in model.modalities:
        if m == 'text':
            out[m] = jnp.zeros((batch_per_modality, model.text_length), jnp.int32)
        else:
            out[m] = jnp.zeros((batch_per_modality, size, size, 3), jnp.uint8)
    return out


def init_variables(model: DCINet, rng: Array, config: Any) -> dict[str, Any]:
    """{'params', 'batch_stats'} for `model`; traceable, so it also runs under `jax.eval_shape`.

    A backbone without BatchNorm (plain VGG, ViT) has no 'batch_stats'."""
    variables = model.init(rng, dummy_inputs(model, config), train=False)
    out = {'params': variables['params']}
    if 'batch_stats' in variables:
        out['batch_stats'] = variables['batch_stats']
    return out
