"""Bench work that must run in a fresh Python process.

- `compile_restart_times`: the step is compiled in two new processes that share a new,
  empty persistent cache directory (plus XLA's per-fusion autotune cache, used on GPU):
  the first is a cold compile, the second a warm restart.
- `run_peer_subprocess`: the PyTorch peer (`python -m dcinet_jax.perf.torch_peer`),
  started before the bench process touches the accelerator (JAX preallocates most of
  its memory, which would starve the peer).

Both children are started as modules of the installed package (`python -m ...`), so
they work from a checkout and from a wheel alike. ml_collections is needed only by the
compile child, to rebuild the config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import jax

import dcinet_jax
from dcinet_jax.compilation_cache import setup_compilation_cache
from dcinet_jax.perf import harness

# The folder that holds the `dcinet_jax` package (the checkout or site-packages): put
# first on the children's path so they import this very copy of the library.
PACKAGE_PARENT = Path(dcinet_jax.__file__).resolve().parent.parent
PEER_MODULE = 'dcinet_jax.perf.torch_peer'
TORCH_MISSING = ("--peer torch needs PyTorch, which is not installed: "
                 "pip install 'dcinet-jax[torch]'")


def require_torch() -> None:
    """Raises ValueError (one line for the CLI) when PyTorch cannot be imported."""
    if importlib.util.find_spec('torch') is None:
        raise ValueError(TORCH_MISSING)


def _config_to_json(config: Any) -> str:
    to_dict = getattr(config, 'to_dict', None)
    return json.dumps(to_dict() if to_dict else dict(config), default=list)


def _config_from_json(text: str) -> Any:
    import ml_collections  # noqa: PLC0415 (compile child only)
    return ml_collections.ConfigDict(json.loads(text))


def subprocess_env(extra_xla_flags: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(PACKAGE_PARENT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    if extra_xla_flags:
        env['XLA_FLAGS'] = ' '.join([env.get('XLA_FLAGS', '')] + list(extra_xla_flags)).strip()
    return env


def _run_child(args: Sequence[str], result_path: Path, what: str, *, env: dict[str, str],
               timeout: float) -> dict[str, Any]:
    """Runs `python -m <args>`; returns the JSON the child wrote to `result_path`."""
    proc = subprocess.run([sys.executable, '-m', *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0 or not result_path.exists():
        raise RuntimeError(f'{what} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(result_path.read_text())


# ----------------------------------------------------------------------------- compile restart

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
    env = subprocess_env([f'--xla_gpu_per_fusion_autotune_cache_dir={autotune}'])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / 'config.json'
            cfg_path.write_text(_config_to_json(config))
            out: dict[str, Any] = {
                'cache_dir': cache_dir if not own else '(fresh temporary directory)'}
            for phase in ('cold', 'warm'):
                res_path = Path(tmp) / f'{phase}.json'
                t0 = time.perf_counter()
                child = _run_child(
                    [__name__, '--compile-child', str(cfg_path), cache_dir, str(res_path)],
                    res_path, f'compile-restart {phase} subprocess', env=env, timeout=timeout)
                out[phase] = dict(child, process_wall_s=time.perf_counter() - t0)
    finally:
        if own:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def _compile_child(cfg_path: str, cache_dir: str, res_path: str) -> None:
    """Entry point of one compile-restart process: cache on, compile, one step."""
    t_start = time.perf_counter()
    config = _config_from_json(Path(cfg_path).read_text())
    config.compilation_cache_dir = cache_dir
    setup_compilation_cache(config)
    setup = harness.build_train_setup(config, total_steps=10)
    compiled, ctimes = harness.compile_step(setup)
    t0 = time.perf_counter()
    state, _ = compiled(setup.take_state(), setup.batch, harness.step_keys(0, 1, setup.mesh)[0])
    jax.block_until_ready(state)
    Path(res_path).write_text(json.dumps({
        'trace_lower_s': ctimes['trace_lower_s'], 'compile_s': ctimes['compile_s'],
        'first_step_s': time.perf_counter() - t0,
        'in_process_s': time.perf_counter() - t_start}))


# ----------------------------------------------------------------------------- PyTorch peer

def peer_arguments(config: Any, *, steps: int, warmup_steps: int = 2,
                   torch_compile: bool = False) -> dict[str, Any]:
    """The keyword arguments of `torch_peer.run_torch_peer` that match `config`."""
    from dcinet_jax.models import backbone_layout  # noqa: PLC0415
    from input_pipeline import spec  # noqa: PLC0415 (standard library only)
    block, stages = backbone_layout(config.model)
    modalities = tuple(config.data.modalities)
    return dict(
        image_size=int(config.data.image_size), text_length=int(config.data.text_length),
        batch_per_modality=int(config.data.batch_per_modality),
        num_modalities=len(modalities), text_modality=('text' in modalities),
        num_classes=int(config.data.num_classes), stage_sizes=list(stages), block=block,
        width=int(config.model.num_filters), cut=str(config.model.cut),
        vocab_size=spec.VOCAB_SIZES[config.data.alphabet],
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
    """Runs the PyTorch peer with `args` in a fresh process; returns its figures."""
    require_torch()
    env = subprocess_env()
    # On a shared CPU, OpenMP's default spin-waiting turns oversubscription into
    # second-long stalls of tiny ops; passive waiting keeps the peer's figure sane.
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / 'peer.json'
        return _run_child([PEER_MODULE, '--args_json', json.dumps(args), '--json_out', str(res)],
                          res, 'torch peer', env=env, timeout=timeout)


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == '--compile-child':
        _compile_child(*sys.argv[2:])
    else:
        sys.exit(f'usage: python -m {__spec__.name if __spec__ else __name__} --compile-child '
                 'CONFIG_JSON CACHE_DIR RESULT_JSON (internal; use `dcinet bench`)')
