"""Evaluators, picked by name: `get('fgxmedia')` is the module dcinet_jax.evaluators.fgxmedia.

Contract of an evaluator module (see docs/evaluation.md):

  evaluate(features, *, config) -> dict
      features: {modality: (features (N, D) array, labels (N,) int array)}; config: the
      experiment ConfigDict, whose `eval` section holds the evaluator's settings. The
      result holds flat float metrics under top-level keys (for FG-XMedia
      'bimodal_average' and 'multimodal_average'), any of which can be named by
      config.eval.best_metric, plus nested per-task numbers and a 'protocol' record.
      It is JSON-serialisable.

  format_table(results, *, name='This run', with_paper=False) -> str
      The results as markdown; with_paper adds published reference numbers.

The other modules of this package are helpers, not evaluators, among them `ranking`
(numpy float64 cosine ranking and AP, the reference), `device_ranking` (the same ranking
on the accelerator in float32) and `report` (tables, paper numbers, results files).

`register(name, module)` adds an evaluator that lives elsewhere (tests, other packages).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ['get', 'names', 'register']

_BUILTIN: tuple[str, ...] = ('fgxmedia', 'audiovisual', 'recall')
_registered: dict[str, ModuleType] = {}


def register(name: str, module: ModuleType) -> None:
    """Make `get(name)` return `module` (a module, or any object such as a class of
    static methods) that defines evaluate and format_table; a later call replaces it."""
    _check_module(name, module)
    _registered[name] = module


def names() -> list[str]:
    """Every name `get` accepts."""
    return sorted(set(_BUILTIN) | set(_registered))


def get(name: str) -> ModuleType:
    """The evaluator module called `name`; ValueError listing the known names otherwise."""
    if name in _registered:
        return _registered[name]
    if name not in _BUILTIN:
        raise ValueError(f'unknown evaluator {name!r}; known evaluators: {names()}')
    module = importlib.import_module(f'{__name__}.{name}')
    _check_module(name, module)
    return module


def _check_module(name: str, module: ModuleType) -> None:
    missing = [f for f in ('evaluate', 'format_table') if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(f'evaluator {name!r}: module {getattr(module, "__name__", module)!r} '
                         f'lacks {", ".join(missing)}')
