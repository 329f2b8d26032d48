"""PyTorch <-> Flax array layouts and the key checker (docs/weights.md#layouts).

Why explicit: every whole-model importer is a table of (PyTorch key, Flax variable,
conversion). Writing the conversion next to each key is what makes an import auditable
and its inverse (export) exact: each conversion below is a transpose, so
`to_torch(to_flax(x)) == x` bit for bit.

    'linear'  Linear weight (out, in)         <-> Dense kernel (in, out)
    'conv1d'  Conv1d weight (out, in, k)      <-> Conv kernel (k, in, out)   (NCL -> NLC)
    'conv2d'  Conv2d weight (out, in, kh, kw) <-> Conv kernel (kh, kw, in, out) (OIHW -> HWIO)
    'copy'    same layout: biases, embeddings, BatchNorm weight/bias (-> scale/bias) and
              running_mean/running_var (-> batch_stats mean/var), bilinear tensors, scalars
    'counter' a PyTorch-only buffer (BatchNorm num_batches_tracked): ignored on import,
              written as int64 0 on export so PyTorch's strict `load_state_dict` finds it

`import_entries` checks the whole file against the table first and raises one
ValueError with one line per problem kind (unknown, missing, mis-shaped keys), each
naming the first few keys, before anything is converted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

SHOWN = 4   # keys named per problem line
_TO_FLAX = {'linear': (1, 0), 'conv1d': (2, 1, 0), 'conv2d': (2, 3, 1, 0)}
_TO_TORCH = {'linear': (1, 0), 'conv1d': (2, 1, 0), 'conv2d': (3, 2, 0, 1)}
KINDS = ('linear', 'conv1d', 'conv2d', 'copy', 'counter')


class Entry(NamedTuple):
    """One PyTorch key and where it lives in the Flax variables."""
    torch_key: str
    collection: str               # 'params' | 'batch_stats' ('' for a counter)
    path: tuple[str, ...]         # Flax path inside the collection
    kind: str                     # one of KINDS


def to_flax(value: np.ndarray, kind: str) -> np.ndarray:
    """One PyTorch array in the Flax layout of `kind`."""
    value = np.asarray(value)
    if kind in _TO_FLAX:
        if value.ndim != len(_TO_FLAX[kind]):
            return value  # wrong rank: reported as mis-shaped by the checker
        return np.array(value.transpose(_TO_FLAX[kind]), order="C")
    return value


def to_torch(value: np.ndarray, kind: str) -> np.ndarray:
    """One Flax array in the PyTorch layout of `kind` (inverse of `to_flax`)."""
    value = np.asarray(value)
    if kind in _TO_TORCH:
        return np.array(value.transpose(_TO_TORCH[kind]), order="C")
    return np.array(value, order="C")  # a copy, 0-d kept (ascontiguousarray makes it 1-d)


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def torchvision_entries(variables: Mapping[str, Any], flax_prefix: tuple[str, ...] = (),
                        torch_prefix: str = '') -> list[Entry]:
    """The table of a Flax subtree whose module names are PyTorch's (the ResNet here uses
    torchvision's): the key is the module path joined by '.' and the leaf renamed
    (kernel, scale -> weight; mean, var -> running_mean, running_var), the kind read
    from the kernel's rank; every BatchNorm also gets its `num_batches_tracked`."""
    entries = []
    node = variables.get('params', {})
    for p in flax_prefix:
        node = node.get(p, {})
    for path, value in flatten(node).items():
        module, leaf = '.'.join(path[:-1]), path[-1]
        name = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}.get(leaf, leaf)
        kind = {4: 'conv2d', 3: 'conv1d', 2: 'linear'}.get(len(value.shape), 'copy') \
            if leaf == 'kernel' else 'copy'
        key = f'{torch_prefix}{module}.{name}' if module else f'{torch_prefix}{name}'
        entries.append(Entry(key, 'params', flax_prefix + path, kind))
    stats = variables.get('batch_stats', {})
    for p in flax_prefix:
        stats = stats.get(p, {})
    for path in flatten(stats):
        module, leaf = '.'.join(path[:-1]), path[-1]
        name = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
        entries.append(Entry(f'{torch_prefix}{module}.{name}', 'batch_stats', flax_prefix + path,
                             'copy'))
        if leaf == 'mean':
            entries.append(Entry(f'{torch_prefix}{module}.num_batches_tracked', '', (), 'counter'))
    return entries


def batchnorm_entries(torch_module: str, flax_path: tuple[str, ...]) -> list[Entry]:
    """The five keys of one PyTorch BatchNorm at `torch_module` <-> Flax `flax_path`."""
    return [Entry(f'{torch_module}.weight', 'params', flax_path + ('scale',), 'copy'),
            Entry(f'{torch_module}.bias', 'params', flax_path + ('bias',), 'copy'),
            Entry(f'{torch_module}.running_mean', 'batch_stats', flax_path + ('mean',), 'copy'),
            Entry(f'{torch_module}.running_var', 'batch_stats', flax_path + ('var',), 'copy'),
            Entry(f'{torch_module}.num_batches_tracked', '', (), 'counter')]


