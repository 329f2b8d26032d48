"""Retrieval results as markdown tables (the paper's layout) and as files on disk.

The tables follow the paper's Tables 1-2 (`fgcrossnet_table`: FGCrossNet's Tables 3-5,
16 tasks with video): the bi-modal tasks and their average, then
the X->all tasks and their average, three decimals, one row per method. The numbers
printed in the papers (PAPER_REFERENCE) can be shown under a run's row for reading side
by side; they come from the real PKU FG-XMedia test sets and are never compared against
a run automatically (see docs/evaluation.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from input_pipeline.atomic import atomic_write_text

__all__ = ['FGCROSSNET_PAPER', 'PAPER_REFERENCE', 'atomic_write_text', 'fgcrossnet_table',
           'format_table', 'paper_reference_table', 'save_results', 'tables']

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
_PAPER_TASKS = next(iter(PAPER_REFERENCE.values()))  # the row that lists every task

# FGCrossNet's paper (Tables 3-5), four media on the real FG-XMedia test sets. Table 3 is
# the full method (= Table 5 "+Ranking"); Table 4 gives only its X->all numbers.
_FGX_KEYS = ('i2t', 'i2a', 'i2v', 't2i', 't2a', 't2v', 'a2i', 'a2t', 'a2v', 'v2i', 'v2t', 'v2a')


def _fgx_row(values, average, multimodal=None, multimodal_average=None) -> dict:
    return {'bimodal': dict(zip(_FGX_KEYS, values)), 'bimodal_average': average,
            'multimodal': dict(multimodal or {}), 'multimodal_average': multimodal_average}


FGCROSSNET_PAPER: dict[str, dict] = {
    'FGCrossNet (paper Tables 3-4, real FG-XMedia)': _fgx_row(
        (.210, .526, .606, .255, .181, .208, .553, .159, .443, .629, .195, .437), .366,
        {'i2all': .549, 't2all': .196, 'a2all': .485, 'v2all': .416}, .412),
    'Classification only (paper Table 5)': _fgx_row(
        (.132, .485, .579, .181, .126, .146, .514, .100, .410, .597, .126, .396), .316),
    '+Center (paper Table 5)': _fgx_row(
        (.195, .540, .596, .240, .176, .193, .562, .150, .439, .616, .174, .432), .359),
}


def fgcrossnet_table(rows: Mapping[str, Mapping], *, with_paper: bool = True) -> str:
    """The 16-task tables (12 bi-modal + 4 X->all, FGCrossNet's Tables 3-5 layout) of
    several runs, optionally with the paper's rows under them."""
    items = list(rows.items()) + (list(FGCROSSNET_PAPER.items()) if with_paper else [])
    return _tables(items, list(_FGX_KEYS), ['i2all', 't2all', 'a2all', 'v2all'])


def _fmt(value) -> str:
    if isinstance(value, str):  # a preformatted cell (a sweep's 'mean ± std')
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '—'
    return f'{value:.3f}'


def _tables(rows: list[tuple[str, Mapping]], bimodal_keys: list[str],
            multimodal_keys: list[str]) -> str:
    out = []
    for title, part, avg, keys in (
            ('Bi-modal retrieval (mAP)', 'bimodal', 'bimodal_average', bimodal_keys),
            ('Multi-modal retrieval X->all (mAP)', 'multimodal', 'multimodal_average',
             multimodal_keys)):
        out += [f'**{title}**', '',
                '| Method | ' + ' | '.join(keys + ['Avg']) + ' |',
                '|---|' + '---:|' * (len(keys) + 1)]
        for name, res in rows:
            cells = [_fmt(res.get(part, {}).get(k)) for k in keys] + [_fmt(res.get(avg))]
            out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        out.append('')
    return '\n'.join(out)


def tables(rows: list[tuple[str, Mapping]], bimodal_keys: list[str],
           multimodal_keys: list[str]) -> str:
    """The bi-modal and X->all tables of (name, results) rows with the given task
    columns; a cell is a number (three decimals) or a preformatted string."""
    return _tables(rows, bimodal_keys, multimodal_keys)


def format_table(results: Mapping, *, name: str = 'This run', with_paper: bool = False) -> str:
    """Markdown tables of one run's results ({'bimodal': ..., 'multimodal': ..., averages}).

    Columns are the run's own task keys, in its order. with_paper adds the paper's rows
    under the run's; a "step" in results becomes a heading line.
    """
    rows = [(name, results)]
    if with_paper:
        rows += list(PAPER_REFERENCE.items())
    text = _tables(rows, list(results['bimodal']), list(results['multimodal']))
    if 'step' in results:
        text = f'Step {results["step"]}\n\n' + text
    return text


def paper_reference_table() -> str:
    """The papers' numbers (real PKU FG-XMedia test sets) as markdown tables."""
    return ('Numbers reported in the papers, on the real PKU FG-XMedia dataset.\n\n'
            + _tables(list(PAPER_REFERENCE.items()), list(_PAPER_TASKS['bimodal']),
                      list(_PAPER_TASKS['multimodal'])))


def save_results(results: Mapping, workdir: str | os.PathLike, step: int, *,
                 markdown: str | None = None, variant: str = '') -> dict[str, Path]:
    """Write eval/<step>/results.{json,md} and the latest copy eval/results.{json,md}.

    `variant` (e.g. 'ensemble3': results that are not this run's alone) writes under
    eval/<step>/<variant>/ and eval/<variant>/ instead, leaving the run's own untouched.

    The JSON is `results` plus "step" (the caller's dict is not modified); the markdown is
    `markdown` (another evaluator's table), by default the FG-XMedia
    `format_table(..., with_paper=True)`. Every write is atomic. Returns the paths under
    the keys 'step_json', 'step_md', 'latest_json', 'latest_md'.
    """
    payload = dict(results)
    payload['step'] = int(step)
    text_json = json.dumps(payload, indent=2, default=_json_default) + '\n'
    if markdown is None:
        markdown = format_table(payload, with_paper=True)
    text_md = markdown + '\n'
    eval_dir = Path(workdir) / 'eval'
    step_dir, latest_dir = eval_dir / str(int(step)), eval_dir
    if variant:
        step_dir, latest_dir = step_dir / variant, latest_dir / variant
    paths = {
        'step_json': step_dir / 'results.json',
        'step_md': step_dir / 'results.md',
        'latest_json': latest_dir / 'results.json',
        'latest_md': latest_dir / 'results.md',
    }
    for key, path in paths.items():
        atomic_write_text(path, text_json if key.endswith('json') else text_md)
    return paths


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'results: cannot write {type(obj).__name__} to JSON')
