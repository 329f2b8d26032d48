"""`dcinet bench`: speed of a method's full train step, measured the way it trains.

What is timed is the real sharded train step of `state.build_trainer` (for DCINet:
both sub-module passes, CMSI and CMCI as configured, loss, gradients, SGD update) on a
synthetic batch created directly on the devices (no input pipeline, no host copies),
so the figure is an upper bound the input pipeline has to keep up with. How each
figure is obtained is written in `harness` and in benchmarks/README.md:

- compile: trace+lower and XLA compile timed apart; the first steps timed apart again.
- step time: the median per-step time of at most 5 windows under a transfer guard.
- FLOPs: the compiled step's cost analysis (one device's program) times the devices.
- utilisation: achieved FLOP/s over a dense-matmul peak measured in the same run.
- memory: the devices' `peak_bytes_in_use` where kept (GPU), else the compiled
  step's memory analysis.
- compile restart and the PyTorch peer run in fresh processes (`processes`), before
  this process claims the accelerator's memory.
"""

from __future__ import annotations

import gc
import json
import math
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dcinet_jax import methods, parallel
from dcinet_jax.compilation_cache import setup_compilation_cache
from dcinet_jax.perf import harness, processes

_DONATION_WARNING = 'donated buffers were not usable'
# Config fields copied into the result (when the config has them), to say what ran.
_CONFIG_FIELDS = {'config_backbone': ('model', 'backbone'), 'image_size': ('data', 'image_size'),
                  'cut': ('model', 'cut'), 'cmsi': ('interaction', 'cmsi'),
                  'cmci': ('interaction', 'cmci')}


# ----------------------------------------------------------------------------- train step

def run_train_bench(config: Any, *, steps: int, warmup_steps: int = 2,
                    mesh: jax.sharding.Mesh | None = None
                    ) -> tuple[dict, harness.TrainSetup, Any]:
    """Compiles and times the train step; returns (figures, setup, final state)."""
    setup = harness.build_train_setup(config, total_steps=warmup_steps + steps, mesh=mesh)
    donated_leaf = jax.tree.leaves(setup.state.params)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        compiled, ctimes = harness.compile_step(setup)
        keys = harness.step_keys(config.seed + harness.KEYS_SEED_OFFSET,
                                 warmup_steps + steps, setup.mesh)
        state = setup.take_state()
        t0 = time.perf_counter()
        state, metrics = compiled(state, setup.batch, keys[0])
        jax.block_until_ready(state)
        first_step_s = time.perf_counter() - t0
        donation_ok = donated_leaf.is_deleted() and not any(
            _DONATION_WARNING in str(w.message) for w in caught)
        state, metrics = harness.run_steps(compiled, (state, metrics), setup.batch,
                                           keys[1:warmup_steps])
        jax.block_until_ready(state)

        def run(carry, i):
            return compiled(carry[0], setup.batch, keys[warmup_steps + i])

        (state, metrics), per_step = harness.timed_windows(run, (state, metrics), steps)
    loss = float(np.asarray(jax.device_get(metrics['loss'])))
    n_dev = setup.mesh.devices.size
    step_s = statistics.median(per_step)
    cost = harness.cost_figures(compiled)
    flops_step = cost['flops'] * n_dev
    n = setup.examples_per_step
    figures = {
        'batch_per_modality': int(config.data.batch_per_modality),
        'images_per_step': n,
        'trace_lower_s': ctimes['trace_lower_s'], 'compile_s': ctimes['compile_s'],
        'first_step_s': first_step_s, 'warmup_steps': warmup_steps,
        'timed_steps': steps, 'step_times_s': per_step, 'step_time_s': step_s,
        'images_per_sec': n / step_s, 'images_per_sec_per_device': n / step_s / n_dev,
        'flops_per_step': flops_step, 'bytes_accessed_per_device': cost['bytes_accessed'],
        'achieved_tflops': flops_step / step_s / 1e12 if flops_step else 0.0,
        'final_loss': loss, 'donation_ok': bool(donation_ok),
        'donation_warnings': [str(w.message) for w in caught
                              if _DONATION_WARNING in str(w.message)],
        'compiled_memory': harness.compiled_memory(compiled),
    }
    return figures, setup, state


