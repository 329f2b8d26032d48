"""The training loop: the edge where data, checkpoints, logs and signals meet the step.

Everything numeric lives in `train_step` (pure); this file only orders side effects:
resume from the workdir, feed device batches, log every `log_every_steps`, checkpoint,
evaluate, stop cleanly on SIGTERM/SIGINT, and stop on a non-finite loss without writing
anything after the last good checkpoint.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from dcinet_jax import checkpoints, evaluate, parallel
from dcinet_jax.metric_logging import MetricLogger
from dcinet_jax.models import build_model, init_variables
from dcinet_jax.train_step import (TrainState, create_optimizer, create_train_state,
                                   learning_rate_schedule, make_sharded_train_step)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the message names the first bad step."""


def setup_compilation_cache(config) -> None:
    """Persistent XLA caches so a restart does not recompile (or re-autotune) the step.

    Compiled executables go to `compilation_cache_dir`; GPU autotuning results to its
    `autotune/` folder (an XLA flag, so this must run before the backend starts).
    """
    cache_dir = config.get('compilation_cache_dir', '')
    if not cache_dir:
        return
    path = os.path.expanduser(cache_dir)
    os.makedirs(path, exist_ok=True)
    xla_flags = os.environ.get('XLA_FLAGS', '')
    if 'xla_gpu_per_fusion_autotune_cache_dir' not in xla_flags:
        autotune = os.path.join(path, 'autotune')
        os.makedirs(autotune, exist_ok=True)
        os.environ['XLA_FLAGS'] = (
            f'{xla_flags} --xla_gpu_per_fusion_autotune_cache_dir={autotune}'.strip())
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def total_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(config.num_epochs * steps_per_epoch)


def _state_initializer(config, model, tx):
    def init(rng) -> TrainState:
        return create_train_state(init_variables(model, rng, config), tx)
    return init


def init_state(config, model, tx, mesh) -> TrainState:
    """Parameters created directly replicated on the mesh (no host round trip)."""
    rep = parallel.replicated(mesh)
    state = jax.jit(_state_initializer(config, model, tx),
                    out_shardings=rep)(jax.random.key(config.seed))
    if config.model.pretrained:
        from dcinet_jax import pretrained
        variables = pretrained.load_pretrained_backbone(
            config.model.pretrained,
            {'params': parallel.to_host(state.params),
             'batch_stats': parallel.to_host(state.batch_stats)})
        state = jax.device_put(create_train_state(variables, tx), rep)
    return state


def abstract_state(config, model, tx, mesh) -> Any:
    shapes = jax.eval_shape(_state_initializer(config, model, tx), jax.random.key(0))
    return checkpoints.abstract_with_sharding(shapes, parallel.replicated(mesh))


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


