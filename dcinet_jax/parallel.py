"""Devices, the `data` mesh, batch shardings and multi-host start-up.

DCINet is trained data parallel: every device holds the whole (replicated) train state
and a slice of each modality's batch, and applies CMSI/CMCI to its own slice, as
`pmap` did. The step is written with `jax.shard_map` over the one mesh axis `data`.
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


def check_batch_divisible(batch_per_modality: int, num_modalities: int, *, train: bool = True):
    """Clear errors for global batch sizes the mesh cannot split, or CMSI cannot pair."""
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if batch_per_modality % n_dev:
        raise ValueError(
            f'data.batch_per_modality={batch_per_modality} is not divisible by the '
            f'{n_dev} devices of the mesh; every device needs the same slice of every modality.')
    if batch_per_modality % n_proc:
        raise ValueError(f'data.batch_per_modality={batch_per_modality} is not divisible by '
                         f'{n_proc} processes.')
    local = batch_per_modality // n_dev * num_modalities
    if train and local % 2:
        raise ValueError(
            f'each device holds {local} samples ({batch_per_modality // n_dev} per modality x '
            f'{num_modalities}), but CMSI pairs sample i with sample B-1-i and needs an even '
            'per-device batch: change data.batch_per_modality or the number of devices.')


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
