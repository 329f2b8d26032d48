"""Audio-visual retrieval mAP (VEGAS / AVE protocol; docs/dsffn.md#evaluation).

Tasks: a2v (audio queries, the whole visual test set as gallery) and v2a (the
converse); 'average' is their mean. Similarity, ranking and AP are those of
`ranking` (float64 cosine, full gallery including the query's own pair, ties by lower
gallery index, AP = 0 for a query without relevant items, mAP = mean over queries).

DSFFN's features depend on the paired other-modality input, so the pairing used to
compute them is part of every number:
  'aligned'  (the reference) each test pair fed together: the query carries its
             partner's content, which inflates the score;
  'shuffled' the audio partner of item i is another test item (a fixed derangement);
  'self'     each modality fused with itself: no partner information at all.
Top-level keys: a2v, v2a, average (test, aligned), shuffled_*, self_* (test),
val_* (validation split, when model selection uses one) and 'selection': the average
that model selection uses (val_average, or the test average with select_on='test').
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dcinet_jax.evaluators import ranking, sanity

__all__ = ['PAPER', 'evaluate', 'format_table', 'pair_map']

# Table I-II of the paper: (A2V, V2A, Avg) per data set.
PAPER: dict[str, dict[str, tuple[float, float, float]]] = {
    'CCA': {'vegas': (.332, .327, .330), 'ave': (.190, .189, .190)},
    'C-DCCA': {'vegas': (.722, .716, .719), 'ave': (.230, .227, .229)},
    'TNN-C-CCA': {'vegas': (.751, .738, .745), 'ave': (.253, .258, .256)},
    'VAE-CCA': {'vegas': (.821, .824, .822), 'ave': (.328, .302, .315)},
    'MSNSCA': {'vegas': (.866, .865, .866), 'ave': (.323, .343, .333)},
    'DSFFN (paper)': {'vegas': (.881, .895, .888), 'ave': (.371, .368, .370)},
}
PAIRING_NOTES = {
    'aligned': 'aligned pairs (reference; partner-informed)',
    'shuffled': 'shuffled partners (diagnostic)',
    'self': 'self-fused, no partner (diagnostic)',
}


def pair_map(features: Mapping, *, chunk_size: int = 1024, num_workers: int = 1) -> dict:
    """{'a2v', 'v2a', 'average'} for {'visual': (f, y), 'audio': (f, y)}."""
    fv, yv = features['visual']
    fa, ya = features['audio']
    for name, f in (('visual', fv), ('audio', fa)):
        sanity.check_finite(f, f'{name} features')
        sanity.check_not_collapsed(np.asarray(f), f'{name} features')
    kw = dict(chunk_size=chunk_size, num_workers=num_workers)
    a2v = ranking.mean_average_precision(fa, ya, fv, yv, **kw)
    v2a = ranking.mean_average_precision(fv, yv, fa, ya, **kw)
    return {'a2v': a2v, 'v2a': v2a, 'average': (a2v + v2a) / 2}


def chance_map(query_labels, gallery_labels) -> float:
    """Expected mAP of a random ranking, approximated by mean over queries of R_q / G."""
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    counts = np.bincount(gl, minlength=int(max(ql.max(), gl.max())) + 1)
    return float(np.mean(counts[ql] / gl.size))


def evaluate(outputs: Mapping, *, config: Any) -> dict:
    """Results of the method's eval outputs ({'test': {pairing: ...}, 'val'?, 'info'})."""
    e = config.eval
    kw = dict(chunk_size=int(e.get('chunk_size', 1024)), num_workers=int(e.get('num_workers', 1)))
    results: dict[str, Any] = {}
    test = outputs['test']
    for pairing, feats in test.items():
        prefix = '' if pairing == 'aligned' else f'{pairing}_'
        for k, v in pair_map(feats, **kw).items():
            results[prefix + k] = v
    if 'val' in outputs:
        for k, v in pair_map(outputs['val']['aligned'], **kw).items():
            results[f'val_{k}'] = v
    info = dict(outputs.get('info', {}))
    select_on = info.get('select_on', 'val' if 'val' in outputs else 'test')
    results['selection'] = results['val_average'] if select_on == 'val' else results['average']
    aligned = test['aligned']
    results['protocol'] = {
        **info,
        'pairings': list(test),
        'similarity': 'cosine (float64)',
        'ranking': 'full gallery incl. the query\'s own pair, stable ties by gallery index',
        'ap_definition': ('AP = (1/R) * sum over relevant ranks j of (relevant items in top j) / j; '
                          'R = 0 gives AP 0; mAP = mean AP over all queries'),
        'chance_a2v': chance_map(aligned['audio'][1], aligned['visual'][1]),
        'chance_v2a': chance_map(aligned['visual'][1], aligned['audio'][1]),
        'model_selection': ('validation split carved from train' if select_on == 'val' else
                            'TEST SET (reference parity; optimistic, not for new results)'),
    }
    return results


def _row(name: str, values, dataset: str) -> str:
    cells = {'vegas': ['', '', ''], 'ave': ['', '', '']}
    if dataset in cells and values is not None:
        cells[dataset] = [f'{x:.3f}' for x in values]
    return f'| {name} | ' + ' | '.join(cells['vegas'] + cells['ave']) + ' |'


def format_table(results: Mapping, *, name: str = 'This run', with_paper: bool = False) -> str:
    """Markdown: A2V / V2A / Avg per data set, one row per pairing (+ the paper's rows)."""
    p = results.get('protocol', {})
    dataset = str(p.get('dataset', 'vegas')).lower()
    lines = ['| method | VEGAS A2V | V2A | Avg | AVE A2V | V2A | Avg |',
             '|---|---|---|---|---|---|---|']
    if with_paper:
        lines += ['| ' + m + ' | ' + ' | '.join(f'{x:.3f}' for x in v['vegas'] + v['ave']) + ' |'
                  for m, v in PAPER.items()]
    for pairing in ('aligned', 'shuffled', 'self'):
        prefix = '' if pairing == 'aligned' else f'{pairing}_'
        if f'{prefix}a2v' in results:
            vals = [results[f'{prefix}{k}'] for k in ('a2v', 'v2a', 'average')]
            lines.append(_row(f'{name}, {PAIRING_NOTES[pairing]}', vals, dataset))
    if 'val_a2v' in results:
        vals = [results[f'val_{k}'] for k in ('a2v', 'v2a', 'average')]
        lines.append(_row(f'{name}, validation split, aligned', vals, dataset))
    notes = []
    if 'step' in results:
        notes.append(f'step {results["step"]}')
    if p:
        notes.append(f'{p.get("test_pairs", "?")} test pairs, {p.get("num_classes", "?")} classes, '
                     f'chance ~{p.get("chance_a2v", 0):.3f} / {p.get("chance_v2a", 0):.3f}')
        notes.append(f'model selection: {p.get("model_selection", "?")}')
        if p.get('switches'):
            notes.append('switches: ' + ', '.join(f'{k}={v}' for k, v in p['switches'].items()))
    return '\n'.join(lines) + ('\n\n' + '; '.join(notes) if notes else '')