def train_and_evaluate(config, workdir: str | Path, *, progress: bool = True) -> dict:
    """Trains (resuming from `workdir` if it holds checkpoints), then evaluates.

    Returns a summary: final step, last losses, images/s, evaluation results, and
    `stopped_by_signal` when a SIGTERM/SIGINT ended the run early.
    """
    from input_pipeline import pipeline  # TensorFlow only where data is read

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    parallel.maybe_initialize_distributed(config.distributed)
    setup_compilation_cache(config)
    modalities = tuple(config.data.modalities)
    parallel.check_batch_divisible(config.data.batch_per_modality, len(modalities))
    mesh = parallel.make_mesh()

    steps_per_epoch = pipeline.steps_per_epoch(config, jax.process_count())
    total = total_train_steps(config, steps_per_epoch)
    model = build_model(config, bn_axis_name=parallel.DATA_AXIS if config.model.bn_sync
                        else None)
    eval_model = build_model(config)
    tx = create_optimizer(config, total)
    schedule = learning_rate_schedule(config, total)
    ckpt = checkpoints.Checkpointer(workdir / 'checkpoints', keep=config.keep_checkpoints)

    start = ckpt.latest_step()
    if start is None:
        state = init_state(config, model, tx, mesh)
        start = 0
    else:
        state, _ = ckpt.restore(start, abstract_state(config, model, tx, mesh))
    logger = MetricLogger(workdir, total_steps=total, initial_step=start, progress=progress)
    logger.write(f'{jax.device_count()} device(s) over {jax.process_count()} process(es); '
                 f'{steps_per_epoch} steps/epoch, {total} steps in all; '
                 + (f'resuming from step {start}' if start else 'starting from scratch'))
    if start >= total:
        logger.write(f'already trained to step {start} >= {total}')

    train_step = make_sharded_train_step(model=model, tx=tx, config=config, mesh=mesh)
    batches = device_batches(
        pipeline.create_train_iterator(config, start_step=start),
        parallel.batch_sharded(mesh), config.data.prefetch)
    base_key = jax.random.key(config.seed + 1)
    images_per_step = config.data.batch_per_modality * len(modalities)
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
            # the final checkpoint carries its mAP for best-checkpoint ranking.
            do_eval = step == total or (config.eval_every_steps > 0
                                        and step % config.eval_every_steps == 0)
            do_ckpt = step % config.checkpoint_every_steps == 0 or step == total or stopped_by
            do_log = step % config.log_every_steps == 0 or do_eval or do_ckpt
            if do_log:
                fetched = _host_metrics(pending)
                pending.clear()
                for s, m in fetched:
                    if config.nan_check and not np.isfinite(m['loss']):
                        ckpt.wait()
                        good = ckpt.latest_step()
                        logger.close()
                        ckpt.close()
                        raise NonFiniteLossError(
                            f'non-finite loss ({m["loss"]}) at step {s}; training stopped. '
                            f'The last good checkpoint is step {good} in {ckpt.directory}; '
                            'nothing after it was written.')
                last = fetched[-1][1]
                now = time.time()
                ips = (step - s_window) * images_per_step / max(now - t_window, 1e-9)
                t_window, s_window = now, step
                logger.scalars(step, dict(last, images_per_sec=ips,
                                          learning_rate=float(schedule(step - 1))),
                               prefix='train/')
                logger.progress(step, last['loss'], ips)
            metrics_for_ckpt = None
            if do_eval:
                results = _evaluate(config, eval_model, state, step, workdir, logger)
                metrics_for_ckpt = {checkpoints.BEST_METRIC: results['bimodal_average']}
            if do_ckpt or do_eval:
                ckpt.save(step, state, metrics=metrics_for_ckpt,
                          meta={'total_steps': total, 'config_seed': config.seed})
            if stopped_by:
                logger.write(f'signal {signal.Signals(stopped_by).name}: saved step {step}, '
                             'exiting; run the same command again to resume')
                break
    ckpt.wait()
    elapsed = time.time() - t_begin
    if start >= total:  # nothing trained this run: evaluate the restored state
        results = _evaluate(config, eval_model, state, step, workdir, logger)
    ckpt.close()
    trained = step - start
    summary = {
        'step': step, 'total_steps': total, 'steps_this_run': trained,
        'seconds': round(elapsed, 1),
        'images_per_sec': round(trained * images_per_step / max(elapsed, 1e-9), 1),
        'last_metrics': last, 'results': results,
        'stopped_by_signal': signal.Signals(stopped_by).name if stopped_by else None,
        'params_checksum': params_checksum(state.params),
    }
    logger.write(
        f'done: step {step}/{total}, {trained} steps in {elapsed:.0f}s '
        f'({summary["images_per_sec"]} img/s), last loss '
        f'{last.get("loss", float("nan")):.4f}'
        + (f', bi-modal mAP {results["bimodal_average"]:.3f}, multi-modal mAP '
           f'{results["multimodal_average"]:.3f}' if results else ''))
    logger.close()
    return summary


def params_checksum(params) -> str:
    """Digest of this process's own replica of the params (to compare across processes)."""
    import hashlib
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
    return h.hexdigest()[:16]


def _evaluate(config, model, state, step, workdir, logger) -> dict:
    variables = {'params': parallel.to_host(state.params),
                 'batch_stats': parallel.to_host(state.batch_stats)}
    results = evaluate.evaluate_variables(config, model, variables, step=step,
                                          workdir=workdir, progress=False)
    logger.scalars(step, results['bimodal'], prefix='eval/')
    logger.scalars(step, results['multimodal'], prefix='eval/')
    logger.scalars(step, {'bimodal_average': results['bimodal_average'],
                          'multimodal_average': results['multimodal_average']},
                   prefix='eval/')
    logger.write(f'evaluation at step {step}: bi-modal mAP {results["bimodal_average"]:.4f}, '
                 f'multi-modal mAP {results["multimodal_average"]:.4f}')
    return results
