"""Aggregating a sweep: mean, sample std and n over the seeds of each variant.

Every finished run's WORKDIR/eval/results.json is read; each numeric leaf (dotted path,
`step` and the `protocol` record left out) gets mean, std with ddof=1 (the sample
standard deviation; None when n < 2) and n. Runs that failed or have not finished are
listed with their status, exit code and last log line, and never enter a mean.

The markdown uses the paper's table layout when the results have it (FG-XMedia
bi-modal and X->all tasks: cells "mean ± std", the variant's n in its row name, the
paper's rows under them); any other evaluator gets a metric x variant table and, per
variant, the evaluator's own table of the means with its published numbers. Under the
table, the data every variant was evaluated on (the runs' data cards; a warning when
two runs of a variant used different data), and each run's data fingerprint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dcinet_jax.evaluators import report
from dcinet_jax.sweep.run import FINISHED, final_results, is_finished, read_status
from input_pipeline import data_card

RESULTS_JSON, RESULTS_MD = 'sweep_results.json', 'sweep_results.md'
STD_NOTE = 'std is the sample standard deviation over seeds (ddof=1); n = finished runs'
_SKIP_KEYS = ('step', 'protocol', 'data')   # 'data': the run's data card, not a metric


def flatten(results: Mapping, prefix: str = '') -> dict[str, float]:
    """Numeric leaves by dotted path: {'bimodal': {'i2t': .3}} -> {'bimodal.i2t': .3}."""
    out: dict[str, float] = {}
    for key, value in results.items():
        if not prefix and key in _SKIP_KEYS:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f'{prefix}{key}.'))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f'{prefix}{key}'] = float(value)
    return out


def summarize(values: list[float]) -> dict:
    """mean, sample std (ddof=1; None for n < 2), n and the values themselves."""
    arr = np.asarray(values, dtype=np.float64)
    return {'mean': float(arr.mean()), 'std': float(arr.std(ddof=1)) if arr.size > 1 else None,
            'n': int(arr.size), 'values': [float(v) for v in arr]}


def aggregate(root: str | Path, plan: dict) -> dict:
    """The sweep's results: per variant the metrics' summaries and the runs left out."""
    root = Path(root)
    runs, variants = [], {}
    for entry in plan['runs']:
        workdir = root / entry['workdir']
        status = read_status(workdir) or {}
        finished = is_finished(workdir)
        state = FINISHED if finished else status.get('status', 'pending')
        runs.append({'variant': entry['variant'], 'seed': entry['seed'],
                     'workdir': entry['workdir'], 'status': state,
                     'exit_code': status.get('exit_code'), 'seconds': status.get('seconds'),
                     'last_line': None if finished else status.get('last_line'),
                     'log': f'{entry["workdir"]}/{status.get("log", "run.log")}'})
        v = variants.setdefault(entry['variant'], {'values': {}, 'seeds': [], 'left_out': [],
                                                   'template': None})
        if not finished:
            v['left_out'].append(runs[-1])
            continue
        results = final_results(workdir)
        v['template'] = v['template'] or results
        v['seeds'].append(entry['seed'])
        runs[-1]['data'] = results.get('data')
        v.setdefault('data', []).append(results.get('data'))
        for name, value in flatten(results).items():
            v['values'].setdefault(name, []).append(value)
    out = {'config': plan['config'], 'seeds': plan['seeds'], 'overrides': plan['overrides'],
           'evaluator': plan.get('evaluator'), 'std': STD_NOTE, 'variants': {}, 'runs': runs}
    for name, v in variants.items():
        out['variants'][name] = {
            'n': len(v['seeds']), 'seeds': v['seeds'],
            'metrics': {k: summarize(vals) for k, vals in v['values'].items()},
            'left_out': [{k: r[k] for k in ('seed', 'status', 'exit_code', 'last_line', 'log')}
                         for r in v['left_out']],
            'template': v['template'],
            'data': _variant_data(v.get('data', []))}
    return out


def _variant_data(cards: list) -> dict | str | None:
    """The data card the variant's runs share; 'differs' when two runs used other data."""
    known = [c for c in cards if c]
    if not known:
        return None
    return known[0] if data_card.same_data(known) else 'differs'


def data_lines(agg: Mapping) -> list[str]:
    """What data each variant was evaluated on, one line (a warning where runs differ)."""
    cards = {name: v.get('data') for name, v in agg['variants'].items()}
    if not any(cards.values()):
        return ['Data: not recorded in the runs\' results.']
    if all(isinstance(c, Mapping) for c in cards.values()) and data_card.same_data(cards.values()):
        return [f'Every run: {data_card.one_line(next(iter(cards.values())))}']
    return [f'- {name}: ' + ('WARNING: its runs used different data (see the runs table)'
                             if c == 'differs' else data_card.one_line(c))
            for name, c in cards.items()]


