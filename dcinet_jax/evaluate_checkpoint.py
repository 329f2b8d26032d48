"""`dcinet eval`: restore one checkpoint of a workdir and run the benchmark evaluation."""

from __future__ import annotations

from pathlib import Path

from dcinet_jax import checkpoints, evaluate, parallel
from dcinet_jax.models import build_model
from dcinet_jax.train import abstract_state
from dcinet_jax.train_step import create_optimizer


def run(config, workdir: str | Path, *, step: int | None = None, best: bool = False) -> dict:
    """Evaluates `step` (default: latest, or the best by bi-modal mAP with `best`)."""
    workdir = Path(workdir).absolute()
    parallel.maybe_initialize_distributed(config.distributed)
    ckpt = checkpoints.Checkpointer(workdir / 'checkpoints', keep=config.keep_checkpoints)
    if best:
        step = ckpt.best_step()
        if step is None:
            raise FileNotFoundError(f'no evaluated checkpoint in {ckpt.directory}')
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f'no checkpoint in {ckpt.directory}: train first')
    model = build_model(config)
    template = abstract_state(config, model, create_optimizer(config, 1), parallel.make_mesh())
    state, _ = ckpt.restore(step, template)
    ckpt.close()
    variables = {'params': parallel.to_host(state.params),
                 'batch_stats': parallel.to_host(state.batch_stats)}
    return evaluate.evaluate_variables(config, model, variables, step=step, workdir=workdir)
