"""ResNet v1.5 (torchvision layout) as Flax Linen modules, NHWC.

Submodule names follow torchvision (`conv1`, `bn1`, `layer1`..`layer4` holding blocks
`0`, `1`, ..., each with `conv1/bn1/conv2/bn2[/conv3/bn3][/downsample/0,1]`, then `fc`)
so that a PyTorch state dict maps onto the params tree one key to one leaf
(see `dcinet_jax.pretrained`). Parameters are always float32; `dtype` is the compute
dtype. BatchNorm reproduces PyTorch exactly, running-statistics update included.

Every 1x1 convolution (the bottleneck's conv1/conv3 and the projection shortcuts) can be
computed as a matrix multiply over the channel axis (`conv1x1='einsum'`, `Conv1x1`)
instead of `lax.conv` (`'conv'`), with the same parameter names, shapes and init, so
checkpoints and the PyTorch weight import do not depend on the choice. Why: XLA:CPU
computes a 1x1 convolution's weight gradient as a convolution whose window is the whole
feature map, which is most of the CPU step time (docs/model.md#1x1-convolutions).

The network is written as three callable pieces (`stem`, `run_stages`, `head`) so that
the two-part CCRN (`dcinet_jax.models.ccrn`) can cut it anywhere between stages
without a second copy of the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Dtype = Any

# torchvision's architectures: name -> (block kind, blocks per stage).
RESNET_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    'resnet18': ('basic', (2, 2, 2, 2)),
    'resnet34': ('basic', (3, 4, 6, 3)),
    'resnet50': ('bottleneck', (3, 4, 6, 3)),
    'resnet101': ('bottleneck', (3, 4, 23, 3)),
    'resnet152': ('bottleneck', (3, 8, 36, 3)),
}
BLOCK_EXPANSION = {'basic': 1, 'bottleneck': 4}
# How a 1x1 convolution is computed: 'conv' (lax.conv) or 'einsum' (a channel matmul).
CONV1X1_MODES = ('conv', 'einsum')

# torchvision initialises convs with kaiming_normal_(mode='fan_out', relu): N(0, 2/fan_out).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# torch.nn.Linear / Conv default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_default_bias_init(fan_in: int) -> Callable[..., Array]:
    """U(+-1/sqrt(fan_in)), the default bias init of torch Linear/Conv layers."""
    bound = 1.0 / np.sqrt(max(fan_in, 1))

    def init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm(nn.Module):
    """BatchNorm with PyTorch semantics.

    Why not `nn.BatchNorm`: PyTorch normalises with the biased batch variance but
    updates `running_var` with the *unbiased* one (n / (n - 1)); flax uses the biased
    variance for both. Pretrained running statistics and fine-tuning behaviour only
    match if the update matches. `momentum` uses PyTorch's convention
    (new = (1 - m) * old + m * batch). With `axis_name`, batch statistics are averaged
    over that mapped axis (SyncBN under shard_map/pmap; equal per-device batches).
    Statistics and normalisation are computed in float32 whatever the input dtype.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    axis_name: str | None = None
    scale_init: Callable[..., Array] = nn.initializers.ones

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = x.shape[-1]
        scale = self.param('scale', self.scale_init, (c,), jnp.float32)
        bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))

        xf = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            n = int(np.prod([x.shape[a] for a in axes]))
            mean = jnp.mean(xf, axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
                n = n * jax.lax.psum(1, self.axis_name)
            # Two-pass variance: E[(x - mean)^2] is better conditioned than E[x^2] - mean^2.
            var = jnp.mean(jnp.square(xf - mean), axes)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
            if not self.is_initializing():
                m = self.momentum
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)


class Conv1x1(nn.Module):
    """A bias-free 1x1 convolution (stride s) as `einsum('...c,cd->...d')`.

    The parameter is `kernel` [1, 1, C_in, C_out] with `nn.Conv`'s name, shape, dtype
    and init, so the two are interchangeable in a variables tree. Stride s with no
    padding keeps the taps at 0, s, 2s, ...: a slice, then the matmul. Inputs and kernel
    are cast to `dtype` first, as `nn.Conv` does.
    """

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param('kernel', conv_kernel_init, (1, 1, x.shape[-1], self.features),
                            jnp.float32)
        if self.strides != 1:
            x = x[:, ::self.strides, ::self.strides, :]
        return jnp.einsum('...c,cd->...d', x.astype(self.dtype),
                          kernel[0, 0].astype(self.dtype))


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str,
          conv1x1: str = 'conv') -> nn.Module:
    """Bias-free conv with PyTorch's symmetric padding k//2 (XLA 'SAME' pads
    asymmetrically for stride 2 on even sizes, which would shift every feature map).
    A 1x1 kernel is a `Conv1x1` when `conv1x1='einsum'`."""
    if kernel == 1 and conv1x1 == 'einsum':
        return Conv1x1(features, stride, dtype, name=name)
    p = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((p, p), (p, p)), use_bias=False, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=conv_kernel_init, name=name)


