"""The DCINet train state, optimizer and the pure, data-parallel train step (SPEC 3.4).

`train_step(state, batch, rng) -> (state, metrics)` is a pure function. It runs under
`jax.shard_map` over the `data` mesh axis with pmap semantics: every device sees its own
slice of each modality, applies CMSI and CMCI to that local batch only, and gradients
(and, by default, BatchNorm statistics) are averaged across devices, so the replicated
state stays identical everywhere.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from dcinet_jax import losses
from dcinet_jax.interaction import interact
from dcinet_jax.parallel import DATA_AXIS

Batch = dict[str, dict[str, jax.Array]]


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    o = config.optim
    if o.schedule == 'constant':
        if o.warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps),
                 optax.constant_schedule(o.learning_rate)], [o.warmup_steps])
        return optax.constant_schedule(o.learning_rate)
    if o.schedule == 'cosine':
        return optax.warmup_cosine_decay_schedule(
            0.0, o.learning_rate, o.warmup_steps, max(total_steps, o.warmup_steps + 1))
    raise ValueError(f"optim.schedule={o.schedule!r}: expected 'constant' or 'cosine'")


def create_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay added to the gradient, as torch.optim.SGD."""
    o = config.optim
    return optax.chain(
        optax.add_decayed_weights(o.weight_decay),
        optax.sgd(learning_rate_schedule(config, total_steps), momentum=o.momentum,
                  nesterov=o.nesterov),
    )


def create_train_state(variables, tx: optax.GradientTransformation) -> TrainState:
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params))


def concat_labels(batch: Batch, modalities) -> jax.Array:
    return jnp.concatenate([batch[m]['label'].astype(jnp.int32) for m in modalities])


def loss_and_updates(params, batch_stats, batch: Batch, rng, *, model, config):
    """Forward of both branches and the total loss. Returns (loss, (batch_stats, metrics))."""
    modalities = tuple(config.data.modalities)
    num_classes = config.data.num_classes
    ia = config.interaction
    inputs = {m: batch[m]['inputs'] for m in modalities}
    labels = concat_labels(batch, modalities)

    out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, inputs,
                               train=True, mutable=['batch_stats'])
    dual_logits = dual_targets = None
    if ia.cmsi or ia.cmci:
        mixed, dual_targets = interact(
            rng, out['features'], labels, out['modality'], num_classes=num_classes,
            num_modalities=len(modalities), use_cmsi=ia.cmsi, use_cmci=ia.cmci,
            label_smoothing=ia.label_smoothing, minmax=tuple(ia.cutmix_minmax))
        dual_logits, mutated = model.apply(
            {'params': params, 'batch_stats': mutated['batch_stats']}, mixed, train=True,
            mutable=['batch_stats'], method='head')
    loss, terms = losses.dcinet_loss(out['logits'], labels, out['modality'],
                                     modalities=modalities, dual_logits=dual_logits,
                                     dual_targets=dual_targets)
    accuracy = jnp.mean(jnp.argmax(out['logits'], -1) == labels)
    metrics = dict(terms, loss=loss, accuracy=accuracy)
    return loss, (mutated['batch_stats'], metrics)


def train_step(state: TrainState, batch: Batch, rng, *, model, tx, config,
               axis_name: str | None = DATA_AXIS) -> tuple[TrainState, dict]:
    """One SGD step on the local batch; collectives over `axis_name` when it is set."""
    if axis_name is not None:
        # Each device draws its own CMSI box, permutation and CMCI partners.
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    params = state.params
    if axis_name is not None:
        # Differentiate per-device copies (pmap semantics); otherwise shard_map's
        # transpose would already psum the gradient of the replicated params.
        params = jax.lax.pcast(params, axis_name, to='varying')
    grad_fn = jax.grad(loss_and_updates, has_aux=True)
    grads, (batch_stats, metrics) = grad_fn(params, state.batch_stats, batch, rng,
                                            model=model, config=config)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
        if not config.model.bn_sync:
            # Normalised with per-device statistics; running averages kept replicated.
            batch_stats = jax.lax.pmean(batch_stats, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics['grad_norm'] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def make_sharded_train_step(*, model, tx, config, mesh) -> Callable:
    """jit(shard_map(train_step)) over `data`; the state argument is donated."""
    step = functools.partial(train_step, model=model, tx=tx, config=config,
                             axis_name=DATA_AXIS)
    sharded = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                            out_specs=(P(), P()))
    return jax.jit(sharded, donate_argnums=(0,))
