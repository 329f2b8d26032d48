"""Devices, the `data` mesh, batch shardings and multi-host start-up.

Every method is trained data parallel: each device holds the whole (replicated) train
state and a slice of the batch, and computes its loss on that slice, as `pmap` did.
The step is written with `jax.shard_map` over the one mesh axis `data`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def maybe_initialize_distributed(requested: bool = False) -> bool:
    """Calls `jax.distributed.initialize()` when asked or when the environment says so.

    The environment says so under SLURM with several tasks, or when a coordinator address
    is exported (JAX_COORDINATOR_ADDRESS, with JAX_NUM_PROCESSES and JAX_PROCESS_ID),
    which is how `launch/local_two_process_cpu.sh` starts its two processes.
    """
    coordinator = os.environ.get('JAX_COORDINATOR_ADDRESS')
    slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
    if not (requested or coordinator or slurm):
        return False
    kwargs: dict[str, Any] = {}
    if coordinator:
        kwargs = dict(
            coordinator_address=coordinator,
            num_processes=int(os.environ['JAX_NUM_PROCESSES']),
            process_id=int(os.environ['JAX_PROCESS_ID']),
        )
    jax.distributed.initialize(**kwargs)
    logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
    return True


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device of every process, axis `data`."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(global_batch: int, num_devices: int, field: str) -> None:
    """Clear errors for a global batch the mesh (or the processes) cannot split evenly."""
    n_proc = jax.process_count()
    if global_batch % num_devices:
        raise ValueError(
            f'{field}={global_batch} is not divisible by the {num_devices} devices of the '
            'mesh; every device needs an equal slice of the batch.')
    if global_batch % n_proc:
        raise ValueError(f'{field}={global_batch} is not divisible by {n_proc} processes.')


def host_to_global(tree: Any, sharding: NamedSharding) -> Any:
    """Assembles per-process numpy arrays into global jax Arrays split along axis 0."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def to_host(tree: Any) -> Any:
    """Fetches (possibly multi-host) arrays as numpy; replicated arrays read locally."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)
