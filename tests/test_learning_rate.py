"""The logged learning rate is the rate the optimizer applies, for every method.

Two halves of one chain:
- per method (DCINet, DSFFN, FGCrossNet, HSLM): the trainer's schedule (what the loop
  logs) equals the rate the method's real optimizer applies at update n, measured as
  the ratio of its update to the update of the same optimizer at a constant rate of 1
  fed the same gradients (momentum, Adam moments and clipping do not depend on the
  rate, so the ratio is the rate alone), across FGCrossNet's halvings and HSLM's
  x0.1 step, and both equal the formula written out in numpy;
- the loop: through `train_and_evaluate`, the `learning_rate` logged at each step is the
  rate of the update just applied, measured from the logged losses of a method whose
  loss is linear in its params under plain SGD (loss_n - loss_n+1 = lr_n * |grad|^2).
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny_method
from configs import dsffn_test, fgcrossnet_test, hslm_test
from configs import test as dcinet_test
from dcinet_jax import methods, state, train
from dcinet_jax.methods import dsffn

STEPS = 8


def _dcinet(_):
    c = dcinet_test.get_config()
    c.optim.schedule, c.optim.warmup_steps = 'cosine', 2
    lr = c.optim.learning_rate
    cosine = [lr * s / 2 if s < 2 else lr * 0.5 * (1 + math.cos(math.pi * (s - 2) / (STEPS - 2)))
              for s in range(STEPS)]
    return c, cosine


def _dsffn(tmp_path):
    c = dsffn_test.get_config()
    c.data_dir = str(tmp_path)
    c.optim.schedule, c.optim.warmup_steps = 'constant', 3
    lr = c.optim.learning_rate
    return c, [lr * min(s, 3) / 3 for s in range(STEPS)]


def _fgcrossnet(_):
    c = fgcrossnet_test.get_config('stage2')
    c.optim.steps_per_epoch, c.optim.halve_every_epochs = 2, 1   # halve every 2 steps
    lr = c.optim.learning_rate
    return c, [lr * 0.5 ** (s // 2) for s in range(STEPS)]


def _hslm(tmp_path):
    c = hslm_test.get_config()
    c.data_dir = str(tmp_path)          # no data: the config's sizes
    c.optim.decay_steps = 3
    lr = c.optim.learning_rate
    return c, [lr if s < 3 else lr * c.optim.decay_factor for s in range(STEPS)]


def _unit(config):
    """The same optimizer at a constant rate of 1 (every other setting kept)."""
    u = config.copy_and_resolve_references()
    u.optim.learning_rate, u.optim.schedule, u.optim.warmup_steps = 1.0, 'constant', 0
    if 'halve_every_epochs' in u.optim:
        u.optim.halve_every_epochs = 0
    if 'decay_steps' in u.optim:
        u.optim.decay_steps, u.optim.decay_epoch = 0, 0
    return u


@pytest.mark.parametrize('case', [_dcinet, _dsffn, _fgcrossnet, _hslm],
                         ids=['dcinet', 'dsffn', 'fgcrossnet', 'hslm'])
def test_the_logged_schedule_is_the_rate_the_optimizer_applies(case, tmp_path):
    config, want = case(tmp_path)
    trainer = state.build_trainer(config, STEPS)
    unit_tx = trainer.method.optimizer(_unit(config), STEPS)
    shapes = jax.tree.map(lambda x: x.shape, trainer.abstract_state().params)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                          is_leaf=lambda x: isinstance(x, tuple))
    # DSFFN's centres have their own constant SGD rate (loss.center_lr): the logged rate
    # is the network's.
    groups = (jax.tree_util.tree_map_with_path(dsffn.param_group, params)
              if trainer.method is dsffn else jax.tree.map(lambda _: 'net', params))
    s_real, s_unit = trainer.tx.init(params), unit_tx.init(params)
    logged, applied = [], []
    for n in range(STEPS):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                             params)
        u_real, s_real = trainer.tx.update(grads, s_real, params)
        u_unit, s_unit = unit_tx.update(grads, s_unit, params)
        real = np.concatenate([np.ravel(x) for x, g in zip(jax.tree.leaves(u_real),
                                                            jax.tree.leaves(groups)) if g == 'net'])
        unit = np.concatenate([np.ravel(x) for x, g in zip(jax.tree.leaves(u_unit),
                                                            jax.tree.leaves(groups)) if g == 'net'])
        big = np.abs(unit) > 1e-3 * np.abs(unit).max()
        ratio = real[big] / unit[big]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4, atol=1e-9)  # one rate per update
        applied.append(float(ratio[0]))
        logged.append(float(trainer.schedule(n)))
    np.testing.assert_allclose(applied, want, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(logged, applied, rtol=1e-4, atol=1e-9)


def test_fgcrossnet_and_hslm_refuse_the_generic_schedule_fields(tmp_path):
    for case in (_fgcrossnet, _hslm):
        config, _ = case(tmp_path)
        config.optim.schedule = 'cosine'
        with pytest.raises(ValueError, match="optim.schedule='cosine'"):
            state.method_learning_rate(methods.from_config(config), config, STEPS)


# ----------------------------------------------------------------------------- the loop

def _probe_method():
    """tiny_method with a loss linear in its params (gradient 1 everywhere), plain SGD
    and a schedule hook that drops the rate x0.1 at update 3."""
    def learning_rate(config, total_steps):
        return optax.piecewise_constant_schedule(config.optim.learning_rate, {3: 0.1})

    def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
        loss = sum(jnp.sum(p) for p in jax.tree.leaves(params))
        return loss, ({}, {'loss': loss})

    def optimizer(config, total_steps):
        return optax.sgd(learning_rate(config, total_steps))

    fields = {k: getattr(tiny_method, k) for k in methods.REQUIRED}
    return types.SimpleNamespace(**dict(fields, loss_fn=loss_fn, optimizer=optimizer,
                                        learning_rate=learning_rate))


def test_the_loop_logs_the_rate_of_the_update_just_applied(tmp_path, monkeypatch):
    methods.register('lr_probe', _probe_method())
    logged: dict[int, dict] = {}
    original = train.MetricLogger.scalars

    def record(self, step, values, prefix=''):
        if prefix == 'train/':
            logged[step] = dict(values)
        return original(self, step, values, prefix)

    monkeypatch.setattr(train.MetricLogger, 'scalars', record)
    c = tiny_method.get_config(num_train_steps=7)
    c.method = 'lr_probe'
    c.optim.learning_rate = 0.1
    c.log_every_steps, c.checkpoint_every_steps = 1, 100
    train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(
        tiny_method.init_variables(tiny_method.MLP(), jax.random.key(0), c)['params']))
    # The loss logged at step n + 1 is computed before update n (0-based).
    measured = [(logged[n + 1]['loss'] - logged[n + 2]['loss']) / size for n in range(6)]
    np.testing.assert_allclose(measured, [0.1, 0.1, 0.1, 0.01, 0.01, 0.01], rtol=1e-3)
    np.testing.assert_allclose([logged[n + 1]['learning_rate'] for n in range(6)], measured,
                               rtol=1e-3)
