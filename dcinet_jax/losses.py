"""Classification losses of DCINet (docs/model.md#loss).

L = sum over modalities of CE(original-branch logits of that modality's samples, hard
labels) + soft-target CE(interaction-branch logits, CMSI targets) over the whole batch.

Everything is computed in float32 whatever the logits dtype (bf16 log-softmax loses
too much), takes modality ids as data (one trace for any batch composition) and
returns scalars. A ``mask`` selects the samples that count; the mean is over those
samples and is 0 when none is selected. With ``axis_name`` (inside ``shard_map`` or
``pmap``) the sums and counts are ``psum``-ed first, so every device gets the mean
over the global batch even when devices hold different numbers of a modality.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ['smooth_one_hot', 'cross_entropy', 'soft_target_cross_entropy', 'dcinet_loss']


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """Float32 one-hot with timm's smoothing: off = s/K, on = 1 - s + s/K (rows sum to 1)."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
    return jnp.where(hot, jnp.float32(on), jnp.float32(off))


def _masked_mean(per_sample: jax.Array, mask: jax.Array | None,
                 axis_name: str | None) -> jax.Array:
    if mask is None:
        weights = jnp.ones_like(per_sample)
    else:
        if mask.shape != per_sample.shape:
            raise ValueError(f'loss mask must have shape {per_sample.shape}, got {mask.shape}')
        weights = mask.astype(jnp.float32)
    total = jnp.sum(per_sample * weights)
    count = jnp.sum(weights)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
        count = jax.lax.psum(count, axis_name)
    return total / jnp.maximum(count, 1.0)


def _per_sample_ce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(targets.astype(jnp.float32) * log_probs, axis=-1)


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array,
                              mask: jax.Array | None = None, *,
                              axis_name: str | None = None) -> jax.Array:
    """Mean over (masked) samples of -sum_k targets_k log softmax(logits)_k (timm's SoftTargetCrossEntropy)."""
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ValueError(f'soft_target_cross_entropy: logits {logits.shape} and targets '
                         f'{targets.shape} must both be (B, K)')
    return _masked_mean(_per_sample_ce(logits, targets), mask, axis_name)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0,
                  mask: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
    """Hard-label CE, mean over (masked) samples; smoothing as torch's ``label_smoothing``."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f'cross_entropy: logits must be (B, K) and labels (B,), got '
                         f'{logits.shape} and {labels.shape}')
    targets = smooth_one_hot(labels, logits.shape[-1], label_smoothing)
    return soft_target_cross_entropy(logits, targets, mask, axis_name=axis_name)


def dcinet_loss(logits: jax.Array, labels: jax.Array, modality: jax.Array, *,
                modalities: Sequence[str], dual_logits: jax.Array | None = None,
                dual_targets: jax.Array | None = None, axis_name: str | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DCINet's objective: (total, terms).

    terms['loss_<name>'] is the hard-label CE of the samples whose ``modality`` id is the
    index of ``name`` in ``modalities`` (mean over those samples); terms['loss_dual'] is
    the soft CE of ``dual_logits`` against ``dual_targets`` over the whole batch, present
    only when ``dual_logits`` is given. total is the sum of the terms.
    """
    if modality.shape != labels.shape:
        raise ValueError(f'dcinet_loss: modality {modality.shape} and labels {labels.shape} '
                         'must have the same shape')
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f'dcinet_loss: logits must be (B, K) and labels (B,), got '
                         f'{logits.shape} and {labels.shape}')
    # One log-softmax for all modalities; each term masks its own samples.
    per_sample = _per_sample_ce(logits, smooth_one_hot(labels, logits.shape[-1]))
    terms: dict[str, jax.Array] = {}
    for index, name in enumerate(modalities):
        terms[f'loss_{name}'] = _masked_mean(per_sample, modality == index, axis_name)
    if dual_logits is not None:
        if dual_targets is None:
            raise ValueError('dcinet_loss: dual_logits given without dual_targets')
        terms['loss_dual'] = soft_target_cross_entropy(dual_logits, dual_targets,
                                                       axis_name=axis_name)
    total = sum(terms.values(), jnp.float32(0.0))
    return total, terms
