"""Retrieval evaluation with the FG-XMedia benchmark protocol (SPEC 4).

Features -> cosine similarity -> full-gallery ranking -> AP per query -> mAP per task,
for the bi-modal tasks (every ordered pair of distinct modalities) and the multi-modal
X->all tasks (gallery = every modality's set stacked). Plain numpy: this runs on the
host after features have been pulled off the accelerator, and a sort is what it costs.

Ranking is by descending score with ties broken by gallery index (the lower index first),
so every number is deterministic. The sort is numpy's fast (unstable, SIMD) argsort;
in the rows where a relevant and a non-relevant item tie, runs of equal scores are then
put back in gallery-index order.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    'AP_DEFINITION',
    'MODALITY_ORDER',
    'PAPER_REFERENCE',
    'RANKING',
    'SIMILARITY',
    'average_precision',
    'cosine_similarity',
    'evaluate',
    'format_table',
    'mean_average_precision',
    'paper_reference_table',
    'query_average_precisions',
    'save_results',
    'task_keys',
]

# Query (and bi-modal gallery) order used by the paper's tables.
MODALITY_ORDER: tuple[str, ...] = ('image', 'text', 'audio', 'video')
_LETTER = {'image': 'i', 'text': 't', 'audio': 'a', 'video': 'v'}

SIMILARITY = 'cosine'
RANKING = 'full gallery, stable ties by gallery index'
AP_DEFINITION = ('AP = (1/R) * sum over relevant ranks j of (relevant items in top j) / j, '
                 'R = relevant gallery items; R = 0 gives AP 0; mAP = mean AP over all queries')

# SPEC 5: numbers printed in the papers, on the real PKU FG-XMedia test sets. Only for
# side-by-side reading; nothing here is ever compared against a run automatically.
PAPER_REFERENCE: dict[str, dict] = {
    'DCINet (paper, ResNet50 layer4, real FG-XMedia)': {
        'bimodal': {'i2t': 0.242, 'i2a': 0.572, 't2i': 0.294, 't2a': 0.242,
                    'a2i': 0.585, 'a2t': 0.205},
        'bimodal_average': 0.357,
        'multimodal': {'i2all': 0.535, 't2all': 0.238, 'a2all': 0.458},
        'multimodal_average': 0.411,
    },
    'ResNet50 baseline, no CMSI/CMCI (paper, real FG-XMedia)': {
        'bimodal': {}, 'bimodal_average': 0.340,
        'multimodal': {}, 'multimodal_average': 0.397,
    },
    'FGCrossNet, 4 media incl. video (paper, real FG-XMedia)': {
        'bimodal': {}, 'bimodal_average': 0.366,
        'multimodal': {}, 'multimodal_average': 0.412,
    },
}


# --------------------------------------------------------------------------- scoring

def cosine_similarity(a: np.ndarray, b: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """(N, D) x (M, D) -> (N, M) cosine similarities; a zero vector scores 0 with everything.

    Float32 inputs stay float32 (what the benchmark features are); anything else is float64.
    """
    a = _as_float_matrix(a, 'a')
    b = _as_float_matrix(b, 'b')
    if a.shape[1] != b.shape[1]:
        raise ValueError(f'cosine_similarity: feature sizes differ: a has {a.shape[1]}, '
                         f'b has {b.shape[1]}')
    dtype = np.result_type(a.dtype, b.dtype)
    return _normalise(a, eps).astype(dtype, copy=False) @ _normalise(b, eps).astype(dtype, copy=False).T


def _as_float_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f'{name}: expected a (num_items, dim) matrix, got shape {x.shape}')
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f'{name}: features contain NaN or Inf')
    return x


def _normalise(x: np.ndarray, eps: float) -> np.ndarray:
    norm = np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=1, keepdims=True))
    return (x / np.maximum(norm, eps)).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- AP

def average_precision(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      *, exclude_mask: np.ndarray | None = None) -> np.ndarray:
    """AP of every query over the whole gallery, ranked by descending score (SPEC 4).

    scores: (Q, G) similarities. query_labels: (Q,) ints; gallery_labels: (G,) ints.
    exclude_mask: optional (Q, G) bool, True removes that item from that query's gallery
    (it neither counts as relevant nor takes a rank). Returns float64 (Q,).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f'scores: expected (num_queries, gallery_size), got shape {scores.shape}')
    num_q, num_g = scores.shape
    ql = _labels(query_labels, 'query_labels', num_q)
    gl = _labels(gallery_labels, 'gallery_labels', num_g)
    if exclude_mask is not None:
        exclude_mask = np.asarray(exclude_mask, dtype=bool)
        if exclude_mask.shape != scores.shape:
            raise ValueError(f'exclude_mask: shape {exclude_mask.shape} differs from scores '
                             f'{scores.shape}')
    if num_q == 0:
        return np.zeros(0, np.float64)
    if num_g == 0:
        return np.zeros(num_q, np.float64)
    if scores.dtype.kind != 'f':
        scores = scores.astype(np.float64)  # negation below must not wrap for unsigned ints
    if np.isnan(scores).any():
        raise ValueError('scores contain NaN: cannot rank')

    # Descending order by numpy's fast unstable sort. Ties only change an AP where a
    # relevant item ties with a non-relevant one; in those rows, runs of equal scores are
    # put back in gallery-index order, which makes the ranking a stable sort's.
    neg = -scores
    order = np.argsort(neg, axis=1)
    relevant = gl[None, :] == ql[:, None]
    if exclude_mask is not None:
        relevant &= ~exclude_mask
    rel_sorted = np.take_along_axis(relevant, order, axis=1)
    redo = _rows_with_mixed_ties(neg, order, rel_sorted)
    if redo.size:
        sub = order[redo]
        _stabilise_ties(neg[redo], sub)
        order[redo] = sub
        rel_sorted[redo] = np.take_along_axis(relevant[redo], sub, axis=1)

    # Only relevant positions contribute: the k-th relevant item of a row at 0-based
    # position p (among kept items) adds k / (p + 1).
    rows, cols = np.nonzero(rel_sorted)
    num_relevant = np.bincount(rows, minlength=num_q)
    first = np.cumsum(num_relevant) - num_relevant
    k = np.arange(rows.size, dtype=np.float64) - first[rows] + 1.0
    if exclude_mask is None:
        rank = cols + 1.0
    else:
        kept_sorted = ~np.take_along_axis(exclude_mask, order, axis=1)
        rank = np.cumsum(kept_sorted, axis=1, dtype=np.int32)[rows, cols].astype(np.float64)
    precision_sum = np.bincount(rows, weights=k / rank, minlength=num_q)
    return np.where(num_relevant > 0, precision_sum / np.maximum(num_relevant, 1), 0.0)