class Downsample(nn.Module):
    """Projection shortcut: 1x1 conv (stride s) + BN, named `0`/`1` like torchvision's Sequential."""

    features: int
    strides: int
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    conv1x1: str = 'conv'

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = _conv(self.features, 1, self.strides, self.dtype, '0', self.conv1x1)(x)
        return BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name='1')(x, train)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    zero_init_last_bn: bool = False
    bn_axis_name: str | None = None
    conv1x1: str = 'conv'
    expansion = 1

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        bn = dict(dtype=self.dtype, axis_name=self.bn_axis_name)
        last_init = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
        out = _conv(self.features, 3, self.strides, self.dtype, 'conv1')(x)
        out = nn.relu(BatchNorm(**bn, name='bn1')(out, train))
        out = _conv(self.features, 3, 1, self.dtype, 'conv2')(out)
        out = BatchNorm(**bn, scale_init=last_init, name='bn2')(out, train)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = Downsample(self.features, self.strides, self.dtype, self.bn_axis_name,
                                  self.conv1x1, name='downsample')(x, train)
        return nn.relu(out + shortcut.astype(out.dtype))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: v1.5) -> 1x1 x4 (ResNet-50/101/152)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    zero_init_last_bn: bool = False
    bn_axis_name: str | None = None
    conv1x1: str = 'conv'
    expansion = 4

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        bn = dict(dtype=self.dtype, axis_name=self.bn_axis_name)
        last_init = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
        out_features = self.features * self.expansion
        out = _conv(self.features, 1, 1, self.dtype, 'conv1', self.conv1x1)(x)
        out = nn.relu(BatchNorm(**bn, name='bn1')(out, train))
        out = _conv(self.features, 3, self.strides, self.dtype, 'conv2')(out)
        out = nn.relu(BatchNorm(**bn, name='bn2')(out, train))
        out = _conv(out_features, 1, 1, self.dtype, 'conv3', self.conv1x1)(out)
        out = BatchNorm(**bn, scale_init=last_init, name='bn3')(out, train)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_features:
            shortcut = Downsample(out_features, self.strides, self.dtype, self.bn_axis_name,
                                  self.conv1x1, name='downsample')(x, train)
        return nn.relu(out + shortcut.astype(out.dtype))


class ResLayer(nn.Module):
    """One stage (`layerN`): `num_blocks` blocks named `0`, `1`, ...; the first may stride."""

    block: str
    num_blocks: int
    features: int
    strides: int
    dtype: Dtype = jnp.float32
    zero_init_last_bn: bool = False
    bn_axis_name: str | None = None
    conv1x1: str = 'conv'

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        cls = BasicBlock if self.block == 'basic' else Bottleneck
        for i in range(self.num_blocks):
            x = cls(self.features, self.strides if i == 0 else 1, self.dtype,
                    self.zero_init_last_bn, self.bn_axis_name, self.conv1x1,
                    name=str(i))(x, train)
        return x


def stage_names(num_stages: int) -> tuple[str, ...]:
    """('layer1', ..., 'layerN'): torchvision's stage names."""
    return tuple(f'layer{i + 1}' for i in range(num_stages))


class ResNet(nn.Module):
    """ResNet v1.5 in torchvision's layout; `__call__(x, train) -> logits` (float32).

    `x` is an NHWC float batch, already normalised. `stage_sizes`/`block`/`num_filters`
    describe any member of the family (see `RESNET_SPECS`); tiny test models use
    `num_filters` 4-8 and one block per stage. `conv1x1` picks how the 1x1 convolutions
    are computed (`CONV1X1_MODES`); the variables tree is the same either way.
    """

    stage_sizes: Sequence[int]
    block: str = 'bottleneck'
    num_filters: int = 64
    num_classes: int = 1000
    dtype: Dtype = jnp.float32
    zero_init_last_bn: bool = False
    bn_axis_name: str | None = None
    conv1x1: str = 'conv'

    def setup(self) -> None:
        if self.block not in BLOCK_EXPANSION:
            raise ValueError(f"ResNet.block must be 'basic' or 'bottleneck', got {self.block!r}")
        if not self.stage_sizes or min(self.stage_sizes) < 1:
            raise ValueError(f'ResNet.stage_sizes must be non-empty positive ints, got {self.stage_sizes!r}')
        if self.conv1x1 not in CONV1X1_MODES:
            raise ValueError(f'ResNet.conv1x1 must be one of {CONV1X1_MODES}, got {self.conv1x1!r}')
        self.conv1 = nn.Conv(self.num_filters, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                             use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                             kernel_init=conv_kernel_init)
        self.bn1 = BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name)
        for i, (name, n) in enumerate(zip(stage_names(len(self.stage_sizes)), self.stage_sizes)):
            setattr(self, name, ResLayer(self.block, n, self.num_filters * 2 ** i,
                                         1 if i == 0 else 2, self.dtype,
                                         self.zero_init_last_bn, self.bn_axis_name,
                                         self.conv1x1))
        fan_in = self.num_features
        self.fc = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                           kernel_init=torch_default_kernel_init,
                           bias_init=torch_default_bias_init(fan_in))

    @property
    def num_features(self) -> int:
        """Channels of the last stage = width of the pooled feature."""
        return self.num_filters * 2 ** (len(self.stage_sizes) - 1) * BLOCK_EXPANSION[self.block]

    def stem(self, x: Array, train: bool) -> Array:
        """conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 (pad 1, padded with -inf)."""
        x = self.conv1(x.astype(self.dtype))
        x = nn.relu(self.bn1(x, train))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def run_stages(self, x: Array, train: bool, start: int, stop: int) -> Array:
        """Stages [start, stop) (0-based: 0 is layer1)."""
        for name in stage_names(len(self.stage_sizes))[start:stop]:
            x = getattr(self, name)(x, train)
        return x

    def head(self, x: Array) -> tuple[Array, Array]:
        """Global average pool (float32) -> fc. Returns (logits f32[B,K], pooled f32[B,C])."""
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return self.fc(pooled), pooled

    def __call__(self, x: Array, train: bool) -> Array:
        x = self.stem(x, train)
        x = self.run_stages(x, train, 0, len(self.stage_sizes))
        return self.head(x)[0]
