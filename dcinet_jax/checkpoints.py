"""Checkpoints: an orbax CheckpointManager that keeps the latest N and the best by mAP.

Each checkpoint holds the train state (step, params, batch stats, optimizer state) and a
small JSON record. The data position and the per-step RNG are functions of the step
(the input pipeline resumes from `start_step`, the step key is `fold_in(seed, step)`),
so the step alone restores them. Saves are asynchronous; orbax writes into a temporary
directory and renames it when complete, so a half-written checkpoint is never restored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = 'bimodal_average'


def _best_metric(metrics: dict) -> float:
    return float(metrics[BEST_METRIC])


class Checkpointer:
    """Thin wrapper so the train loop reads as save/restore/latest_step."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=keep),
            pp.BestN(get_metric_fn=_best_metric, n=1,
                     keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=_best_metric, best_mode='max',
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=('state', 'meta'))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, *, meta: dict | None = None,
             metrics: dict | None = None) -> bool:
        """Saves unless this step is already saved; returns whether a save started."""
        if step in self._manager.all_steps():
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))))
        return self._manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict]:
        """Restores `step` (default: latest) onto the shardings in `abstract_state`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with shardings on the
        current mesh, so a checkpoint written on N devices restores onto any other number.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f'no checkpoint in {self.directory}')
        if step not in self._manager.all_steps():
            raise FileNotFoundError(
                f'no checkpoint for step {step} in {self.directory}; '
                f'available: {sorted(self._manager.all_steps())}')
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        logging.info('restored checkpoint step %d from %s', step, self.directory)
        return restored['state'], dict(restored['meta'] or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_sharding(tree: Any, sharding) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or structs) placed on `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)