def _rows_with_mixed_ties(keys: np.ndarray, order: np.ndarray,
                          rel_sorted: np.ndarray) -> np.ndarray:
    """Rows where, after sorting, a relevant item sits next to an equal-keyed other item.

    Permuting a run of equal keys that are all relevant (or all not) leaves AP unchanged,
    and a mixed run always has such an adjacent pair, so these rows are all that need fixing.
    """
    rows, cols = np.nonzero(rel_sorted[:, :-1] != rel_sorted[:, 1:])
    if rows.size == 0:
        return rows
    left = keys[rows, order[rows, cols]]
    right = keys[rows, order[rows, cols + 1]]
    return np.unique(rows[left == right])


def _stabilise_ties(keys: np.ndarray, order: np.ndarray) -> None:
    """Reorder, in place, each run of equal keys in `order` (a row-wise argsort) by index.

    After this, `order` equals a stable argsort of `keys`, at the cost of a gather and a
    small lexsort over the tied positions only.
    """
    sorted_keys = np.take_along_axis(keys, order, axis=1)
    equal_next = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    if not equal_next.any():
        return
    tied = np.zeros(order.shape, bool)
    tied[:, 1:] |= equal_next
    tied[:, :-1] |= equal_next
    rows, pos = np.nonzero(tied)  # row-major: each run is contiguous and runs keep key order
    index = order[rows, pos]
    order[rows, pos] = index[np.lexsort((index, sorted_keys[rows, pos], rows))]


