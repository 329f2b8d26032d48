"""Per-module parameter table of the model a config builds (`dcinet summary --config FILE`).

Any method (`config.method`): the model and its variables come from the method contract.

Shapes come from `jax.eval_shape`, so even the full 448 px ResNet50 allocates nothing
and nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from dcinet_jax import methods


def _leaves_by_module(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
                      ) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """{'backbone/layer1/0/conv1': [('kernel', (1, 1, 64, 64))], ...} in tree order."""
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            for mod, leaves in _leaves_by_module(v, prefix + (k,)).items():
                out.setdefault(mod, []).extend(leaves)
        else:
            out.setdefault('/'.join(prefix), []).append((k, tuple(v.shape)))
    return out


def _natural_key(module: str) -> tuple:
    """Sort 'layer3/10' after 'layer3/2', and the fc head after the stages (torch order)."""
    key = []
    for part in module.split('/'):
        key.append((2, 0, '') if part == 'fc' else
                   (0, int(part), '') if part.isdigit() else (1, 0, part))
    return tuple(key)


def summarize(config: Any) -> tuple[str, int]:
    """(printable table, total trainable parameter count) for the method's model.

    One row per module (path, its parameters' shapes, count), a subtotal per top-level
    module, and a footer with the other variable collections such as BatchNorm running
    statistics (not counted in the total, as PyTorch's `parameters()` does not count
    buffers).
    """
    method = methods.from_config(config)
    model = method.build_model(config)
    abstract = jax.eval_shape(lambda: method.init_variables(model, jax.random.key(0), config))
    modules = _leaves_by_module(abstract['params'])
    rows = []
    subtotals: dict[str, int] = {}
    for mod, leaves in sorted(modules.items(), key=lambda kv: _natural_key(kv[0])):
        count = int(sum(np.prod(s, dtype=np.int64) for _, s in leaves))
        shapes = ' '.join(f'{name}{list(s)}' for name, s in leaves)
        rows.append((mod, shapes, count))
        top = mod.split('/')[0]
        subtotals[top] = subtotals.get(top, 0) + count
    total = sum(subtotals.values())
    others = {k: v for k, v in abstract.items() if k != 'params'}
    stats = int(sum(np.prod(a.shape, dtype=np.int64) for a in jax.tree.leaves(others)))

    w_mod = max([len('module')] + [len(r[0]) for r in rows])
    w_shape = max([len('parameters')] + [len(r[1]) for r in rows])
    w_count = max(len(f'{total:,}'), len('count'))
    rule = '-' * (w_mod + w_shape + w_count + 4)
    lines = [f'{"module":<{w_mod}}  {"parameters":<{w_shape}}  {"count":>{w_count}}', rule]
    lines += [f'{m:<{w_mod}}  {s:<{w_shape}}  {c:>{w_count},}' for m, s, c in rows]
    lines.append(rule)
    lines += [f'{"subtotal " + top:<{w_mod + w_shape + 2}}  {c:>{w_count},}' for top, c in subtotals.items()]
    lines.append(f'{"total trainable parameters":<{w_mod + w_shape + 2}}  {total:>{w_count},}')
    label = f'{", ".join(others) or "other variables"} (not trained)'
    lines.append(f'{label:<{w_mod + w_shape + 2}}  {stats:>{w_count},}')
    describe = getattr(method, 'describe', None)
    lines.append(f'method {config.get("method", "dcinet")}'
                 + (f': {describe(config)}' if describe else ''))
    return '\n'.join(lines), total
