"""HSLM in bfloat16: projections, attention and similarity vectors in bf16; params,
BatchNorm statistics, softmax weights, the GRU, the SAF gate, the score and the loss in
float32 (docs/hslm_model.md#bfloat16).

Tolerance: one bf16 rounding is at most u = 2**-8 ~ 3.9e-3 relative. The score is a
sigmoid of a float32 head over l2-normalised (float32-normalised) vectors, so its bf16
error stays below u in absolute terms (measured ~6e-4 on this config); the loss (a sum
of hinge terms of those scores) must agree to 5 u ~ 2e-2 relative, as the DCINet bf16
check. Both are compared with the same model computed in float32, and the bf16 scores
must differ from it (a model that ignored the dtype would pass otherwise).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dsffn_test, hslm_test
from dcinet_jax.methods import dsffn, hslm

U = 2.0 ** -8


@pytest.fixture(scope='module')
def pair():
    c = hslm_test.get_config()
    c.data_dir = '/nonexistent'      # no data: the config's sizes
    m32 = hslm.build_model(c)
    variables = hslm.init_variables(m32, jax.random.key(0), c)
    c16 = c.copy_and_resolve_references()
    c16.model.dtype = 'bfloat16'
    return c, c16, m32, hslm.build_model(c16), variables, hslm.synthetic_batch(
        jax.random.key(1), c)


def test_bf16_scores_are_float32_and_close(pair):
    _, _, m32, m16, variables, b = pair
    s32 = np.asarray(m32.apply(variables, b['images'], b['tokens'], b['lengths'], train=False))
    s16 = m16.apply(variables, b['images'], b['tokens'], b['lengths'], train=False)
    assert s16.dtype == jnp.float32
    diff = np.abs(np.asarray(s16) - s32)
    assert diff.max() <= U, diff.max()
    assert diff.max() > 0                 # bf16 was applied
    words = m16.apply(variables, b['tokens'], b['lengths'], train=False,
                      method=type(m16).encode_captions)
    assert words.dtype == jnp.bfloat16


def test_bf16_loss_is_float32_and_close(pair):
    c, c16, m32, m16, variables, b = pair
    rest = {k: v for k, v in variables.items() if k != 'params'}
    losses = [hslm.loss_fn(variables['params'], rest, b, jax.random.key(2), model=m,
                           config=cfg, step=jnp.int32(0))[0]
              for m, cfg in ((m32, c), (m16, c16))]
    assert losses[1].dtype == jnp.float32
    np.testing.assert_allclose(float(losses[1]), float(losses[0]), rtol=5 * U)


def test_unknown_dtype_and_dsffn_bf16_are_refused_in_one_line():
    c = hslm_test.get_config()
    c.model.dtype = 'float16'
    with pytest.raises(ValueError, match=r"model.dtype='float16'"):
        hslm.build_model(c)
    d = dsffn_test.get_config()
    d.model.dtype = 'bfloat16'
    with pytest.raises(ValueError, match='DSFFN computes in float32 only') as err:
        dsffn.build_model(d)
    assert '\n' not in str(err.value)
