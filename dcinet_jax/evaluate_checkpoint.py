"""`dcinet eval`: restore one checkpoint of a workdir (read-only) and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dcinet_jax import checkpoints, evaluate, parallel
from dcinet_jax.state import build_trainer
from input_pipeline import atomic


def restore_for_eval(config, workdir: str | Path, *, step: int | None = None,
                     best: bool = False) -> tuple[Any, dict, int]:
    """(trainer, host variables, step) of `step` (default: latest, or the best by
    `config.eval.best_metric`), as `dcinet eval` restores it.

    Only the params and variable collections are restored (no optimizer state), and the
    checkpoint directory is opened read-only: evaluating beside a live training run
    neither creates, cleans nor deletes anything there.
    """
    workdir = Path(workdir).absolute()
    parallel.maybe_initialize_distributed(config.distributed)
    ckpt = checkpoints.Checkpointer(workdir / 'checkpoints', best_metric=config.eval.best_metric,
                                    read_only=True, config=config)
    try:
        if best:
            step = ckpt.best_step()
            if step is None:
                raise FileNotFoundError(f'no evaluated checkpoint in {ckpt.directory}')
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f'no checkpoint in {ckpt.directory}: train first')
        trainer = build_trainer(config, total_steps=1, check_batch=False)
        try:
            variables = ckpt.restore_variables(step, trainer.abstract_state())
        except checkpoints.CorruptCheckpointError as e:
            raise checkpoints.CorruptCheckpointError(
                e.step, e.where, e.detail + _intact_hint(ckpt, step, trainer)) from None
    finally:
        ckpt.close()
    return trainer, parallel.to_host(variables), int(step)


def _intact_hint(ckpt: checkpoints.Checkpointer, corrupt: int, trainer) -> str:
    """'; step 2 is intact: evaluate it with --step 2' (the newest other kept step that
    reads back), so the user is not sent from one damaged step to the next."""
    others = sorted((s for s in ckpt.all_steps() if s != corrupt), reverse=True)
    for s in others:
        try:
            ckpt.restore_variables(s, trainer.abstract_state())
        except (checkpoints.CorruptCheckpointError, FileNotFoundError):
            continue
        return f'; step {s} is intact: evaluate it with --step {s}'
    return f'; no other kept step reads back either (kept: {others})' if others else \
        '; no other step is kept'


def run(config, workdir: str | Path, *, step: int | None = None, best: bool = False) -> dict:
    """Evaluates `step` (default: latest, or the best by `config.eval.best_metric`) and
    writes the results under `workdir/eval/` (see restore_for_eval for what is read)."""
    workdir = Path(workdir).absolute()
    atomic.check_writable_folder(workdir / 'eval', 'the evaluation results')
    trainer, variables, step = restore_for_eval(config, workdir, step=step, best=best)
    return evaluate.evaluate_variables(config, trainer.method, trainer.eval_model,
                                       variables, step=step, workdir=workdir)
