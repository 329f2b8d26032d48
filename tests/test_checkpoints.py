"""Checkpointer: latest N plus the best by a named metric; restore by step; read-only use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax import checkpoints, parallel
from dcinet_jax.state import TrainState

METRIC = 'bimodal_average'


def _state(v):
    return TrainState(step=jnp.asarray(v, jnp.int32), params={'w': jnp.full((3,), float(v))},
                      opt_state={'m': jnp.full((3,), -float(v))},
                      collections={'batch_stats': {'mean': jnp.full((2,), 10.0 * v)}})


def _template():
    mesh = parallel.make_mesh()
    return checkpoints.abstract_with_sharding(jax.eval_shape(lambda: _state(0)),
                                              parallel.replicated(mesh))


def test_keeps_latest_n_and_the_best(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', keep=2, async_save=False,
                                    best_metric=METRIC)
    metrics = {2: 0.9, 4: 0.5, 6: 0.7}
    for step in range(1, 9):
        m = {METRIC: metrics[step]} if step in metrics else None
        assert ckpt.save(step, _state(step), metrics=m)
    assert not ckpt.save(8, _state(8))      # a step is written once
    ckpt.wait()
    assert sorted(ckpt.all_steps()) == [2, 7, 8]
    assert ckpt.best_step() == 2
    assert ckpt.latest_step() == 8

    template = _template()
    restored, meta = ckpt.restore(2, template)
    np.testing.assert_array_equal(np.asarray(restored.params['w']), np.full(3, 2.0))
    np.testing.assert_array_equal(np.asarray(restored.opt_state['m']), np.full(3, -2.0))
    np.testing.assert_array_equal(np.asarray(restored.collections['batch_stats']['mean']),
                                  np.full(2, 20.0))
    assert int(restored.step) == 2 and meta['step'] == 2
    assert restored.params['w'].sharding.is_fully_replicated
    with pytest.raises(FileNotFoundError, match='available'):
        ckpt.restore(3, template)
    ckpt.close()


def test_best_step_is_none_before_any_evaluation(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', keep=2, async_save=False,
                                    best_metric=METRIC)
    ckpt.save(1, _state(1))
    assert ckpt.latest_step() == 1
    assert ckpt.best_step() is None
    ckpt.close()


def test_read_only_restores_variables_and_touches_nothing(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', keep=3, async_save=False,
                                    best_metric=METRIC)
    ckpt.save(1, _state(1), metrics={METRIC: 0.2})
    ckpt.save(2, _state(2))
    ckpt.close()
    # An unfinished save of a live run: a reader must leave it alone.
    in_flight = tmp_path / 'ck' / '3.orbax-checkpoint-tmp-1234'
    (in_flight / 'model').mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))

    reader = checkpoints.Checkpointer(tmp_path / 'ck', best_metric=METRIC, read_only=True)
    assert reader.latest_step() == 2 and reader.best_step() == 1
    variables = reader.restore_variables(1, _template())
    assert set(variables) == {'params', 'batch_stats'}
    np.testing.assert_array_equal(np.asarray(variables['params']['w']), np.full(3, 1.0))
    with pytest.raises(RuntimeError, match='read-only'):
        reader.save(5, _state(5))
    reader.close()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before

    with pytest.raises(FileNotFoundError, match='no checkpoints'):
        checkpoints.Checkpointer(tmp_path / 'missing', best_metric=METRIC, read_only=True)
    assert not (tmp_path / 'missing').exists()