def _labels(labels: np.ndarray, name: str, size: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != size:
        raise ValueError(f'{name}: expected shape ({size},), got {labels.shape}')
    if labels.size and labels.dtype.kind not in 'iu':
        if labels.dtype.kind == 'f' and np.all(labels == np.round(labels)):
            return labels.astype(np.int64)
        raise ValueError(f'{name}: labels must be integers, got dtype {labels.dtype}')
    return labels.astype(np.int64, copy=False)


def query_average_precisions(query_feats: np.ndarray, query_labels: np.ndarray,
                             gallery_feats: np.ndarray, gallery_labels: np.ndarray, *,
                             chunk_size: int = 1024,
                             self_indices: np.ndarray | None = None,
                             num_workers: int = 1) -> np.ndarray:
    """Per-query AP with cosine similarity, scored chunk_size queries at a time.

    Peak memory is O(num_workers x chunk_size x G), about 30 bytes per score. self_indices
    (Q,) gives each query's own row in the gallery, which is then removed from that query's
    gallery; None keeps it (reference). Results do not depend on chunk_size or num_workers.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    if num_workers < 1:
        raise ValueError(f'num_workers must be >= 1, got {num_workers}')
    q = _as_float_matrix(query_feats, 'query_feats')
    g = _as_float_matrix(gallery_feats, 'gallery_feats')
    if q.shape[1] != g.shape[1]:
        raise ValueError(f'feature sizes differ: queries {q.shape[1]}, gallery {g.shape[1]}')
    ql = _labels(query_labels, 'query_labels', q.shape[0])
    gl = _labels(gallery_labels, 'gallery_labels', g.shape[0])
    if self_indices is not None:
        self_indices = np.asarray(self_indices)
        if self_indices.shape != (q.shape[0],) or self_indices.dtype.kind not in 'iu':
            raise ValueError(f'self_indices: expected ({q.shape[0]},) ints, got '
                             f'{self_indices.shape} {self_indices.dtype}')
        if self_indices.size and (self_indices.min() < 0 or self_indices.max() >= g.shape[0]):
            raise ValueError(f'self_indices: values must lie in [0, {g.shape[0]})')
    dtype = np.result_type(q.dtype, g.dtype)
    qn = _normalise(q, 1e-12).astype(dtype, copy=False)
    gn_t = np.ascontiguousarray(_normalise(g, 1e-12).astype(dtype, copy=False).T)
    out = np.zeros(q.shape[0], np.float64)

    def score_chunk(start: int) -> None:
        stop = min(start + chunk_size, q.shape[0])
        scores = qn[start:stop] @ gn_t
        mask = None
        if self_indices is not None:
            mask = np.zeros(scores.shape, bool)
            mask[np.arange(stop - start), self_indices[start:stop]] = True
        out[start:stop] = average_precision(scores, ql[start:stop], gl, exclude_mask=mask)

    starts = range(0, q.shape[0], chunk_size)
    if num_workers <= 1 or len(starts) <= 1:
        for start in starts:
            score_chunk(start)
    else:
        # numpy's sort, gathers and BLAS release the GIL, so threads scale on a many-core host.
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            for _ in pool.map(score_chunk, starts):
                pass
    return out


def mean_average_precision(query_feats: np.ndarray, query_labels: np.ndarray,
                           gallery_feats: np.ndarray, gallery_labels: np.ndarray, *,
                           chunk_size: int = 1024,
                           self_indices: np.ndarray | None = None,
                           num_workers: int = 1) -> float:
    """mAP = mean over all queries (R = 0 queries count as 0) of the cosine-ranked AP."""
    ap = query_average_precisions(query_feats, query_labels, gallery_feats, gallery_labels,
                                  chunk_size=chunk_size, self_indices=self_indices,
                                  num_workers=num_workers)
    if ap.size == 0:
        raise ValueError('mean_average_precision: no queries')
    return float(np.mean(ap))


# --------------------------------------------------------------------------- protocol

def task_keys(modalities: Sequence[str]) -> tuple[list[str], list[str]]:
    """Bi-modal and X->all task keys in the paper's order for the given modalities."""
    present = _ordered(modalities)
    bimodal = [f'{_LETTER[q]}2{_LETTER[g]}' for q in present for g in present if q != g]
    multimodal = [f'{_LETTER[q]}2all' for q in present]
    return bimodal, multimodal


def _ordered(modalities: Sequence[str]) -> list[str]:
    unknown = [m for m in modalities if m not in _LETTER]
    if unknown:
        raise ValueError(f'unknown modality {unknown}; expected some of {list(MODALITY_ORDER)}')
    return [m for m in MODALITY_ORDER if m in modalities]


def evaluate(features: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
             exclude_self: bool = False, chunk_size: int = 1024,
             feature_kind: str | None = None, num_workers: int = 1) -> dict:
    """Every bi-modal and X->all mAP for features = {modality: (feats (N, D), labels (N,))}.

    X->all galleries stack the modalities in the dict's order (that order only breaks
    exact score ties). The caller adds "step".
    """
    if len(features) < 2:
        raise ValueError(f'evaluate: need at least two modalities, got {list(features)}')
    present = _ordered(list(features))
    feats, labels = {}, {}
    for m in features:
        pair = features[m]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f'features[{m!r}]: expected a (features, labels) pair')
        feats[m] = _as_float_matrix(pair[0], f'features[{m!r}][0]')
        labels[m] = _labels(pair[1], f'features[{m!r}][1]', feats[m].shape[0])
    dims = {m: f.shape[1] for m, f in feats.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f'evaluate: feature sizes differ between modalities: {dims}')

    bimodal: dict[str, float] = {}
    for q in present:
        for g in present:
            if q != g:
                bimodal[f'{_LETTER[q]}2{_LETTER[g]}'] = mean_average_precision(
                    feats[q], labels[q], feats[g], labels[g], chunk_size=chunk_size,
                    num_workers=num_workers)

    gallery_order = list(features)
    offsets, start = {}, 0
    for m in gallery_order:
        offsets[m] = start
        start += feats[m].shape[0]
    all_feats = np.concatenate([feats[m] for m in gallery_order], axis=0)
    all_labels = np.concatenate([labels[m] for m in gallery_order], axis=0)
    multimodal: dict[str, float] = {}
    for q in present:
        self_idx = (offsets[q] + np.arange(feats[q].shape[0])) if exclude_self else None
        multimodal[f'{_LETTER[q]}2all'] = mean_average_precision(
            feats[q], labels[q], all_feats, all_labels, chunk_size=chunk_size,
            self_indices=self_idx, num_workers=num_workers)

    return {
        'bimodal': bimodal,
        'multimodal': multimodal,
        'bimodal_average': float(np.mean(list(bimodal.values()))),
        'multimodal_average': float(np.mean(list(multimodal.values()))),
        'protocol': {
            'similarity': SIMILARITY,
            'ranking': RANKING,
            'ap_definition': AP_DEFINITION,
            'exclude_self': bool(exclude_self),
            'counts': {m: int(feats[m].shape[0]) for m in gallery_order},
            'multimodal_gallery_order': gallery_order,
            'feature': feature_kind,
        },
    }


