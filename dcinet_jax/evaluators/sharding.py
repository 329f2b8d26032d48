"""Evaluation split over processes and local devices (docs/evaluation.md#sharded-evaluation).

Training spreads every step over all devices of all processes; evaluation does the same
with work that needs no communication until its end: each process takes one contiguous
share of the evaluation's units (batches of items, rows of score tiles), runs it on its
local devices, and the shares are gathered once, in process order, so every process
ends with exactly the arrays a one-process evaluation computes (each unit is computed
with the same shapes and the same inputs, wherever it runs).

A share is a range of whole units: the split never changes which items form a batch or
a tile, which is what keeps the result bit-identical to one-device evaluation.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from dcinet_jax.parallel import DATA_AXIS

__all__ = ['gather_rows', 'local_mesh', 'process_share', 'shares_work']


def local_mesh() -> Mesh:
    """A 1-D `data` mesh over this process's devices (evaluation never crosses hosts
    inside a computation)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))


def shares_work(num_units: int) -> bool:
    """True when there are several processes and at least one unit for each: then each
    process computes a share; otherwise every process computes everything."""
    return jax.process_count() > 1 and num_units >= jax.process_count()


def process_share(num_units: int, *, index: int | None = None,
                  count: int | None = None) -> range:
    """This process's contiguous range of `num_units` (balanced: sizes differ by at
    most one; earlier processes take the larger shares). The whole range when the work
    is not shared (`shares_work`)."""
    if count is None and not shares_work(num_units):
        return range(num_units)
    count = jax.process_count() if count is None else count
    index = jax.process_index() if index is None else index
    base, extra = divmod(num_units, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def gather_rows(tree: Any) -> Any:
    """Every process's rows of each array (leading axis; counts may differ between
    processes), concatenated in process order; the identity with one process.

    Each process must pass arrays with the same trailing shapes and dtypes. Rows are
    padded to the largest count for the collective and cropped after, so the result is
    exactly the concatenation."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(x) for x in leaves]
    counts = {len(x) for x in leaves}
    if len(counts) != 1:
        raise ValueError(f'gather_rows: arrays with different row counts {sorted(counts)}')
    local = counts.pop()
    all_counts = np.asarray(multihost_utils.process_allgather(np.int32(local)))
    most = int(all_counts.max())
    padded = [np.concatenate([x, np.zeros((most - local,) + x.shape[1:], x.dtype)])
              for x in leaves]
    gathered = multihost_utils.process_allgather(padded)   # each (P, most, ...)
    out = [np.concatenate([np.asarray(g)[p, :int(n)] for p, n in enumerate(all_counts)])
           for g in gathered]
    return jax.tree.unflatten(treedef, out)
