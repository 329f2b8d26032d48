"""Evaluate a method's variables: its eval outputs, scored by the configured evaluator.

Generic glue between a method (which knows its data and what its evaluator consumes)
and an evaluator (which knows the benchmark protocol). The results name their data: the
method's optional `data_description` card goes under "data", and its one-line form
closes results.md. Every process evaluates the
whole test set on its own devices; process 0 writes the results files.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax

from dcinet_jax import evaluators, methods
from dcinet_jax.evaluators import report
from input_pipeline import atomic
from input_pipeline import data_card


def evaluate_variables(config: Any, method: Any, model: Any, variables: Mapping, *,
                       step: int, workdir=None, record: Mapping | None = None) -> dict:
    """Results of `config.eval.metrics` (or the method's default evaluator) at `step`;
    written under `workdir/eval/` when `workdir` is given. `record`: entries added to
    the results as they are (what was evaluated, e.g. {'weights': {path, sha256, format}})."""
    evaluator = evaluators.get(methods.evaluator_name(method, config))
    t0 = time.time()
    outputs = method.eval_outputs(model, variables, config)
    t1 = time.time()
    results = {'step': int(step), **evaluator.evaluate(outputs, config=config), **(record or {})}
    results.setdefault('protocol', {})['seconds'] = {
        'outputs': round(t1 - t0, 2), 'scoring': round(time.time() - t1, 2)}
    describe_data = getattr(method, 'data_description', None)   # optional in the contract
    if describe_data is not None:
        try:
            results['data'] = describe_data(config)
        except (OSError, ValueError) as e:   # never lose an evaluation over its data card
            results['data'] = {'error': f'data card not built: {e}'}
    if workdir is not None and jax.process_index() == 0:
        markdown = evaluator.format_table(results, with_paper=True)
        try:
            report.save_results(results, workdir, step,
                                markdown=f'{markdown}\n\n{data_card.one_line(results.get("data"))}',
                                variant=results_variant(results))
        except OSError as e:   # the evaluation is done: hand its table to the caller
            raise atomic.NotWrittenError(f'{workdir}/eval', e,
                                         evaluator.format_table(results)) from e
    return results


def results_variant(results: Mapping) -> str:
    """'' for a run's own results; an evaluator marks others (an ensemble of several
    runs) with protocol['results_variant'], and they are filed under that name."""
    return str(results.get('protocol', {}).get('results_variant', '') or '')


def results_path(workdir, results: Mapping) -> str:
    """Where evaluate_variables wrote `results` (eval/<step>[/<variant>]/results.json)."""
    from pathlib import Path
    step_dir = Path(workdir) / 'eval' / str(results['step'])
    variant = results_variant(results)
    return str((step_dir / variant if variant else step_dir) / 'results.json')


def scalar_metrics(results: Mapping) -> dict[str, float]:
    """Every number of a results dict by its own name, one level of nesting flattened
    (`{'bimodal': {'i2t': .3}, 'bimodal_average': .4}` -> `{'i2t': .3, 'bimodal_average': .4}`)."""
    out: dict[str, float] = {}
    for key, value in results.items():
        if key in ('step', 'protocol', 'data'):
            continue
        if isinstance(value, Mapping):
            out.update({k: float(v) for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def best_metric(config: Any, results: Mapping) -> float:
    """The value of `config.eval.best_metric` in `results` (ranks checkpoints)."""
    name = str(config.eval.best_metric)
    values = scalar_metrics(results)
    if name not in values:
        raise ValueError(f'config.eval.best_metric={name!r} is not among the evaluator\'s '
                         f'metrics {sorted(values)}')
    return values[name]


def format_table(config: Any, results: Mapping) -> str:
    """Markdown table of `results` by the evaluator that produced them."""
    evaluator = evaluators.get(methods.evaluator_name(methods.from_config(config), config))
    return evaluator.format_table(results)