# --------------------------------------------------------------------------- reporting

def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '—'
    return f'{value:.3f}'


def _tables(rows: list[tuple[str, dict]], bimodal_keys: list[str],
            multimodal_keys: list[str]) -> str:
    out = []
    for title, part, avg, keys in (('Bi-modal retrieval (mAP)', 'bimodal', 'bimodal_average',
                                    bimodal_keys),
                                   ('Multi-modal retrieval X->all (mAP)', 'multimodal',
                                    'multimodal_average', multimodal_keys)):
        out.append(f'**{title}**')
        out.append('')
        out.append('| Method | ' + ' | '.join(keys + ['Avg']) + ' |')
        out.append('|---|' + '---:|' * (len(keys) + 1))
        for name, res in rows:
            cells = [_fmt(res.get(part, {}).get(k)) for k in keys] + [_fmt(res.get(avg))]
            out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        out.append('')
    return '\n'.join(out)


def format_table(results: Mapping, *, name: str = 'This run',
                 with_paper: bool = False) -> str:
    """Markdown in the layout of the paper's Tables 1-2: bi-modal tasks + Avg, then X->all + Avg.

    with_paper adds the SPEC 5 paper rows (real dataset) under this run's row.
    """
    bimodal_keys = list(results['bimodal'])
    multimodal_keys = list(results['multimodal'])
    rows = [(name, dict(results))]
    if with_paper:
        rows += list(PAPER_REFERENCE.items())
    text = _tables(rows, bimodal_keys, multimodal_keys)
    if 'step' in results:
        text = f'Step {results["step"]}\n\n' + text
    return text


def paper_reference_table() -> str:
    """The paper's numbers (SPEC 5, real PKU FG-XMedia test sets) as markdown tables."""
    b, m = task_keys(('image', 'text', 'audio'))
    return ('Numbers reported in the papers, on the real PKU FG-XMedia dataset.\n\n'
            + _tables(list(PAPER_REFERENCE.items()), b, m))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_results(results: Mapping, workdir: str | os.PathLike, step: int) -> dict[str, Path]:
    """Write eval/<step>/results.{json,md} and the latest copy eval/results.{json,md}.

    The JSON is `results` with "step" added; writes are atomic (temp file + rename), so a
    reader never sees half a file. Returns the four paths by name.
    """
    payload = dict(results)
    payload['step'] = int(step)
    text_json = json.dumps(payload, indent=2, default=_json_default) + '\n'
    text_md = format_table(payload, with_paper=True) + '\n'
    eval_dir = Path(workdir) / 'eval'
    paths = {
        'step_json': eval_dir / str(int(step)) / 'results.json',
        'step_md': eval_dir / str(int(step)) / 'results.md',
        'latest_json': eval_dir / 'results.json',
        'latest_md': eval_dir / 'results.md',
    }
    for key, path in paths.items():
        _atomic_write(path, text_json if key.endswith('json') else text_md)
    return paths


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'results: cannot write {type(obj).__name__} to JSON')
