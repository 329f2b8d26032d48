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
           'paired_distance', 'normalized_center_loss', 'center_loss', 'label_regression_loss',
           'fgcrossnet_centre_loss', 'batch_mean_centres', 'pairwise_distances',
           'quadruplet_mask', 'quadruplet_ranking_loss', 'hardest_negative_triplet',
           'all_negatives_triplet']


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


# ----------------------------------------------------------------------------- FGCrossNet
# The FG-XMedia benchmark's objective (docs/fgcrossnet.md#losses): per-media CE +
# 0.001 * centre + 0.1 * quadruplet ranking, all on the 200-d logits of the whole batch.

def fgcrossnet_centre_loss(features: jax.Array, labels: jax.Array,
                           centres: jax.Array) -> jax.Array:
    """(1/N) sum_k ||x_k - c_{y_k}||^2: squared distance, batch mean, no 1/2.

    `centres` (K, D) are learned parameters (the released code's form; their gradient
    scaling lives in the optimizer) or per-batch class means from `batch_mean_centres`.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f'fgcrossnet_centre_loss: features must be (B, D) and labels (B,), '
                         f'got {features.shape} and {labels.shape}')
    if centres.ndim != 2 or centres.shape[1] != features.shape[1]:
        raise ValueError(f'fgcrossnet_centre_loss: centres {centres.shape} must be (K, '
                         f'{features.shape[1]})')
    d = features.astype(jnp.float32) - centres.astype(jnp.float32)[labels]
    return jnp.mean(jnp.sum(jnp.square(d), axis=-1))


def batch_mean_centres(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """(K, D) per-class means of `features` in this batch, without gradient (the paper's
    wording: centres recomputed from each batch); classes absent from the batch get 0."""
    f = jax.lax.stop_gradient(features.astype(jnp.float32))
    sums = jnp.zeros((num_classes, f.shape[1]), jnp.float32).at[labels].add(f)
    counts = jnp.zeros((num_classes,), jnp.float32).at[labels].add(1.0)
    return sums / jnp.maximum(counts, 1.0)[:, None]


def pairwise_distances(x: jax.Array, *, squared: bool = False) -> jax.Array:
    """(N, N) Euclidean distances (or squared); zero distances have a zero gradient."""
    x = x.astype(jnp.float32)
    diff = x[:, None, :] - x[None, :, :]
    if squared:
        return jnp.sum(jnp.square(diff), axis=-1)
    return _safe_norm(diff)


def quadruplet_mask(labels: jax.Array) -> jax.Array:
    """bool (N, N, N, N): ordered 4-tuples (i, j, k, l) of distinct items with
    y_i = y_j, y_k != y_i, y_l != y_i, y_k != y_l (media play no part)."""
    y = labels
    n = y.shape[0]
    same = y[:, None] == y[None, :]
    not_self = ~jnp.eye(n, dtype=jnp.bool_)
    pos_ij = (same & not_self)[:, :, None, None]        # i != j, same class
    neg_ik = (~same)[:, None, :, None]                  # y_k != y_i
    neg_il = (~same)[:, None, None, :]                  # y_l != y_i
    neg_kl = (~same)[None, None, :, :]                  # y_k != y_l
    return pos_ij & neg_ik & neg_il & neg_kl            # the class conditions make k, l distinct from i, j


def quadruplet_ranking_loss(features: jax.Array, labels: jax.Array, *, margin1: float = 1.0,
                            margin2: float = 0.5, squared: bool = False,
                            two_hinges: bool = False, reduction: str = 'mean_positive'
                            ) -> jax.Array:
    """FGCrossNet's ranking loss over every valid ordered 4-tuple of the batch.

    Default (the released code): D plain L2, t = max(0, (D_ij - D_ik + margin1) +
    (D_ij - D_kl + margin2)), loss = sum t / #(t > 1e-16), 0 when no term is positive.
    The paper's form: `squared=True` (D = squared L2), `two_hinges=True` (max(0, D_ij -
    D_ik + margin1) + max(0, D_ij - D_kl + margin2)), `reduction='sum'`. The 4-tuple
    array is materialised (N^4 entries: 65,536 at N = 16).
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f'quadruplet_ranking_loss: features must be (B, D) and labels (B,), '
                         f'got {features.shape} and {labels.shape}')
    if reduction not in ('mean_positive', 'sum'):
        raise ValueError(f"quadruplet_ranking_loss: reduction={reduction!r}: expected "
                         "'mean_positive' or 'sum'")
    d = pairwise_distances(features, squared=squared)
    d_ij = d[:, :, None, None]
    d_ik = d[:, None, :, None]
    d_kl = d[None, None, :, :]
    triple = d_ij - d_ik + margin1
    quad = d_ij - d_kl + margin2
    if two_hinges:
        t = jax.nn.relu(triple) + jax.nn.relu(quad)
    else:
        t = jax.nn.relu(triple + quad)
    t = jnp.where(quadruplet_mask(labels), t, 0.0)
    total = jnp.sum(t)
    if reduction == 'sum':
        return total
    count = jnp.sum((t > 1e-16).astype(jnp.float32))
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def hardest_negative_triplet(scores: jax.Array, margin: float = 0.2, *,
                            negative_mask: jax.Array | None = None, reduction: str = 'sum'
                            ) -> jax.Array:
    """HSLM's (VSE++ max-violation) triplet loss on a square score matrix (docs/hslm_model.md#loss).

    ``scores[i, k]`` = score(image i, caption k); the positives are on the diagonal. Per
    positive, only the hardest negative counts in each direction:
    max_{k != i} [margin - S_ii + S_ik]_+ (captions for image i) plus
    max_{j != i} [margin - S_ii + S_ji]_+ (images for caption i). ``negative_mask[i, k]``
    True removes pair (i, k) from the negatives of both row i and column k (e.g. captions
    of the same image). ``reduction``: 'sum' (the reference), 'mean' or 'none' (B,).
    Computed in float32; a positive with no allowed negative contributes 0.
    """
    return _triplet(scores, margin, negative_mask, reduction, jnp.max, 'hardest_negative_triplet')