def cell(summary: Mapping | None) -> str:
    """'0.912 ± 0.013' (n >= 2), '0.912 ± –' (n = 1), '—' (no finished run)."""
    if not summary:
        return '—'
    std = summary['std']
    return f'{summary["mean"]:.3f} ± ' + ('–' if std is None or math.isnan(std)
                                          else f'{std:.3f}')


def _row_name(name: str, v: Mapping) -> str:
    failed = sum(r['status'] == 'failed' for r in v['left_out'])
    return f'{name} (n={v["n"]}' + (f', {failed} failed' if failed else '') + ')'


def _paper_layout(agg: Mapping) -> str | None:
    """The paper's Tables 1-2 (or FGCrossNet's 16 tasks) with mean ± std cells."""
    templates = [v['template'] for v in agg['variants'].values() if v['template']]
    if not templates or not all(isinstance(t.get('bimodal'), Mapping)
                                and isinstance(t.get('multimodal'), Mapping)
                                for t in templates):
        return None
    bi, multi = list(templates[0]['bimodal']), list(templates[0]['multimodal'])
    rows = []
    for name, v in agg['variants'].items():
        m = v['metrics']
        rows.append((_row_name(name, v), {
            'bimodal': {k: cell(m.get(f'bimodal.{k}')) for k in bi},
            'multimodal': {k: cell(m.get(f'multimodal.{k}')) for k in multi},
            'bimodal_average': cell(m.get('bimodal_average')),
            'multimodal_average': cell(m.get('multimodal_average'))}))
    paper = report.FGCROSSNET_PAPER if any('v' in k for k in multi) else report.PAPER_REFERENCE
    return report.tables(rows + list(paper.items()), bi, multi)


def _generic_table(agg: Mapping) -> str:
    names = list(agg['variants'])
    metrics = list(dict.fromkeys(k for v in agg['variants'].values() for k in v['metrics']))
    lines = ['| metric | ' + ' | '.join(_row_name(n, agg['variants'][n]) for n in names) + ' |',
             '|---|' + '---:|' * len(names)]
    for metric in metrics:
        lines.append(f'| {metric} | ' + ' | '.join(
            cell(agg['variants'][n]['metrics'].get(metric)) for n in names) + ' |')
    return '\n'.join(lines)


def _means_as_results(template: Mapping, metrics: Mapping, prefix: str = '') -> dict:
    """The results dict of one run with every numeric leaf replaced by its mean."""
    out = {}
    for key, value in template.items():
        path = f'{prefix}{key}'
        if isinstance(value, Mapping) and not (not prefix and key == 'protocol'):
            out[key] = _means_as_results(value, metrics, f'{path}.')
        elif path in metrics:
            out[key] = metrics[path]['mean']
        else:
            out[key] = value
    if not prefix:
        out.pop('step', None)
    return out


def format_markdown(agg: Mapping, evaluator=None) -> str:
    seeds = ', '.join(str(s) for s in agg['seeds'])
    overrides = ' '.join(agg['overrides']) or 'none'
    out = [f'# Sweep: {Path(agg["config"]).name}, seeds {seeds}', '',
           f'Overrides for every run: {overrides}', '',
           f'Cells: mean ± std over seeds; {STD_NOTE} ("–" when n = 1). Failed and '
           'unfinished runs are listed below and not averaged.', '']
    table = _paper_layout(agg)
    out += [table if table is not None else _generic_table(agg), '']
    out += data_lines(agg) + ['']
    if table is None and evaluator is not None:
        for name, v in agg['variants'].items():
            if v['template']:
                out += [f'**{name}: means of n={v["n"]} in the evaluator\'s table**', '',
                        evaluator.format_table(_means_as_results(v['template'], v['metrics']),
                                               name=f'{name} (mean)', with_paper=True), '']
    out += ['**Runs**', '', '| variant | seed | status | exit | seconds | data | last log line |',
            '|---|---:|---|---:|---:|---|---|']
    for r in agg['runs']:
        last = (r['last_line'] or '').replace('|', '\\|')[:160]
        fp = (r.get('data') or {}).get('fingerprint') or ''
        out.append(f'| {r["variant"]} | {r["seed"]} | {r["status"]} | '
                   f'{"" if r["exit_code"] is None else r["exit_code"]} | '
                   f'{"" if r["seconds"] is None else r["seconds"]} | {fp} | {last} |')
    return '\n'.join(out) + '\n'


def write_report(root: str | Path, plan: dict, evaluator=None) -> dict:
    """Aggregates and writes ROOT/sweep_results.{json,md}; returns the aggregate."""
    agg = aggregate(root, plan)
    payload = {**agg, 'variants': {k: {kk: vv for kk, vv in v.items() if kk != 'template'}
                                   for k, v in agg['variants'].items()}}
    report.atomic_write_text(Path(root) / RESULTS_JSON, json.dumps(payload, indent=2) + '\n')
    report.atomic_write_text(Path(root) / RESULTS_MD, format_markdown(agg, evaluator))
    return agg
