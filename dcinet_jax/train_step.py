"""The generic, pure, data-parallel train step: gradients of a method's loss, update.

`train_step(state, batch, rng) -> (state, metrics)` knows no method: it differentiates
`method.loss_fn`, averages gradients and metrics over the `data` axis, and applies the
optimizer. It runs under `jax.shard_map` with pmap semantics: every device sees its own
slice of the batch and its own rng (folded with the device index), and the replicated
state stays identical everywhere. See docs/training.md#data-parallelism.

The metrics also carry `state_finite` (1.0 when every leaf of the updated params,
collections and optimizer state is finite): one reduction inside the step, fetched
with the loss, so the loop never saves a poisoned state (docs/training.md#non-finite).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from dcinet_jax.parallel import DATA_AXIS


def all_finite(tree: Any) -> jax.Array:
    """float32 1.0 when every floating-point leaf of `tree` is finite, else 0.0."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(flags)).astype(jnp.float32) if flags else jnp.float32(1.0)


def train_step(state: Any, batch: Any, rng: jax.Array, *, method, model, tx, config,
               axis_name: str | None = DATA_AXIS) -> tuple[Any, dict]:
    """One optimizer step on the local batch; collectives over `axis_name` when set.

    `state` is a `state.TrainState` (step, params, opt_state, collections).
    """
    if axis_name is not None:
        # Each device draws its own random numbers (augmentations, dropout, mixing).
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    params = state.params
    if axis_name is not None:
        # Differentiate per-device copies (pmap semantics); otherwise shard_map's
        # transpose would already psum the gradient of the replicated params.
        params = jax.lax.pcast(params, axis_name, to='varying')
    grad_fn = jax.grad(method.loss_fn, has_aux=True)
    grads, (collections, metrics) = grad_fn(
        params, state.collections, batch, rng, model=model, config=config, step=state.step,
        axis_name=axis_name)
    metrics = dict(metrics)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics['grad_norm'] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              collections=collections)
    metrics['state_finite'] = all_finite((params, collections, opt_state))
    return new_state, metrics


def make_sharded_train_step(*, method, model, tx, config, mesh) -> Callable:
    """jit(shard_map(train_step)) over `data`; the state argument is donated."""
    step = functools.partial(train_step, method=method, model=model, tx=tx, config=config,
                             axis_name=DATA_AXIS)
    sharded = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                            out_specs=(P(), P()))
    return jax.jit(sharded, donate_argnums=(0,))
