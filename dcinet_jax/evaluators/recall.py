"""Image-text matching recall: R@K, medr, meanr, rsum (Flickr30K 1K, COCO 5-fold 1K, COCO 5K).

The evaluator 'recall' (docs/recall.md). Input is a score matrix S (N_img, N_cap) from a
learned head (`blockwise.score_matrix` fills it; `score_matrix` is re-exported here) and
`caption_image` (N_cap,): the image each caption describes.

  i2t rank of image i   = best 0-based rank, in row i sorted by descending score, of any
                          caption of image i;
  t2i rank of caption c = 0-based rank of its image in column c sorted the same way.
  Ties: equal scores are ordered by lower index first (a stable sort), so every number is
  deterministic; rank = #(strictly greater) + #(equal with a lower index), computed without
  sorting, block by block (a few temporaries of `_BLOCK_ELEMENTS` items).
  R@K = 100 * mean(rank < K), K = 1, 5, 10; medr = floor(median(rank)) + 1;
  meanr = mean(rank) + 1; rsum = the sum of the six recalls.
Protocols (config.eval.protocol, one name or a list; the first is reported unprefixed,
the others with the prefix '<protocol>_'):
  '1k'          the whole matrix (Flickr30K test: 1,000 x 5,000);
  '5k'          the whole matrix, named for COCO 5K (`testall`: 5,000 x 25,000);
  'coco_5fold'  COCO 1K: fold f = images [1000 f, 1000 f + 1000) and their captions;
                each metric (rsum included) averaged over the folds
                (config.eval.num_folds, fold_images: 5 and 1000).
The dev split ('dev' in the outputs) is scored on its whole matrix; 'selection' is the
dev rsum (the paper keeps the checkpoint with the best validation rsum), or the test
rsum when no dev split is given. A list of score matrices is an ensemble: their mean is
ranked.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from dcinet_jax.evaluators import sanity
from dcinet_jax.evaluators.spill import Spill, host_array
from dcinet_jax.evaluators.blockwise import score_matrix

__all__ = ['METRIC_KEYS', 'PAPER', 'PAPER_ABLATION', 'PROTOCOLS', 'chance_recall',
           'coco_5fold', 'ensemble', 'evaluate', 'folds', 'format_table', 'i2t_ranks',
           'metrics_from_ranks', 'recall_metrics', 'score_matrix', 't2i_ranks']

RECALL_AT = (1, 5, 10)
METRIC_KEYS = tuple(f'{d}_{m}' for d in ('i2t', 't2i')
                    for m in [f'r{k}' for k in RECALL_AT] + ['medr', 'meanr']) + ('rsum',)
PROTOCOLS = ('1k', '5k', 'coco_5fold')
_BLOCK_ELEMENTS = 1 << 22  # score entries per ranking block (~16 MB of float32)
_TIE_RULE = 'descending score, equal scores by lower index first (stable sort)'

# Paper Tables 1-3: i2t R@1 R@5 R@10, t2i R@1 R@5 R@10, rsum (None: not reported).
# '*' = a BERT text encoder. Keys: '<dataset>_<benchmark>'.
PAPER: dict[str, dict[str, tuple]] = {
    'f30k_1k': {
        'SGRAF': (77.8, 94.1, 97.4, 58.5, 83.0, 88.8, 499.6),
        'DSRAN (GRU)': (79.6, 95.6, 97.5, 58.6, 85.8, 91.3, 508.4),
        'GRAN*': (76.6, 93.6, 97.6, 60.5, 86.1, 91.3, 505.7),
        'DIME*': (81.0, 95.9, 98.4, 63.6, 88.1, 93.0, 520.0),
        'HSLM (paper Table 1)': (79.9, 95.7, 97.5, 60.7, 84.7, 90.1, 508.6),
        'HSLM, full model (paper Table 4)': (77.1, 94.1, 97.4, 58.1, 82.6, 88.4, 497.8),
    },
    'coco_1k': {
        'SGRAF': (79.6, 96.2, 98.5, 63.2, 90.7, 96.1, 524.3),
        'DSRAN (GRU)': (80.4, 96.7, 98.7, 64.2, 90.4, 95.8, 526.2),
        'GRAN*': (79.1, 96.6, 98.8, 65.2, 91.4, 96.3, 527.4),
        'DIME*': (78.8, 96.3, 98.7, 64.8, 91.5, 96.5, 526.6),
        'HSLM (paper Table 2)': (80.3, 96.5, 98.7, 65.0, 90.9, 96.0, 527.3),
    },
    'coco_5k': {
        'SGRAF': (57.8, None, 91.6, 41.9, None, 81.3, None),
        'DSRAN (GRU)': (57.6, 85.6, 91.9, 41.5, 71.9, 82.1, 430.6),
        'GRAN*': (58.2, 85.0, 91.7, 43.2, 73.0, 83.1, 434.2),
        'DIME*': (59.3, 85.4, 91.9, 43.1, 73.0, 83.1, 435.8),
        'HSLM (paper Table 3)': (59.9, 85.8, 92.7, 43.3, 72.1, 82.6, 436.3),
    },
}
_BENCHMARK = {('f30k', '1k'): 'f30k_1k', ('coco', 'coco_5fold'): 'coco_1k',
              ('coco', '5k'): 'coco_5k'}
_DATASET_NAMES = {'f30k': 'Flickr30K', 'coco': 'MS-COCO'}

# Paper Table 4 (Flickr30K test): the modules of each row, then the seven numbers.
PAPER_ABLATION: dict[str, tuple] = {
    '1: global': (58.7, 85.3, 91.5, 43.5, 72.0, 80.0, 431.0),
    '2: global + self-attn': (60.1, 85.6, 91.2, 45.0, 74.6, 82.7, 437.5),
    '3: global + MGCN': (61.4, 84.3, 91.9, 45.5, 73.8, 81.8, 438.7),
    '4: global + self-attn + MGCN': (60.9, 86.8, 93.6, 45.8, 74.7, 82.5, 444.2),
    '5: local (cross-attn)': (72.1, 91.8, 96.1, 54.2, 80.3, 86.5, 481.0),
    '6: local + self-attn': (71.8, 92.6, 96.3, 54.9, 80.8, 86.8, 483.2),
    '7: local + MGCN': (73.8, 92.1, 96.1, 55.8, 80.5, 86.7, 485.0),
    '8: local + self-attn + MGCN': (72.7, 92.8, 97.3, 56.5, 81.9, 88.3, 489.5),
    '9: global + local': (72.7, 92.1, 96.0, 55.3, 81.0, 87.5, 484.6),
    '10: global + local + self-attn': (72.2, 93.4, 96.8, 55.8, 81.6, 87.5, 487.3),
    '11: global + local + MGCN': (75.2, 94.1, 96.9, 57.1, 82.9, 88.5, 494.6),
    '12: full (global + local + self-attn + MGCN)': (77.1, 94.1, 97.4, 58.1, 82.6, 88.4, 497.8),
}


def _checked(scores, caption_image) -> tuple[np.ndarray, np.ndarray]:
    if np.ndim(scores) != 2:
        raise ValueError(f'scores must be a 2-D (images, captions) matrix, got shape '
                         f'{np.shape(scores)}')
    ci = np.asarray(caption_image)
    n_img, n_cap = np.shape(scores)
    if ci.ndim != 1 or ci.shape[0] != n_cap:
        raise ValueError(f'caption_image has shape {ci.shape} but scores has {n_cap} caption '
                         f'columns ({n_img} x {n_cap}); it needs one image index per caption')
    if ci.size and not np.issubdtype(ci.dtype, np.integer):
        raise ValueError(f'caption_image must hold integer image indices, got {ci.dtype}')
    if ci.size and (ci.min() < 0 or ci.max() >= n_img):
        raise ValueError(f'caption_image holds image indices in [{ci.min()}, {ci.max()}] but '
                         f'scores has {n_img} image rows')
    return scores, ci.astype(np.int64)


def _finite(block: np.ndarray, what: str) -> np.ndarray:
    block = np.asarray(block)
    bad = block.size - int(np.count_nonzero(np.isfinite(block)))
    if bad:
        raise ValueError(f'scores: {bad} non-finite (NaN/Inf) entries in {what}; the '
                         'checkpoint is probably diverged')
    return block


def i2t_ranks(scores, caption_image) -> np.ndarray:
    """(N_img,) int: for each image, the best 0-based rank of one of its captions."""
    s, ci = _checked(scores, caption_image)
    n_img, n_cap = s.shape
    missing = np.flatnonzero(np.bincount(ci, minlength=n_img) == 0)
    if missing.size:
        raise ValueError(f'i2t ranks: {missing.size} images have no caption (first: image '
                         f'{missing[0]}); every image needs at least one')
    ranks = np.empty(n_img, np.int64)
    columns = np.arange(n_cap)
    step = max(1, _BLOCK_ELEMENTS // n_cap)
    for lo in range(0, n_img, step):
        rows = _finite(s[lo:lo + step], f'image rows {lo}..{min(lo + step, n_img) - 1}')
        own = ci[None, :] == np.arange(lo, lo + rows.shape[0])[:, None]
        # The best-ranked positive: the highest-scoring own caption, lowest index on ties.
        best = np.where(own, rows, -np.inf).max(axis=1, keepdims=True)
        first = np.argmax(own & (rows == best), axis=1)[:, None]
        ranks[lo:lo + rows.shape[0]] = (np.count_nonzero(rows > best, axis=1)
                                        + np.count_nonzero((rows == best) & (columns < first),
                                                           axis=1))
    return ranks


def t2i_ranks(scores, caption_image) -> np.ndarray:
    """(N_cap,) int: for each caption, the 0-based rank of its own image."""
    s, ci = _checked(scores, caption_image)
    n_img, n_cap = s.shape
    ranks = np.empty(n_cap, np.int64)
    image_index = np.arange(n_img)[:, None]
    step = max(1, _BLOCK_ELEMENTS // max(n_img, 1))
    for lo in range(0, n_cap, step):
        cols = _finite(s[:, lo:lo + step], f'caption columns {lo}..{min(lo + step, n_cap) - 1}')
        own_image = ci[lo:lo + cols.shape[1]]
        own = cols[own_image, np.arange(cols.shape[1])][None, :]
        ranks[lo:lo + cols.shape[1]] = (np.count_nonzero(cols > own, axis=0)
                                        + np.count_nonzero((cols == own)
                                                           & (image_index < own_image), axis=0))
    return ranks


def metrics_from_ranks(i2t: np.ndarray, t2i: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), medr, meanr of both directions and rsum, from 0-based ranks."""
    out: dict[str, float] = {}
    for name, ranks in (('i2t', np.asarray(i2t)), ('t2i', np.asarray(t2i))):
        for k in RECALL_AT:
            out[f'{name}_r{k}'] = 100.0 * np.count_nonzero(ranks < k) / ranks.size
        out[f'{name}_medr'] = float(math.floor(np.median(ranks)) + 1)
        out[f'{name}_meanr'] = float(ranks.mean() + 1)
    out['rsum'] = sum(out[f'{d}_r{k}'] for d in ('i2t', 't2i') for k in RECALL_AT)
    return {k: float(out[k]) for k in METRIC_KEYS}


