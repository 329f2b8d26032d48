"""Per-module parameter table of the DCINet a config builds (`dcinet summary --config FILE`).

Shapes come from `jax.eval_shape`, so even the full 448 px ResNet50 allocates nothing
and nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from dcinet_jax.models.dcinet import build_model, init_variables


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
    """(printable table, total trainable parameter count) for `build_model(config)`.

    One row per module (path, its parameters' shapes, count), a subtotal per top-level
    module, and a footer with the BatchNorm running statistics (not counted in the total,
    as PyTorch's `parameters()` does not count buffers).
    """
    model = build_model(config)
    abstract = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), config))
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
    stats = int(sum(np.prod(a.shape, dtype=np.int64) for a in jax.tree.leaves(abstract.get('batch_stats', {}))))

    w_mod = max([len('module')] + [len(r[0]) for r in rows])
    w_shape = max([len('parameters')] + [len(r[1]) for r in rows])
    w_count = max(len(f'{total:,}'), len('count'))
    rule = '-' * (w_mod + w_shape + w_count + 4)
    lines = [f'{"module":<{w_mod}}  {"parameters":<{w_shape}}  {"count":>{w_count}}', rule]
    lines += [f'{m:<{w_mod}}  {s:<{w_shape}}  {c:>{w_count},}' for m, s, c in rows]
    lines.append(rule)
    lines += [f'{"subtotal " + top:<{w_mod + w_shape + 2}}  {c:>{w_count},}' for top, c in subtotals.items()]
    lines.append(f'{"total trainable parameters":<{w_mod + w_shape + 2}}  {total:>{w_count},}')
    lines.append(f'{"BatchNorm running statistics (not trained)":<{w_mod + w_shape + 2}}  {stats:>{w_count},}')
    mc, dc = config.model, config.data
    lines.append(f'backbone {mc.backbone}, cut {mc.cut}, compute {mc.dtype}, {dc.num_classes} classes, '
                 f'{dc.image_size} px, modalities {tuple(dc.modalities)}')
    return '\n'.join(lines), total
