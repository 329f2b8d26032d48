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

__all__ = ['smooth_one_hot', 'cross_entropy', 'soft_target_cross_entropy', 'dcinet_loss',
           'paired_distance', 'normalized_center_loss', 'center_loss', 'label_regression_loss']


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


# ----------------------------------------------------------------------------- DSFFN
# The audio-visual objective (docs/dsffn.md#losses): CE per modality + alpha * paired
# distance + beta * centre loss. These take one device's batch; `class_counts` lets the
# caller pass counts over the global batch.

def _safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """L2 norm with a zero (not NaN) gradient at the zero vector."""
    sq = jnp.sum(jnp.square(x), axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def paired_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """mean_i ||a_i - b_i||_2 (not squared); identical pairs give a zero gradient."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f'paired_distance: a {a.shape} and b {b.shape} must both be (B, D)')
    return jnp.mean(_safe_norm(a.astype(jnp.float32) - b.astype(jnp.float32)))


def normalized_center_loss(features: jax.Array, labels: jax.Array, centers: jax.Array, *,
                           class_counts: jax.Array | None = None) -> jax.Array:
    """1/2 sum_i ||f_i / max(||f_i||, 1e-12) - c_{y_i}||^2 / n_{y_i}.

    n_c is the number of samples of class c in the batch (`class_counts`, (m,), when the
    caller counts over a larger batch than `features`). A sum, not a mean: every class
    present contributes its mean squared distance.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f'normalized_center_loss: features must be (B, D) and labels (B,), '
                         f'got {features.shape} and {labels.shape}')
    f = features.astype(jnp.float32)
    f = f / jnp.maximum(_safe_norm(f)[:, None], 1e-12)
    if class_counts is None:
        class_counts = jnp.zeros(centers.shape[0], jnp.float32).at[labels].add(1.0)
    n = jnp.maximum(class_counts[labels].astype(jnp.float32), 1.0)
    return 0.5 * jnp.sum(jnp.sum(jnp.square(f - centers[labels]), axis=-1) / n)


def center_loss(features: jax.Array, labels: jax.Array, centers: jax.Array) -> jax.Array:
    """The paper's form: (1 / 2n) sum_i ||f_i - c_{y_i}||^2 on raw features."""
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f'center_loss: features must be (B, D) and labels (B,), got '
                         f'{features.shape} and {labels.shape}')
    d = features.astype(jnp.float32) - centers[labels]
    return 0.5 * jnp.mean(jnp.sum(jnp.square(d), axis=-1))


def label_regression_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """The paper's discrimination term: (1/n) ||scores - onehot(labels)||_F."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f'label_regression_loss: scores must be (B, K) and labels (B,), '
                         f'got {scores.shape} and {labels.shape}')
    target = jax.nn.one_hot(labels, scores.shape[-1], dtype=jnp.float32)
    return _safe_norm((scores.astype(jnp.float32) - target).reshape(-1), axis=0) / scores.shape[0]