def recall_metrics(scores, caption_image) -> dict[str, float]:
    """The METRIC_KEYS of the whole matrix (protocols '1k' and '5k')."""
    return metrics_from_ranks(i2t_ranks(scores, caption_image), t2i_ranks(scores, caption_image))


def folds(scores, caption_image, num_folds: int, fold_images: int) -> dict:
    """Fold f = images [f * fold_images, (f + 1) * fold_images) and the captions of those
    images. Returns each METRIC_KEY averaged over the folds, and 'folds': the per-fold
    metrics (a list)."""
    s, ci = _checked(scores, caption_image)
    if num_folds < 1 or fold_images < 1 or num_folds * fold_images != s.shape[0]:
        raise ValueError(f'{num_folds} folds of {fold_images} images need '
                         f'{num_folds * fold_images} images, the scores have {s.shape[0]} '
                         '(set config.eval.num_folds / fold_images)')
    per_fold = []
    for f in range(num_folds):
        lo, hi = f * fold_images, (f + 1) * fold_images
        captions = np.flatnonzero((ci >= lo) & (ci < hi))
        per_fold.append(recall_metrics(np.asarray(s[lo:hi])[:, captions], ci[captions] - lo))
    mean = {k: float(np.mean([m[k] for m in per_fold])) for k in METRIC_KEYS}
    return {**mean, 'folds': per_fold}


