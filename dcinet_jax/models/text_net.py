"""Text network: character ids -> an L x L x 3 "image" for the shared backbone (docs/model.md#text-network).

ids (B, L) -> embedding (B, L, E) -> Conv1D `hidden` (k3, pad 1) -> ReLU
-> Conv1D L (k3, pad 1) -> (B, L_pos, L_ch) -> transpose to (B, L_ch, L_pos, 1)
-> Conv2D 3 (k3, pad 1) -> (B, L, L, 3).

Axis convention of the image: **height = Conv1D output channel, width = character
position**. This is what PyTorch's `x.view(B, 1, C, L)` of an NCL conv output gives,
so a PyTorch implementation of the same network maps onto this one weight for weight.

Index 0 is padding: its embedding row is initialised to zero and the embedding output
is masked by `ids != 0`, so padding contributes exactly zero (like multiplying an
all-zero one-hot row) and its row never receives a gradient.
Layer inits follow PyTorch's defaults (Embedding N(0, 1); Conv U(+-1/sqrt(fan_in))).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dcinet_jax.models.backbones.resnet import torch_default_bias_init, torch_default_kernel_init

Array = jax.Array
Dtype = Any


def _embedding_init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    """N(0, 1) like torch.nn.Embedding, with the padding row 0 set to zero."""
    return jax.random.normal(key, shape, dtype).at[0].set(0.0)


class TextNet(nn.Module):
    """Char-id sequence (B, L) int -> (B, L, L, 3) in `dtype` (see module docstring)."""

    vocab_size: int             # alphabet size + 1 (row 0 = padding)
    length: int                 # L: characters per text = output height and width
    embed_dim: int = 16
    hidden: int = 0             # 0 -> L // 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: Array) -> Array:
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f'TextNet expects ids of shape (batch, {self.length}), got {ids.shape}')
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f'TextNet expects integer character ids, got dtype {ids.dtype}')
        hidden = self.hidden or self.length // 2
        ids = ids.astype(jnp.int32)
        table = self.param('embedding', _embedding_init, (self.vocab_size, self.embed_dim),
                           jnp.float32)
        x = jnp.take(table, ids, axis=0) * (ids != 0)[..., None]
        x = x.astype(self.dtype)

        def conv(features: int, kernel: tuple[int, ...], fan_in: int, name: str) -> nn.Conv:
            return nn.Conv(features, kernel, padding=[(1, 1)] * len(kernel), dtype=self.dtype,
                           param_dtype=jnp.float32, kernel_init=torch_default_kernel_init,
                           bias_init=torch_default_bias_init(fan_in), name=name)

        x = nn.relu(conv(hidden, (3,), 3 * self.embed_dim, 'conv1')(x))
        x = conv(self.length, (3,), 3 * hidden, 'conv2')(x)      # (B, L_pos, L_ch)
        x = jnp.swapaxes(x, 1, 2)[..., None]                      # (B, L_ch, L_pos, 1)
        return conv(3, (3, 3), 9, 'conv3')(x)                     # (B, L, L, 3)
