"""`dcinet bench --conv1x1 both`: the train step with the ResNet's 1x1 convolutions as
`lax.conv` and as a channel matmul, side by side in one process (docs/model.md#1x1-convolutions).

Why one process and alternated windows: on a shared machine the load changes from
minute to minute, so two separate runs compare the load as much as the code. Both
steps are built and compiled first, then the timed windows alternate (conv, einsum,
conv, einsum, ...) and each path's figure is the median of its own windows; the ratio
einsum / conv comes from that same run. The PyTorch peer (one subprocess, before this
process claims the accelerator) gives each path its JAX / PyTorch ratio.

`bench_conv1x1_pair` is the library entry point (the GPU suite calls it too);
`format_pair` is its table.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax

from dcinet_jax import parallel
from dcinet_jax.compilation_cache import setup_compilation_cache
from dcinet_jax.models.backbones.resnet import CONV1X1_MODES
from dcinet_jax.perf import harness, processes


def _path_config(config: Any, path: str) -> Any:
    c = harness.prepare_config(config)
    c.model.conv1x1 = path
    return c


def _peer_ratio(platform_name: str, jax_figures: dict[str, Any], peer: dict[str, Any]) -> float:
    """JAX / PyTorch images/s: totals on CPU (virtual devices share the cores), else per device."""
    key = 'images_per_sec' if platform_name == 'cpu' else 'images_per_sec_per_device'
    return jax_figures[key] / peer['images_per_sec']


def bench_conv1x1_pair(config: Any, *, steps: int = 3, warmup_steps: int = 1,
                       rounds: int = 2, batch_per_modality: int | None = None,
                       dtype: str | None = None, peer: str | None = None,
                       torch_compile: bool = False) -> dict[str, Any]:
    """Times the train step of `config` with `model.conv1x1` = 'conv' and 'einsum'.

    Each path runs `rounds` timed windows of `steps` steps, alternated with the other
    path's, after compile and `warmup_steps` untimed steps. Returns {'paths': {path:
    figures}, 'einsum_over_conv': images/s ratio, 'peer': the PyTorch figures or None,
    ...}; every per-path figure holds its window times, median step time, images/s,
    compile time, FLOPs and final loss (the two losses differ only by rounding).
    """
    if steps < 1 or rounds < 1:
        raise ValueError(f'--steps and rounds must be >= 1, got {steps} and {rounds}')
    if peer not in (None, 'torch'):
        raise ValueError(f"peer={peer!r}: only 'torch' is implemented")
    config = harness.prepare_config(config, batch_per_modality=batch_per_modality, dtype=dtype)
    if 'model' not in config or 'backbone' not in config.model:
        raise ValueError('--conv1x1 both needs a config with a ResNet backbone (config.model.backbone)')
    peer_result = None
    if peer == 'torch':
        processes.require_torch()
        peer_result = processes.run_peer_subprocess(processes.peer_arguments(
            config, steps=steps * rounds, warmup_steps=warmup_steps,
            torch_compile=torch_compile))
    setup_compilation_cache(config)
    mesh = parallel.make_mesh()
    runs = {}
    for path in CONV1X1_MODES:
        c = _path_config(config, path)
        setup = harness.build_train_setup(c, total_steps=warmup_steps + steps * rounds + 1,
                                          mesh=mesh)
        compiled, ctimes = harness.compile_step(setup)
        keys = harness.step_keys(c.seed + harness.KEYS_SEED_OFFSET,
                                 1 + warmup_steps + steps * rounds, mesh)
        carry = compiled(setup.take_state(), setup.batch, keys[0])
        carry = harness.run_steps(compiled, carry, setup.batch, keys[1:1 + warmup_steps])
        jax.block_until_ready(carry)
        runs[path] = dict(setup=setup, compiled=compiled, keys=keys[1 + warmup_steps:],
                          carry=carry, windows=[], ctimes=ctimes)
    for r in range(rounds):
        for path in CONV1X1_MODES:
            run = runs[path]
            keys = run['keys'][r * steps:(r + 1) * steps]
            t0 = time.perf_counter()
            with jax.transfer_guard('disallow'):
                for key in keys:
                    run['carry'] = run['compiled'](run['carry'][0], run['setup'].batch, key)
            jax.block_until_ready(run['carry'])
            run['windows'].append((time.perf_counter() - t0) / steps)
    info = harness.device_figures()
    n_dev = mesh.devices.size
    paths = {}
    for path, run in runs.items():
        n = run['setup'].examples_per_step
        step_s = statistics.median(run['windows'])
        flops = harness.cost_figures(run['compiled'])['flops'] * n_dev
        paths[path] = {
            **run['ctimes'], 'window_step_times_s': run['windows'], 'step_time_s': step_s,
            'images_per_sec': n / step_s, 'images_per_sec_per_device': n / step_s / n_dev,
            'flops_per_step': flops, 'images_per_step': n,
            'final_loss': float(jax.device_get(run['carry'][1]['loss'])),
        }
        if peer_result is not None:
            paths[path]['jax_over_torch'] = _peer_ratio(info['platform'], paths[path], peer_result)
    return {
        'date': time.strftime('%Y-%m-%d %H:%M:%S'), **info, 'dtype': str(config.model.dtype),
        'batch_per_modality': int(config.data.batch_per_modality),
        'image_size': int(config.data.get('image_size', 0)), 'steps': steps, 'rounds': rounds,
        'warmup_steps': warmup_steps, 'paths': paths, 'peer': peer_result,
        'einsum_over_conv': paths['einsum']['images_per_sec'] / paths['conv']['images_per_sec'],
    }


def format_pair(r: dict[str, Any]) -> str:
    """The side-by-side table of a `bench_conv1x1_pair` result."""
    lines = [f"device {r['device_kind']} x {r['device_count']} ({r['platform']}), {r['dtype']}, "
             f"b/mod {r['batch_per_modality']}, {r['rounds']} alternated windows of "
             f"{r['steps']} steps per path"]
    head = f"{'conv1x1':<8} {'compile s':>9} {'step ms':>9} {'images/s':>9} {'GFLOP/step':>10}"
    if r['peer']:
        head += f" {'JAX/PyTorch':>11}"
    lines.append(head)
    for path, f in r['paths'].items():
        row = (f"{path:<8} {f['compile_s']:>9.1f} {f['step_time_s'] * 1e3:>9.1f} "
               f"{f['images_per_sec']:>9.2f} {f['flops_per_step'] / 1e9:>10.2f}")
        if r['peer']:
            row += f" {f['jax_over_torch']:>11.3f}"
        lines.append(row)
    lines.append(f"einsum / conv images/s: {r['einsum_over_conv']:.3f}")
    if r['peer']:
        lines.append(f"torch peer: {r['peer']['images_per_sec']:.2f} images/s on "
                     f"{r['peer']['device']}, {r['peer']['dtype']}")
    return '\n'.join(lines)
