"""The training loop: the edge where data, checkpoints, logs and signals meet the step.

It knows no method and no metric by name: the method (`config.method`) supplies model,
loss, optimizer and data; the step is generic (`train_step`); the evaluator and the
checkpoint-ranking metric come from `config.eval`. This file only orders side effects:
resume from the workdir, feed device batches, log every `log_every_steps`, checkpoint,
evaluate, stop cleanly on SIGTERM/SIGINT, and stop on a non-finite loss or state
without ever saving a poisoned step (docs/training.md#non-finite).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from dcinet_jax import checkpoints, evaluate, parallel
from dcinet_jax.workdir_lock import WorkdirLock
from dcinet_jax.compilation_cache import setup_compilation_cache
from dcinet_jax.evaluators import sanity
from dcinet_jax.metric_logging import MetricLogger
from dcinet_jax.state import Trainer, build_trainer, total_train_steps


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or state; the message names the first bad step."""


def _supersede_after(ckpt: checkpoints.Checkpointer, restore_step: int) -> list[str]:
    """Moves the steps after `restore_step` aside, after checking it is a kept step."""
    kept = ckpt.all_steps()
    if restore_step != 0 and restore_step not in kept:
        raise FileNotFoundError(
            f'--restore_step {restore_step}: no such checkpoint in {ckpt.directory}; kept '
            f'steps: {sorted(kept) or "none"} (0 restarts from scratch)')
    later = [s for s in sorted(kept) if s > restore_step]
    notes = []
    if later and jax.process_index() == 0:
        moved = [ckpt.set_aside(s, 'superseded') for s in later]
        notes.append(f'restarting from step {restore_step}: moved the later steps {later} '
                     f'to {moved[0].parent} (kept, never deleted)')
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f'superseded after {restore_step}')
        ckpt.reload()
    return notes  # the loop's logger writes them


def stop_message(ckpt: checkpoints.Checkpointer, step: int, what: str) -> str:
    """The one-line report of a non-finite step: what, where, the kept steps with their
    training losses, and how to go back to one before the divergence."""
    losses = ckpt.step_losses()
    if not losses:
        return (f'{what} at step {step}; training stopped before any checkpoint was '
                'written. Lower the learning rate (or fix the data) and rerun.')
    listed = ', '.join(f'{s} (loss {"?" if v is None else f"{v:.4g}"})'
                       for s, v in sorted(losses.items()))
    newest = max(losses)
    return (f'{what} at step {step}; training stopped, nothing from step {step} on was '
            f'written. Kept checkpoints in {ckpt.directory}, all finite: {listed}; the last '
            f'good checkpoint is step {newest}, which may already be diverging. Go back to '
            f'an earlier one with --restore_step N (0: from scratch) and a lower learning '
            f'rate.')


def device_batches(iterator: Iterator[dict], sharding, depth: int) -> Iterator[dict]:
    """Keeps `depth` batches in flight to the devices ahead of the step."""
    queue: collections.deque = collections.deque()
    for _ in range(max(depth, 1)):
        queue.append(parallel.host_to_global(next(iterator), sharding))
    while True:
        batch = queue.popleft()
        queue.append(parallel.host_to_global(next(iterator), sharding))
        yield batch


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _agreed_signal(received: int | None, step: int, every: int) -> int | None:
    """The stop signal, acted on at the same step by every process.

    One process: at once. Several: only every `every` steps, after an all-gather of
    the flags, so all processes save the same step together (a collective) and exit.
    """
    if jax.process_count() == 1:
        return received
    if step % every:
        return None
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(received or 0))
    return int(np.max(flags)) or None


