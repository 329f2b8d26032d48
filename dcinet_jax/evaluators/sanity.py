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
_BLOCK_ROWS = 1024

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
    sample = np.asarray(x[np.unique(np.linspace(0, n - 1, _SAMPLE_ROWS).astype(int))],
                        np.float64)
    if normalise:
        sample = _unit_rows(sample)
    common = np.median(sample, axis=0)
    tol = COLLAPSE_TOLERANCE * max(float(np.max(np.abs(common), initial=0.0)), 1e-12)
    same = 0
    for lo in range(0, n, _BLOCK_ROWS):
        block = np.asarray(x[lo:lo + _BLOCK_ROWS], np.float64)
        if normalise:
            block = _unit_rows(block)
        same += int(np.count_nonzero(np.max(np.abs(block - common), axis=1,
                                            initial=0.0) <= tol))
    return same


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
