"""VGG16/19 (plain and BatchNorm) in torchvision's layout, NHWC, cut into two parts
(docs/model.md#vgg).

Module names follow torchvision's `features.{i}` / `classifier.{i}` indices so that a
state dict maps one key to one leaf (`dcinet_jax.pretrained`). The five max pools split
the convolutions into five blocks; cut `layerK` (K = 1..4, chosen to give the grid of
ResNet's `layerK`) is after pool K+1: `layer1` 1/4 of the input, `layer4` 1/32.

Heads (sub-module 2's tail): `tv` (default) = torchvision's classifier, adaptive
average pool to 7x7, flatten, FC-ReLU-Dropout twice, FC to the classes; `dense` = the
same parameters applied the way timm's VGG applies them (fc6 as a 7x7 valid convolution
over the map, fc7 as a 1x1 convolution, then a global average and fc8); `gap` = global
average pool and one FC named `fc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dcinet_jax.models.backbones.resnet import BatchNorm, conv_kernel_init

Array = jax.Array

# torchvision's configurations 'D' (vgg16) and 'E' (vgg19): conv widths, 'M' = 2x2 max pool.
VGG_CFGS: dict[str, tuple[Any, ...]] = {
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'),
}
VGG_CUT_POINTS = ('layer1', 'layer2', 'layer3', 'layer4')
VGG_HEADS = ('tv', 'gap', 'dense')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

linear_init = nn.initializers.normal(0.01)  # torchvision: N(0, 0.01), bias 0


def layer_indices(cfg: Sequence[Any], batch_norm: bool) -> list[list[tuple[int, int]]]:
    """Per pool-delimited block, the (torch index of the conv, its width) pairs.

    torchvision's `features` is one Sequential: conv[, bn], relu per conv, one entry per
    pool; a BatchNorm sits at the conv's index + 1.
    """
    blocks, current, i = [], [], 0
    for v in cfg:
        if v == 'M':
            blocks.append(current)
            current, i = [], i + 1
        else:
            current.append((i, int(v)))
            i += 3 if batch_norm else 2
    return blocks


def adaptive_avg_pool(x: Array, out: int, out_w: int | None = None) -> Array:
    """torch `adaptive_avg_pool2d` on NHWC: bin i averages [floor(i H/o), ceil((i+1) H/o))."""

    def matrix(n: int, o: int) -> np.ndarray:
        m = np.zeros((o, n), np.float32)
        for i in range(o):
            lo, hi = (i * n) // o, -((-(i + 1) * n) // o)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    _, h, w, _ = x.shape
    return jnp.einsum('ih,jw,bhwc->bijc', matrix(h, out), matrix(w, out_w or out),
                      x.astype(jnp.float32))


class Linear(nn.Module):
    """torch.nn.Linear in float32 (`kernel` (in, out), `bias`); `conv` applies the same
    kernel as a k x k valid convolution whose (H, W, C) inputs are the rows, in order."""

    in_features: int
    features: int

    def setup(self) -> None:
        self.kernel = self.param('kernel', linear_init, (self.in_features, self.features), jnp.float32)
        self.bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)

    def __call__(self, x: Array) -> Array:
        return jnp.dot(x.astype(jnp.float32), self.kernel) + self.bias

    def conv(self, x: Array, k: int) -> Array:
        c = x.shape[-1]
        w = self.kernel.reshape(k, k, c, self.features)
        y = jax.lax.conv_general_dilated(x.astype(jnp.float32), w, (1, 1), 'VALID',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return y + self.bias


class VGGFeatures(nn.Module):
    """torchvision's `features`: children named by their Sequential index."""

    cfg: tuple[Any, ...]
    batch_norm: bool = False
    width: int = 64
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    def setup(self) -> None:
        self.blocks = layer_indices(self.cfg, self.batch_norm)
        for block in self.blocks:
            for i, c in block:
                setattr(self, str(i), nn.Conv(
                    max(1, c * self.width // 64), (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                    bias_init=nn.initializers.zeros))
                if self.batch_norm:
                    setattr(self, str(i + 1), BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name))

    def run(self, x: Array, train: bool, start: int, stop: int) -> Array:
        """Pool-delimited blocks [start, stop), each ending with its 2x2 max pool."""
        for block in self.blocks[start:stop]:
            for i, _ in block:
                x = getattr(self, str(i))(x.astype(self.dtype))
                if self.batch_norm:
                    x = getattr(self, str(i + 1))(x, train)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x


class VGGClassifier(nn.Module):
    """torchvision's `classifier` (`0`, `3`, `6` are the Linear layers), in float32.

    `__call__` takes the 7 x 7 map flattened (torchvision); `dense` takes the map itself
    (timm: fc6 and fc7 as convolutions, then a global average)."""

    in_channels: int
    hidden: int = 4096
    num_classes: int = 1000
    dropout: float = 0.5

    def setup(self) -> None:
        setattr(self, '0', Linear(49 * self.in_channels, self.hidden))
        setattr(self, '3', Linear(self.hidden, self.hidden))
        setattr(self, '6', Linear(self.hidden, self.num_classes))
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
        x = self.drop(nn.relu(getattr(self, '0')(x)), deterministic=not train)
        pre = self.drop(nn.relu(getattr(self, '3')(x)), deterministic=not train)
        return getattr(self, '6')(pre), pre

    def dense(self, h: Array, train: bool) -> tuple[Array, Array]:
        _, hh, ww, _ = h.shape
        if hh < 7 or ww < 7:  # timm pools a small map up to 7 x 7 first
            h = adaptive_avg_pool(h, max(7, hh), max(7, ww))
        x = self.drop(nn.relu(getattr(self, '0').conv(h, 7)), deterministic=not train)
        x = self.drop(nn.relu(getattr(self, '3')(x)), deterministic=not train)
        pre = jnp.mean(x, axis=(1, 2))
        return getattr(self, '6')(pre), pre


class VGG(nn.Module):
    """VGG under the two-part backbone contract (docs/model.md#backbone-contract).

    `width` scales every conv width (64 = torchvision's); `hidden` is fc6/fc7's width.
    `__call__(x, train) -> logits` is the uncut network.
    """

    arch: str = 'vgg16'
    batch_norm: bool = False
    width: int = 64
    hidden: int = 4096
    head_kind: str = 'tv'
    num_classes: int = 1000
    cut: str = 'layer4'
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    cut_points = VGG_CUT_POINTS
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def setup(self) -> None:
        if self.arch not in VGG_CFGS:
            raise ValueError(f'VGG.arch must be one of {sorted(VGG_CFGS)}, got {self.arch!r}')
        if self.head_kind not in VGG_HEADS:
            raise ValueError(f'VGG head must be one of {VGG_HEADS}, got {self.head_kind!r}')
        self.features = VGGFeatures(VGG_CFGS[self.arch], self.batch_norm, self.width,
                                    self.dtype, self.bn_axis_name)
        if self.head_kind in ('tv', 'dense'):
            last = layer_indices(VGG_CFGS[self.arch], False)[-1][-1][1]
            self.classifier = VGGClassifier(max(1, last * self.width // 64), self.hidden,
                                            self.num_classes)
        else:
            self.fc = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                               kernel_init=linear_init, bias_init=nn.initializers.zeros)

    @property
    def cut_channels(self) -> int:
        """Channels of the map at the cut (what CMCI splits into groups)."""
        blocks = layer_indices(VGG_CFGS[self.arch], False)
        last = blocks[self._cut_index() - 1][-1][1]
        return max(1, last * self.width // 64)

    def _cut_index(self) -> int:
        if self.cut not in VGG_CUT_POINTS:
            raise ValueError(f'VGG cut must be one of {VGG_CUT_POINTS}, got {self.cut!r}')
        return VGG_CUT_POINTS.index(self.cut) + 2  # layerK ends with pool K+1

    def part1(self, x: Array, train: bool) -> Array:
        """Input -> map after the cut's pool (B x H/2^(K+1) x W/2^(K+1) x C)."""
        return self.features.run(x, train, 0, self._cut_index())

    def part2(self, h: Array, train: bool) -> tuple[Array, Array]:
        """Remaining blocks and the head: (logits f32[B,K], pooled f32[B,D]).

        `pooled` is the global average of the last map (`gap`), fc7's output (`tv`) or
        its global average (`dense`)."""
        h = self.features.run(h, train, self._cut_index(), 5)
        if self.head_kind == 'gap':
            pooled = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
            return self.fc(pooled), pooled
        if self.head_kind == 'dense':
            return self.classifier.dense(h.astype(jnp.float32), train)
        flat = adaptive_avg_pool(h, 7).reshape(h.shape[0], -1)  # (H, W, C) order
        return self.classifier(flat, train)

    def __call__(self, x: Array, train: bool) -> Array:
        return self.part2(self.part1(x, train), train)[0]
