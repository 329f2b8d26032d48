"""The bf16 fast path: compute in bfloat16, keep parameters and optimizer state float32.

Tolerances: bfloat16 keeps 8 significant bits (7 stored + the implicit one), so one
rounding costs at most u = 2**-8 ~ 3.9e-3 relative. BatchNorm statistics and the loss
run in float32 (models, losses), so errors do not compound the way a pure-bf16
network's would: the loss must agree to 5 u ~ 2e-2 relative.

Gradients of a freshly initialised narrow network are themselves sensitive: merely
rounding the float32 *parameters* to bf16 and computing in float32 already turns the
gradient by 1 - cos ~ 4e-3 on this model (2.5e-2 on the 4-stage, 4-filter test model;
measured). So the gradient check is calibrated against that independent reference:
the bf16 path may turn the gradient at most 3x as far as the parameter rounding does,
and never below cosine 0.95. A model that ignored the dtype would give exactly the
float32 numbers and float32 convolutions: both are checked, so the test fails then.
"""

import copy
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax import state as state_lib, train_step as ts
from dcinet_jax.methods import dcinet as method
from dcinet_jax.models import build_model, init_variables
from synthetic import host_batch

BF16_UNIT_ROUNDOFF = 2.0 ** -8


def _small_config(test_config, dtype):
    """Two bottleneck stages of width 8 at 32 px: compiles fast, gradients well enough
    conditioned that bf16 rounding does not dominate them."""
    c = copy.deepcopy(test_config)
    c.data.image_size = 32
    c.data.text_length = 32
    c.data.batch_per_modality = 8
    c.model.stage_sizes = (1, 1)
    c.model.cut = 'layer2'
    c.model.num_filters = 8
    c.model.dtype = dtype
    return c


def _loss_grad_fn(config):
    model = build_model(config)  # no mapped axis: plain per-call BatchNorm statistics

    def f(params, batch_stats, batch, rng):
        return jax.value_and_grad(method.loss_fn, has_aux=True)(
            params, {'batch_stats': batch_stats}, batch, rng, model=model, config=config,
            step=0)

    return model, jax.jit(f)


@pytest.fixture(scope='module')
def f32_and_bf16(test_config):
    """(loss, grads) of the same params, batch and rng under both compute dtypes."""
    c32, c16 = _small_config(test_config, 'float32'), _small_config(test_config, 'bfloat16')
    model32, f32 = _loss_grad_fn(c32)
    variables = init_variables(model32, jax.random.key(0), c32)
    batch = host_batch(c32)
    rng = jax.random.key(3)
    out = {}
    for name, config in (('float32', c32), ('bfloat16', c16)):
        _, fn = _loss_grad_fn(config) if name == 'bfloat16' else (model32, f32)
        lowered = fn.lower(variables['params'], variables['batch_stats'], batch, rng)
        (loss, (_, metrics)), grads = lowered.compile()(
            variables['params'], variables['batch_stats'], batch, rng)
        out[name] = {'loss': float(loss), 'grads': jax.device_get(grads),
                     'hlo': lowered.as_text(), 'metrics': jax.device_get(metrics)}
    # Reference for the gradient's own sensitivity: float32 compute (same compiled
    # function) on the parameters rounded to bf16.
    rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32),
                           variables['params'])
    (loss, _), grads = f32(rounded, variables['batch_stats'], batch, rng)
    out['rounded_params'] = {'loss': float(loss), 'grads': jax.device_get(grads)}
    return out


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _conv_dtypes(stablehlo_text):
    """Element type of every convolution result in a StableHLO module."""
    return re.findall(r'stablehlo\.convolution.*->\s*tensor<[^>]*x(\w+)>', stablehlo_text)


def test_bf16_loss_close_to_float32(f32_and_bf16):
    l32, l16 = f32_and_bf16['float32']['loss'], f32_and_bf16['bfloat16']['loss']
    assert np.isfinite(l32) and np.isfinite(l16)
    rel = abs(l16 - l32) / abs(l32)
    assert rel < 5 * BF16_UNIT_ROUNDOFF, (l32, l16, rel)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bf16_gradients_point_the_same_way(f32_and_bf16):
    g32 = _flat(f32_and_bf16['float32']['grads'])
    g16 = _flat(f32_and_bf16['bfloat16']['grads'])
    g_ref = _flat(f32_and_bf16['rounded_params']['grads'])
    assert np.all(np.isfinite(g16))
    cos, cos_ref = _cos(g32, g16), _cos(g32, g_ref)
    assert cos_ref < 1.0  # the reference really perturbs
    assert cos > 0.95, cos
    assert 1.0 - cos <= 3.0 * (1.0 - cos_ref), (cos, cos_ref)
    # Magnitudes too, not just the direction.
    ratio = np.linalg.norm(g16) / np.linalg.norm(g32)
    assert abs(ratio - 1.0) < 0.1, ratio


def test_bf16_is_actually_applied(f32_and_bf16):
    """Fails when the dtype field is ignored: the numbers would equal float32's, and
    the convolutions would not be bf16 in the lowered program."""
    g32 = _flat(f32_and_bf16['float32']['grads'])
    g16 = _flat(f32_and_bf16['bfloat16']['grads'])
    assert f32_and_bf16['float32']['loss'] != f32_and_bf16['bfloat16']['loss'] or \
        not np.array_equal(g32, g16)
    assert np.max(np.abs(g32 - g16)) > 0
    d16 = _conv_dtypes(f32_and_bf16['bfloat16']['hlo'])
    d32 = _conv_dtypes(f32_and_bf16['float32']['hlo'])
    assert d16 and d32 and len(d16) == len(d32)
    assert set(d32) == {'f32'}
    assert set(d16) == {'bf16'}, collections_count(d16)


def collections_count(items):
    out = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def test_bf16_step_keeps_float32_params_and_optimizer_state(test_config):
    """The whole train step, traced (not compiled): params, momentum and BatchNorm
    statistics come out float32; the metrics are float32 scalars."""
    config = _small_config(test_config, 'bfloat16')
    model = build_model(config)
    tx = method.optimizer(config, 10)

    def init(rng):
        return state_lib.create_train_state(init_variables(model, rng, config), tx)

    state = jax.eval_shape(init, jax.random.key(0))
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_batch(config))
    step = functools.partial(ts.train_step, method=method, model=model, tx=tx, config=config,
                             axis_name=None)
    new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(1))
    for tree in (new_state.params, new_state.opt_state, new_state.collections):
        dtypes = {x.dtype for x in jax.tree.leaves(tree) if hasattr(x, 'dtype')
                  and jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}, dtypes
    assert metrics['loss'].dtype == jnp.float32