def all_negatives_triplet(scores: jax.Array, margin: float = 0.2, *,
                          negative_mask: jax.Array | None = None, reduction: str = 'sum'
                          ) -> jax.Array:
    """The triplet loss summed over every negative (VSE0), HSLM's optional warm-up
    before `hardest_negative_triplet` (docs/hslm.md#warm-up): per positive i,
    sum_{k != i} [margin - S_ii + S_ik]_+ + sum_{j != i} [margin - S_ii + S_ji]_+, with
    the same `negative_mask` and `reduction` as `hardest_negative_triplet`.
    """
    return _triplet(scores, margin, negative_mask, reduction, jnp.sum, 'all_negatives_triplet')


def _triplet(scores, margin, negative_mask, reduction, pool, name):
    """Both triplet losses: the hinge costs of every (positive, negative) pair in each
    direction, pooled over the negatives by `pool` (max: hardest, sum: all)."""
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f'{name}: scores must be square (B, B), got {scores.shape}')
    if reduction not in ('sum', 'mean', 'none'):
        raise ValueError(f"{name}: reduction={reduction!r}: expected 'sum', 'mean' or 'none'")
    s = scores.astype(jnp.float32)
    excluded = jnp.eye(s.shape[0], dtype=jnp.bool_)
    if negative_mask is not None:
        if negative_mask.shape != s.shape:
            raise ValueError(f'{name}: negative_mask {negative_mask.shape} != scores {s.shape}')
        excluded = excluded | negative_mask.astype(jnp.bool_)
    positives = jnp.diagonal(s)
    cost_captions = jnp.where(excluded, 0.0, jax.nn.relu(margin - positives[:, None] + s))
    cost_images = jnp.where(excluded, 0.0, jax.nn.relu(margin - positives[None, :] + s))
    per_positive = pool(cost_captions, axis=1) + pool(cost_images, axis=0)
    if reduction == 'sum':
        return jnp.sum(per_positive)
    if reduction == 'mean':
        return jnp.mean(per_positive)
    return per_positive