def coco_5fold(scores, caption_image) -> dict:
    """COCO 1K: `folds` with 5 folds of 1,000 images (the 5,000-image `testall` matrix)."""
    return folds(scores, caption_image, 5, 1000)


def _is_matrix(x) -> bool:
    """One 2-D array (numpy, memmap or JAX), as opposed to a list or stack of them."""
    return getattr(x, 'ndim', None) == 2


def ensemble(score_matrices, *, spill: Spill | None = None) -> np.ndarray:
    """The float32 mean of several (N_img, N_cap) score matrices (one array passes
    through): float64 accumulation, image rows `_BLOCK_ELEMENTS` entries at a time, into
    a `spill.host_array` (on disk when large), so memory-mapped members are never whole
    in memory. Each entry sees the same operations as a whole-matrix mean."""
    if _is_matrix(score_matrices):
        return np.asarray(score_matrices)
    matrices = list(score_matrices)
    if not matrices:
        raise ValueError('ensemble: no score matrices')
    shape = tuple(np.shape(matrices[0]))
    for i, m in enumerate(matrices[1:], 1):
        if tuple(np.shape(m)) != shape:
            raise ValueError(f'ensemble: score matrix {i} has shape {np.shape(m)}, matrix 0 '
                             f'has {shape}')
    if len(shape) != 2:
        raise ValueError(f'ensemble: score matrices must be 2-D, got shape {shape}')
    out = host_array(shape, np.float32, what=f'mean of {len(matrices)} score matrices',
                     spill=spill)
    step = max(1, _BLOCK_ELEMENTS // max(shape[1], 1))
    for lo in range(0, shape[0], step):
        total = np.array(matrices[0][lo:lo + step], dtype=np.float64)
        for m in matrices[1:]:
            total += np.asarray(m[lo:lo + step], dtype=np.float64)
        out[lo:lo + step] = (total / len(matrices)).astype(np.float32)
    return out


def chance_recall(num_images: int, *, k: int, captions_per_image: int = 5) -> dict[str, float]:
    """R@k (percent) of a random ranking, per direction, with `captions_per_image` each."""
    n_cap = num_images * captions_per_image
    k_i2t, k_t2i = min(k, n_cap), min(k, num_images)
    miss = math.comb(n_cap - captions_per_image, k_i2t) / math.comb(n_cap, k_i2t)
    return {'i2t': 100.0 * (1.0 - miss), 't2i': 100.0 * k_t2i / num_images}


def _split_scores(outputs: Mapping, split: str,
                  spill: Spill | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    part = outputs[split]
    if 'scores' not in part or 'caption_image' not in part:
        raise ValueError(f"recall: outputs[{split!r}] needs 'scores' and 'caption_image', "
                         f'got {sorted(part)}')
    raw = part['scores']
    size = 1 if _is_matrix(raw) else len(raw)
    scores, ci = _checked(ensemble(raw, spill=spill), part['caption_image'])
    # Rows are images, columns captions: identical rows (or columns) are a collapsed
    # image (or text) side, which the tie rule would still turn into recalls.
    sanity.check_not_collapsed(scores, f'{split} scores, image rows', normalise=False)
    sanity.check_not_collapsed(scores.T, f'{split} scores, caption columns', normalise=False)
    return scores, ci, size


def _protocols(e: Any) -> list[str]:
    chosen = e.get('protocol', '1k')
    chosen = [chosen] if isinstance(chosen, str) else list(chosen)
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise ValueError(f'config.eval.protocol={chosen!r}: choose from {PROTOCOLS}')
    return chosen


def evaluate(outputs: Mapping, *, config: Any) -> dict:
    """Results of {'test': {'scores', 'caption_image'}, 'dev'?: {...}, 'info'?: {...}}.

    Top-level floats: METRIC_KEYS of the first protocol on test, '<protocol>_'-prefixed
    ones of the others, 'dev_'-prefixed ones of dev, and 'selection'. Per-fold metrics sit
    in the lists '<prefix>folds'; 'protocol' records what was computed. 'test' may be left
    out (validation during training); then only dev_* and selection are reported.
    """
    e = config.eval
    protocols = _protocols(e)
    spill = Spill.from_config(config)   # where an ensemble's mean goes when large
    dataset = str(e.get('dataset', 'f30k')).lower()
    num_folds, fold_images = int(e.get('num_folds', 5)), int(e.get('fold_images', 1000))
    if 'test' not in outputs and 'dev' not in outputs:
        raise ValueError(f"recall: outputs need 'test' and/or 'dev', got {sorted(outputs)}")
    results: dict[str, Any] = {}
    record: dict[str, Any] = {**dict(outputs.get('info', {})), 'dataset': dataset,
                              'protocols': protocols, 'ties': _TIE_RULE}
    if 'test' in outputs:
        scores, ci, size = _split_scores(outputs, 'test', spill)
        for i, name in enumerate(protocols):
            prefix = '' if i == 0 else f'{name}_'
            if name == 'coco_5fold':
                res = folds(scores, ci, num_folds, fold_images)
                results[f'{prefix}folds'] = res.pop('folds')
                record['folds'] = {'num_folds': num_folds, 'fold_images': fold_images}
            else:
                res = recall_metrics(scores, ci)
            results.update({prefix + k: v for k, v in res.items()})
        n_img, n_cap = scores.shape
        record.update(test_images=n_img, test_captions=n_cap, ensemble_size=size)
        if size > 1:  # not this run's own numbers: filed and labelled apart
            record['results_variant'] = f'ensemble{size}'
        if n_cap % n_img == 0:
            record['chance_r1'] = chance_recall(n_img, k=1, captions_per_image=n_cap // n_img)
    if 'dev' in outputs:
        scores, ci, size = _split_scores(outputs, 'dev', spill)
        results.update({f'dev_{k}': v for k, v in recall_metrics(scores, ci).items()})
        record.update(dev_images=scores.shape[0], dev_captions=scores.shape[1])
    results['selection'] = results['dev_rsum'] if 'dev' in outputs else results['rsum']
    record['model_selection'] = ('dev rsum (whole dev matrix)' if 'dev' in outputs else
                                 'TEST rsum (no dev split given; optimistic)')
    results['protocol'] = record
    return results


def _cells(values: Sequence) -> str:
    return ' | '.join('—' if v is None else f'{v:.1f}' for v in values)


def _values(results: Mapping, prefix: str) -> list:
    return [results.get(f'{prefix}{d}_r{k}') for d in ('i2t', 't2i') for k in RECALL_AT] + [
        results.get(f'{prefix}rsum')]


def format_table(results: Mapping, *, name: str = 'This run', with_paper: bool = False) -> str:
    """Markdown in the paper's layout (i2t R@1 R@5 R@10 | t2i R@1 R@5 R@10 | rsum), one
    table per protocol; with_paper adds the paper's rows for the dataset and protocol
    (config.eval.dataset 'f30k' or 'coco') and, for Flickr30K, Table 4's ablation."""
    p = results.get('protocol', {})
    if name == 'This run' and p.get('ensemble_size', 1) > 1:
        name = f'Ensemble of {p["ensemble_size"]} runs'
    dataset = str(p.get('dataset', 'f30k')).lower()
    header = ['| method | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum |',
              '|---|---:|---:|---:|---:|---:|---:|---:|']
    out = []
    for i, proto in enumerate(p.get('protocols', []) if 'rsum' in results else []):
        prefix = '' if i == 0 else f'{proto}_'
        title = {'1k': '1K test', '5k': '5K test', 'coco_5fold': '1K test (5-fold average)'}
        out += [f'**{_DATASET_NAMES.get(dataset, dataset)} {title[proto]}**', ''] + header
        out.append(f'| {name} | {_cells(_values(results, prefix))} |')
        if with_paper:
            rows = PAPER.get(_BENCHMARK.get((dataset, proto), ''), {})
            out += [f'| {m} | {_cells(v)} |' for m, v in rows.items()]
        out.append('')
    if 'dev_rsum' in results:
        out += ['**Validation (dev), model selection**', ''] + header
        out += [f'| {name} | {_cells(_values(results, "dev_"))} |', '']
    if with_paper and dataset == 'f30k':
        out += ['**Paper Table 4, Flickr30K test ablation**', ''] + header
        out += [f'| {m} | {_cells(v)} |' for m, v in PAPER_ABLATION.items()] + ['']
    notes = []
    if 'step' in results:
        notes.append(f'step {results["step"]}')
    if 'test_images' in p:
        notes.append(f'{p["test_images"]} test images, {p["test_captions"]} captions'
                     + (f', ensemble of {p["ensemble_size"]}' if p.get('ensemble_size', 1) > 1
                        else ''))
    if 'model_selection' in p:
        notes.append(f'model selection: {p["model_selection"]}')
    if p.get('switches'):
        notes.append('switches: ' + ', '.join(f'{k}={v}' for k, v in p['switches'].items()))
    if with_paper and dataset == 'f30k':
        notes.append('one model compares with Table 4 (497.8); Table 1\'s 508.6 on the same '
                     'test set is plausibly an ensemble')
    if with_paper and dataset == 'coco':
        notes.append('SGRAF\'s COCO 5K rsum is not comparable (R@5 not reported)')
    return '\n'.join(out) + ('\n' + '; '.join(notes) if notes else '')