def _host_metrics(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    return [(s, {k: float(v) for k, v in parallel.to_host(m).items()}) for s, m in pending]


def _first_non_finite(fetched: list[tuple[int, dict]]) -> tuple[int, str] | None:
    """(step, what) of the first step whose loss or updated state is not finite."""
    for s, m in fetched:
        if not np.isfinite(m['loss']):
            return s, f'non-finite loss ({m["loss"]})'
        if m.get('state_finite', 1.0) != 1.0:
            return s, 'non-finite parameters or optimizer state after the update'
    return None


def _resume(ckpt: checkpoints.Checkpointer, trainer: Trainer,
            restore_step: int | None = None, fresh: Any = None) -> tuple[Any, int, list[str]]:
    """The newest intact checkpoint's state and step (fresh state and 0 when none).

    A corrupt step is reported, moved aside (never deleted) and the next older one
    tried; a checkpoint of a differently configured model is an error, not a fallback.
    `restore_step` N restarts from kept step N (0: from scratch): the later steps are
    moved to `checkpoints.superseded/` first (never deleted), so the new run neither
    collides with them nor resumes from them later. `fresh`: the initial state when
    the caller has already built it.
    """
    notes = []
    if restore_step is not None:
        notes += _supersede_after(ckpt, restore_step)
        if restore_step == 0:
            return fresh if fresh is not None else trainer.init_state(), 0, notes
    while (step := ckpt.latest_step()) is not None:
        try:
            state, _ = ckpt.restore(step, trainer.abstract_state())
            return state, step, notes
        except checkpoints.CorruptCheckpointError as e:
            moved = ckpt.quarantine(step) if jax.process_index() == 0 else None
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils
                multihost_utils.sync_global_devices(f'quarantined checkpoint {step}')
                ckpt.reload()
            notes.append(f'{e}; moved it to {moved}; falling back to the previous step')
            logging.warning(notes[-1])
    return fresh if fresh is not None else trainer.init_state(), 0, notes


def train_and_evaluate(config, workdir: str | Path, *, progress: bool = True,
                       restore_step: int | None = None) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), then evaluates.

    Returns a summary: final step, last losses, examples/s, evaluation results, and
    `stopped_by_signal` when a SIGTERM/SIGINT ended the run early. Everything about the
    config and data is checked before the workdir is created, so a rejected run leaves
    nothing behind; a second run on a busy workdir is refused (WorkdirBusyError).
    Every split the run will read is checked (the method's `validate_data`) before the
    first step. `restore_step` N restarts from kept step N instead of the newest.
    """
    from dcinet_jax import methods

    workdir = Path(workdir).absolute()
    parallel.maybe_initialize_distributed(config.distributed)
    setup_compilation_cache(config)
    method = methods.from_config(config)
    check_training = getattr(method, 'check_training', None)
    if check_training is not None:   # train-only checks of the method, before any data
        check_training(config)
    mesh = parallel.make_mesh()
    steps_per_epoch = method.steps_per_epoch(config, jax.process_count())
    total = total_train_steps(config, steps_per_epoch)
    trainer = build_trainer(config, total, mesh=mesh)
    methods.validate_data(method, config)
    if restore_step is not None:
        if restore_step < 0:
            raise ValueError(f'--restore_step {restore_step}: expected a kept step >= 0')
        if not (workdir / 'checkpoints').is_dir():
            raise FileNotFoundError(f'--restore_step {restore_step}: no checkpoints in '
                                    f'{workdir / "checkpoints"}')
    # A run that starts from scratch initialises (and loads pretrained or init_from
    # weights) before the workdir exists, so a refused initialisation leaves nothing.
    fresh = None
    if restore_step == 0 or not any((workdir / 'checkpoints').glob('[0-9]*')):
        fresh = trainer.init_state()

    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _train(trainer, workdir, total, steps_per_epoch, progress,
                      restore_step, fresh)


def _train(trainer: Trainer, workdir: Path, total: int, steps_per_epoch: int,
           progress: bool, restore_step: int | None = None, fresh: Any = None) -> dict:
    config, method, mesh = trainer.config, trainer.method, trainer.mesh
    ckpt = checkpoints.Checkpointer(workdir / 'checkpoints', keep=config.keep_checkpoints,
                                    best_metric=config.eval.best_metric, config=config)
    state, start, notes = _resume(ckpt, trainer, restore_step, fresh)
    logger = MetricLogger(workdir, total_steps=total, initial_step=start, progress=progress)
    for note in notes:
        logger.write(note)
    logger.write(f'{jax.device_count()} device(s) over {jax.process_count()} process(es); '
                 f'{steps_per_epoch} steps/epoch, {total} steps in all; '
                 + (f'resuming from step {start}' if start else 'starting from scratch'))
    if start >= total:
        logger.write(f'already trained to step {start} >= {total}')

    train_step = trainer.sharded_step()
    batches = device_batches(method.train_batches(config, start_step=start),
                             parallel.batch_sharded(mesh), config.data.prefetch)
    base_key = jax.random.key(config.seed + 1)
    examples_per_step = method.examples_per_step(config)
    profile_start, profile_stop = config.profile.start_step, -1
    if profile_start >= 0:
        profile_stop = profile_start + config.profile.num_steps

    pending: list[tuple[int, dict]] = []
    last: dict[str, float] = {}
    results: dict = {}
    stopped_by = None
    t_window, s_window = time.time(), start
    t_begin = time.time()
    step = start
    with _StopSignal() as stop:
        while step < total:
            if step == profile_start:
                jax.profiler.start_trace(str(workdir / 'profile'))
            batch = next(batches)
            state, metrics = train_step(state, batch, jax.random.fold_in(base_key, step))
            step += 1
            pending.append((step, metrics))
            if step == profile_stop:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                logger.write(f'profile of steps {profile_start}..{step - 1} written to '
                             f'{workdir / "profile"}')

            stopped_by = _agreed_signal(stop.received, step, config.log_every_steps)
            # The last step is always evaluated, before its checkpoint is written, so
            # the final checkpoint carries its metric for best-checkpoint ranking.
            do_eval = step == total or (config.eval_every_steps > 0
                                        and step % config.eval_every_steps == 0)
            do_ckpt = step % config.checkpoint_every_steps == 0 or step == total or stopped_by
            do_log = step % config.log_every_steps == 0 or do_eval or do_ckpt
            if do_log:
                fetched = _host_metrics(pending)
                pending.clear()
                bad = _first_non_finite(fetched) if config.nan_check else None
                if bad is not None:
                    ckpt.wait()
                    message = stop_message(ckpt, bad[0], bad[1])
                    logger.close()
                    ckpt.close()
                    raise NonFiniteLossError(message)
                last = fetched[-1][1]
                now = time.time()
                eps = (step - s_window) * examples_per_step / max(now - t_window, 1e-9)
                t_window, s_window = now, step
                # The rate of the update just applied (update `step - 1`, 0-based), from
                # the method's own schedule (state.method_learning_rate).
                logger.scalars(step, dict(last, examples_per_sec=eps,
                                          learning_rate=float(trainer.schedule(step - 1))),
                               prefix='train/')
                logger.progress(step, last['loss'], eps)
            metrics_for_ckpt = None
            meta = {'total_steps': total, 'config': checkpoints.config_record(config),
                    'loss': last.get('loss')}
            if do_eval:
                results, metrics_for_ckpt = _evaluate_then_save(
                    trainer, state, step, workdir, logger, ckpt, meta)
            if do_ckpt or do_eval:
                ckpt.save(step, state, metrics=metrics_for_ckpt, meta=meta)
            if stopped_by:
                logger.write(f'signal {signal.Signals(stopped_by).name}: saved step {step}, '
                             'exiting; run the same command again to resume')
                break
    ckpt.wait()
    elapsed = time.time() - t_begin
    if start >= total:  # nothing trained this run: evaluate the restored state
        results = _evaluate(trainer, state, step, workdir, logger)
    ckpt.close()
    trained = step - start
    summary = {
        'step': step, 'total_steps': total, 'steps_this_run': trained,
        'seconds': round(elapsed, 1),
        'examples_per_sec': round(trained * examples_per_step / max(elapsed, 1e-9), 1),
        'last_metrics': last, 'results': results,
        'stopped_by_signal': signal.Signals(stopped_by).name if stopped_by else None,
        'params_checksum': params_checksum(state.params),
    }
    logger.write(
        f'done: step {step}/{total}, {trained} steps in {elapsed:.0f}s '
        f'({summary["examples_per_sec"]} examples/s)'
        + (f', last loss {last["loss"]:.4f}' if last else '')
        + (f', {config.eval.best_metric} {evaluate.best_metric(config, results):.3f}'
           if results else ''))
    logger.close()
    return summary


def params_checksum(params) -> str:
    """Digest of this process's own replica of the params (to compare across processes)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
    return h.hexdigest()[:16]


def _evaluate_then_save(trainer: Trainer, state: Any, step: int, workdir: Path,
                        logger: MetricLogger, ckpt: checkpoints.Checkpointer,
                        meta: dict) -> tuple[dict, dict]:
    """(results, checkpoint metrics) of an evaluation step, whose checkpoint is then
    saved with its metric (for best-checkpoint ranking; orbax records metrics only at
    save). The saves in flight finish first, and an evaluation that fails saves this
    step without a metric and waits for it before the error goes up: nothing trained
    is lost to a fault of the evaluation (docs/training.md#evaluation-during-training).
    Collapsed features stop the run like a NaN (NonFiniteLossError), unsaved."""
    ckpt.wait()
    try:
        results = _evaluate(trainer, state, step, workdir, logger)
        return results, {trainer.config.eval.best_metric:
                         evaluate.best_metric(trainer.config, results)}
    except sanity.DegenerateFeaturesError as e:
        # A collapsed model is treated like a non-finite one: this step is not saved.
        message = stop_message(ckpt, step, f'collapsed model ({e.summary})')
        logger.close()
        ckpt.close()
        raise NonFiniteLossError(message) from None
    except BaseException:
        ckpt.save(step, state, meta=meta)
        ckpt.wait()
        logger.write(f'evaluation at step {step} failed; step {step} was saved first '
                     f'(in {ckpt.directory}), so no training is lost')
        logger.close()
        ckpt.close()
        raise


def _evaluate(trainer: Trainer, state: Any, step: int, workdir: Path,
              logger: MetricLogger) -> dict:
    config = trainer.config
    results = evaluate.evaluate_variables(
        config, trainer.method, trainer.eval_model, parallel.to_host(state.variables()),
        step=step, workdir=workdir)
    logger.scalars(step, evaluate.scalar_metrics(results), prefix='eval/')
    headline = {k: v for k, v in results.items() if isinstance(v, float)}
    logger.write(f'evaluation at step {step}: '
                 + ', '.join(f'{k} {v:.4f}' for k, v in headline.items()))
    return results
