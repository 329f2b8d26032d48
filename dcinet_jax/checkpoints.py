"""Checkpoints: an orbax CheckpointManager that keeps the latest N and the best by a metric.

A checkpoint holds three items: `model` (step, params and the other variable
collections), `opt_state`, and a small JSON record `meta`. Evaluation restores `model`
alone. The data position and the per-step RNG are functions of the step (the input
pipeline resumes from `start_step`, the step key is `fold_in(key(seed + 1), step)`), so the step
alone restores them. Saves are asynchronous; orbax writes into a temporary directory
and renames it when complete, so a half-written checkpoint is never restored.

A training run opens its checkpoints for writing (it may clean up its own unfinished
temporary directories); anything else (`dcinet eval`, reports) opens them read-only, so
reading never creates, cleans or deletes anything, even beside a live training run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from dcinet_jax.checkpoint_faults import (  # noqa: F401 - the errors are part of this API
    CheckpointMismatchError, CorruptCheckpointError, DiskFullError, OneLineDiskErrors,
    first_line as _first_line, size_text as _size)
from dcinet_jax.state import TrainState


# Listing attempts of a directory that a live training run is pruning at the same time.
_LIST_RETRIES = 5
# Free space a save must leave beside the state's own size (metadata, filesystem slack).
DISK_MARGIN_BYTES = 64 << 20


class Checkpointer:
    """Thin wrapper so the train loop reads as save/restore/latest_step.

    `best_metric` names the metric (a key of the `metrics` given to `save`) that ranks
    checkpoints, higher is better. `read_only` opens an existing directory for reading.
    Failures are single lines: CorruptCheckpointError (step and file),
    CheckpointMismatchError (the differing array and config fields), DiskFullError.
    """

    def __init__(self, directory: str | Path, *, best_metric: str, keep: int = 3,
                 async_save: bool = True, read_only: bool = False, config: Any = None):
        self.directory = Path(directory).absolute()
        self.config = config  # to name the differing fields when a checkpoint does not fit
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
        handlers = {'model': ocp.StandardCheckpointHandler(),
                    'opt_state': ocp.StandardCheckpointHandler(),
                    'meta': ocp.JsonCheckpointHandler()}
        for attempt in range(_LIST_RETRIES):
            try:
                self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                      item_handlers=handlers)
                break
            except FileNotFoundError:
                # A live training run deleted an old step while we listed the directory.
                if not read_only or attempt == _LIST_RETRIES - 1:
                    raise
                time.sleep(0.2)

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
        self._check_free_space(step, state)
        model = {'step': state.step, 'params': state.params, 'collections': state.collections}
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(model),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))))
        with self._disk_errors(step):
            return self._manager.save(step, args=args, metrics=metrics, force=True)

    def _check_free_space(self, step: int, state: Any) -> None:
        """Refuses, at this save and in one line, a state that cannot fit on the disk."""
        needed = sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree.leaves(state))
        free = shutil.disk_usage(self.directory).free
        if free < needed + DISK_MARGIN_BYTES:
            raise DiskFullError(
                errno.ENOSPC,
                f'disk full: checkpoint step {step} needs about {_size(needed)} (plus '
                f'{_size(DISK_MARGIN_BYTES)} margin) but {self.directory} has {_size(free)} '
                f'free; free space and run the same command again to {self.resume_point()}')

    def resume_point(self) -> str:
        """'resume from step N' (the newest step complete on disk, once the saves in
        flight have settled) or 'start from scratch': what a rerun will really do."""
        try:
            self._manager.wait_until_finished()
        except Exception:  # noqa: BLE001 - a save in flight that failed was not written
            pass
        done = [s for s in self._manager.all_steps() if (self.directory / str(s)).is_dir()]
        return f'resume from step {max(done)}' if done else 'start from scratch'

    def _disk_errors(self, step: int):
        return OneLineDiskErrors(self, step)

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
        model = self._check_fits(step, abstract_state)
        restored = self._read(step, model=ocp.args.StandardRestore(model),
                              opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                              meta=ocp.args.JsonRestore())
        logging.debug('restored checkpoint step %d from %s', step, self.directory)
        m = restored['model']
        state = TrainState(step=m['step'], params=m['params'], opt_state=restored['opt_state'],
                           collections=m['collections'])
        return state, dict(restored['meta'] or {})

    def restore_variables(self, step: int | None, abstract_state: TrainState) -> dict:
        """`{'params': ..., **collections}` of `step`, without the optimizer state."""
        step = self._check_step(step)
        model = self._check_fits(step, abstract_state)
        m = self._read(step, model=ocp.args.StandardRestore(model))['model']
        return {'params': m['params'], **m['collections']}

    def read_saved_variables(self, step: int | None = None) -> tuple[int, dict]:
        """(step, {'params': ..., **collections}) of `step` (default: latest) as host
        arrays, shaped as saved: no config or mesh needed (to start one run from another
        run's weights)."""
        step = self._check_step(step)
        try:
            saved = self._manager.item_metadata(step)['model'].tree
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpointError(step, self._culprit(step, e), _first_line(e)) from e
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        template = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype, sharding=device), saved)
        m = jax.device_get(self._read(step, model=ocp.args.StandardRestore(template))['model'])
        return step, {'params': m['params'], **m['collections']}

    def _read(self, step: int, **items) -> Any:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 - any other failure to read is corruption
            if not (self.directory / str(step)).exists():
                raise FileNotFoundError(
                    f'checkpoint step {step} was removed from {self.directory} while being '
                    'read (a live training run keeps only its latest checkpoints); evaluate '
                    'a newer step') from e
            if 'not compatible with the stored shape' in str(e) or isinstance(e, KeyError):
                what = _first_line(e).replace(str(self.directory / str(step)), '').strip(' :')
                raise CheckpointMismatchError(
                    f'checkpoint step {step} in {self.directory} does not fit this config '
                    f'(its arrays differ: {what}){self._config_diff(step)}') from e
            raise CorruptCheckpointError(step, self._culprit(step, e), _first_line(e)) from e

    def _check_fits(self, step: int, abstract_state: Any) -> dict:
        """The restore template of `model`, after checking the saved shapes match it.

        A mismatch (another class count, backbone or width) is one line naming the first
        differing array and the config fields that differ from the run that saved it.
        """
        template = {'step': abstract_state.step, 'params': abstract_state.params,
                    'collections': abstract_state.collections}
        self._check_method(step)
        try:
            saved = self._manager.item_metadata(step)['model'].tree
        except Exception:  # noqa: BLE001 - unreadable metadata: the restore will say why
            return template
        want = {leaf_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(template)}
        have = {leaf_path(p): tuple(getattr(x, 'shape', ()))
                for p, x in jax.tree_util.tree_leaves_with_path(saved)}
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                what = (f'{name} is {have.get(name, "absent")} in the checkpoint and '
                        f'{want.get(name, "absent")} with this config')
                raise CheckpointMismatchError(
                    f'checkpoint step {step} in {self.directory} does not fit this config: '
                    f'{what}{self._config_diff(step)}')
        return template

    def saved_config(self, step: int) -> dict:
        """The config recorded with `step` ({} when unreadable or not recorded)."""
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))['meta'] or {}
        except Exception:  # noqa: BLE001 - the record is a hint only
            return {}
        return dict(meta.get('config') or {})

    def _check_method(self, step: int) -> None:
        """A checkpoint of another method is named as such, before any array differs."""
        if self.config is None:
            return
        saved = self.saved_config(step).get('method')
        now = str(self.config.get('method', 'dcinet'))
        if saved is not None and str(saved) != now:
            raise CheckpointMismatchError(
                f'checkpoint step {step} in {self.directory} was trained with method '
                f'{saved!r}, this config has method {now!r}: use a config of method '
                f'{saved!r} for this workdir, or another --workdir')

    def _config_diff(self, step: int) -> str:
        """'; the checkpoint has data.num_classes=4, this config says 5' (when recorded)."""
        if self.config is None:
            return ''
        saved, now = _flat(self.saved_config(step)), _flat(config_record(self.config))
        fields = [k for k in sorted(set(saved) & set(now)) if saved[k] != now[k]
                  and k.split('.')[0] in ('data', 'model', 'method')]
        if not fields:
            return ''
        return ('; the checkpoint has ' + ', '.join(f'{k}={saved[k]!r}' for k in fields)
                + ', this config says ' + ', '.join(f'{now[k]!r}' for k in fields))

    def _culprit(self, step: int, error: BaseException) -> str:
        """The file named by the error chain, else the step's directory."""
        step_dir = str(self.directory / str(step))
        e: BaseException | None = error
        while e is not None:
            text = str(e)
            start = text.find(step_dir)
            if start >= 0:
                end = start + len(step_dir)
                while end < len(text) and text[end] not in '"\' \n,:':
                    end += 1
                return text[start:end]
            if getattr(e, 'filename', None):
                return str(e.filename)
            e = e.__cause__ or e.__context__
        return step_dir

    def step_losses(self) -> dict[int, float | None]:
        """{kept step: the training loss recorded with it (None when not recorded)}."""
        out: dict[int, float | None] = {}
        for step in self.all_steps():
            try:
                meta = self._manager.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))['meta'] or {}
            except Exception:  # noqa: BLE001 - a listing hint only
                meta = {}
            loss = meta.get('loss')
            out[step] = float(loss) if isinstance(loss, (int, float)) else None
        return out

    def quarantine(self, step: int) -> Path:
        """Moves a corrupt step out of the checkpoint directory (never deletes it), so
        the run can save that step again; returns where it went."""
        return self.set_aside(step, 'corrupt')

    def set_aside(self, step: int, kind: str) -> Path:
        """Moves `step` to `<checkpoints>.<kind>/` (never deletes it); returns where."""
        target_root = self.directory.parent / (self.directory.name + f'.{kind}')
        target_root.mkdir(exist_ok=True)
        target = target_root / str(step)
        n = 1
        while target.exists():
            target, n = target_root / f'{step}.{n}', n + 1
        os.replace(self.directory / str(step), target)
        self._manager.reload()
        return target

    def reload(self) -> None:
        """Re-reads the directory (after another process changed it)."""
        self._manager.reload()

    def wait(self) -> None:
        with self._disk_errors(self.latest_step() or 0):
            self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()


def config_record(config: Any) -> dict:
    """The config as plain JSON data, stored with each checkpoint."""
    import json
    return json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') \
        else dict(config)


def _flat(tree: Mapping, prefix: str = '') -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def leaf_path(path) -> str:
    """'params/Dense_0/kernel' for a pytree key path."""
    return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                    for k in path)


def abstract_with_sharding(tree: Any, sharding) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or structs) placed on `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)