def has_image_eval(config: Any) -> bool:
    """Whether `bench_eval` applies: a model fed `{modality: uint8 images}` returning
    logits (DCINet and the FG-XMedia evaluator), told by the data fields it reads."""
    return all(f in config.data for f in ('eval_batch_size', 'image_size'))


def bench_eval(config: Any, model: Any, state: Any, mesh: jax.sharding.Mesh, *, steps: int,
               modality: str = 'image') -> dict[str, float]:
    """Feature extraction as the mAP evaluators run it (eval mode, softmax of the logits).

    `model` is the trainer's eval model. Measured on one image-like modality (image and
    audio cost the same); the batch is data.eval_batch_size rounded up to a multiple of
    the device count.
    """
    n_dev = mesh.devices.size
    b = max(int(config.data.eval_batch_size), 1)
    b = -(-b // n_dev) * n_dev
    size = int(config.data.image_size)
    shard = parallel.batch_sharded(mesh)
    x = jax.jit(lambda k: jax.random.randint(k, (b, size, size, 3), 0, 256, jnp.int32)
                .astype(jnp.uint8), out_shardings=shard)(jax.random.key(2))
    variables = state.variables()

    @jax.jit
    def features(variables, x):
        out = model.apply(variables, {modality: x}, train=False)
        return jax.nn.softmax(out['logits'].astype(jnp.float32), axis=-1)

    t0 = time.perf_counter()
    compiled = features.lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    first = jax.block_until_ready(compiled(variables, x))
    # Each call's output is the carry, so every window ends by waiting for its last call.
    _, per_step = harness.timed_windows(lambda c, i: compiled(variables, x), first, steps)
    step_s = statistics.median(per_step)
    return {'eval_batch': b, 'eval_step_time_s': step_s, 'eval_images_per_sec': b / step_s,
            'eval_compile_s': compile_s}


# ----------------------------------------------------------------------------- max batch

def search_max_batch(fits: Callable[[int], bool], start: int, granularity: int,
                     limit: int) -> int:
    """Largest multiple of `granularity` in [granularity, limit] for which `fits` holds.

    Assumes `fits` is monotone (true up to some size, false above): doubles from `start`
    until a size fails (or `limit` is reached), then bisects between the last size that
    fitted and the first that failed. Returns 0 when even `granularity` fails.
    """
    g = max(int(granularity), 1)
    top = (int(limit) // g) * g
    if top < g:
        return 0
    b = min(max(g, (int(start) // g) * g), top)
    lo, hi = 0, top + g          # lo fits (0: nothing yet); hi fails (or lies past limit)
    while True:
        if fits(b):
            lo = b
            if b >= top:
                return b
            b = min(2 * b, top)
        else:
            hi = b
            break
    while hi - lo > g:
        mid = lo + max((hi - lo) // (2 * g), 1) * g
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _is_oom(err: BaseException) -> bool:
    text = str(err)
    return any(s in text for s in ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory',
                                   'OOM'))


def batch_granularity(config: Any, num_devices: int, limit: int) -> int:
    """Smallest data.batch_per_modality the method's batch rule accepts on
    `num_devices` (its multiples are the sizes the search tries); 0 if none <= limit."""
    method = methods.from_config(config)
    c = harness.prepare_config(config)
    for b in range(1, int(limit) + 1):
        c.data.batch_per_modality = b
        try:
            method.batch_rule(c, num_devices)
        except ValueError:
            continue
        return b
    return 0


def find_max_batch_per_modality(config: Any, *, limit: int = 4096,
                                steps: int = 2) -> dict[str, Any]:
    """Largest data.batch_per_modality whose train step compiles and runs.

    Out-of-memory (XLA RESOURCE_EXHAUSTED, at compile or run time) counts as "does not
    fit"; any other error is raised. `tried` maps each size to its images/s (or 'OOM').
    """
    g = batch_granularity(config, jax.device_count(), limit)
    tried: dict[int, Any] = {}

    def fits(b: int) -> bool:
        c = harness.prepare_config(config, batch_per_modality=b)
        try:
            figures, setup, state = run_train_bench(c, steps=steps, warmup_steps=1)
            tried[b] = round(figures['images_per_sec'], 2)
            del setup, state
            return True
        except Exception as e:  # noqa: BLE001
            if not _is_oom(e):
                raise
            tried[b] = 'OOM'
            return False
        finally:
            gc.collect()

    best = search_max_batch(fits, int(config.data.batch_per_modality), g, limit) if g else 0
    return {'max_batch_per_modality': best, 'granularity': g, 'limit': limit,
            'tried': {str(k): v for k, v in sorted(tried.items())}}


# ----------------------------------------------------------------------------- report

def _fmt_bytes(n: float | None) -> str:
    if not n:
        return 'n/a'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} GiB'


def format_table(r: dict[str, Any]) -> str:
    """The compact human-readable table of a `bench_main` result."""
    rows = [
        ('device', f"{r['device_kind']} x {r['device_count']} ({r['platform']})"),
        ('jax', r['jax_version']),
        ('dtype', r['dtype']),
        ('batch per modality', f"{r['batch_per_modality']} "
                               f"({r['images_per_step']} samples/step, all modalities)"),
        ('trace+lower / compile', f"{r['trace_lower_s']:.2f} s / {r['compile_s']:.2f} s "
                                  f"(persistent cache {'on' if r['persistent_cache'] else 'off'})"),
        ('first step (warm-up)', f"{r['first_step_s']:.3f} s"),
        ('median step time', f"{r['step_time_s'] * 1e3:.2f} ms over {r['timed_steps']} steps"),
        ('images/s', f"{r['images_per_sec']:.1f} ({r['images_per_sec_per_device']:.1f} "
                     'per device)'),
        ('model FLOPs / step', f"{r['flops_per_step'] / 1e9:.3f} GFLOP (cost_analysis)"),
        ('achieved', f"{r['achieved_tflops']:.4f} TFLOP/s"),
        ('matmul peak (measured)', f"{r['peak']['tflops_total']:.4f} TFLOP/s "
                                   f"({r['peak']['dtype']}, n={r['peak']['n']})"),
        ('utilisation', f"{100 * r['utilisation']:.1f} %"),
        ('peak memory / device', f"{_fmt_bytes(r['peak_memory_bytes'])} "
                                 f"({r['peak_memory_source']})"),
        ('donated state reused', 'yes' if r['donation_ok'] else 'NO'),
    ]
    ev, cr, mb, p = (r.get(k) for k in ('eval', 'compile_restart', 'max_batch', 'peer'))
    if ev:
        rows += [('eval features', f"{ev['eval_images_per_sec']:.1f} images/s "
                                   f"(batch {ev['eval_batch']})")]
    if cr:
        rows += [('compile cold / warm',
                  f"{cr['cold']['compile_s']:.2f} s / {cr['warm']['compile_s']:.2f} s"),
                 ('restart to 1st step', f"{cr['cold']['process_wall_s']:.1f} s cold / "
                                         f"{cr['warm']['process_wall_s']:.1f} s warm")]
    if mb:
        rows += [('max batch/modality',
                  f"{mb['max_batch_per_modality']} (tried {mb['tried']})")]
    if p:
        rows += [('torch peer', f"{p['images_per_sec']:.1f} images/s on {p['device']}, "
                                f"{p['dtype']}, torch {p['torch_version']}"
                                + (', compiled' if p.get('compile') else '')),
                 ('JAX / PyTorch', f"{r['jax_over_torch']:.3f} ({r['ratio_basis']})")]
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


def finite_json(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def _config_figures(config: Any) -> dict[str, Any]:
    out = {'method': str(config.get('method', 'dcinet')), 'dtype': str(config.model.dtype)}
    for key, (group, field) in _CONFIG_FIELDS.items():
        sub = config.get(group, None)
        if sub is not None and field in sub:
            value = sub[field]
            out[key] = value if isinstance(value, (bool, int, float)) else str(value)
    return out


def _peer_ratio(result: dict[str, Any], peer_result: dict[str, Any]) -> None:
    """JAX over PyTorch images/s. Virtual CPU devices share the same cores: compare
    totals there, else per device."""
    if result['platform'] == 'cpu':
        ratio = result['images_per_sec'] / peer_result['images_per_sec']
        basis = 'total images/s, same CPU cores'
    else:
        ratio = result['images_per_sec_per_device'] / peer_result['images_per_sec']
        basis = 'images/s per device'
    result.update(peer=peer_result, jax_over_torch=ratio, ratio_basis=basis)


def bench_main(config: Any, *, batch_per_modality: int | None = None, steps: int = 20,
               dtype: str | None = None, peer: str | None = None,
               find_max_batch: bool = False, json_out: str | None = None,
               warmup_steps: int = 2, eval_steps: int | None = None,
               cache_check: bool | None = None, torch_compile: bool = False,
               max_batch_limit: int = 4096, print_table: bool = True) -> dict[str, Any]:
    """Benchmarks the train step (and eval forward) of `config`; prints a table.

    `cache_check`: measure cold compile vs warm-cache restart in two subprocesses
    (None: do it when config.compilation_cache_dir is set). `peer='torch'`: run the
    PyTorch peer (`dcinet_jax.perf.torch_peer`) on the same sizes first
    (`torch_compile` uses torch.compile). Returns every figure; writes them as JSON to
    `json_out` when given.
    """
    if steps < 1:
        raise ValueError(f'--steps must be >= 1, got {steps}')
    if peer not in (None, 'torch'):
        raise ValueError(f"peer={peer!r}: only 'torch' is implemented")
    if peer == 'torch':
        processes.require_torch()
    config = harness.prepare_config(config, batch_per_modality=batch_per_modality,
                                    dtype=dtype)
    if cache_check is None:
        cache_check = bool(config.get('compilation_cache_dir', '')) and not find_max_batch

    # Subprocess work first, before this process claims the accelerator's memory.
    peer_result = None
    if peer == 'torch':
        peer_result = processes.run_peer_subprocess(processes.peer_arguments(
            config, steps=steps, warmup_steps=warmup_steps, torch_compile=torch_compile))
    restart = processes.compile_restart_times(config) if cache_check else None

    setup_compilation_cache(config)
    devices = jax.devices()
    mesh = parallel.make_mesh()
    figures, setup, state = run_train_bench(config, steps=steps, warmup_steps=warmup_steps,
                                            mesh=mesh)
    eval_figures = (bench_eval(config, setup.trainer.eval_model, state, mesh,
                               steps=eval_steps or min(steps, 10))
                    if has_image_eval(config) else None)
    info = harness.device_figures()
    peak_dtype, n, chain = harness.default_peak_matmul(info['platform'])
    peak = harness.measure_matmul_peak(mesh, dtype=peak_dtype, n=n, chain=chain)
    peak_mem = harness.device_peak_memory(devices)
    result: dict[str, Any] = {
        'date': time.strftime('%Y-%m-%d %H:%M:%S'), **info,
        'process_count': jax.process_count(), 'host': platform.node(),
        'jaxlib_version': getattr(jax.lib, '__version__', jax.__version__),
        **_config_figures(config), **figures, 'peak': peak, 'eval': eval_figures,
        'utilisation': (figures['achieved_tflops'] / peak['tflops_total']
                        if peak['tflops_total'] else 0.0),
        'peak_memory_bytes': peak_mem if peak_mem is not None
        else figures['compiled_memory'].get('total_bytes'),
        'peak_memory_source': 'device.memory_stats' if peak_mem is not None
        else 'compiled.memory_analysis',
        'compile_restart': restart,
        'persistent_cache': config.get('compilation_cache_dir', '') or None,
    }
    del setup, state
    gc.collect()
    if find_max_batch:
        result['max_batch'] = find_max_batch_per_modality(config, limit=max_batch_limit)
    if peer_result is not None:
        _peer_ratio(result, peer_result)
    if print_table:
        print(format_table(result), flush=True)
    if json_out:
        path = write_json(json_out, result)
        if print_table:
            print(f'figures written to {path}')
    return result


def write_json(json_out: str, result: dict[str, Any]) -> Path:
    """Writes a bench result as JSON (non-finite floats as strings); returns the path."""
    path = Path(json_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_json(result), indent=2, default=str))
    return path
