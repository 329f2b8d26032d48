"""HSLM's building blocks (docs/hslm_model.md): the image relation block, the text attention
block, the two global self-attention poolings and a masked BatchNorm.

Each block is a pure Flax module; `models/hslm.py` stacks them into the encoders and the
similarity head. Initialisers follow the reference (docs/hslm_model.md#init): Xavier-uniform
kernels with zero biases for the text attention and the poolings, PyTorch's default
U(+-1/sqrt(fan_in)) for the relation block's projections.

`dtype` (None: float32) is the compute dtype of the projections and products; params,
BatchNorm statistics and softmax weights stay float32 (docs/hslm_model.md#bfloat16).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dcinet_jax.interaction.scan_attention import l2norm
from dcinet_jax.models.dsffn import torch_dense   # Dense initialised like torch.nn.Linear
from dcinet_jax.models.backbones.resnet import BatchNorm

__all__ = ['RelationBlock', 'TextAttention', 'VisualSelfAttention', 'TextSelfAttention',
           'MaskedBatchNorm', 'xavier_dense', 'TEXT_ATTN_PADDINGS']

Array = jax.Array
TEXT_ATTN_PADDINGS = ('masked', 'reference')
_MASKED_LOGIT = -1e30      # softmax weight of a padding word (exactly 0 after exp)


def xavier_dense(features: int, name: str | None = None, dtype=None) -> nn.Dense:
    """Dense with a Xavier-uniform kernel and a zero bias (the reference's `init_weights`)."""
    return nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.zeros, name=name, dtype=dtype)


class RelationBlock(nn.Module):
    """One image relation (graph-convolution) block: (B, R, E) -> (B, R, E).

    mu = FC1(concat_h X Theta_h), nu = FC2(concat_h X Phi_h); A = mu nu^T / R (no softmax);
    out = BN(W_r(A W_g(X))) + X. The `heads` projections of size `head_dim` are one Dense
    (concatenated kernels: the same function). The BN normalises each of the E channels
    over batch x regions and starts with scale = bias = 0, so a fresh block is the identity.
    """

    embed_dim: int
    heads: int = 4
    head_dim: int = 256
    bn_axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        e, width, dt = self.embed_dim, self.heads * self.head_dim, self.dtype
        mu = torch_dense(e, width, name='fc_mu', dtype=dt)(
            torch_dense(width, e, name='theta', dtype=dt)(x))
        nu = torch_dense(e, width, name='fc_nu', dtype=dt)(
            torch_dense(width, e, name='phi', dtype=dt)(x))
        relation = jnp.einsum('bie,bje->bij', mu, nu) / x.shape[1]
        y = relation @ torch_dense(e, e, name='w_g', dtype=dt)(x)
        y = torch_dense(e, e, name='w_r', dtype=dt)(y)
        y = BatchNorm(axis_name=self.bn_axis_name, scale_init=nn.initializers.zeros,
                      dtype=y.dtype, name='bn')(y, train)
        return y + x.astype(y.dtype)


class TextAttention(nn.Module):
    """One text attention block: (B, L, d) words -> (B, L, d).

    K, Q, U = tanh of three bias-ful projections; out = (K Q^T / M) U + X (no softmax).
    'masked' (default): only the caption's real words are keys and M is its true length,
    so a caption's output never depends on padding. 'reference': every padded position
    is a key and M is the padded length L (the public code; batch-dependent).
    """

    word_dim: int
    padding: str = 'masked'
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, word_mask: Array) -> Array:
        if self.padding not in TEXT_ATTN_PADDINGS:
            raise ValueError(f'TextAttention.padding must be one of {TEXT_ATTN_PADDINGS}, '
                             f'got {self.padding!r}')
        k = jnp.tanh(xavier_dense(self.word_dim, name='key', dtype=self.dtype)(x))
        q = jnp.tanh(xavier_dense(self.word_dim, name='query', dtype=self.dtype)(x))
        u = jnp.tanh(xavier_dense(self.word_dim, name='value', dtype=self.dtype)(x))
        x = x.astype(u.dtype)
        if self.padding == 'masked':
            q = q * word_mask[..., None]
            count = jnp.maximum(jnp.sum(word_mask, axis=1), 1).astype(x.dtype)[:, None, None]
        else:
            count = jnp.asarray(x.shape[1], x.dtype)
        weights = jnp.einsum('bjd,bkd->bjk', k, q) / count
        return weights @ u + x


