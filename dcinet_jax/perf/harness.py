"""The measuring harness of `dcinet bench` and `dcinet profile`.

`build_train_setup` takes the trainer from `state.build_trainer` (the assembly train
and eval use), creates its replicated state and one random global batch directly on
the devices (`method.synthetic_batch` under `jit` with a batch-sharded output, so no
input pipeline and no host copy is involved), and the jitted sharded step. Everything
method specific comes through the method contract (`dcinet_jax/methods/__init__.py`).

The tools around it:
- `compile_step`: ahead-of-time trace+lower and XLA compile, timed apart.
- `step_keys`: per-step rng keys placed on the mesh before a timed loop.
- `timed_windows`: the timed steps cut into windows; each window ends with one
  `block_until_ready`, and inside a window `jax.transfer_guard('disallow')` turns an
  accidental host transfer into an error instead of a skewed figure.
- `cost_figures`, `compiled_memory`, `device_peak_memory`: what XLA and the devices
  report about the compiled step (cost analysis is of one device's program).
- `measure_matmul_peak`: a dense-matmul rate measured on the same devices, the
  reference for utilisation (not a datasheet number).

Only jax, numpy and the library's TensorFlow-free modules are imported.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from dcinet_jax import parallel
from dcinet_jax import state as state_lib

# Seed offsets of the bench batch and of the step keys (kept so figures stay comparable).
BATCH_SEED_OFFSET = 7
KEYS_SEED_OFFSET = 11


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
    if 'pretrained' in config.model:
        config.model.pretrained = ''
    return config


@dataclasses.dataclass
class TrainSetup:
    """A trainer with its state, one device batch and the jitted sharded step."""

    trainer: state_lib.Trainer
    state: Any
    batch: Any
    step_fn: Callable
    examples_per_step: int

    @property
    def config(self) -> Any:
        return self.trainer.config

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.trainer.mesh

    def take_state(self) -> Any:
        """The state, forgetting it here: the step donates it, so no reference to its
        dead buffers may stay behind."""
        train_state, self.state = self.state, None
        return train_state


def synthetic_device_batch(trainer: state_lib.Trainer, rng: jax.Array) -> Any:
    """The method's random global batch, created batch-sharded on the trainer's mesh."""
    make = functools.partial(trainer.method.synthetic_batch, config=trainer.config)
    return jax.jit(make, out_shardings=parallel.batch_sharded(trainer.mesh))(rng)


def build_train_setup(config: Any, *, total_steps: int = 1000,
                      mesh: jax.sharding.Mesh | None = None) -> TrainSetup:
    """Trainer (with the method's batch rule checked), replicated state, device batch, step."""
    trainer = state_lib.build_trainer(config, total_steps, mesh=mesh)
    train_state = trainer.init_state()
    batch = synthetic_device_batch(trainer, jax.random.key(config.seed + BATCH_SEED_OFFSET))
    return TrainSetup(trainer=trainer, state=train_state, batch=batch,
                      step_fn=trainer.sharded_step(),
                      examples_per_step=int(trainer.method.examples_per_step(config)))


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


def run_steps(step: Callable, carry: tuple[Any, Any], batch: Any,
              keys: Sequence[jax.Array]) -> tuple[Any, Any]:
    """`(state, metrics) = step(state, batch, key)` for each key, without waiting."""
    for key in keys:
        carry = step(carry[0], batch, key)
    return carry


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

def device_figures() -> dict[str, Any]:
    """Platform, device kind and count, and the jax version of this run."""
    devices = jax.devices()
    return {'platform': devices[0].platform, 'device_kind': devices[0].device_kind,
            'device_count': len(devices), 'jax_version': jax.__version__}


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
