"""CMSI: cross-modal spatial interaction (docs/model.md#cmsi).

A jittable re-expression of timm ``Mixup`` in mode 'batch' with ``cutmix_minmax`` set
(mixup_alpha 0.8, cutmix_alpha 1.0, prob 1.0, switch_prob 1.0, so every batch is
CutMix), preceded by a random shuffle of the batch and followed by its inverse.

Instead of shuffling, flipping and unshuffling the whole batch, each sample is paired
with ``partner[i] = perm[B - 1 - inv_perm[i]]``: the sample that lands opposite it in
the shuffled batch. That is the same function with one gather instead of three, and the
partner map is an involution without fixed points whenever B is even.

The box is a {0, 1} mask built from iota comparisons, so its size and position are
data, not shapes: the whole thing traces once and runs inside ``jax.shard_map``, where
each device mixes only within its local batch.

Box sampling follows timm's ``rand_bbox_minmax`` (numpy ``randint``, upper bound
exclusive):
    cut_h = randint(int(H * lo), int(H * hi)),  cut_w likewise (independently)
    yl    = randint(0, H - cut_h),               xl    = randint(0, W - cut_w)
so the box never touches the last row/column. On 14x14 maps the box is always 7x7
(lam = 0.75), on 7x7 maps 3x3, on 28x28 maps each side is 14 or 15.

timm versions: this is the corner range of timm's Mixup as released up to 1.0.28 (the
version the reference code ran on). timm 1.0.29 widened it to ``randint(0, H - cut_h + 1)``,
so the box may touch the last row/column there; we keep the earlier range
(docs/model.md#timm-versions).

Small-map fallback (timm would crash on an empty ``randint`` range): when
``int(H * lo) >= int(H * hi)`` the cut size is ``int(H * lo)`` (likewise for W). A 4x4
map gets a 2x2 box (lam 0.75), a 2x2 map a 1x1 box, a 1x1 map no box (lam 1). The
corner range is kept non-empty (at least {0}) for the same reason.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dcinet_jax.losses import smooth_one_hot

__all__ = ['cmsi', 'cmsi_with_info', 'sample_cmsi_params', 'apply_cmsi', 'cut_size_range']


def _check_minmax(minmax: tuple[float, float]) -> tuple[float, float]:
    if len(minmax) != 2:
        raise ValueError(f'cmsi: minmax must be (lo, hi), got {minmax!r}')
    lo, hi = float(minmax[0]), float(minmax[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'cmsi: minmax must satisfy 0 <= lo <= hi <= 1, got {minmax!r}')
    return lo, hi


def cut_size_range(size: int, minmax: tuple[float, float]) -> tuple[int, int]:
    """Static [low, high) range of one box side for a map side of ``size`` pixels.

    timm's range, except that an empty range (small maps) collapses to ``int(size * lo)``.
    """
    lo, hi = _check_minmax(minmax)
    low, high = int(size * lo), int(size * hi)
    if low >= high:
        high = low + 1
    return low, high


def _check_batch(batch: int) -> None:
    if batch % 2:
        raise ValueError(
            f'cmsi: the batch size must be even (timm Mixup asserts this); got B = {batch}. '
            'Use an even number of samples per device.')


def sample_cmsi_params(rng: jax.Array, batch: int, height: int, width: int,
                       minmax: tuple[float, float] = (0.5, 0.6)) -> dict[str, jax.Array]:
    """Draw CMSI's random choices: permutation, box size and box corner.

    Kept separate from :func:`apply_cmsi` so tests can drive an independent reference
    with exactly the same choices.
    """
    _check_batch(batch)
    h_lo, h_hi = cut_size_range(height, minmax)
    w_lo, w_hi = cut_size_range(width, minmax)
    k_perm, k_h, k_w, k_y, k_x = jax.random.split(rng, 5)
    perm = jax.random.permutation(k_perm, batch)
    cut_h = jax.random.randint(k_h, (), h_lo, h_hi)
    cut_w = jax.random.randint(k_w, (), w_lo, w_hi)
    # Exclusive upper bound as numpy's randint(0, H - cut_h); keep the range non-empty.
    yl = jax.random.randint(k_y, (), 0, jnp.maximum(height - cut_h, 1))
    xl = jax.random.randint(k_x, (), 0, jnp.maximum(width - cut_w, 1))
    return {'perm': perm.astype(jnp.int32), 'cut_h': cut_h, 'cut_w': cut_w, 'yl': yl, 'xl': xl}


def apply_cmsi(x: jax.Array, labels: jax.Array, params: dict[str, jax.Array], *,
               num_classes: int, label_smoothing: float = 0.1
               ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """CutMix ``x`` (B, H, W, C) with the choices in ``params``.

    Returns (mixed, targets, info); ``info`` holds perm, partner, box (yl, yh, xl, xh),
    mask (H, W) and lam (float32 scalar). Targets are float32.
    """
    if x.ndim != 4:
        raise ValueError(f'cmsi: x must be (B, H, W, C), got shape {x.shape}')
    batch, height, width, _ = x.shape
    _check_batch(batch)
    if labels.shape != (batch,):
        raise ValueError(f'cmsi: labels must have shape ({batch},), got {labels.shape}')

    perm = params['perm']
    cut_h, cut_w, yl, xl = params['cut_h'], params['cut_w'], params['yl'], params['xl']
    inv_perm = jnp.zeros_like(perm).at[perm].set(jnp.arange(batch, dtype=perm.dtype))
    partner = perm[batch - 1 - inv_perm]

    rows = jax.lax.iota(jnp.int32, height)
    cols = jax.lax.iota(jnp.int32, width)
    in_rows = (rows >= yl) & (rows < yl + cut_h)
    in_cols = (cols >= xl) & (cols < xl + cut_w)
    mask = in_rows[:, None] & in_cols[None, :]

    mixed = jnp.where(mask[None, :, :, None], x[partner], x)

    # lam = 1 - area / (H W), each weight rounded once to float32.
    area = (cut_h * cut_w).astype(jnp.float32)
    total = float(height * width)
    lam = (total - area) / total
    other = area / total
    y_self = smooth_one_hot(labels, num_classes, label_smoothing)
    targets = y_self * lam + y_self[partner] * other

    info = {'perm': perm, 'partner': partner, 'mask': mask, 'lam': lam,
            'box': jnp.stack([yl, yl + cut_h, xl, xl + cut_w])}
    return mixed, targets, info


def cmsi_with_info(rng: jax.Array, x: jax.Array, labels: jax.Array, *, num_classes: int,
                   label_smoothing: float = 0.1, minmax: tuple[float, float] = (0.5, 0.6)
                   ) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
    """:func:`cmsi` that also returns the random choices it made (for tests and logs)."""
    if x.ndim != 4:
        raise ValueError(f'cmsi: x must be (B, H, W, C), got shape {x.shape}')
    batch, height, width, _ = x.shape
    params = sample_cmsi_params(rng, batch, height, width, minmax)
    return apply_cmsi(x, labels, params, num_classes=num_classes,
                      label_smoothing=label_smoothing)


def cmsi(rng: jax.Array, x: jax.Array, labels: jax.Array, *, num_classes: int,
         label_smoothing: float = 0.1, minmax: tuple[float, float] = (0.5, 0.6)
         ) -> tuple[jax.Array, jax.Array]:
    """Cross-modal spatial interaction: returns (mixed maps, soft float32 targets).

    x is (B, H, W, C) with B even; labels (B,) int. Every sample keeps its slot; inside
    one random box (shared by the batch) it takes the map of its partner, a random
    other sample of the batch, and its target becomes lam * own + (1 - lam) * partner's
    smoothed one-hot label.
    """
    mixed, targets, _ = cmsi_with_info(rng, x, labels, num_classes=num_classes,
                                       label_smoothing=label_smoothing, minmax=minmax)
    return mixed, targets
