"""`dcinet bench`: speed of the full DCINet train step, measured the way it trains.

What is timed is the real sharded train step (`train_step.make_sharded_train_step`):
both sub-module passes, CMSI and CMCI as configured, loss, gradients, SGD update, on
synthetic batches created directly on the devices (no input pipeline, no host copies),
so the figure is an upper bound the input pipeline has to keep up with.

Figures and how they are obtained:
- compile: trace+lower and XLA compile timed apart from execution; the first
  executions (warm-up) are timed separately again.
- step time: the timed steps are cut into windows; each window ends with one
  `block_until_ready` and the median of the per-step window times is reported. Inside
  a window nothing waits on the host: the loop runs under `jax.transfer_guard`
  ('disallow'), so an accidental host sync raises instead of skewing the figure.
- FLOPs: `compiled.cost_analysis()` of the step. The step is a `shard_map` program,
  so the analysis is of one device's program; the global figure multiplies by the
  number of devices.
- utilisation: achieved FLOP/s over a dense-matmul peak measured in the same run on the
  same devices (bf16 on accelerators, float32 on CPU), not a datasheet number.
- memory: `device.memory_stats()['peak_bytes_in_use']` where the backend keeps it
  (GPU), else the compiled step's `memory_analysis()`.
- compile restart (`cache_check`): the step is compiled in two fresh subprocesses that
  share a new, empty persistent cache directory (plus XLA's per-fusion autotune cache on
  GPU): the first is a cold compile, the second a warm restart.
- peer: `benchmarks/torch_peer.py` runs the same work in PyTorch in a subprocess that
  starts before this process touches the accelerator (JAX preallocates most of its
  memory, which would starve the peer).

Only jax/flax/optax/numpy are imported here: the module runs on accelerator hosts
without TensorFlow; ml_collections is needed only by the subprocess helpers.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dcinet_jax import parallel
from dcinet_jax.train import init_state, setup_compilation_cache
from dcinet_jax.train_step import create_optimizer, make_sharded_train_step

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_PATH = REPO_ROOT / 'benchmarks' / 'torch_peer.py'
# Vocabulary sizes (alphabet + padding) of SPEC 2.3, for random character ids.
_TEXT_VOCAB = {'lower_space': 70, 'original': 69}
_DONATION_WARNING = 'donated buffers were not usable'


# ----------------------------------------------------------------------------- setup

def prepare_config(config: Any, *, batch_per_modality: int | None = None,
                   dtype: str | None = None) -> Any:
    """A copy of `config` with the bench overrides applied (the caller's stays untouched).

    Pretrained weights are never loaded: they do not change the speed.
    """
    config = copy.deepcopy(config)
    if batch_per_modality is not None:
        config.data.batch_per_modality = int(batch_per_modality)
    if dtype is not None:
        config.model.dtype = str(dtype)
    config.model.pretrained = ''
    return config


def synthetic_batch(rng: jax.Array, config: Any, mesh: jax.sharding.Mesh,
                    batch_per_modality: int | None = None) -> dict:
    """Random train batch `{modality: {'inputs', 'label'}}`, created sharded on the devices."""
    b = int(batch_per_modality or config.data.batch_per_modality)
    size, length = int(config.data.image_size), int(config.data.text_length)
    vocab = _TEXT_VOCAB.get(config.data.alphabet, 70)
    modalities = tuple(config.data.modalities)
    num_classes = int(config.data.num_classes)

    def make(key):
        out = {}
        for i, m in enumerate(modalities):
            k_in, k_lab = jax.random.split(jax.random.fold_in(key, i))
            if m == 'text':
                x = jax.random.randint(k_in, (b, length), 0, vocab, jnp.int32)
            else:
                x = jax.random.randint(k_in, (b, size, size, 3), 0, 256, jnp.int32)
                x = x.astype(jnp.uint8)
            out[m] = {'inputs': x,
                      'label': jax.random.randint(k_lab, (b,), 0, num_classes, jnp.int32)}
        return out

    return jax.jit(make, out_shardings=parallel.batch_sharded(mesh))(rng)


@dataclasses.dataclass
class TrainSetup:
    """Everything needed to run the real train step on synthetic device batches."""

    config: Any
    mesh: jax.sharding.Mesh
    model: Any
    tx: Any
    state: Any
    batch: dict
    step_fn: Callable
    images_per_step: int


def build_train_setup(config: Any, *, total_steps: int = 1000,
                      mesh: jax.sharding.Mesh | None = None) -> TrainSetup:
    """Model, optimizer, replicated state, a device batch and the jitted sharded step."""
    from dcinet_jax.models import build_model  # noqa: PLC0415 (keeps import cost where used)

    modalities = tuple(config.data.modalities)
    b = int(config.data.batch_per_modality)
    parallel.check_batch_divisible(b, len(modalities))
    mesh = mesh or parallel.make_mesh()
    model = build_model(config, bn_axis_name=parallel.DATA_AXIS if config.model.bn_sync
                        else None)
    tx = create_optimizer(config, total_steps)
    state = init_state(config, model, tx, mesh)
    batch = synthetic_batch(jax.random.key(config.seed + 7), config, mesh)
    step_fn = make_sharded_train_step(model=model, tx=tx, config=config, mesh=mesh)
    return TrainSetup(config, mesh, model, tx, state, batch, step_fn, b * len(modalities))


def step_keys(seed: int, n: int, mesh: jax.sharding.Mesh) -> list[jax.Array]:
    """Per-step rng keys, replicated on the mesh before any timed loop, so the loop
    itself neither computes nor transfers anything for them."""
    keys = jax.device_put(jax.random.split(jax.random.key(seed), max(n, 1)),
                          parallel.replicated(mesh))
    return jax.block_until_ready([keys[i] for i in range(max(n, 1))])


def compile_step(setup: TrainSetup) -> tuple[Any, dict[str, float]]:
    """AOT-compiles the step; returns (compiled, {'trace_lower_s', 'compile_s'})."""
    rng = step_keys(0, 1, setup.mesh)[0]
    t0 = time.perf_counter()
    lowered = setup.step_fn.lower(setup.state, setup.batch, rng)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, {'trace_lower_s': t1 - t0, 'compile_s': t2 - t1}


def window_sizes(steps: int, max_windows: int = 5) -> list[int]:
    """Splits `steps` into at most `max_windows` near-equal windows (each >= 1 step)."""
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    n = min(steps, max_windows)
    return [steps // n + (1 if i < steps % n else 0) for i in range(n)]


def timed_windows(run: Callable[[Any, int], Any], carry: Any, steps: int,
                  max_windows: int = 5) -> tuple[Any, list[float]]:
    """Runs `carry = run(carry, i)` for `steps` steps; returns (carry, per-step seconds
    of each window). Only the window ends wait for the device."""
    per_step = []
    i = 0
    for w in window_sizes(steps, max_windows):
        t0 = time.perf_counter()
        with jax.transfer_guard('disallow'):
            for _ in range(w):
                carry = run(carry, i)
                i += 1
        jax.block_until_ready(carry)
        per_step.append((time.perf_counter() - t0) / w)
    return carry, per_step


# ----------------------------------------------------------------------------- figures

def cost_figures(compiled: Any) -> dict[str, float]:
    """flops / bytes accessed / transcendentals of one device's program (0 if unknown)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 (some backends do not implement it)
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = cost or {}
    return {'flops': float(cost.get('flops', 0.0)),
            'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
            'transcendentals': float(cost.get('transcendentals', 0.0))}


def compiled_memory(compiled: Any) -> dict[str, int]:
    """Per-device memory of the compiled program (arguments + outputs - aliased + temps)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        m = None
    if m is None:
        return {}
    fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
              'temp_size_in_bytes', 'generated_code_size_in_bytes')
    out = {f: int(getattr(m, f, 0) or 0) for f in fields}
    out['total_bytes'] = (out['argument_size_in_bytes'] + out['output_size_in_bytes']
                          - out['alias_size_in_bytes'] + out['temp_size_in_bytes'])
    return out


def device_peak_memory(devices: Sequence[Any]) -> int | None:
    """Largest `peak_bytes_in_use` over `devices`, or None when the backend keeps no stats."""
    peaks = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001
            stats = None
        if stats and 'peak_bytes_in_use' in stats:
            peaks.append(int(stats['peak_bytes_in_use']))
    return max(peaks) if peaks else None


def default_peak_matmul(platform_name: str) -> tuple[str, int, int]:
    """(dtype, n, chained matmuls) of the peak measurement for a platform."""
    if platform_name == 'cpu':
        return 'float32', 768, 4
    return 'bfloat16', 8192, 10


def measure_matmul_peak(mesh: jax.sharding.Mesh, *, dtype: str = 'float32', n: int = 768,
                        chain: int = 4, repeats: int = 3) -> dict[str, float]:
    """Dense n x n matmul throughput of every device of `mesh` at once.

    Each device runs `chain` dependent matmuls (so XLA cannot drop any); the best of
    `repeats` timed runs is taken. Returns per-device and total TFLOP/s.
    """
    n_dev = mesh.devices.size
    dt = jnp.dtype(dtype)

    def chained(a, b):
        def body(_, x):
            return jnp.dot(x[0], b[0], preferred_element_type=dt)[None]
        return jax.lax.fori_loop(0, chain, body, a)

    fn = jax.jit(jax.shard_map(chained, mesh=mesh, in_specs=(P(parallel.DATA_AXIS),) * 2,
                               out_specs=P(parallel.DATA_AXIS)))
    shard = parallel.batch_sharded(mesh)

    def make(key):
        ka, kb = jax.random.split(key)
        a = jax.random.normal(ka, (n_dev, n, n), jnp.float32)
        # Orthogonal-like scale keeps the chained product bounded.
        b = jax.random.normal(kb, (n_dev, n, n), jnp.float32) / math.sqrt(n)
        return a.astype(dt), b.astype(dt)

    a, b = jax.jit(make, out_shardings=(shard, shard))(jax.random.key(1))
    jax.block_until_ready(fn(a, b))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(a, b))
        best = min(best, time.perf_counter() - t0)
    flops = 2.0 * n ** 3 * chain
    per_device = flops / best / 1e12
    return {'dtype': dtype, 'n': n, 'chain': chain, 'seconds': best,
            'tflops_per_device': per_device, 'tflops_total': per_device * n_dev}


def bench_eval(config: Any, state: Any, mesh: jax.sharding.Mesh, *, steps: int,
               modality: str = 'image') -> dict[str, float]:
    """Feature extraction as evaluation runs it (eval mode, softmax of the logits).

    Measured on one image-like modality (image and audio cost the same); the batch is
    data.eval_batch_size rounded up to a multiple of the device count.
    """
    from dcinet_jax.models import build_model  # noqa: PLC0415

    model = build_model(config)
    n_dev = mesh.devices.size
    b = max(int(config.data.eval_batch_size), 1)
    b = -(-b // n_dev) * n_dev
    size = int(config.data.image_size)
    shard = parallel.batch_sharded(mesh)
    x = jax.jit(lambda k: jax.random.randint(k, (b, size, size, 3), 0, 256, jnp.int32)
                .astype(jnp.uint8), out_shardings=shard)(jax.random.key(2))
    variables = {'params': state.params, 'batch_stats': state.batch_stats}

    @jax.jit
    def features(variables, x):
        out = model.apply(variables, {modality: x}, train=False)
        return jax.nn.softmax(out['logits'].astype(jnp.float32), axis=-1)

    t0 = time.perf_counter()
    compiled = features.lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    first = jax.block_until_ready(compiled(variables, x))
    # Each call's output is the carry, so every window ends by waiting for its last call.
    _, per_step = timed_windows(lambda c, i: compiled(variables, x), first, steps)
    step_s = statistics.median(per_step)
    return {'eval_batch': b, 'eval_step_time_s': step_s, 'eval_images_per_sec': b / step_s,
            'eval_compile_s': compile_s}


# ----------------------------------------------------------------------------- one run

def run_train_bench(config: Any, *, steps: int, warmup_steps: int = 2,
                    mesh: jax.sharding.Mesh | None = None) -> tuple[dict, TrainSetup, Any]:
    """Compiles and times the train step; returns (figures, setup, final state)."""
    setup = build_train_setup(config, total_steps=warmup_steps + steps, mesh=mesh)
    donated_leaf = jax.tree.leaves(setup.state.params)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        compiled, ctimes = compile_step(setup)
        keys = step_keys(config.seed + 11, warmup_steps + steps, setup.mesh)
        state = setup.state
        setup.state = None  # donated below: keep no reference to dead buffers
        t0 = time.perf_counter()
        state, metrics = compiled(state, setup.batch, keys[0])
        jax.block_until_ready(state)
        first_step_s = time.perf_counter() - t0
        donation_ok = donated_leaf.is_deleted() and not any(
            _DONATION_WARNING in str(w.message) for w in caught)
        for i in range(1, warmup_steps):
            state, metrics = compiled(state, setup.batch, keys[i])
        jax.block_until_ready(state)

        def run(carry, i):
            return compiled(carry[0], setup.batch, keys[warmup_steps + i])

        (state, metrics), per_step = timed_windows(run, (state, metrics), steps)
    loss = float(np.asarray(jax.device_get(metrics['loss'])))
    n_dev = setup.mesh.devices.size
    step_s = statistics.median(per_step)
    cost = cost_figures(compiled)
    flops_step = cost['flops'] * n_dev
    figures = {
        'batch_per_modality': int(config.data.batch_per_modality),
        'images_per_step': setup.images_per_step,
        'trace_lower_s': ctimes['trace_lower_s'], 'compile_s': ctimes['compile_s'],
        'first_step_s': first_step_s, 'warmup_steps': warmup_steps,
        'timed_steps': steps, 'step_times_s': per_step, 'step_time_s': step_s,
        'images_per_sec': setup.images_per_step / step_s,
        'images_per_sec_per_device': setup.images_per_step / step_s / n_dev,
        'flops_per_step': flops_step, 'bytes_accessed_per_device': cost['bytes_accessed'],
        'achieved_tflops': flops_step / step_s / 1e12 if flops_step else 0.0,
        'final_loss': loss, 'donation_ok': bool(donation_ok),
        'donation_warnings': [str(w.message) for w in caught
                              if _DONATION_WARNING in str(w.message)],
        'compiled_memory': compiled_memory(compiled),
    }
    return figures, setup, state


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


def find_max_batch_per_modality(config: Any, *, limit: int = 4096,
                                steps: int = 2) -> dict[str, Any]:
    """Largest data.batch_per_modality whose train step compiles and runs.

    Out-of-memory (XLA RESOURCE_EXHAUSTED, at compile or run time) counts as "does not
    fit"; any other error is raised. `tried` maps each size to its images/s (or 'OOM').
    """
    n_dev = jax.device_count()
    n_mod = len(tuple(config.data.modalities))
    # Every device needs the same slice, and an even local batch for CMSI.
    g = n_dev * (1 if (n_mod % 2 == 0) else 2)
    tried: dict[int, Any] = {}

    def fits(b: int) -> bool:
        c = prepare_config(config, batch_per_modality=b)
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

    best = search_max_batch(fits, int(config.data.batch_per_modality), g, limit)
    return {'max_batch_per_modality': best, 'granularity': g, 'limit': limit,
            'tried': {str(k): v for k, v in sorted(tried.items())}}


# ----------------------------------------------------------------------------- subprocesses

def _config_to_json(config: Any) -> str:
    to_dict = getattr(config, 'to_dict', None)
    return json.dumps(to_dict() if to_dict else dict(config), default=list)


def _config_from_json(text: str) -> Any:
    import ml_collections  # noqa: PLC0415 (subprocess helper only)
    return ml_collections.ConfigDict(json.loads(text))


def _subprocess_env(extra_xla_flags: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    if extra_xla_flags:
        env['XLA_FLAGS'] = ' '.join([env.get('XLA_FLAGS', '')] + list(extra_xla_flags)).strip()
    return env


def compile_restart_times(config: Any, cache_dir: str | None = None,
                          timeout: float = 900.0) -> dict[str, Any]:
    """Cold compile and warm-cache restart, each in a fresh process.

    Both processes use the persistent JAX cache in `cache_dir` (a new temporary
    directory by default, so the first really is cold) and XLA's per-fusion autotune
    cache under it (used on GPU). Reports each process's compile time and wall time
    from process start until the first step finished.
    """
    own = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix='dcinet_bench_cache_')
    autotune = os.path.join(cache_dir, 'autotune')
    os.makedirs(autotune, exist_ok=True)
    env = _subprocess_env([f'--xla_gpu_per_fusion_autotune_cache_dir={autotune}'])
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / 'config.json'
        cfg_path.write_text(_config_to_json(config))
        out = {'cache_dir': cache_dir if not own else '(fresh temporary directory)'}
        for phase in ('cold', 'warm'):
            res_path = Path(tmp) / f'{phase}.json'
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, '-m', 'dcinet_jax.bench', '--compile-child', str(cfg_path),
                 cache_dir, str(res_path)], env=env, cwd=str(REPO_ROOT),
                capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - t0
            if proc.returncode != 0 or not res_path.exists():
                raise RuntimeError(f'compile-restart {phase} subprocess failed '
                                   f'(rc {proc.returncode}):\n{proc.stderr[-3000:]}')
            child = json.loads(res_path.read_text())
            out[phase] = dict(child, process_wall_s=wall)
    if own:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def _compile_child(cfg_path: str, cache_dir: str, res_path: str) -> None:
    """Entry point of one compile-restart process: cache on, compile, one step."""
    t_start = time.perf_counter()
    config = _config_from_json(Path(cfg_path).read_text())
    config.compilation_cache_dir = cache_dir
    setup_compilation_cache(config)
    setup = build_train_setup(config, total_steps=10)
    compiled, ctimes = compile_step(setup)
    t0 = time.perf_counter()
    state, _ = compiled(setup.state, setup.batch, step_keys(0, 1, setup.mesh)[0])
    jax.block_until_ready(state)
    Path(res_path).write_text(json.dumps({
        'trace_lower_s': ctimes['trace_lower_s'], 'compile_s': ctimes['compile_s'],
        'first_step_s': time.perf_counter() - t0,
        'in_process_s': time.perf_counter() - t_start}))


def peer_arguments(config: Any, *, steps: int, warmup_steps: int = 2,
                   torch_compile: bool = False) -> dict[str, Any]:
    """The keyword arguments of `torch_peer.run_torch_peer` that match `config`."""
    from dcinet_jax.models import backbone_layout  # noqa: PLC0415
    block, stages = backbone_layout(config.model)
    return dict(
        image_size=int(config.data.image_size), text_length=int(config.data.text_length),
        batch_per_modality=int(config.data.batch_per_modality),
        num_modalities=len(tuple(config.data.modalities)),
        text_modality=('text' in tuple(config.data.modalities)),
        num_classes=int(config.data.num_classes), stage_sizes=list(stages), block=block,
        width=int(config.model.num_filters), cut=str(config.model.cut),
        vocab_size=_TEXT_VOCAB.get(config.data.alphabet, 70),
        text_embed_dim=int(config.model.text_embed_dim),
        text_hidden=int(config.model.text_hidden),
        label_smoothing=float(config.interaction.label_smoothing),
        use_cmsi=bool(config.interaction.cmsi), use_cmci=bool(config.interaction.cmci),
        learning_rate=float(config.optim.learning_rate),
        momentum=float(config.optim.momentum),
        weight_decay=float(config.optim.weight_decay),
        steps=int(steps), warmup_steps=int(warmup_steps), dtype=str(config.model.dtype),
        compile=bool(torch_compile), seed=int(config.seed))


def run_peer_subprocess(args: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Runs benchmarks/torch_peer.py with `args` in a fresh process; returns its figures."""
    if not PEER_PATH.exists():
        raise FileNotFoundError(f'the PyTorch peer {PEER_PATH} is missing')
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / 'peer.json'
        env = _subprocess_env()
        # On a shared CPU, OpenMP's default spin-waiting turns oversubscription into
        # second-long stalls of tiny ops; passive waiting keeps the peer's figure sane.
        env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
        proc = subprocess.run(
            [sys.executable, str(PEER_PATH), '--args_json', json.dumps(args),
             '--json_out', str(res)], env=env, cwd=str(REPO_ROOT),
            capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not res.exists():
            raise RuntimeError(f'torch peer failed (rc {proc.returncode}):\n'
                               f'{proc.stderr[-3000:]}')
        return json.loads(res.read_text())


def load_torch_peer():
    """benchmarks/torch_peer.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location('dcinet_torch_peer', PEER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        ('eval features', f"{r['eval']['eval_images_per_sec']:.1f} images/s "
                          f"(batch {r['eval']['eval_batch']})"),
    ]
    if r.get('compile_restart'):
        cr = r['compile_restart']
        rows.append(('compile cold / warm', f"{cr['cold']['compile_s']:.2f} s / "
                                            f"{cr['warm']['compile_s']:.2f} s"))
        rows.append(('restart to 1st step', f"{cr['cold']['process_wall_s']:.1f} s cold / "
                                           f"{cr['warm']['process_wall_s']:.1f} s warm"))
    if r.get('max_batch'):
        rows.append(('max batch/modality', f"{r['max_batch']['max_batch_per_modality']} "
                                           f"(tried {r['max_batch']['tried']})"))
    if r.get('peer'):
        p = r['peer']
        rows.append(('torch peer', f"{p['images_per_sec']:.1f} images/s on {p['device']}, "
                                   f"{p['dtype']}, torch {p['torch_version']}"
                                   + (', compiled' if p.get('compile') else '')))
        rows.append(('JAX / PyTorch', f"{r['jax_over_torch']:.3f} ({r['ratio_basis']})"))
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


def _finite_json(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def bench_main(config: Any, *, batch_per_modality: int | None = None, steps: int = 20,
               dtype: str | None = None, peer: str | None = None,
               find_max_batch: bool = False, json_out: str | None = None,
               warmup_steps: int = 2, eval_steps: int | None = None,
               cache_check: bool | None = None, torch_compile: bool = False,
               max_batch_limit: int = 4096, print_table: bool = True) -> dict[str, Any]:
    """Benchmarks the train step (and eval forward) of `config`; prints a table.

    `cache_check`: measure cold compile vs warm-cache restart in two subprocesses
    (None: do it when config.compilation_cache_dir is set). `peer='torch'`: run
    benchmarks/torch_peer.py on the same sizes first (`torch_compile` uses torch.compile).
    Returns every figure; writes them as JSON to `json_out` when given.
    """
    if steps < 1:
        raise ValueError(f'--steps must be >= 1, got {steps}')
    if peer not in (None, 'torch'):
        raise ValueError(f"peer={peer!r}: only 'torch' is implemented")
    config = prepare_config(config, batch_per_modality=batch_per_modality, dtype=dtype)
    if cache_check is None:
        cache_check = bool(config.get('compilation_cache_dir', '')) and not find_max_batch

    # Subprocess work first, before this process claims the accelerator's memory.
    peer_result = None
    if peer == 'torch':
        peer_result = run_peer_subprocess(peer_arguments(
            config, steps=steps, warmup_steps=warmup_steps, torch_compile=torch_compile))
    restart = compile_restart_times(config) if cache_check else None

    setup_compilation_cache(config)
    devices = jax.devices()
    mesh = parallel.make_mesh()
    figures, setup, state = run_train_bench(config, steps=steps, warmup_steps=warmup_steps,
                                            mesh=mesh)
    eval_figures = bench_eval(config, state, mesh, steps=eval_steps or min(steps, 10))
    platform_name = devices[0].platform
    peak_dtype, n, chain = default_peak_matmul(platform_name)
    peak = measure_matmul_peak(mesh, dtype=peak_dtype, n=n, chain=chain)
    peak_mem = device_peak_memory(devices)
    result: dict[str, Any] = {
        'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'platform': platform_name, 'device_kind': devices[0].device_kind,
        'device_count': len(devices), 'process_count': jax.process_count(),
        'host': platform.node(), 'jax_version': jax.__version__,
        'jaxlib_version': getattr(jax.lib, '__version__', jax.__version__),
        'dtype': str(config.model.dtype), 'config_backbone': str(config.model.backbone),
        'image_size': int(config.data.image_size), 'cut': str(config.model.cut),
        'cmsi': bool(config.interaction.cmsi), 'cmci': bool(config.interaction.cmci),
        **figures, 'peak': peak, 'eval': eval_figures,
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
        result['peer'] = peer_result
        # Virtual CPU devices share the same cores: compare totals there, else per device.
        if platform_name == 'cpu':
            ratio = result['images_per_sec'] / peer_result['images_per_sec']
            basis = 'total images/s, same CPU cores'
        else:
            ratio = result['images_per_sec_per_device'] / peer_result['images_per_sec']
            basis = 'images/s per device'
        result['jax_over_torch'] = ratio
        result['ratio_basis'] = basis
    if print_table:
        print(format_table(result), flush=True)
    if json_out:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite_json(result), indent=2, default=str))
        if print_table:
            print(f'figures written to {path}')
    return result


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == '--compile-child':
        _compile_child(*sys.argv[2:])
    else:
        sys.exit('usage: python -m dcinet_jax.bench --compile-child CONFIG_JSON CACHE_DIR '
                 'RESULT_JSON (internal; use `dcinet bench`)')
