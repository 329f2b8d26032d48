"""Losses against torch.nn.functional.cross_entropy and numpy/scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax

from dcinet_jax.losses import cross_entropy, dcinet_loss, smooth_one_hot, soft_target_cross_entropy

MODALITIES = ('image', 'audio', 'text')


def _torch_ce(logits, labels, smoothing=0.0):
    return float(F.cross_entropy(torch.from_numpy(np.array(logits, np.float32)),
                                 torch.from_numpy(np.array(labels, np.int64)),
                                 label_smoothing=smoothing))


def test_smooth_one_hot():
    labels = np.array([0, 3, 2, 3])
    out = np.asarray(smooth_one_hot(jnp.asarray(labels), 5, 0.2))
    expect = np.full((4, 5), 0.04)
    expect[np.arange(4), labels] = 0.84
    np.testing.assert_allclose(out, expect, rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(smooth_one_hot(jnp.asarray(labels), 5)), np.eye(5)[labels])


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.35])
def test_cross_entropy_matches_torch(smoothing):
    rs = np.random.RandomState(int(smoothing * 100))
    logits = (rs.randn(7, 11) * 3).astype(np.float32)
    labels = rs.randint(0, 11, size=7)
    ce = jax.jit(lambda lg, lb: cross_entropy(lg, lb, label_smoothing=smoothing))
    got = float(ce(jnp.asarray(logits), jnp.asarray(labels)))
    assert got == pytest.approx(_torch_ce(logits, labels, smoothing), rel=1e-5)


def test_cross_entropy_mask_and_dtype():
    rs = np.random.RandomState(1)
    logits = (rs.randn(6, 4) * 4).astype(np.float32)
    labels = rs.randint(0, 4, size=6)
    mask = np.array([True, False, True, True, False, False])
    got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), mask=jnp.asarray(mask))
    assert float(got) == pytest.approx(_torch_ce(logits[mask], labels[mask]), rel=1e-5)
    assert float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                               mask=jnp.zeros(6, bool))) == 0.0
    # bf16 logits: computed in float32 on the (rounded) bf16 values.
    lb16 = jnp.asarray(logits, jnp.bfloat16)
    got16 = cross_entropy(lb16, jnp.asarray(labels), label_smoothing=0.1)
    assert got16.dtype == jnp.float32
    assert float(got16) == pytest.approx(
        _torch_ce(np.asarray(lb16.astype(jnp.float32)), labels, 0.1), rel=1e-5)
    with pytest.raises(ValueError, match='mask'):
        cross_entropy(jnp.asarray(logits), jnp.asarray(labels), mask=jnp.ones(5, bool))


def test_soft_target_cross_entropy():
    rs = np.random.RandomState(2)
    logits = (rs.randn(5, 6) * 2).astype(np.float32)
    targets = rs.dirichlet(np.ones(6), size=5).astype(np.float32)
    expect = np.mean(-np.sum(targets * log_softmax(logits.astype(np.float64), axis=-1), axis=-1))
    got = jax.jit(soft_target_cross_entropy)(jnp.asarray(logits), jnp.asarray(targets))
    assert float(got) == pytest.approx(expect, rel=1e-5)
    torch_soft = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets))
    assert float(got) == pytest.approx(float(torch_soft), rel=1e-5)
    mask = np.array([0, 1, 1, 0, 1], bool)
    got_m = soft_target_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    expect_m = np.mean(-np.sum(targets * log_softmax(logits.astype(np.float64), -1), -1)[mask])
    assert float(got_m) == pytest.approx(expect_m, rel=1e-5)


def _batch(seed=3):
    rs = np.random.RandomState(seed)
    # Hand-made composition: 2 images, 3 audio, 1 text, interleaved.
    modality = np.array([1, 0, 2, 1, 0, 1])
    labels = np.array([3, 0, 2, 3, 1, 4])
    logits = (rs.randn(6, 5) * 2).astype(np.float32)
    dual = (rs.randn(6, 5) * 2).astype(np.float32)
    targets = rs.dirichlet(np.ones(5), size=6).astype(np.float32)
    return logits, labels, modality, dual, targets


def test_dcinet_loss_terms():
    logits, labels, modality, dual, targets = _batch()
    fn = jax.jit(lambda *a: dcinet_loss(*a, modalities=MODALITIES))
    fn_dual = jax.jit(lambda lg, lb, m, d, t: dcinet_loss(lg, lb, m, modalities=MODALITIES,
                                                          dual_logits=d, dual_targets=t))
    total, terms = fn_dual(*map(jnp.asarray, (logits, labels, modality, dual, targets)))
    expect = {f'loss_{name}': _torch_ce(logits[modality == i], labels[modality == i])
              for i, name in enumerate(MODALITIES)}
    expect['loss_dual'] = float(F.cross_entropy(torch.from_numpy(dual), torch.from_numpy(targets)))
    assert set(terms) == set(expect)
    for k, v in expect.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-5), k
        assert terms[k].dtype == jnp.float32
    assert float(total) == pytest.approx(sum(expect.values()), rel=1e-5)
    total_nd, terms_nd = fn(*map(jnp.asarray, (logits, labels, modality)))
    assert set(terms_nd) == {'loss_image', 'loss_audio', 'loss_text'}
    assert float(total_nd) == pytest.approx(sum(v for k, v in expect.items() if k != 'loss_dual'), rel=1e-5)
    # Modality ids are data: another composition, same compiled function, right answer.
    other = np.array([2, 2, 0, 0, 1, 1])
    _, terms_o = fn(*map(jnp.asarray, (logits, labels, other)))
    assert float(terms_o['loss_text']) == pytest.approx(_torch_ce(logits[:2], labels[:2]), rel=1e-5)
    assert fn._cache_size() == 1
    # A modality absent from the batch contributes 0, not NaN.
    _, terms_a = fn(*map(jnp.asarray, (logits, labels, np.zeros(6, np.int32))))
    assert float(terms_a['loss_audio']) == 0.0 and float(terms_a['loss_text']) == 0.0


def test_dcinet_loss_under_shard_map_global_mean():
    # 4 devices with unequal modality counts: with axis_name the terms are global means.
    rs = np.random.RandomState(4)
    n = 16
    logits = (rs.randn(n, 5) * 2).astype(np.float32)
    labels = rs.randint(0, 5, size=n)
    modality = rs.randint(0, 3, size=n)
    targets = rs.dirichlet(np.ones(5), size=n).astype(np.float32)
    mesh = jax.make_mesh((4,), ('data',))

    def local_fn(lg, lb, m, t):
        return dcinet_loss(lg, lb, m, modalities=MODALITIES, dual_logits=lg, dual_targets=t,
                           axis_name='data')

    data = jax.sharding.NamedSharding(mesh, jax.P('data'))
    sharded = jax.jit(jax.shard_map(local_fn, mesh=mesh, in_specs=(jax.P('data'),) * 4,
                                    out_specs=jax.P()))
    total, terms = sharded(*(jax.device_put(jnp.asarray(a), data)
                             for a in (logits, labels, modality, targets)))
    for i, name in enumerate(MODALITIES):
        assert float(terms[f'loss_{name}']) == pytest.approx(
            _torch_ce(logits[modality == i], labels[modality == i]), rel=1e-5)
    assert float(terms['loss_dual']) == pytest.approx(
        float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets))), rel=1e-5)


def test_gradient_matches_torch():
    logits, labels, modality, dual, targets = _batch(seed=5)
    g = jax.grad(lambda lg, d: dcinet_loss(lg, jnp.asarray(labels), jnp.asarray(modality),
                                           modalities=MODALITIES, dual_logits=d,
                                           dual_targets=jnp.asarray(targets))[0],
                 argnums=(0, 1))(jnp.asarray(logits), jnp.asarray(dual))
    tl = torch.tensor(logits, requires_grad=True)
    td = torch.tensor(dual, requires_grad=True)
    loss = sum(F.cross_entropy(tl[torch.from_numpy(modality == i)],
                               torch.from_numpy(labels[modality == i])) for i in range(3))
    loss = loss + F.cross_entropy(td, torch.from_numpy(targets))
    loss.backward()
    np.testing.assert_allclose(np.asarray(g[0]), tl.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g[1]), td.grad.numpy(), rtol=1e-5, atol=1e-7)
