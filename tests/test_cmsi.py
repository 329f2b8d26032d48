"""CMSI against an independent numpy re-implementation of timm's Mixup (mode 'batch')."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax.interaction import cmsi
from dcinet_jax.interaction.cmsi import apply_cmsi, cmsi_with_info, sample_cmsi_params

K = 5
SMOOTH = 0.1


def timm_reference(x, labels, perm, cut_h, cut_w, yl, xl, num_classes, smoothing):
    """Literal timm semantics on NCHW numpy: shuffle, CutMix with the flipped batch,
    mixup_target, unshuffle. Driven by externally given random choices."""
    x = np.asarray(x)
    perm = np.asarray(perm)
    xs = x[perm].transpose(0, 3, 1, 2).copy()             # shuffled, NCHW
    ys = np.asarray(labels)[perm]
    height, width = xs.shape[-2:]
    yu, xu = yl + cut_h, xl + cut_w                       # rand_bbox_minmax: yu = yl + cut_h
    lam = 1.0 - (yu - yl) * (xu - xl) / float(height * width)
    flipped = np.flip(xs, 0).copy()                        # torch's flip copies
    xs[:, :, yl:yu, xl:xu] = flipped[:, :, yl:yu, xl:xu]
    off = smoothing / num_classes
    on = 1.0 - smoothing + off

    def one_hot(y):
        out = np.full((len(y), num_classes), off, np.float32)
        out[np.arange(len(y)), y] = on
        return out

    t = one_hot(ys) * np.float32(lam) + one_hot(ys[::-1]) * np.float32(1.0 - lam)
    mixed = np.empty_like(xs)
    targets = np.empty_like(t)
    mixed[perm] = xs
    targets[perm] = t
    return mixed.transpose(0, 2, 3, 1), targets, lam


def _legal_sizes(size, lo=0.5, hi=0.6):
    a, b = int(size * lo), int(size * hi)
    return set(range(a, b)) if a < b else {a}


@pytest.mark.parametrize('shape', [(8, 14, 14, 3), (24, 7, 7, 2), (6, 28, 28, 1), (4, 14, 28, 2),
                                   (8, 4, 4, 2)])
def test_matches_timm_reference(shape):
    rs = np.random.RandomState(sum(shape))
    x = rs.randn(*shape).astype(np.float32)
    labels = rs.randint(0, K, size=shape[0])
    sample = jax.jit(lambda k: sample_cmsi_params(k, *shape[:3]))
    apply = jax.jit(functools.partial(apply_cmsi, num_classes=K, label_smoothing=SMOOTH))
    public = jax.jit(functools.partial(cmsi, num_classes=K, label_smoothing=SMOOTH))
    for seed in range(3):
        params = sample(jax.random.key(seed))
        mixed, targets, info = apply(jnp.asarray(x), jnp.asarray(labels), params)
        p = {k: np.asarray(v) for k, v in params.items()}
        ref_mixed, ref_targets, ref_lam = timm_reference(
            x, labels, p['perm'], int(p['cut_h']), int(p['cut_w']), int(p['yl']), int(p['xl']),
            K, SMOOTH)
        np.testing.assert_array_equal(np.asarray(mixed), ref_mixed)
        # Each weight is rounded once to float32 on both sides; allow one ulp for FMA.
        np.testing.assert_allclose(np.asarray(targets), ref_targets, rtol=2e-7, atol=0)
        assert float(info['lam']) == pytest.approx(ref_lam, abs=1e-7)
        # The public entry point makes the same choices from the same key.
        p_mixed, p_targets = public(jax.random.key(seed), jnp.asarray(x), jnp.asarray(labels))
        np.testing.assert_array_equal(np.asarray(p_mixed), ref_mixed)
        np.testing.assert_allclose(np.asarray(p_targets), ref_targets, rtol=2e-7, atol=0)


def _draws(shape, n_draws, seed=0):
    rs = np.random.RandomState(seed)
    x = jnp.asarray(rs.randn(*shape).astype(np.float32))
    labels = jnp.asarray(rs.randint(0, K, size=shape[0]))
    keys = jax.random.split(jax.random.key(seed), n_draws)
    run = jax.jit(jax.vmap(lambda k: cmsi_with_info(k, x, labels, num_classes=K,
                                                    label_smoothing=SMOOTH)))
    mixed, targets, info = run(keys)
    return np.asarray(x), np.asarray(labels), np.asarray(mixed), np.asarray(targets), \
        {k: np.asarray(v) for k, v in info.items()}


@pytest.mark.parametrize('size', [14, 7, 28, 4, 6, 5])
def test_box_statistics(size):
    x, labels, mixed, targets, info = _draws((2, size, size, 1), 1000)
    yl, yh, xl, xh = info['box'].T
    cut_h, cut_w = yh - yl, xh - xl
    legal = _legal_sizes(size)
    assert set(cut_h) == legal and set(cut_w) == legal        # all occur, nothing else
    if size == 28:
        assert legal == {14, 15}
    if size == 14:
        assert legal == {7} and np.all(info['lam'] == 0.75)
    if size == 7:
        assert legal == {3}
    # Inside the map, never clipped, corner exclusive of H - cut (numpy randint).
    assert np.all(yl >= 0) and np.all(xl >= 0) and np.all(yh <= size) and np.all(xh <= size)
    for c in legal:
        assert set(yl[cut_h == c]) == set(range(0, size - c))
        assert set(xl[cut_w == c]) == set(range(0, size - c))
    # Mask is exactly the box; lam = 1 - area / (H W).
    rows = np.arange(size)
    expect_mask = (((rows >= yl[:, None]) & (rows < yh[:, None]))[:, :, None]
                   & ((rows >= xl[:, None]) & (rows < xh[:, None]))[:, None, :])
    np.testing.assert_array_equal(info['mask'], expect_mask)
    np.testing.assert_allclose(info['lam'], 1.0 - cut_h * cut_w / size**2, rtol=1e-6)


def test_partner_and_targets_statistics():
    b = 8
    x, labels, mixed, targets, info = _draws((b, 6, 6, 2), 500, seed=3)
    partner, lam, mask = info['partner'], info['lam'], info['mask']
    idx = np.arange(b)
    # Involution without fixed points.
    assert np.all(np.take_along_axis(partner, partner, axis=1) == idx)
    assert np.all(partner != idx)
    # Partners are a permutation of the batch and every other sample is sometimes partner.
    assert np.all(np.sort(partner, axis=1) == idx)
    assert set(partner[:, 0]) == set(range(1, b))
    # Every sample keeps its slot: outside the box its own input, inside its partner's.
    m = mask[:, None, :, :, None]
    np.testing.assert_array_equal(np.where(m, 0, mixed), np.where(m, 0, x[None]))
    np.testing.assert_array_equal(np.where(m, mixed, 0), np.where(m, x[partner], 0))
    # Targets: rows sum to 1 and follow the formula (smoothing on/off values).
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    eye = np.eye(K)
    off, on = SMOOTH / K, 1 - SMOOTH + SMOOTH / K
    soft = eye * (on - off) + off
    expect = lam[:, None, None] * soft[labels][None] + (1 - lam[:, None, None]) * soft[labels[partner]]
    np.testing.assert_allclose(targets, expect, rtol=1e-6)
    assert targets.dtype == np.float32


def test_small_map_fallback():
    rs = np.random.RandomState(0)
    labels = jnp.asarray([0, 1, 2, 3])
    for size, cut, lam in [(1, 0, 1.0), (2, 1, 0.75), (3, 1, 1 - 1 / 9), (4, 2, 0.75), (6, 3, 0.75)]:
        x = jnp.asarray(rs.randn(4, size, size, 2).astype(np.float32))
        run = jax.jit(jax.vmap(lambda k: cmsi_with_info(k, x, labels, num_classes=K)))
        mixed, targets, info = run(jax.random.split(jax.random.key(size), 50))
        yl, yh, xl, xh = np.asarray(info['box']).T
        assert set(yh - yl) == {cut} and set(xh - xl) == {cut}, size
        # Corners stay inside and cover every legal position (at least {0}).
        assert set(yl) == set(range(size - cut)) and set(xl) == set(range(size - cut))
        assert yh.max() <= size and xh.max() <= size
        np.testing.assert_allclose(np.asarray(info['lam']), lam, rtol=1e-7)
        if size == 1:
            np.testing.assert_array_equal(np.asarray(mixed), np.broadcast_to(x, mixed.shape))
            np.testing.assert_allclose(np.asarray(targets[0]),
                                       np.eye(K)[[0, 1, 2, 3]] * (1 - SMOOTH) + SMOOTH / K, rtol=1e-6)


def test_odd_batch_and_bad_inputs_raise():
    x = jnp.zeros((5, 14, 14, 2))
    with pytest.raises(ValueError, match='even'):
        cmsi(jax.random.key(0), x, jnp.zeros(5, jnp.int32), num_classes=K)
    with pytest.raises(ValueError, match='minmax'):
        cmsi(jax.random.key(0), x[:4], jnp.zeros(4, jnp.int32), num_classes=K, minmax=(0.6, 0.5))
    with pytest.raises(ValueError, match='labels'):
        cmsi(jax.random.key(0), x[:4], jnp.zeros(3, jnp.int32), num_classes=K)


def test_gradient_flows_to_read_elements():
    x = jnp.asarray(np.random.RandomState(1).randn(4, 6, 6, 2).astype(np.float32))
    labels = jnp.arange(4)
    key = jax.random.key(7)
    _, _, info = cmsi_with_info(key, x, labels, num_classes=K)
    w = np.random.RandomState(2).rand(4, 6, 6, 2).astype(np.float32) + 0.5
    grad = jax.grad(lambda v: jnp.sum(w * cmsi(key, v, labels, num_classes=K)[0]))(x)
    mask = np.asarray(info['mask'])[None, :, :, None]
    partner = np.asarray(info['partner'])
    # Outside the box each sample reads itself; inside, its partner reads it (involution).
    expect = np.where(mask, w[partner], w)
    np.testing.assert_allclose(np.asarray(grad), expect, rtol=1e-6)


def test_shard_map_mixes_within_local_batch():
    mesh = jax.make_mesh((4,), ('data',))
    n_dev, local = 4, 4
    rs = np.random.RandomState(5)
    x = jnp.asarray(rs.randn(n_dev * local, 8, 8, 2).astype(np.float32))
    labels = jnp.asarray(rs.randint(0, K, size=n_dev * local))
    key = jax.random.key(11)

    def local_fn(k, xs, ys):
        k = jax.random.fold_in(k, jax.lax.axis_index('data'))
        return cmsi(k, xs, ys, num_classes=K)

    sharded = jax.jit(jax.shard_map(local_fn, mesh=mesh,
                                    in_specs=(jax.P(), jax.P('data'), jax.P('data')),
                                    out_specs=(jax.P('data'), jax.P('data'))))
    data = jax.sharding.NamedSharding(mesh, jax.P('data'))
    mixed, targets = sharded(key, jax.device_put(x, data), jax.device_put(labels, data))
    mixed, targets = np.asarray(mixed), np.asarray(targets)
    x_np, labels_np = np.asarray(x), np.asarray(labels)
    for d in range(n_dev):
        sl = slice(d * local, (d + 1) * local)
        m_d, t_d = cmsi(jax.random.fold_in(key, d), jnp.asarray(x_np[sl]),
                        jnp.asarray(labels_np[sl]), num_classes=K)
        np.testing.assert_array_equal(mixed[sl], np.asarray(m_d))
        np.testing.assert_allclose(targets[sl], np.asarray(t_d), rtol=1e-6)
        # Local mixing only: every output value of device d comes from device d's input.
        assert np.isin(mixed[sl], x_np[sl]).all()
