"""What the retrieval report shows, computed from features and labels (pure numpy).

Every task is one of the FG-XMedia evaluator's (`evaluators.fgxmedia`): bi-modal
'i2t', ... (queries of one modality against another modality's whole set) and X->all
'i2all', ... (against every modality stacked in the evaluator's gallery order, the query
kept in its gallery unless `exclude_self`). The numbers come from the evaluator's own
scorer (`evaluators.ranking`: float64 cosine, ties by gallery index), so a task's mAP here
is the evaluator's mAP, not a re-implementation of it. On top of each query's ranking:

* precision-recall curve: for each query, the *interpolated* precision at recall level
  t is the highest precision reached at any recall >= t (the raw points are one per
  relevant item: precision k / r_k at recall k / R); the task's curve is the mean of
  the queries' interpolated curves at RECALL_LEVELS. A query with no relevant item
  (R = 0) contributes precision 0, as it contributes AP 0 to the mAP.
* per-class AP: the mean AP of the queries of each class (NaN for a class with none).
* confusions: for each query, its top-k retrieved items (the ranking's first k, the
  query itself skipped when excluded); confusion[c, c'] counts the top-k slots of class-c
  queries filled by an item of another class c'.
* example queries: the queries at evenly spaced positions of the AP order (best first;
  with three: best, median, worst), each with its top-k items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from dcinet_jax.evaluators import fgxmedia, ranking

__all__ = ['RECALL_LEVELS', 'Example', 'TaskAnalysis', 'TaskSpec', 'analyse', 'analyse_task',
           'class_average_precision', 'confusion_counts', 'example_positions',
           'interpolated_pr_curve', 'task_specs', 'top_k_retrieved']

RECALL_LEVELS = np.linspace(0.0, 1.0, 21)  # 0, 0.05, ..., 1 (interpolated PR curve points)
_CHUNK = 256  # queries scored at a time (memory: about 16 bytes x chunk x gallery size)


@dataclass(frozen=True)
class TaskSpec:
    """One evaluator task: `key` ('i2t', 'a2all'), the query modality and the gallery's
    modalities in stacking order; exclude_self drops each query from its own gallery."""
    key: str
    query: str
    gallery: tuple[str, ...]
    exclude_self: bool = False

    @property
    def multimodal(self) -> bool:
        return self.key.endswith('2all')


@dataclass
class Example:
    """One shown query: its index among the task's queries, its AP, and its top-k as
    gallery indices with their scores and whether each is relevant."""
    role: str
    query: int
    label: int
    ap: float
    retrieved: np.ndarray
    scores: np.ndarray
    relevant: np.ndarray


@dataclass
class TaskAnalysis:
    spec: TaskSpec
    ap: np.ndarray                 # (Q,) AP of every query (the evaluator's)
    query_labels: np.ndarray       # (Q,)
    gallery_labels: np.ndarray     # (G,)
    gallery_origin: list           # (modality, start) of each stacked block
    precision: np.ndarray          # (len(RECALL_LEVELS),) mean interpolated precision
    class_ap: np.ndarray           # (C,) mean AP per query class, NaN without queries
    confusion: np.ndarray          # (C, C) wrong-class counts in the top-k
    precision_at_k: float          # mean fraction of relevant items in the top-k
    top_k: int
    examples: list[Example] = field(default_factory=list)

    @property
    def mean_ap(self) -> float:
        return float(np.mean(self.ap))

    def gallery_item(self, index: int) -> tuple[str, int]:
        """(modality, index within that modality) of a gallery index."""
        for modality, start in reversed(self.gallery_origin):
            if index >= start:
                return modality, int(index - start)
        raise IndexError(index)


def task_specs(modalities: Sequence[str], *, exclude_self: bool = False) -> list[TaskSpec]:
    """The evaluator's tasks for these modalities, in its order and with its keys."""
    present = [m for m in fgxmedia.MODALITY_ORDER if m in modalities]
    bimodal_keys, multimodal_keys = fgxmedia.task_keys(present)
    pairs = [(q, g) for q in present for g in present if q != g]
    specs = [TaskSpec(k, q, (g,)) for k, (q, g) in zip(bimodal_keys, pairs)]
    specs += [TaskSpec(k, q, tuple(present), exclude_self)
              for k, q in zip(multimodal_keys, present)]
    return specs


def interpolated_pr_curve(ranks: ranking.RelevantRanks,
                          levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """Mean over queries of the interpolated precision at each recall level.

    Query with relevant ranks r_1 < ... < r_R: precision p_k = k / r_k at recall k / R;
    interpolated precision at t = max over k >= ceil(t R) (k >= 1) of p_k.
    """
    levels = np.asarray(levels, np.float64)
    total = np.zeros(levels.size, np.float64)
    for query_ranks in ranks.per_query():
        count = query_ranks.size
        if count == 0:
            continue   # precision 0 at every level
        precision = np.arange(1, count + 1) / query_ranks
        best_after = np.maximum.accumulate(precision[::-1])[::-1]
        # The first relevant item whose recall k / R reaches t (1e-9: 0.3 * 10 != 3).
        first = np.clip(np.ceil(levels * count - 1e-9).astype(np.int64), 1, count)
        total += best_after[first - 1]
    return total / max(ranks.counts.size, 1)


def class_average_precision(ap: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) mean AP of each class's queries; NaN for a class with no query."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    sums = np.bincount(labels, weights=ap, minlength=num_classes)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(counts > 0, sums / counts, np.nan)


def confusion_counts(query_labels: np.ndarray, retrieved_labels: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(C, C) int64: [c, c'] = top-k slots of class-c queries holding a class-c' item,
    c' != c (the diagonal, right answers, stays 0). retrieved_labels: (Q, k)."""
    q = np.repeat(query_labels, retrieved_labels.shape[1])
    r = retrieved_labels.reshape(-1)
    wrong = q != r
    flat = np.bincount(q[wrong] * num_classes + r[wrong], minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def top_k_retrieved(query_feats, gallery_feats, k: int, *, self_indices=None,
                    chunk_size: int = _CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """((Q, k) gallery indices, (Q, k) cosine scores): each query's first k items under
    the evaluator's ranking (descending float64 cosine, ties by lower gallery index; its
    own item skipped when self_indices gives it). k is capped by the gallery size."""
    qn = ranking.normalise_rows(ranking.as_feature_matrix(query_feats, 'query_feats'))
    neg_gn_t = np.ascontiguousarray(
        -ranking.normalise_rows(ranking.as_feature_matrix(gallery_feats, 'gallery_feats')).T)
    num_g = neg_gn_t.shape[1]
    k = min(k, num_g - (self_indices is not None))
    take = min(k + (self_indices is not None), num_g)
    out_idx = np.zeros((qn.shape[0], k), np.int64)
    out_score = np.zeros((qn.shape[0], k), np.float64)
    for start in range(0, qn.shape[0], chunk_size):
        keys = qn[start:start + chunk_size] @ neg_gn_t   # -cosine, as the evaluator's
        kth = np.partition(keys, take - 1, axis=1)[:, take - 1]
        for row in range(keys.shape[0]):
            cand = np.flatnonzero(keys[row] <= kth[row])   # every item tied at the cut too
            order = cand[np.lexsort((cand, keys[row, cand]))]
            if self_indices is not None:
                order = order[order != self_indices[start + row]]
            out_idx[start + row] = order[:k]
            out_score[start + row] = -keys[row, order[:k]]
    return out_idx, out_score


def example_positions(num_queries: int, num_examples: int) -> list[tuple[str, int]]:
    """(role, position in the best-first AP order) of evenly spaced examples."""
    n = min(num_examples, num_queries)
    if n <= 0:
        return []
    if n == 1:
        return [('median', (num_queries - 1) // 2)]
    positions = np.round(np.linspace(0, num_queries - 1, n)).astype(int)
    roles = []
    for i, pos in enumerate(positions):
        if i == 0:
            roles.append(('best', int(pos)))
        elif i == n - 1:
            roles.append(('worst', int(pos)))
        elif n % 2 == 1 and i == n // 2:
            roles.append(('median', int(pos)))
        else:
            roles.append((f'{100 * pos / max(num_queries - 1, 1):.0f}th percentile', int(pos)))
    return roles


def analyse_task(spec: TaskSpec, feats: Mapping[str, np.ndarray],
                 labels: Mapping[str, np.ndarray], *, num_classes: int, top_k: int = 5,
                 num_examples: int = 3, chunk_size: int = _CHUNK) -> TaskAnalysis:
    """Everything the report shows for one task (see the module docstring)."""
    qf, ql = feats[spec.query], np.asarray(labels[spec.query], np.int64)
    gf = np.concatenate([feats[m] for m in spec.gallery], axis=0)
    gl = np.concatenate([np.asarray(labels[m], np.int64) for m in spec.gallery])
    starts = np.cumsum([0] + [len(labels[m]) for m in spec.gallery])[:-1]
    origin = [(m, int(s)) for m, s in zip(spec.gallery, starts)]
    for name, values in (('query', ql), ('gallery', gl)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f'task {spec.key}: {name} labels must lie in [0, {num_classes})')
    self_indices = None
    if spec.exclude_self:
        self_indices = dict(origin)[spec.query] + np.arange(len(ql))
    ranks = ranking.query_relevant_ranks(qf, ql, gf, gl, chunk_size=chunk_size,
                                         self_indices=self_indices)
    ap = ranking.average_precision_from_ranks(ranks)
    top_idx, top_score = top_k_retrieved(qf, gf, top_k, self_indices=self_indices,
                                         chunk_size=chunk_size)
    top_relevant = gl[top_idx] == ql[:, None]
    result = TaskAnalysis(
        spec=spec, ap=ap, query_labels=ql, gallery_labels=gl, gallery_origin=origin,
        precision=interpolated_pr_curve(ranks),
        class_ap=class_average_precision(ap, ql, num_classes),
        confusion=confusion_counts(ql, gl[top_idx], num_classes),
        precision_at_k=float(top_relevant.mean()) if top_relevant.size else 0.0,
        top_k=top_idx.shape[1])
    best_first = np.lexsort((np.arange(ap.size), -ap))
    for role, pos in example_positions(ap.size, num_examples):
        q = int(best_first[pos])
        result.examples.append(Example(role, q, int(ql[q]), float(ap[q]), top_idx[q],
                                       top_score[q], top_relevant[q]))
    return result


def analyse(features: Mapping[str, tuple[np.ndarray, np.ndarray]], *, num_classes: int,
            exclude_self: bool = False, top_k: int = 5, num_examples: int = 3,
            chunk_size: int = _CHUNK) -> list[TaskAnalysis]:
    """analyse_task for every evaluator task of features = {modality: (feats, labels)},
    validated as the evaluator validates them."""
    present, feats, labels = fgxmedia.check_features(features)
    return [analyse_task(spec, feats, labels, num_classes=num_classes, top_k=top_k,
                         num_examples=num_examples, chunk_size=chunk_size)
            for spec in task_specs(present, exclude_self=exclude_self)]
