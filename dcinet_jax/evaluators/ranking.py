"""Cosine ranking and average precision in numpy: the reference ("oracle") scorer.

Everything here runs on the host in float64: features are normalised and multiplied in
float64, as the FG-XMedia reference code does (scipy `cdist` works in float64). Ranking
in float32 instead reorders near-ties and moves a task's mAP by up to ~3e-4.

Ranking rule (see docs/evaluation.md): descending score, ties broken by gallery index, the
lower index first. `stable_ranking` computes it with numpy's fast (unstable, SIMD) argsort
and then puts every run of equal scores back in gallery-index order, which is the order a
stable sort would give.

Recall-style metrics reuse `ranks_of_relevant`: for every query it returns the sorted
1-based ranks of its relevant gallery items (a `RelevantRanks`); AP is computed from
those ranks by `average_precision_from_ranks`, and e.g. recall@K is
"first relevant rank <= K" (`RelevantRanks.first`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

__all__ = [
    'RelevantRanks',
    'as_feature_matrix',
    'average_precision',
    'average_precision_from_ranks',
    'check_chunking',
    'check_labels',
    'check_query_gallery',
    'cosine_similarity',
    'mean_average_precision',
    'normalise_rows',
    'query_average_precisions',
    'query_relevant_ranks',
    'ranks_of_relevant',
    'stable_ranking',
]

_EPS = 1e-12


class RelevantRanks(NamedTuple):
    """Ranks of every query's relevant gallery items, in a flat (CSR-like) layout.

    ranks: (sum of counts,) int64, 1-based ranks among the gallery items the query keeps,
      query 0's first, each query's in increasing order.
    counts: (Q,) int64, number of relevant items of each query (R; 0 is allowed).
    """
    ranks: np.ndarray
    counts: np.ndarray

    @property
    def query_index(self) -> np.ndarray:
        """(sum of counts,) the query each entry of `ranks` belongs to."""
        return np.repeat(np.arange(self.counts.size), self.counts)

    def per_query(self) -> list[np.ndarray]:
        """The ranks split into one array per query."""
        return np.split(self.ranks, np.cumsum(self.counts)[:-1]) if self.counts.size else []

    def first(self) -> np.ndarray:
        """(Q,) rank of each query's best-ranked relevant item; 0 where R = 0."""
        out = np.zeros(self.counts.size, np.int64)
        has = self.counts > 0
        starts = np.cumsum(self.counts) - self.counts
        out[has] = self.ranks[starts[has]]
        return out

    @staticmethod
    def concatenate(parts: list[RelevantRanks]) -> RelevantRanks:
        if not parts:
            return RelevantRanks(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return RelevantRanks(np.concatenate([p.ranks for p in parts]),
                             np.concatenate([p.counts for p in parts]))


# --------------------------------------------------------------------------- inputs

def as_feature_matrix(x, name: str) -> np.ndarray:
    """x as a finite float64 (N, D) matrix, or a ValueError naming `name`."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f'{name}: expected a (num_items, dim) matrix, got shape {x.shape}')
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f'{name}: features contain NaN or Inf')
    return x


def check_labels(labels, name: str, size: int) -> np.ndarray:
    """labels as (size,) int64; integral floats are accepted, anything else is an error."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != size:
        raise ValueError(f'{name}: expected shape ({size},), got {labels.shape}')
    if labels.size and labels.dtype.kind not in 'iu':
        if labels.dtype.kind == 'f' and np.all(labels == np.round(labels)):
            return labels.astype(np.int64)
        raise ValueError(f'{name}: labels must be integers, got dtype {labels.dtype}')
    return labels.astype(np.int64, copy=False)


def normalise_rows(x: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64; an all-zero row stays zero."""
    x = np.asarray(x, np.float64)
    norm = np.sqrt(np.sum(np.square(x), axis=1, keepdims=True))
    return x / np.maximum(norm, eps)


def cosine_similarity(a, b, *, eps: float = _EPS) -> np.ndarray:
    """(N, D) x (M, D) -> (N, M) float64 cosine similarities; a zero vector scores 0."""
    a = as_feature_matrix(a, 'a')
    b = as_feature_matrix(b, 'b')
    if a.shape[1] != b.shape[1]:
        raise ValueError(f'cosine_similarity: feature sizes differ: a has {a.shape[1]}, '
                         f'b has {b.shape[1]}')
    return normalise_rows(a, eps) @ normalise_rows(b, eps).T


# --------------------------------------------------------------------------- ranking

def _sort_keys(scores) -> np.ndarray:
    """Ascending sort keys (the negated scores) of a (Q, G) score matrix."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f'scores: expected (num_queries, gallery_size), got shape {scores.shape}')
    if scores.dtype.kind != 'f':
        scores = scores.astype(np.float64)  # negating unsigned ints would wrap
    if np.isnan(scores).any():
        raise ValueError('scores contain NaN: cannot rank')
    return -scores


def stable_ranking(scores) -> np.ndarray:
    """(Q, G) scores -> (Q, G) int64 gallery indices, best first, ties by lower index.

    Equal to `np.argsort(-scores, axis=1, kind='stable')`, computed as a fast unstable
    argsort followed by re-sorting, by index, only the positions that sit in a run of
    equal scores.
    """
    return _stable_argsort(_sort_keys(scores))


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    order = np.argsort(keys, axis=1)
    if keys.shape[1] > 1:
        _stabilise_ties(keys, order)
    return order


def _stabilise_ties(keys: np.ndarray, order: np.ndarray, block: int = 64) -> None:
    """Reorder, in place, each run of equal keys in `order` (a row-wise argsort) by index.

    Works on `block` rows at a time, which bounds the extra memory to block x G keys.
    """
    for start in range(0, order.shape[0], block):
        sub = order[start:start + block]
        sorted_keys = np.take_along_axis(keys[start:start + block], sub, axis=1)
        equal_next = sorted_keys[:, 1:] == sorted_keys[:, :-1]
        if not equal_next.any():
            continue
        tied = np.zeros(sub.shape, bool)
        tied[:, 1:] |= equal_next
        tied[:, :-1] |= equal_next
        rows, pos = np.nonzero(tied)  # row-major: runs are contiguous and keep key order
        index = sub[rows, pos]
        sub[rows, pos] = index[np.lexsort((index, sorted_keys[rows, pos], rows))]


def ranks_of_relevant(scores, query_labels, gallery_labels, *,
                      exclude_mask=None) -> RelevantRanks:
    """Sorted 1-based ranks of each query's relevant items under `stable_ranking`.

    An item is relevant when its label equals the query's. exclude_mask: optional (Q, G)
    bool; True removes that item from that query's gallery (it is neither relevant nor
    ranked, so the items after it move up one rank).
    """
    keys = _sort_keys(scores)
    num_q, num_g = keys.shape
    ql = check_labels(query_labels, 'query_labels', num_q)
    gl = check_labels(gallery_labels, 'gallery_labels', num_g)
    if exclude_mask is not None:
        exclude_mask = np.asarray(exclude_mask, dtype=bool)
        if exclude_mask.shape != keys.shape:
            raise ValueError(f'exclude_mask: shape {exclude_mask.shape} differs from scores '
                             f'{keys.shape}')
    return _ranks_from_keys(keys, ql, gl, exclude_mask)


def _ranks_from_keys(keys: np.ndarray, ql: np.ndarray, gl: np.ndarray,
                     exclude_mask: np.ndarray | None) -> RelevantRanks:
    """ranks_of_relevant of already validated inputs; keys are the negated scores."""
    num_q, num_g = keys.shape
    if num_q == 0 or num_g == 0:
        return RelevantRanks(np.zeros(0, np.int64), np.zeros(num_q, np.int64))
    order = _stable_argsort(keys)
    relevant = gl[None, :] == ql[:, None]
    if exclude_mask is not None:
        relevant &= ~exclude_mask
    rows, cols = np.nonzero(np.take_along_axis(relevant, order, axis=1))
    if exclude_mask is None:
        ranks = cols.astype(np.int64) + 1
    else:
        kept_sorted = ~np.take_along_axis(exclude_mask, order, axis=1)
        ranks = np.cumsum(kept_sorted, axis=1, dtype=np.int32)[rows, cols].astype(np.int64)
    return RelevantRanks(ranks, np.bincount(rows, minlength=num_q).astype(np.int64))


def average_precision_from_ranks(ranks: RelevantRanks) -> np.ndarray:
    """(Q,) float64 AP: the k-th relevant item at rank r adds k / r; divided by R (0 if R = 0)."""
    counts = ranks.counts
    if counts.size == 0:
        return np.zeros(0, np.float64)
    rows = ranks.query_index
    first = np.cumsum(counts) - counts
    k = np.arange(rows.size, dtype=np.float64) - first[rows] + 1.0
    total = np.bincount(rows, weights=k / ranks.ranks, minlength=counts.size)
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0)


def average_precision(scores, query_labels, gallery_labels, *,
                      exclude_mask=None) -> np.ndarray:
    """AP of every query over the whole gallery ((Q, G) scores -> (Q,) float64).

    AP = (1/R) sum over the relevant ranks r_1 < ... < r_R of k / r_k; R = 0 gives 0.
    """
    return average_precision_from_ranks(
        ranks_of_relevant(scores, query_labels, gallery_labels, exclude_mask=exclude_mask))


# --------------------------------------------------------------------------- from features

def check_query_gallery(query_feats, query_labels, gallery_feats, gallery_labels,
                        self_indices=None):
    """Validated (q, ql, g, gl, self_indices) for the feature-level scorers."""
    q = as_feature_matrix(query_feats, 'query_feats')
    g = as_feature_matrix(gallery_feats, 'gallery_feats')
    if q.shape[1] != g.shape[1]:
        raise ValueError(f'feature sizes differ: queries {q.shape[1]}, gallery {g.shape[1]}')
    ql = check_labels(query_labels, 'query_labels', q.shape[0])
    gl = check_labels(gallery_labels, 'gallery_labels', g.shape[0])
    if self_indices is not None:
        self_indices = np.asarray(self_indices)
        if self_indices.shape != (q.shape[0],) or self_indices.dtype.kind not in 'iu':
            raise ValueError(f'self_indices: expected ({q.shape[0]},) ints, got '
                             f'{self_indices.shape} {self_indices.dtype}')
        if self_indices.size and (self_indices.min() < 0 or self_indices.max() >= g.shape[0]):
            raise ValueError(f'self_indices: values must lie in [0, {g.shape[0]})')
    return q, ql, g, gl, self_indices


def check_chunking(chunk_size: int, num_workers: int = 1) -> None:
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    if num_workers < 1:
        raise ValueError(f'num_workers must be >= 1, got {num_workers}')


def query_relevant_ranks(query_feats, query_labels, gallery_feats, gallery_labels, *,
                         chunk_size: int = 1024, self_indices=None,
                         num_workers: int = 1) -> RelevantRanks:
    """`ranks_of_relevant` of the cosine scores, chunk_size queries at a time.

    self_indices: optional (Q,) ints, each query's own row in the gallery, which is then
    removed from that query's gallery (None keeps it, as the reference code does).
    num_workers threads score chunks concurrently (numpy's sort, gathers and BLAS release
    the GIL). Peak memory is about 20 bytes x num_workers x chunk_size x G. The result
    does not depend on chunk_size or num_workers.
    """
    check_chunking(chunk_size, num_workers)
    q, ql, g, gl, self_indices = check_query_gallery(
        query_feats, query_labels, gallery_feats, gallery_labels, self_indices)
    qn = normalise_rows(q)
    neg_gn_t = np.ascontiguousarray(-normalise_rows(g).T)  # the matmul yields the sort keys

    def score_chunk(start: int) -> RelevantRanks:
        stop = min(start + chunk_size, q.shape[0])
        keys = qn[start:stop] @ neg_gn_t  # = -cosine, exactly (negation is exact)
        mask = None
        if self_indices is not None:
            mask = np.zeros(keys.shape, bool)
            mask[np.arange(stop - start), self_indices[start:stop]] = True
        return _ranks_from_keys(keys, ql[start:stop], gl, mask)

    return RelevantRanks.concatenate(_map_chunks(score_chunk, q.shape[0], chunk_size,
                                                 num_workers))


def _map_chunks(fn: Callable[[int], RelevantRanks], num: int, chunk_size: int,
                num_workers: int) -> list[RelevantRanks]:
    starts = range(0, num, chunk_size)
    if num_workers <= 1 or len(starts) <= 1:
        return [fn(s) for s in starts]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(fn, starts))


def query_average_precisions(query_feats, query_labels, gallery_feats, gallery_labels, *,
                             chunk_size: int = 1024, self_indices=None,
                             num_workers: int = 1) -> np.ndarray:
    """(Q,) float64 AP of every query over the gallery, cosine-ranked (see query_relevant_ranks)."""
    return average_precision_from_ranks(query_relevant_ranks(
        query_feats, query_labels, gallery_feats, gallery_labels, chunk_size=chunk_size,
        self_indices=self_indices, num_workers=num_workers))


def mean_average_precision(query_feats, query_labels, gallery_feats, gallery_labels, *,
                           chunk_size: int = 1024, self_indices=None,
                           num_workers: int = 1) -> float:
    """mAP = mean AP over all queries (queries with R = 0 count as 0)."""
    ap = query_average_precisions(query_feats, query_labels, gallery_feats, gallery_labels,
                                  chunk_size=chunk_size, self_indices=self_indices,
                                  num_workers=num_workers)
    if ap.size == 0:
        raise ValueError('mean_average_precision: no queries')
    return float(np.mean(ap))
