"""Text network vs a numpy reference written in PyTorch's NCL/NCHW convention."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax.models.text_net import TextNet

KEY = jax.random.key(0, impl='rbg')  # fast-compiling generator for test weights


def numpy_init(net, ids, seed=0):
    """Test weights drawn in numpy for the abstract tree (skips compiling flax init)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(net.init, jax.random.key(0), ids)
    return jax.tree.map(lambda a: (rng.standard_normal(a.shape) / np.sqrt(max(np.prod(a.shape[:-1]), 1)))
                        .astype(np.float32), abstract)


def np_conv1d_ncl(x, w, b):
    """x (B, Cin, L), w (Cout, Cin, 3) torch layout, pad 1 -> (B, Cout, L)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    L = x.shape[2]
    out = sum(np.einsum('bil,oi->bol', xp[:, :, k:k + L], w[:, :, k]) for k in range(3))
    return out + b[None, :, None]


def np_conv2d_nchw(x, w, b):
    """x (B, Cin, H, W), w (Cout, Cin, 3, 3), pad 1 -> (B, Cout, H, W)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    H, W = x.shape[2:]
    out = sum(np.einsum('bihw,oi->bohw', xp[:, :, i:i + H, j:j + W], w[:, :, i, j])
              for i in range(3) for j in range(3))
    return out + b[None, :, None, None]


def numpy_text_net(ids, p):
    """The text network of docs/model.md#text-network as a PyTorch user would write it, in numpy (float64)."""
    emb = np.asarray(p['embedding'], np.float64).copy()
    emb[0] = 0.0                                        # padding row
    x = emb[ids].transpose(0, 2, 1)                     # (B, E, L)
    torch_w = lambda k: np.asarray(k, np.float64).transpose(2, 1, 0)  # flax (k, in, out) -> (out, in, k)
    x = np.maximum(np_conv1d_ncl(x, torch_w(p['conv1']['kernel']), np.asarray(p['conv1']['bias'])), 0)
    x = np_conv1d_ncl(x, torch_w(p['conv2']['kernel']), np.asarray(p['conv2']['bias']))  # (B, L, L)
    B, C, L = x.shape
    x = x.reshape(B, 1, C, L)                           # torch .view: H = channel, W = position
    w2 = np.asarray(p['conv3']['kernel'], np.float64).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    x = np_conv2d_nchw(x, w2, np.asarray(p['conv3']['bias']))
    return x.transpose(0, 2, 3, 1)                      # NHWC


@pytest.mark.parametrize('length,hidden', [(12, 0), (9, 5)])
def test_matches_numpy_reference(length, hidden):
    vocab = 11
    net = TextNet(vocab_size=vocab, length=length, embed_dim=4, hidden=hidden)
    rng = np.random.default_rng(length)
    ids = rng.integers(0, vocab, (3, length)).astype(np.int32)
    ids[:, -3:] = 0  # trailing padding
    v = numpy_init(net, ids)
    p = v['params']
    assert p['conv1']['kernel'].shape == (3, 4, hidden or length // 2)
    assert p['conv2']['kernel'].shape == (3, hidden or length // 2, length)
    # Perturb the padding row: the network must ignore it (masked), as the reference does.
    p = {**p, 'embedding': np.concatenate([np.full((1, 4), 5.0, np.float32), p['embedding'][1:]])}
    got = jax.jit(net.apply)({'params': p}, ids)
    assert got.shape == (3, length, length, 3) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, numpy_text_net(ids, p), rtol=1e-5, atol=1e-5)
    # uint8 ids give the same result.
    np.testing.assert_allclose(jax.jit(net.apply)({'params': p}, ids.astype(np.uint8)), got, rtol=0, atol=0)


def test_axes_height_is_channel_width_is_position():
    """Changing one character changes only a 3-wide band of columns (width = position)."""
    L = 16
    net = TextNet(vocab_size=8, length=L, embed_dim=3)
    ids = np.full((1, L), 2, np.int32)
    v = numpy_init(net, ids)
    ids2 = ids.copy()
    ids2[0, 8] = 5
    f = jax.jit(net.apply)
    diff = np.abs(np.asarray(f(v, ids2) - f(v, ids)))[0].max(axis=(0, 2))  # per column
    changed = np.nonzero(diff > 1e-6)[0]
    # conv1 (k3) + conv2 (k3) spread position 8 over 6..10; conv3 (k3) over 5..11.
    assert changed.min() >= 5 and changed.max() <= 11 and len(changed) > 0


def test_padding_row_zero_and_gets_no_gradient():
    net = TextNet(vocab_size=6, length=8, embed_dim=4)
    ids = np.array([[1, 2, 3, 0, 0, 0, 0, 0], [5, 4, 0, 0, 0, 0, 0, 0]], np.int32)
    v = jax.jit(net.init)(KEY, ids)
    assert np.all(np.asarray(v['params']['embedding'][0]) == 0)
    g = jax.jit(jax.grad(lambda p: jnp.sum(net.apply({'params': p}, ids) ** 2)))(v['params'])
    assert np.all(np.asarray(g['embedding'][0]) == 0)
    assert np.abs(np.asarray(g['embedding'][1:6])).sum() > 0


def test_bad_input_shape_is_a_clear_error():
    net = TextNet(vocab_size=6, length=8)
    with pytest.raises(ValueError, match=r'ids of shape \(batch, 8\)'):
        net.init(KEY, np.zeros((2, 7), np.int32))
    with pytest.raises(ValueError, match='integer character ids'):
        net.init(KEY, np.zeros((2, 8), np.float32))


def test_bfloat16_compute_keeps_float32_params():
    net = TextNet(vocab_size=6, length=8, embed_dim=4, dtype=jnp.bfloat16)
    ids = np.random.default_rng(0).integers(0, 6, (2, 8)).astype(np.int32)
    v = jax.eval_shape(net.init, KEY, ids)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    v = numpy_init(net, ids)
    out = jax.jit(net.apply)(v, ids)
    assert out.dtype == jnp.bfloat16
    ref = numpy_text_net(ids, v['params'])
    # bf16 keeps 8 significant bits (rel. 2^-8 = 0.4%) per rounding; three layers -> a few %.
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.05, atol=0.05 * np.abs(ref).max())
