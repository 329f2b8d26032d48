"""Refuse features that cannot be ranked: non-finite or collapsed (docs/evaluation.md#refused).

Why: every ranking here breaks exact score ties by gallery index, so a model whose
features are all the same vector (a collapsed model: one saturated softmax for every
item) still gets a number, and a plausible-looking one: 0.430 bi-modal mAP on the
4-class test demo, where chance is about 0.25. The evaluators therefore check each
modality's features (or each side of a score matrix) before scoring, the way they
already refuse NaN features, and raise one line naming the set and the likely cause.
"""

from __future__ import annotations

import numpy as np

# A set is collapsed when at least this share of its items is one and the same vector.
COLLAPSE_FRACTION = 0.99
# Rows closer than this (max abs difference, relative to the common row's largest entry,
# after L2 normalisation for features) count as the same vector.
COLLAPSE_TOLERANCE = 1e-6
# Evenly spaced rows whose component-wise median is taken as the common vector: when 99%
# of the rows share one vector, the median of any such sample is that vector.
_SAMPLE_ROWS = 65
# Rows compared at a time: about this many entries (16 MB of float64), so a wide matrix
# (the transposed scores of a large gallery) is read in bounded blocks too.
_BLOCK_ENTRIES = 1 << 21

CHECKPOINT_CAUSE = ('the checkpoint has collapsed or diverged (it is not the data): '
                    'evaluate an earlier step with --step N, or retrain from one with '
                    'dcinet train --restore_step N and a lower learning rate')


class DegenerateFeaturesError(ValueError):
    """Features that every ranking would tie on; scoring them would report a fake mAP.
    `summary` is the finding alone (which set, how many items), for other messages."""

    def __init__(self, summary: str, message: str):
        self.summary = summary
        super().__init__(message)


def check_finite(x, what: str, cause: str = 'the checkpoint is probably diverged') -> None:
    """ValueError naming `what` and how many rows hold NaN/Inf."""
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in 'fc':
        return
    bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
    if bad:
        raise ValueError(f'{what}: {bad} of {x.shape[0]} items are not finite (NaN/Inf); '
                         f'{cause}')


def identical_rows(x, *, normalise: bool = True) -> int:
    """How many rows of the (N, D) matrix `x` equal the common row (within
    COLLAPSE_TOLERANCE): the component-wise median of evenly spaced sample rows, which is
    the most common row whenever that one holds most rows (the only case that matters
    here; otherwise the count is a lower bound). Rows are L2-normalised first when
    `normalise` (cosine ranking sees only directions). Read block by block, so a
    memory-mapped matrix is fine."""
    x = np.asarray(x) if not hasattr(x, 'shape') else x
    n = x.shape[0]
    if n == 0:
        return 0
    common = _common_row(x, np.unique(np.linspace(0, n - 1, _SAMPLE_ROWS).astype(int)),
                         normalise)
    tol = COLLAPSE_TOLERANCE * max(float(np.max(np.abs(common), initial=0.0)), 1e-12)
    same = 0
    step = max(1, _BLOCK_ENTRIES // max(1, int(np.prod(x.shape[1:]))))
    for lo in range(0, n, step):
        block = np.asarray(x[lo:lo + step], np.float64)
        if normalise:
            block = _unit_rows(block)
        same += int(np.count_nonzero(np.max(np.abs(block - common), axis=1,
                                            initial=0.0) <= tol))
    return same


def _common_row(x, rows: np.ndarray, normalise: bool) -> np.ndarray:
    """The component-wise median of x[rows] (unit rows with `normalise`), read a few
    columns at a time when the rows are wide (a large gallery's scores), so the sample
    takes about _BLOCK_ENTRIES floats; one block (the same numbers as the whole sample)
    whenever the rows are at most _BLOCK_ENTRIES / len(rows) wide, as features are."""
    width = int(x.shape[1]) if x.ndim == 2 else 0
    cols = max(1, _BLOCK_ENTRIES // len(rows))
    if x.ndim != 2 or cols >= width:
        sample = np.asarray(x[rows], np.float64)
        return np.median(_unit_rows(sample) if normalise else sample, axis=0)
    norm = 1.0
    if normalise:
        square = sum(np.sum(np.square(np.asarray(x[rows, lo:lo + cols], np.float64)), axis=1)
                     for lo in range(0, width, cols))
        norm = np.maximum(np.sqrt(square), 1e-12)[:, None]
    common = np.empty(width, np.float64)
    for lo in range(0, width, cols):
        common[lo:lo + cols] = np.median(np.asarray(x[rows, lo:lo + cols], np.float64) / norm,
                                         axis=0)
    return common


def check_not_collapsed(x, what: str, *, normalise: bool = True,
                        cause: str = CHECKPOINT_CAUSE) -> None:
    """DegenerateFeaturesError when at least COLLAPSE_FRACTION of the rows of `x` (two
    or more) are one vector: zero variance, so the tie rule alone would decide the mAP."""
    n = int(x.shape[0])
    if n < 2:
        return
    same = identical_rows(x, normalise=normalise)
    if same >= COLLAPSE_FRACTION * n:
        summary = f'{what}: {same} of {n} items have the same feature vector'
        raise DegenerateFeaturesError(
            summary, f'{summary}, so every score ties and only the tie rule would rank '
            f'them (a plausible-looking but meaningless mAP); {cause}')


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.sum(np.square(x), axis=1, keepdims=True))
    return x / np.maximum(norm, 1e-12)