def dense_entries(torch_module: str, flax_path: tuple[str, ...], bias: bool = True,
                  kind: str = 'linear') -> list[Entry]:
    """weight (+ bias) of one Linear / Conv at `torch_module` <-> Flax kernel (+ bias)."""
    out = [Entry(f'{torch_module}.weight', 'params', flax_path + ('kernel',), kind)]
    if bias:
        out.append(Entry(f'{torch_module}.bias', 'params', flax_path + ('bias',), 'copy'))
    return out


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f', ... ({len(keys) - SHOWN} more)' if len(keys) > SHOWN else ''
    return ', '.join(keys[:SHOWN]) + more


def present(entries: Sequence[Entry], variables: Mapping[str, Any]) -> list[Entry]:
    """The entries whose Flax variable this model has (a model option may drop some, e.g.
    DSFFN's paper gates have no w2/w4): the file's keys for the others are then unknown."""
    flat = {c: flatten(variables.get(c, {})) for c in ('params', 'batch_stats')}
    return [e for e in entries if e.kind == 'counter' or e.path in flat.get(e.collection, {})]


def check(state: Mapping[str, Any], entries: Sequence[Entry], variables: Mapping[str, Any], *,
          source: str, optional: Sequence[str] = ()) -> None:
    """Raises one ValueError when `state` does not fit the table: a header line, then one
    line each for unknown, missing and mis-shaped keys (the first few named).
    Keys in `optional` may be absent; counters may always be absent."""
    if not isinstance(state, Mapping):
        raise ValueError(f'{source}: expected a state dict (name -> tensor), got '
                         f'{type(state).__name__}')
    flat = {c: flatten(variables.get(c, {})) for c in ('params', 'batch_stats')}
    entries = present(entries, variables)
    table = {e.torch_key: e for e in entries}
    unknown = [k for k in state if k not in table]
    missing = [e.torch_key for e in entries if e.torch_key not in state
               and e.kind != 'counter' and e.torch_key not in optional]
    shaped = []
    for key, value in state.items():
        e = table.get(key)
        if e is None or e.kind == 'counter':
            continue
        shape = getattr(value, 'shape', None)
        if shape is None:
            shaped.append(f'{key} (not an array)')
            continue
        want = tuple(flat[e.collection][e.path].shape)
        have = to_flax(value, e.kind).shape
        if tuple(have) != want:
            shaped.append(f'{key} {tuple(shape)} (as Flax {tuple(have)}) vs model {want}')
    lines = []
    if unknown:
        lines.append(f'  {len(unknown)} unknown key(s): {_names(unknown)}')
    if missing:
        lines.append(f'  {len(missing)} missing key(s): {_names(missing)}')
    if shaped:
        lines.append(f'  {len(shaped)} mis-shaped key(s): {_names(shaped)}')
    if lines:
        raise ValueError(f'{source}: does not fit the model:\n' + '\n'.join(lines))


def uncovered(entries: Sequence[Entry], variables: Mapping[str, Any]) -> list[str]:
    """'collection/path' of every Flax variable no entry names."""
    named = {(e.collection, e.path) for e in entries}
    return [f'{c}/{"/".join(p)}' for c in ('params', 'batch_stats')
            for p in flatten(variables.get(c, {})) if (c, p) not in named]


def import_entries(state: Mapping[str, Any], entries: Sequence[Entry],
                   variables: Mapping[str, Any], *, source: str,
                   optional: Sequence[str] = (), keep: Sequence[str] = ()) -> dict[str, Any]:
    """New variables: `variables` with every entry's array taken from `state` (converted,
    cast to the variable's dtype). Checks first (`check`). A DataParallel `module.`
    prefix is stripped. Variables no entry names must be listed in `keep`
    ('params/centres'): they keep their values; any other is a model setting the format
    cannot hold, refused rather than silently left at its initial value."""
    from dcinet_jax.weights.files import strip_prefix
    if isinstance(state, Mapping):
        state = strip_prefix(dict(state))
    left = [name for name in uncovered(entries, variables) if name not in keep]
    if left:
        raise ValueError(f'{source}: the model has {len(left)} variable(s) this format does not '
                         f'hold ({_names(left)}): a config option without a public counterpart')
    check(state, entries, variables, source=source, optional=optional)
    out = {c: flatten(tree) if isinstance(tree, Mapping) else tree
           for c, tree in variables.items()}
    for e in present(entries, variables):
        if e.kind == 'counter' or e.torch_key not in state:
            continue
        old = out[e.collection][e.path]
        out[e.collection][e.path] = to_flax(state[e.torch_key], e.kind).astype(old.dtype)
    return {c: unflatten(tree) if isinstance(tree, dict) else tree for c, tree in out.items()}


def export_entries(variables: Mapping[str, Any], entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """{PyTorch key: array in PyTorch's layout} for every entry (inverse of import)."""
    flat = {c: flatten(variables.get(c, {})) for c in ('params', 'batch_stats')}
    out = {}
    for e in present(entries, variables):
        if e.kind == 'counter':
            out[e.torch_key] = np.zeros((), np.int64)
        else:
            out[e.torch_key] = to_torch(np.asarray(flat[e.collection][e.path]), e.kind)
    return out