class VisualSelfAttention(nn.Module):
    """Global image vector from its regions: (B, R, E) -> (B, E), l2-normalised.

    l_k = drop(tanh(BN_l(FC(x_k)))), BN_l with the R region slots as channels (statistics
    over batch x features); g = drop(tanh(BN_g(FC(mean_k x_k)))); w = softmax_k(FC(l_k * g));
    result l2norm(sum_k w_k x_k).
    """

    embed_dim: int
    dropout_rate: float = 0.4
    bn_axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        dt = self.dtype
        local = xavier_dense(self.embed_dim, name='local', dtype=dt)(x)
        local = BatchNorm(axis_name=self.bn_axis_name, dtype=local.dtype, name='bn_local')(
            jnp.swapaxes(local, 1, 2), train)
        local = drop(jnp.tanh(jnp.swapaxes(local, 1, 2)))
        glob = xavier_dense(self.embed_dim, name='global', dtype=dt)(jnp.mean(x, axis=1))
        glob = drop(jnp.tanh(BatchNorm(axis_name=self.bn_axis_name, dtype=glob.dtype,
                                       name='bn_global')(glob, train)))
        logits = xavier_dense(1, name='common', dtype=dt)(local * glob[:, None, :])[..., 0]
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=1).astype(x.dtype)
        return l2norm(jnp.einsum('bk,bke->be', weights, x))


class TextSelfAttention(nn.Module):
    """Global caption vector from its real words: (B, L, E), (B, L) -> (B, E), l2-normalised.

    As `VisualSelfAttention` without BatchNorm; the mean and the softmax run over the
    caption's real words only.
    """

    embed_dim: int
    dropout_rate: float = 0.4
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, word_mask: Array, train: bool) -> Array:
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        dt = self.dtype
        maskf = word_mask.astype(x.dtype)
        mean = jnp.sum(x * maskf[..., None], axis=1) / jnp.maximum(
            jnp.sum(maskf, axis=1, keepdims=True), 1.0)
        local = drop(jnp.tanh(xavier_dense(self.embed_dim, name='local', dtype=dt)(x)))
        glob = drop(jnp.tanh(xavier_dense(self.embed_dim, name='global', dtype=dt)(mean)))
        logits = xavier_dense(1, name='common', dtype=dt)(local * glob[:, None, :])[..., 0]
        logits = jnp.where(word_mask, logits.astype(jnp.float32), _MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=1).astype(x.dtype)
        return l2norm(jnp.einsum('bk,bke->be', weights, x))


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the last axis whose statistics use only the entries where `mask` is True.

    PyTorch semantics like `models.resnet.BatchNorm`: normalise with the biased batch
    variance, update the running variance with the unbiased one (n / (n - 1), n = number of
    selected entries), momentum 0.1 in PyTorch's convention. With `axis_name` the sums and
    counts are `psum`-ed over that mapped axis. Masked-out entries are normalised too
    (finite, meaningless).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool) -> Array:
        c = x.shape[-1]
        scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
        bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            weight = jnp.broadcast_to(mask[..., None], x.shape).astype(jnp.float32)
            total, count = jnp.sum(xf * weight, axes), jnp.sum(weight, axes)
            if self.axis_name is not None:
                total, count = jax.lax.psum((total, count), self.axis_name)
            mean = total / jnp.maximum(count, 1.0)
            squares = jnp.sum(jnp.square(xf - mean) * weight, axes)
            if self.axis_name is not None:
                squares = jax.lax.psum(squares, self.axis_name)
            var = squares / jnp.maximum(count, 1.0)
            if not self.is_initializing():
                m = self.momentum
                unbiased = squares / jnp.maximum(count - 1.0, 1.0)
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        return (xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias

