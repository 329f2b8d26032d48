"""The FG-XMedia retrieval protocol: bi-modal and X->all mAP over a test set's features.

Tasks (see docs/evaluation.md), for the modalities present among image, text, audio,
video (queries in that order):
  * bi-modal 'i2t', 'i2a', ...: every ordered pair of distinct modalities, the query
    modality's items against the whole other modality's set;
  * X->all 'i2all', ...: each modality's items against every modality's set stacked into
    one gallery, in the reference code's order image, text, audio, video, whatever the
    order of the features dict. That order decides exact score ties, so it is fixed and
    recorded as results['protocol']['multimodal_gallery_order'].
Similarity is cosine, ranking the full gallery with ties by lower gallery index, and
mAP is the mean AP over all queries (`ranking`).

Scoring runs on the host in float64 ('numpy', the reference) or on the accelerator in
float32 ('device'); 'auto' picks the device when JAX's default backend is not the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dcinet_jax.evaluators import ranking, report, sanity

__all__ = ['AP_DEFINITION', 'MODALITY_ORDER', 'RANKING', 'SCORING_CHOICES', 'SIMILARITY',
           'check_features', 'evaluate', 'evaluate_features', 'format_table',
           'resolve_scoring', 'task_keys']

# Query order of the paper's tables, and the X->all gallery order of the reference code.
MODALITY_ORDER: tuple[str, ...] = ('image', 'text', 'audio', 'video')
_LETTER = {'image': 'i', 'text': 't', 'audio': 'a', 'video': 'v'}

SIMILARITY = 'cosine'
RANKING = 'full gallery, stable ties by gallery index'
AP_DEFINITION = ('AP = (1/R) * sum over relevant ranks j of (relevant items in top j) / j, '
                 'R = relevant gallery items; R = 0 gives AP 0; mAP = mean AP over all queries')
SCORING_CHOICES = ('auto', 'numpy', 'device')

format_table = report.format_table


def task_keys(modalities: Sequence[str]) -> tuple[list[str], list[str]]:
    """(bi-modal keys, X->all keys) in the paper's order for the given modalities."""
    present = _ordered(modalities)
    bimodal = [f'{_LETTER[q]}2{_LETTER[g]}' for q in present for g in present if q != g]
    return bimodal, [f'{_LETTER[q]}2all' for q in present]


def _ordered(modalities: Sequence[str]) -> list[str]:
    unknown = [m for m in modalities if m not in _LETTER]
    if unknown:
        raise ValueError(f'unknown modality {unknown}; expected some of {list(MODALITY_ORDER)}')
    return [m for m in MODALITY_ORDER if m in modalities]


def resolve_scoring(scoring: str) -> str:
    """'numpy' or 'device' for a config value in SCORING_CHOICES."""
    if scoring not in SCORING_CHOICES:
        raise ValueError(f'scoring must be one of {list(SCORING_CHOICES)}, got {scoring!r}')
    if scoring == 'auto':
        import jax
        return 'device' if jax.default_backend() != 'cpu' else 'numpy'
    return scoring


def check_features(features: Mapping) -> tuple[list[str], dict, dict]:
    """(modalities in MODALITY_ORDER, float64 features, int64 labels) after validation.

    Non-finite or collapsed features (sanity: nearly all items one vector) are an error
    naming the modality and how many items are hit: a diverged or collapsed checkpoint
    would otherwise rank on ties and still print a plausible mAP.
    """
    if len(features) < 2:
        raise ValueError(f'evaluate: need at least two modalities, got {list(features)}')
    present = _ordered(list(features))
    feats, labels = {}, {}
    for m in present:
        pair = features[m]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f'features[{m!r}]: expected a (features, labels) pair')
        x = np.asarray(pair[0])
        if x.ndim != 2:
            raise ValueError(f'features of modality {m}: expected a (num_items, dim) matrix, '
                             f'got shape {x.shape}')
        sanity.check_finite(x, f'features of modality {m}')
        sanity.check_not_collapsed(x, f'features of modality {m}')
        feats[m] = ranking.as_feature_matrix(x, f'features of modality {m}')
        labels[m] = ranking.check_labels(pair[1], f'labels of modality {m}', x.shape[0])
    dims = {m: f.shape[1] for m, f in feats.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f'evaluate: feature sizes differ between modalities: {dims}')
    return present, feats, labels


def evaluate_features(features: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                      exclude_self: bool = False, chunk_size: int = 1024,
                      feature_kind: str | None = None, num_workers: int = 1,
                      scoring: str = 'numpy') -> dict:
    """Every bi-modal and X->all mAP for features = {modality: (feats (N, D), labels (N,))}.

    exclude_self drops each X->all query from its own gallery (the reference keeps it).
    num_workers: threads over query chunks (numpy scoring only). scoring: one of
    SCORING_CHOICES. The caller adds "step".
    """
    path = resolve_scoring(scoring)
    present, feats, labels = check_features(features)
    if path == 'device':
        from dcinet_jax.evaluators import device_ranking

        def mean_ap(qf, ql, gf, gl, self_indices=None):
            return device_ranking.mean_average_precision(
                qf, ql, gf, gl, chunk_size=chunk_size, self_indices=self_indices)
    else:
        def mean_ap(qf, ql, gf, gl, self_indices=None):
            return ranking.mean_average_precision(
                qf, ql, gf, gl, chunk_size=chunk_size, self_indices=self_indices,
                num_workers=num_workers)

    bimodal: dict[str, float] = {}
    for q in present:
        for g in present:
            if q != g:
                bimodal[f'{_LETTER[q]}2{_LETTER[g]}'] = mean_ap(feats[q], labels[q],
                                                                  feats[g], labels[g])

    offsets = dict(zip(present, np.cumsum([0] + [feats[m].shape[0] for m in present])))
    all_feats = np.concatenate([feats[m] for m in present], axis=0)
    all_labels = np.concatenate([labels[m] for m in present], axis=0)
    multimodal: dict[str, float] = {}
    for q in present:
        self_idx = (offsets[q] + np.arange(feats[q].shape[0])) if exclude_self else None
        multimodal[f'{_LETTER[q]}2all'] = mean_ap(feats[q], labels[q], all_feats, all_labels,
                                                  self_indices=self_idx)

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
            'counts': {m: int(feats[m].shape[0]) for m in present},
            'multimodal_gallery_order': list(present),
            'feature': feature_kind,
            'scoring': path,
            'score_dtype': 'float32' if path == 'device' else 'float64',
        },
    }


def evaluate(features: Mapping[str, tuple[np.ndarray, np.ndarray]], *, config) -> dict:
    """The evaluator entry point: `evaluate_features` with the settings of config.eval.

    Reads exclude_self, chunk_size, feature, num_workers (default 1) and scoring
    (default 'auto'). Metric keys usable as config.eval.best_metric: 'bimodal_average',
    'multimodal_average'.
    """
    e = config.eval
    return evaluate_features(features, exclude_self=bool(e.exclude_self),
                             chunk_size=int(e.chunk_size), feature_kind=e.get('feature'),
                             num_workers=int(e.get('num_workers', 1)),
                             scoring=str(e.get('scoring', 'auto')))
