"""The train state, learning-rate schedules, and the one place a trainer is assembled.

`build_trainer(config, total_steps)` puts together the mesh, the method's model(s),
its optimizer and the functions that create or describe the replicated state. Train,
eval, bench and profile all call it, so there is one assembly to keep right.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dcinet_jax import methods, parallel


class TrainState(flax.struct.PyTreeNode):
    """step, params, optimizer state, and the model's other variable collections.

    `collections` maps collection name -> pytree (`{'batch_stats': ...}` for BatchNorm
    models, `{}` for a model that keeps nothing beside its params).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    collections: Any

    def variables(self) -> dict[str, Any]:
        """`{'params': ..., **collections}`: what `model.apply` takes."""
        return {'params': self.params, **self.collections}


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    params = variables['params']
    collections = {k: v for k, v in variables.items() if k != 'params'}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), collections=collections)


def learning_rate_schedule(config: Any, total_steps: int) -> optax.Schedule:
    """`config.optim`: constant or cosine decay, with a linear warmup from 0."""
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


def refuse_generic_schedule(config: Any, own: str) -> None:
    """ValueError when `config.optim` asks for the generic schedule or warmup, for a
    method whose rate is `own` (its own schedule): refused rather than ignored."""
    o = config.optim
    if str(o.get('schedule', 'constant')) != 'constant' or int(o.get('warmup_steps', 0)):
        raise ValueError(f"optim.schedule={o.get('schedule')!r}, optim.warmup_steps="
                         f"{o.get('warmup_steps')}: {own}; use 'constant' and 0")


def method_learning_rate(method: Any, config: Any, total_steps: int) -> optax.Schedule:
    """The rate `method`'s optimizer applies at each update: its own
    `learning_rate(config, total_steps)` when it has one (FGCrossNet's halving, HSLM's
    step decay), else the generic `config.optim` schedule above. The loop logs this, so
    the logged rate is the applied one whatever the method."""
    hook = getattr(method, 'learning_rate', None)
    if hook is not None:
        return hook(config, total_steps)
    return learning_rate_schedule(config, total_steps)


def sgd_with_l2(config: Any, total_steps: int) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay added to the gradient, as torch.optim.SGD."""
    o = config.optim
    return optax.chain(
        optax.add_decayed_weights(o.weight_decay),
        optax.sgd(learning_rate_schedule(config, total_steps), momentum=o.momentum,
                  nesterov=o.nesterov),
    )


def total_train_steps(config: Any, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(config.num_epochs * steps_per_epoch)


@dataclasses.dataclass
class Trainer:
    """A method's model, optimizer and state functions on a mesh (no data, no state yet).

    `model` is the one used inside the sharded step (collectives over the `data` axis);
    `eval_model` is the same module without an axis name, for evaluation and tracing.
    """

    config: Any
    method: Any
    mesh: jax.sharding.Mesh
    model: Any
    eval_model: Any
    tx: optax.GradientTransformation
    total_steps: int
    schedule: optax.Schedule    # the rate `tx` applies at update n (0-based): schedule(n)

    def _initializer(self):
        def init(rng) -> TrainState:
            return create_train_state(
                self.method.init_variables(self.eval_model, rng, self.config), self.tx)
        return init

    def init_state(self) -> TrainState:
        """A fresh state created directly replicated on the mesh (no host round trip),
        then the method's pretrained weights, if it loads any."""
        rep = parallel.replicated(self.mesh)
        state = jax.jit(self._initializer(), out_shardings=rep)(
            jax.random.key(self.config.seed))
        load = getattr(self.method, 'load_pretrained', None)
        if load is not None:
            variables = load(parallel.to_host(state.variables()), self.config)
            if variables is not None:
                state = jax.device_put(create_train_state(variables, self.tx), rep)
        return state

    def abstract_state(self) -> TrainState:
        """The state's shapes and dtypes, placed replicated on the mesh (restore template)."""
        shapes = jax.eval_shape(self._initializer(), jax.random.key(0))
        rep = parallel.replicated(self.mesh)
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)

    def sharded_step(self):
        from dcinet_jax import train_step
        return train_step.make_sharded_train_step(
            method=self.method, model=self.model, tx=self.tx, config=self.config,
            mesh=self.mesh)


def build_trainer(config: Any, total_steps: int, *, mesh: jax.sharding.Mesh | None = None,
                  check_batch: bool = True) -> Trainer:
    """The method of `config` on `mesh` (default: every device). `check_batch` applies
    the method's batch rule first (off for evaluation, which never runs the step)."""
    method = methods.from_config(config)
    mesh = mesh or parallel.make_mesh()
    if check_batch:
        method.batch_rule(config, mesh.devices.size)
    return Trainer(
        config=config, method=method, mesh=mesh,
        model=method.build_model(config, axis_name=parallel.DATA_AXIS),
        eval_model=method.build_model(config),
        tx=method.optimizer(config, total_steps), total_steps=total_steps,
        schedule=method_learning_rate(method, config, total_steps))
