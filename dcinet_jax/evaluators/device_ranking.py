"""Cosine ranking on the accelerator: matmul + stable sort in float32, chunked over queries.

Same ranking rule as the numpy oracle in `ranking` (descending score, ties by lower
gallery index; see docs/evaluation.md): the negated scores are sorted with a stable
`lax.sort`, carrying each item's relevance (and, with self exclusion, whether it is kept)
along as extra operands. Only the ranks of the relevant items leave the device, as a
(chunk, R_max) int32 array, and AP is then computed on the host by the same float64
function the oracle uses. So where both paths produce the same ranking, their APs are
bit-for-bit equal.

Precision: scores are float32 (float64 is missing or slow on accelerators), with the
matmul at `Precision.HIGHEST` (no TF32/bf16 passes). Rows are normalised on the host in
float64 before the cast. Items whose float64 cosines differ by less than float32
resolution (~6e-8 near 1) can then tie or swap, and those queries' APs differ from the
oracle's. Measured on random softmax features (dim 200): 400 queries x 600 items, 20
classes, 0.3-1.3% of the queries' APs differ, by at most 1.5e-5 each, and the mAP by at
most 5e-8 (tests/test_ranking.py holds it to 1e-4 and 1e-6); at the full FG-XMedia sizes
(benchmarks/retrieval.py) the largest task mAP difference was 2.6e-9. Peaky softmax
features of a trained model have many more near-ties: float32 ranking has been seen to
move a task's mAP by up to 3e-4 there. Use the numpy path for reference numbers.

On a CPU backend XLA's comparator sort is ~8x slower than numpy's SIMD argsort, so there
the numpy path is the faster one as well.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dcinet_jax.evaluators import ranking

__all__ = ['mean_average_precision', 'query_average_precisions', 'query_relevant_ranks']


@functools.partial(jax.jit, static_argnames=('max_relevant', 'exclude_self'))
def _chunk_relevant_ranks(qn, q_codes, self_idx, gn, g_codes, *, max_relevant: int,
                          exclude_self: bool):
    """(chunk, D) x (G, D) -> ((chunk, max_relevant) int32 ranks, (chunk,) int32 counts)."""
    scores = jnp.matmul(qn, gn.T, precision=lax.Precision.HIGHEST)
    col = lax.broadcasted_iota(jnp.int32, scores.shape, 1)
    relevant = q_codes[:, None] == g_codes[None, :]
    if exclude_self:
        kept = col != self_idx[:, None]
        relevant &= kept
        _, rel_sorted, kept_sorted = lax.sort(
            (-scores, relevant.astype(jnp.int32), kept.astype(jnp.int32)),
            dimension=1, is_stable=True, num_keys=1)
        rank = jnp.cumsum(kept_sorted, axis=1)
    else:
        _, rel_sorted = lax.sort((-scores, relevant.astype(jnp.int32)),
                                 dimension=1, is_stable=True, num_keys=1)
        rank = col + 1
    hits = jnp.cumsum(rel_sorted, axis=1)
    # The k-th relevant item's rank goes to column k - 1; everything else is dropped.
    slot = jnp.where(rel_sorted > 0, hits - 1, max_relevant)
    row = lax.broadcasted_iota(jnp.int32, scores.shape, 0)
    out = jnp.zeros((scores.shape[0], max_relevant), jnp.int32)
    out = out.at[row, slot].set(rank, mode='drop')
    return out, hits[:, -1]


def query_relevant_ranks(query_feats, query_labels, gallery_feats, gallery_labels, *,
                         chunk_size: int = 1024, self_indices=None) -> ranking.RelevantRanks:
    """On-device equivalent of `ranking.query_relevant_ranks` (float32 scores).

    The gallery is put on the default device once; queries go chunk_size at a time (the
    last chunk padded, so one compilation serves a task).
    """
    ranking.check_chunking(chunk_size)
    q, ql, g, gl, self_indices = ranking.check_query_gallery(
        query_feats, query_labels, gallery_feats, gallery_labels, self_indices)
    num_q, num_g = q.shape[0], g.shape[0]
    if num_q == 0 or num_g == 0:
        return ranking.RelevantRanks(np.zeros(0, np.int64), np.zeros(num_q, np.int64))
    # Dense int32 label codes (device ints are 32-bit); padding queries get -1.
    _, codes = np.unique(np.concatenate([ql, gl]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int32)
    q_codes, g_codes = codes[:num_q], codes[num_q:]
    max_relevant = int(np.bincount(g_codes).max())
    chunk = min(chunk_size, num_q)

    gn = jax.device_put(ranking.normalise_rows(g).astype(np.float32))
    g_codes_dev = jax.device_put(g_codes)
    qn = ranking.normalise_rows(q).astype(np.float32)
    self_all = (np.full(num_q, -1, np.int32) if self_indices is None
                else self_indices.astype(np.int32))

    pending = []
    for start in range(0, num_q, chunk):
        stop = min(start + chunk, num_q)
        pad = chunk - (stop - start)
        args = [qn[start:stop], q_codes[start:stop], self_all[start:stop]]
        if pad:
            args = [np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)])
                    for a, fill in zip(args, (0.0, -1, -1))]
        pending.append((stop - start, _chunk_relevant_ranks(
            args[0], args[1], args[2], gn, g_codes_dev, max_relevant=max_relevant,
            exclude_self=self_indices is not None)))

    ranks, counts = [], []
    for size, (out, count) in pending:  # all chunks were dispatched before the first wait
        out, count = np.asarray(out)[:size], np.asarray(count)[:size].astype(np.int64)
        ranks.append(out[np.arange(max_relevant)[None, :] < count[:, None]].astype(np.int64))
        counts.append(count)
    return ranking.RelevantRanks(np.concatenate(ranks), np.concatenate(counts))


def query_average_precisions(query_feats, query_labels, gallery_feats, gallery_labels, *,
                             chunk_size: int = 1024, self_indices=None) -> np.ndarray:
    """(Q,) float64 AP from the on-device ranking."""
    return ranking.average_precision_from_ranks(query_relevant_ranks(
        query_feats, query_labels, gallery_feats, gallery_labels, chunk_size=chunk_size,
        self_indices=self_indices))


def mean_average_precision(query_feats, query_labels, gallery_feats, gallery_labels, *,
                           chunk_size: int = 1024, self_indices=None) -> float:
    """mAP (mean AP over all queries, R = 0 counting as 0) from the on-device ranking."""
    ap = query_average_precisions(query_feats, query_labels, gallery_feats, gallery_labels,
                                  chunk_size=chunk_size, self_indices=self_indices)
    if ap.size == 0:
        raise ValueError('mean_average_precision: no queries')
    return float(np.mean(ap))
