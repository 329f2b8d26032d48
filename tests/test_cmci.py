"""CMCI on hand-built batches, against a per-element numpy reference, gradients, sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax.interaction import cmci, interact
from dcinet_jax.interaction.cmci import channel_bounds, cmci_sources
from dcinet_jax.losses import smooth_one_hot


def _group_of(c, num_channels, num_modalities):
    """Independent group lookup: the largest n with floor(n C / N) <= c."""
    return max(n for n in range(num_modalities) if (n * num_channels) // num_modalities <= c)


def reference_apply(x, src, num_modalities):
    """out[i, ..., c] = x[src[i, group(c)], ..., c], element by element."""
    x = np.asarray(x)
    out = np.empty_like(x)
    channels = x.shape[-1]
    for i in range(x.shape[0]):
        for c in range(channels):
            out[i, ..., c] = x[src[i, _group_of(c, channels, num_modalities)], ..., c]
    return out


def check_sources(src, labels, modality, num_modalities):
    """Each choice is legal: own group / no candidate -> self, else a same-label sample of n."""
    for i in range(len(labels)):
        for n in range(num_modalities):
            cands = [j for j in range(len(labels))
                     if modality[j] == n and labels[j] == labels[i] and modality[i] != n]
            if cands:
                assert src[i, n] in cands, (i, n, src[i, n], cands)
            else:
                assert src[i, n] == i, (i, n)


def _x(batch, channels, seed=0, spatial=(2, 3)):
    return np.random.RandomState(seed).randn(batch, *spatial, channels).astype(np.float32)


def test_channel_bounds():
    assert channel_bounds(6, 3) == [0, 2, 4, 6]
    assert channel_bounds(10, 3) == [0, 3, 6, 10]
    assert channel_bounds(11, 3) == [0, 3, 7, 11]
    assert channel_bounds(2048, 3) == [0, 682, 1365, 2048]
    with pytest.raises(ValueError, match='channels'):
        channel_bounds(2, 3)


def test_same_label_pair_exchanges_one_third_each_way():
    # image 0 and audio 1 share label 4; text 2 has another label.
    x = _x(3, 6)
    labels, modality = jnp.array([4, 4, 9]), jnp.array([0, 1, 2])
    out = np.asarray(jax.jit(cmci)(jax.random.key(0), jnp.asarray(x), labels, modality))
    expect = x.copy()
    expect[0, ..., 2:4] = x[1, ..., 2:4]     # image takes audio's group
    expect[1, ..., 0:2] = x[0, ..., 0:2]     # audio takes image's group
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize('channels', [6, 10, 11])
def test_triple_ends_with_each_modalitys_own_group(channels):
    # Triple with label 3 in slots (4, 1, 2) in mixed order, plus distractors.
    labels = jnp.array([0, 3, 3, 1, 3, 0])
    modality = jnp.array([0, 1, 2, 2, 0, 1])
    x = _x(6, channels, seed=channels)
    out = np.asarray(cmci(jax.random.key(1), jnp.asarray(x), labels, modality))
    b = channel_bounds(channels, 3)
    img, aud, txt = 4, 1, 2
    for i in (img, aud, txt):
        np.testing.assert_array_equal(out[i, ..., b[0]:b[1]], x[img, ..., b[0]:b[1]])
        np.testing.assert_array_equal(out[i, ..., b[1]:b[2]], x[aud, ..., b[1]:b[2]])
        np.testing.assert_array_equal(out[i, ..., b[2]:b[3]], x[txt, ..., b[2]:b[3]])
    # Label 0: image 0 and audio 5 exchange one group each; text 3 (label 1) is alone.
    np.testing.assert_array_equal(out[0, ..., b[1]:b[2]], x[5, ..., b[1]:b[2]])
    np.testing.assert_array_equal(out[5, ..., b[0]:b[1]], x[0, ..., b[0]:b[1]])
    np.testing.assert_array_equal(out[3], x[3])
    # And against the per-element reference with the same sources.
    src = np.asarray(cmci_sources(jax.random.key(1), labels, modality))
    check_sources(src, np.asarray(labels), np.asarray(modality), 3)
    np.testing.assert_array_equal(out, reference_apply(x, src, 3))


def test_no_partner_is_identity():
    x = _x(6, 9)
    # Same labels only within a modality: no cross-modal partner anywhere.
    labels = jnp.array([0, 0, 1, 1, 2, 2])
    modality = jnp.array([0, 0, 1, 1, 2, 2])
    out = cmci(jax.random.key(2), jnp.asarray(x), labels, modality)
    np.testing.assert_array_equal(np.asarray(out), x)


def test_several_candidates_chosen_at_random():
    # Images 0 and 5 (label 5); audio 1, 2, 3 with label 5, audio 4 with label 6; texts 6, 7.
    labels = jnp.array([5, 5, 5, 5, 6, 5, 5, 5])
    modality = jnp.array([0, 1, 1, 1, 1, 0, 2, 2])
    keys = jax.random.split(jax.random.key(3), 400)
    src = np.asarray(jax.jit(jax.vmap(lambda k: cmci_sources(k, labels, modality)))(keys))
    for s in src[:50]:
        check_sources(s, np.asarray(labels), np.asarray(modality), 3)
    assert set(src[:, 0, 1]) == {1, 2, 3}           # every candidate, never audio 4
    assert set(src[:, 0, 2]) == {6, 7}
    counts = np.bincount(src[:, 0, 1], minlength=4)[1:]
    assert counts.min() > 80                           # roughly uniform (expected 133 each)
    # Independent per (sample, modality): images 0 and 5 do not always pick alike.
    assert np.mean(src[:, 0, 1] == src[:, 5, 1]) < 0.6
    assert np.mean(src[:, 1, 2] == src[:, 2, 2]) < 0.8
    # Audio 1 picks among both images, its own group stays its own.
    assert set(src[:, 1, 0]) == {0, 5} and set(src[:, 1, 1]) == {1}


@pytest.mark.parametrize('num_modalities,channels', [(3, 11), (2, 5), (4, 9)])
def test_random_batches_match_reference(num_modalities, channels):
    rs = np.random.RandomState(channels)
    batch = 12
    labels = rs.randint(0, 3, size=batch)
    modality = rs.randint(0, num_modalities, size=batch)
    x = _x(batch, channels, seed=channels + 1)
    fn = jax.jit(functools.partial(cmci, num_modalities=num_modalities))
    for seed in range(2):
        key = jax.random.key(seed)
        out = np.asarray(fn(key, jnp.asarray(x), jnp.asarray(labels), jnp.asarray(modality)))
        src = np.asarray(cmci_sources(key, jnp.asarray(labels), jnp.asarray(modality),
                                      num_modalities=num_modalities))
        check_sources(src, labels, modality, num_modalities)
        np.testing.assert_array_equal(out, reference_apply(x, src, num_modalities))


def test_reads_only_from_input_order_independent():
    # Unique candidates everywhere (deterministic result): reordering the batch reorders
    # the output; a sequential in-place version would depend on the order.
    labels = np.array([0, 0, 0, 1, 1, 2])
    modality = np.array([0, 1, 2, 0, 2, 1])
    x = _x(6, 6, seed=4)
    base = np.asarray(cmci(jax.random.key(5), jnp.asarray(x), jnp.asarray(labels), jnp.asarray(modality)))
    for seed in range(3):
        p = np.random.RandomState(seed).permutation(6)
        out = np.asarray(cmci(jax.random.key(seed), jnp.asarray(x[p]), jnp.asarray(labels[p]),
                              jnp.asarray(modality[p])))
        np.testing.assert_array_equal(out, base[p])
    # Sample 0 (image) ends with audio 1's G1 from the *input*, not audio 1's updated row.
    np.testing.assert_array_equal(base[0, ..., 2:4], x[1, ..., 2:4])
    np.testing.assert_array_equal(base[1, ..., 0:2], x[0, ..., 0:2])


def test_gradient_flows_to_exactly_the_read_elements():
    rs = np.random.RandomState(6)
    labels = jnp.array([0, 0, 1, 0, 1, 2, 2, 0])
    modality = jnp.array([0, 1, 2, 2, 0, 1, 0, 1])
    x = jnp.asarray(_x(8, 7, seed=7))
    w = rs.rand(8, 2, 3, 7).astype(np.float32) + 0.5
    key = jax.random.key(8)
    grad = np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(w * cmci(key, v, labels, modality))))(x))
    src = np.asarray(cmci_sources(key, labels, modality))
    expect = np.zeros_like(w)
    for i in range(8):
        for c in range(7):
            expect[src[i, _group_of(c, 7, 3)], ..., c] += w[i, ..., c]
    np.testing.assert_allclose(grad, expect, rtol=1e-6)
    # Samples with no same-label partner elsewhere feed only themselves.
    assert np.all((grad != 0) == (expect != 0))


def test_interact_composes_cmsi_then_cmci():
    labels = jnp.array([0, 1, 0, 1, 0, 1])
    modality = jnp.array([0, 0, 1, 1, 2, 2])
    x = jnp.asarray(_x(6, 6, seed=9, spatial=(8, 8)))
    key = jax.random.key(10)
    run = jax.jit(interact, static_argnames=('num_classes', 'num_modalities', 'use_cmsi', 'use_cmci'))
    k_s, k_c = jax.random.split(key)
    from dcinet_jax.interaction import cmsi
    mixed_s, targets_s = cmsi(k_s, x, labels, num_classes=4)
    out, targets = run(key, x, labels, modality, num_classes=4, num_modalities=3,
                       use_cmsi=True, use_cmci=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(cmci(k_c, mixed_s, labels, modality)))
    np.testing.assert_allclose(np.asarray(targets), np.asarray(targets_s), rtol=1e-6)
    # CMSI off: targets are smoothed one-hots, features only channel-mixed.
    out, targets = run(key, x, labels, modality, num_classes=4, num_modalities=3,
                       use_cmsi=False, use_cmci=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(cmci(k_c, x, labels, modality)))
    soft = np.full((6, 4), 0.1 / 4, np.float32)
    soft[np.arange(6), np.asarray(labels)] = 1 - 0.1 + 0.1 / 4
    np.testing.assert_allclose(np.asarray(targets), soft, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(smooth_one_hot(labels, 4, 0.1)), soft, rtol=1e-7)
    # Both off: identity.
    out, _ = run(key, x, labels, modality, num_classes=4, num_modalities=3,
                 use_cmsi=False, use_cmci=False)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_shard_map_matches_local_calls():
    mesh = jax.make_mesh((4,), ('data',))
    rs = np.random.RandomState(11)
    local = 6
    labels = rs.randint(0, 2, size=4 * local)
    modality = np.tile(np.array([0, 0, 1, 1, 2, 2]), 4)
    x = _x(4 * local, 6, seed=12)
    key = jax.random.key(13)

    def local_fn(k, xs, ys, ms):
        return cmci(jax.random.fold_in(k, jax.lax.axis_index('data')), xs, ys, ms)

    data = jax.sharding.NamedSharding(mesh, jax.P('data'))
    sharded = jax.jit(jax.shard_map(local_fn, mesh=mesh, in_specs=(jax.P(),) + (jax.P('data'),) * 3,
                                    out_specs=jax.P('data')))
    out = np.asarray(sharded(key, *(jax.device_put(jnp.asarray(a), data) for a in (x, labels, modality))))
    for d in range(4):
        sl = slice(d * local, (d + 1) * local)
        expect = cmci(jax.random.fold_in(key, d), jnp.asarray(x[sl]), jnp.asarray(labels[sl]),
                      jnp.asarray(modality[sl]))
        np.testing.assert_array_equal(out[sl], np.asarray(expect))
