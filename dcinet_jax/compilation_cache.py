"""Persistent XLA caches, so a restarted run neither recompiles nor re-autotunes its step."""

from __future__ import annotations

import os

import jax


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
