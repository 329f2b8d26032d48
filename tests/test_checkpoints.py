"""Checkpointer: latest N plus the best by bi-modal mAP; restore by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax import checkpoints, parallel


def _state(v):
    return {'w': jnp.full((3,), float(v)), 'step': jnp.asarray(v, jnp.int32)}


def test_keeps_latest_n_and_the_best(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', keep=2, async_save=False)
    metrics = {2: 0.9, 4: 0.5, 6: 0.7}
    for step in range(1, 9):
        m = {checkpoints.BEST_METRIC: metrics[step]} if step in metrics else None
        assert ckpt.save(step, _state(step), metrics=m)
    assert not ckpt.save(8, _state(8))      # a step is written once
    ckpt.wait()
    assert sorted(ckpt.all_steps()) == [2, 7, 8]
    assert ckpt.best_step() == 2
    assert ckpt.latest_step() == 8

    mesh = parallel.make_mesh()
    template = checkpoints.abstract_with_sharding(jax.eval_shape(lambda: _state(0)),
                                                  parallel.replicated(mesh))
    restored, meta = ckpt.restore(2, template)
    np.testing.assert_array_equal(np.asarray(restored['w']), np.full(3, 2.0))
    assert meta['step'] == 2
    assert restored['w'].sharding.is_fully_replicated
    with pytest.raises(FileNotFoundError, match='available'):
        ckpt.restore(3, template)
    ckpt.close()


def test_best_step_is_none_before_any_evaluation(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', keep=2, async_save=False)
    ckpt.save(1, _state(1))
    assert ckpt.latest_step() == 1
    assert ckpt.best_step() is None
    ckpt.close()
