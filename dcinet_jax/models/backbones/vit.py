"""Vision Transformer in timm's layout, cut into two parts (docs/model.md#vision-transformer).

Parameter names follow timm's `VisionTransformer` (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2`, `norm`,
`head`) so that a timm state dict maps one key to one leaf. Pre-norm blocks, qkv bias,
LayerNorm epsilon 1e-6, exact (erf) GELU, a class token and a learned position embedding
that includes the class token's entry.

Sub-module 1 embeds the patches, prepends the class token, adds the position embedding,
runs the blocks up to the cut (at the default cut `layer4`: all blocks and the final
norm), drops the class token, lays the tokens out as a grid (token n at row n // g,
column n % g) and resizes that grid bilinearly (half-pixel centres, no antialiasing) to
`grid` x `grid`. Sub-module 2 flattens the grid back to tokens, runs the remaining blocks
and the final norm (nothing at the default cut), averages the tokens and applies `head`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

# name -> (width, depth, heads, mlp width, patch): timm's standard sizes.
VIT_SPECS: dict[str, tuple[int, int, int, int, int]] = {
    'vit_ti16': (192, 12, 3, 768, 16),
    'vit_s16': (384, 12, 6, 1536, 16),
    'vit_b16': (768, 12, 12, 3072, 16),
    'vit_b32': (768, 12, 12, 3072, 32),
    'vit_l16': (1024, 24, 16, 4096, 16),
}
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
LN_EPS = 1e-6

trunc02 = nn.initializers.truncated_normal(0.02)


def vit_cut_points(depth: int) -> tuple[str, ...]:
    """('block1', ..., 'block{depth-1}', 'layer4'); 'layer4' = after every block and the norm."""
    return tuple(f'block{k}' for k in range(1, depth)) + ('layer4',)


def resize_grid(x: Array, size: int) -> Array:
    """Bilinear resize of an NHWC grid to size x size, half-pixel centres, no antialias
    (torch `F.interpolate(mode='bilinear', align_corners=False)`); float32 inside."""
    b, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    y = jax.image.resize(x.astype(jnp.float32), (b, size, size, c), 'bilinear', antialias=False)
    return y.astype(x.dtype)


class Attention(nn.Module):
    dim: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, n, _ = x.shape
        hd = self.dim // self.heads
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32, kernel_init=trunc02,
                     bias_init=nn.initializers.zeros)
        qkv = nn.Dense(3 * self.dim, name='qkv', **dense)(x).reshape(b, n, 3, self.heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
        attn = jax.nn.softmax(logits * hd ** -0.5, axis=-1).astype(self.dtype)
        out = jnp.einsum('bhqk,bkhd->bqhd', attn, v).reshape(b, n, self.dim)
        return nn.Dense(self.dim, name='proj', **dense)(out)


class Mlp(nn.Module):
    hidden: int
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32, kernel_init=trunc02,
                     bias_init=nn.initializers.zeros)
        x = nn.gelu(nn.Dense(self.hidden, name='fc1', **dense)(x), approximate=False)
        return nn.Dense(self.dim, name='fc2', **dense)(x)


def layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


class Block(nn.Module):
    dim: int
    heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x + Attention(self.dim, self.heads, self.dtype, name='attn')(
            layer_norm(self.dtype, 'norm1')(x))
        return x + Mlp(self.mlp_dim, self.dim, self.dtype, name='mlp')(
            layer_norm(self.dtype, 'norm2')(x))


class Blocks(nn.Module):
    """timm's `blocks` list: children `0`, `1`, ..."""

    depth: int
    dim: int
    heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        for i in range(self.depth):
            setattr(self, str(i), Block(self.dim, self.heads, self.mlp_dim, self.dtype))

    def run(self, x: Array, start: int, stop: int) -> Array:
        for i in range(start, stop):
            x = getattr(self, str(i))(x)
        return x


class PatchEmbed(nn.Module):
    dim: int
    patch: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p = self.patch
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                    param_dtype=jnp.float32, kernel_init=nn.initializers.lecun_normal(),
                    name='proj')(x.astype(self.dtype))
        return x.reshape(x.shape[0], -1, self.dim)


class ViT(nn.Module):
    """ViT under the two-part backbone contract (docs/model.md#backbone-contract).

    `image_size` fixes the token grid (image_size // patch) and so the position
    embedding's length; `grid` is the side of the map handed to CMSI/CMCI (0: the token
    grid, no resize). `__call__(x, train) -> logits` = part2(part1(x)).
    """

    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    patch: int = 16
    image_size: int = 224
    grid: int = 0
    num_classes: int = 1000
    cut: str = 'layer4'
    dtype: Any = jnp.float32

    input_mean = VIT_MEAN
    input_std = VIT_STD

    @property
    def cut_points(self) -> tuple[str, ...]:
        return vit_cut_points(self.depth)

    @property
    def token_grid(self) -> int:
        return self.image_size // self.patch

    @property
    def cut_channels(self) -> int:
        return self.width

    def setup(self) -> None:
        if self.width % self.heads:
            raise ValueError(f'ViT width {self.width} is not a multiple of heads {self.heads}')
        if self.token_grid < 1:
            raise ValueError(f'ViT input {self.image_size} px is smaller than a patch ({self.patch})')
        self.patch_embed = PatchEmbed(self.width, self.patch, self.dtype)
        self.cls_token = self.param('cls_token', nn.initializers.normal(1e-6), (1, 1, self.width),
                                    jnp.float32)
        self.pos_embed = self.param('pos_embed', trunc02, (1, 1 + self.token_grid ** 2, self.width),
                                    jnp.float32)
        self.blocks = Blocks(self.depth, self.width, self.heads, self.mlp_dim, self.dtype)
        self.norm = layer_norm(self.dtype)
        self.head = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                             kernel_init=trunc02, bias_init=nn.initializers.zeros)

    def _cut_block(self) -> int:
        names = self.cut_points
        if self.cut not in names:
            raise ValueError(f'ViT cut must be one of {names}, got {self.cut!r}')
        return names.index(self.cut) + 1

    def part1(self, x: Array, train: bool) -> Array:
        """Image -> B x grid x grid x width map (class token dropped)."""
        del train  # no dropout, no BatchNorm
        b, size = x.shape[0], x.shape[1]
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            raise ValueError(f'ViT built for {self.image_size} px inputs, got {x.shape[1:3]}')
        t = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token, (b, 1, self.width)).astype(t.dtype)
        t = jnp.concatenate([cls, t], axis=1) + self.pos_embed.astype(t.dtype)
        k = self._cut_block()
        t = self.blocks.run(t, 0, k)
        if k == self.depth:
            t = self.norm(t)
        g = self.token_grid
        del size
        h = t[:, 1:].reshape(b, g, g, self.width)
        return resize_grid(h, self.grid or g)

    def part2(self, h: Array, train: bool) -> tuple[Array, Array]:
        """Grid -> tokens -> remaining blocks (+ norm) -> mean -> head: (logits, pooled) f32."""
        del train
        k = self._cut_block()
        t = h.reshape(h.shape[0], -1, h.shape[-1])
        if k < self.depth:
            t = self.norm(self.blocks.run(t, k, self.depth))
        pooled = jnp.mean(t.astype(jnp.float32), axis=1)
        return self.head(pooled), pooled

    def __call__(self, x: Array, train: bool) -> Array:
        return self.part2(self.part1(x, train), train)[0]
