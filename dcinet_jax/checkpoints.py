"""Checkpoints: an orbax CheckpointManager that keeps the latest N and the best by a metric.

A checkpoint holds three items: `model` (step, params and the other variable
collections), `opt_state`, and a small JSON record `meta`. Evaluation restores `model`
alone. The data position and the per-step RNG are functions of the step (the input
pipeline resumes from `start_step`, the step key is `fold_in(seed, step)`), so the step
alone restores them. Saves are asynchronous; orbax writes into a temporary directory
and renames it when complete, so a half-written checkpoint is never restored.

A training run opens its checkpoints for writing (it may clean up its own unfinished
temporary directories); anything else (`dcinet eval`, reports) opens them read-only, so
reading never creates, cleans or deletes anything, even beside a live training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from dcinet_jax.state import TrainState


class _DropOrbaxNoise(logging.Filter):
    """Orbax warns on every save without metrics when a best metric is tracked; saves
    between evaluations are meant to have none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'Requested `tracked_metric`' not in record.getMessage()


logging.getLogger('absl').addFilter(_DropOrbaxNoise())


class Checkpointer:
    """Thin wrapper so the train loop reads as save/restore/latest_step.

    `best_metric` names the metric (a key of the `metrics` given to `save`) that ranks
    checkpoints, higher is better. `read_only` opens an existing directory for reading.
    """

    def __init__(self, directory: str | Path, *, best_metric: str, keep: int = 3,
                 async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        self.read_only = read_only

        def metric(metrics: dict) -> float:
            return float(metrics[best_metric])

        if read_only:
            if not self.directory.is_dir():
                raise FileNotFoundError(f'no checkpoints in {self.directory}: train first '
                                        '(or check --workdir)')
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, cleanup_tmp_directories=False,
                best_fn=metric, best_mode='max', enable_async_checkpointing=False)
        else:
            policy = pp.AnyPreservationPolicy([
                pp.LatestN(n=keep),
                pp.BestN(get_metric_fn=metric, n=1, keep_checkpoints_without_metrics=False),
            ])
            options = ocp.CheckpointManagerOptions(
                preservation_policy=policy, best_fn=metric, best_mode='max',
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=('model', 'opt_state', 'meta'))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: TrainState, *, meta: dict | None = None,
             metrics: dict | None = None) -> bool:
        """Saves unless this step is already saved; returns whether a save started."""
        if self.read_only:
            raise RuntimeError(f'{self.directory} was opened read-only')
        if step in self._manager.all_steps():
            return False
        model = {'step': state.step, 'params': state.params, 'collections': state.collections}
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(model),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))))
        return self._manager.save(step, args=args, metrics=metrics, force=True)

    def _check_step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f'no checkpoint in {self.directory}')
        if step not in self._manager.all_steps():
            raise FileNotFoundError(
                f'no checkpoint for step {step} in {self.directory}; '
                f'available: {sorted(self._manager.all_steps())}')
        return step

    def restore(self, step: int | None, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """Restores the whole train state of `step` (default: latest) onto the shardings
        of `abstract_state`, so a checkpoint written on N devices restores onto any other
        number of devices."""
        step = self._check_step(step)
        model = {'step': abstract_state.step, 'params': abstract_state.params,
                 'collections': abstract_state.collections}
        restored = self._manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(model),
            opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
            meta=ocp.args.JsonRestore()))
        logging.info('restored checkpoint step %d from %s', step, self.directory)
        m = restored['model']
        state = TrainState(step=m['step'], params=m['params'], opt_state=restored['opt_state'],
                           collections=m['collections'])
        return state, dict(restored['meta'] or {})

    def restore_variables(self, step: int | None, abstract_state: TrainState) -> dict:
        """`{'params': ..., **collections}` of `step`, without the optimizer state."""
        step = self._check_step(step)
        model = {'step': abstract_state.step, 'params': abstract_state.params,
                 'collections': abstract_state.collections}
        restored = self._manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(model)))
        m = restored['model']
        return {'params': m['params'], **m['collections']}

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_sharding(tree: Any, sharding) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or structs) placed on `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)
