"""`dcinet eval --weights FILE` and `dcinet export` (docs/weights.md).

Why here and not in the training code: evaluating a released checkpoint needs no
workdir checkpoint and no optimizer, only the model the config builds, the file
imported onto it by the method's weights module, and the method's own evaluation;
export is the inverse on a checkpoint restored read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax

from dcinet_jax import evaluate, evaluate_checkpoint, parallel, weights
from dcinet_jax.state import build_trainer
from dcinet_jax.weights import files

# The results of an imported file are filed under this step (nothing was trained).
WEIGHTS_STEP = 0


def method_name(config: Any) -> str:
    return str(config.get('method', 'dcinet'))


def fresh_variables(config: Any):
    """(trainer, host variables) of a model freshly initialised from `config.seed`: the
    shapes an import fills. `model.pretrained` is not read: the file replaces it all."""
    trainer = build_trainer(config, total_steps=1, check_batch=False)
    # Eager, not jitted: one small forward on zeros, cheaper than compiling it once.
    variables = trainer.method.init_variables(trainer.eval_model,
                                              jax.random.key(int(config.seed)), config)
    return trainer, parallel.to_host(variables)


def load_weights(config: Any, path: str | os.PathLike):
    """(trainer, variables, record): the weights file imported onto the config's model;
    record = {'path', 'sha256', 'format'} for the results."""
    module = weights.for_method(method_name(config))
    path = os.fspath(path)
    obj = files.load_torch_file(path, allowed=tuple(module.ALLOWED_GLOBALS))
    trainer, variables = fresh_variables(config)
    variables = module.import_state(obj, variables, config, source=path)
    record = {'path': os.path.abspath(path), 'sha256': files.sha256(path), 'format': module.FORMAT}
    return trainer, variables, record


def evaluate_weights(config: Any, path: str | os.PathLike, workdir=None) -> dict:
    """Evaluates the weights in `path` with the method's protocol; results (with a
    `weights` record) under `workdir/eval/0/` when `workdir` is given."""
    trainer, variables, record = load_weights(config, path)
    if workdir is not None:
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
    return evaluate.evaluate_variables(config, trainer.method, trainer.eval_model, variables,
                                       step=WEIGHTS_STEP, workdir=workdir,
                                       record={'weights': record})


def run_eval(config: Any, workdir=None, *, step: int | None = None, best: bool = False,
                 weights_path=None) -> dict:
    """`dcinet eval`: the weights file when given (`workdir` optional, results only),
    else checkpoint `step` / the best / the latest of `workdir`."""
    if weights_path:
        if step is not None or best:
            raise ValueError('--step/--best pick a workdir checkpoint; they do not apply to '
                             '--weights')
        return evaluate_weights(config, weights_path, workdir)
    if not workdir:
        raise ValueError('--workdir DIR (its checkpoint is evaluated) or --weights FILE is required')
    return evaluate_checkpoint.run(config, workdir, step=step, best=best)


def export(config: Any, workdir, out, *, fmt: str = 'pytorch', step: int | None = None,
           force: bool = False) -> tuple[str, int]:
    """Writes checkpoint `step` (default latest) of `workdir` to `out` in the method's
    public layout; returns (path, step). Refuses an existing `out` unless `force`."""
    module = weights.for_method(method_name(config))
    if fmt not in files.FORMATS:
        raise ValueError(f'--format={fmt!r}: expected one of {files.FORMATS}')
    if os.path.exists(out) and not force:
        raise ValueError(f'{out} exists; pass --force to overwrite it')
    _, variables, step = evaluate_checkpoint.restore_for_eval(config, workdir, step=step)
    obj = module.export_state(variables, config)
    return files.save(obj, out, fmt, force=force), step
