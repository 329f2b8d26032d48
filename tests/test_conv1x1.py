"""The ResNet's 1x1 convolutions as a channel matmul (`model.conv1x1='einsum'`) against
the `lax.conv` path and an independent numpy loop: same values, same gradients, same
variables tree, interchangeable checkpoints (docs/model.md#1x1-convolutions).

Tolerances: float32 paths sum the same products in another order, so they agree to
~1e-6 of the output scale (asserted at 1e-5 for single layers and eval mode, 1e-4
through a train-mode network, whose BatchNorms divide by batch statistics). bfloat16
rounds every layer to 8 bits of mantissa, so each bf16 path is compared with the
float32 network and the einsum path's error held to that of the conv path.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dcinet_jax import checkpoints, cli, models, state as state_lib
from dcinet_jax.models.backbones import registry
from dcinet_jax.models.backbones.resnet import Conv1x1, ResNet, _conv


def scaled_close(got, want, rtol):
    """|got - want| <= rtol * max|want| elementwise (relative to the tensor's scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


def loop_conv1x1(x, kernel, stride):
    """out[b, i, j, d] = sum_c x[b, i*s, j*s, c] * k[0, 0, c, d], as explicit loops."""
    b, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    out = np.zeros((b, ho, wo, kernel.shape[-1]), np.float64)
    for i in range(ho):
        for j in range(wo):
            for ci in range(c):
                out[:, i, j, :] += np.outer(x[:, i * stride, j * stride, ci], kernel[0, 0, ci])
    return out


@pytest.mark.parametrize('shape,stride', [((2, 7, 7, 5), 1), ((2, 8, 8, 5), 2),
                                          ((1, 9, 6, 3), 2)])
def test_conv1x1_matches_a_loop_and_lax_conv(shape, stride):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    einsum = Conv1x1(6, stride)
    conv = _conv(6, 1, stride, jnp.float32, 'c', 'conv')
    v = einsum.init(jax.random.key(0), x)
    v_conv = conv.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, v_conv)
    np.testing.assert_array_equal(v['params']['kernel'], v_conv['params']['kernel'])
    want = loop_conv1x1(x.astype(np.float64), np.asarray(v['params']['kernel'], np.float64), stride)
    got = einsum.apply(v, x)
    assert got.shape == want.shape and got.dtype == jnp.float32
    scaled_close(got, want, 1e-5)
    scaled_close(conv.apply(v, x), want, 1e-5)
    assert Conv1x1(6, stride, jnp.bfloat16).apply(v, x).dtype == jnp.bfloat16


def test_conv_helper_picks_the_path():
    assert isinstance(_conv(4, 1, 1, jnp.float32, 'a', 'einsum'), Conv1x1)
    assert isinstance(_conv(4, 1, 1, jnp.float32, 'a', 'conv'), nn.Conv)
    assert isinstance(_conv(4, 3, 1, jnp.float32, 'a', 'einsum'), nn.Conv)  # only 1x1


def _pair(block, dtype=jnp.float32, stages=(1, 2)):
    kw = dict(stage_sizes=stages, block=block, num_filters=4, num_classes=5, dtype=dtype)
    return ResNet(**kw, conv1x1='conv'), ResNet(**kw, conv1x1='einsum')


@pytest.mark.parametrize('block', ['bottleneck', 'basic'])
def test_resnet_paths_have_identical_variables(block):
    conv, einsum = _pair(block)
    x = jnp.zeros((1, 32, 32, 3))
    a = conv.init(jax.random.key(3), x, train=False)
    b = einsum.init(jax.random.key(3), x, train=False)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert p.shape == q.shape and p.dtype == q.dtype == jnp.float32
        np.testing.assert_array_equal(p, q)


def _loss_and_grads(model, variables, x):
    def loss(params):
        out, upd = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                               x, train=True, mutable=['batch_stats'])
        return jnp.sum(jnp.sin(out.astype(jnp.float32))), (out, upd['batch_stats'])
    (value, (out, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables['params'])
    return value, out, stats, grads


def test_resnet_forward_and_gradients_match_the_conv_path():
    """Bottleneck stages with stride-2 projection shortcuts, train mode, float32: logits,
    BatchNorm running statistics and every parameter's gradient agree."""
    conv, einsum = _pair('bottleneck')
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    v = conv.init(jax.random.key(2), x, train=False)
    _, out_c, stats_c, g_c = _loss_and_grads(conv, v, x)
    _, out_e, stats_e, g_e = _loss_and_grads(einsum, v, x)
    assert out_e.dtype == out_c.dtype == jnp.float32
    scaled_close(out_e, out_c, 1e-4)
    jax.tree.map(lambda a, b: scaled_close(a, b, 1e-4), stats_e, stats_c)
    jax.tree.map(lambda a, b: scaled_close(a, b, 1e-4), g_e, g_c)
    # The 1x1 kernels' gradients are what the einsum path changes: all present, non-zero.
    blocks = g_c['layer2']['0']
    for kernel in (blocks['conv1'], blocks['conv3'], blocks['downsample']['0']):
        assert float(jnp.abs(kernel['kernel']).max()) > 0


def _rel(a, b):
    """||a - b|| / ||b|| over a whole tree."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    num = sum(float(jnp.sum(jnp.square(p.astype(jnp.float32) - q))) for p, q in zip(la, lb))
    return (num / sum(float(jnp.sum(jnp.square(q))) for q in lb)) ** 0.5


def test_bfloat16_is_as_accurate_as_the_conv_path():
    """bfloat16 against the float32 network: the einsum path's error is that of the conv
    path (both round every layer to bf16; a tiny random net's gradients in bf16 are
    ~13 % off float32 either way, so paths are compared through the float32 reference
    rather than to each other) and small for logits and running statistics."""
    ref = _pair('bottleneck')[0]
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    v = ref.init(jax.random.key(2), x, train=False)
    _, out32, stats32, g32 = _loss_and_grads(ref, v, x)
    err = {}
    for model in _pair('bottleneck', jnp.bfloat16):
        _, out, stats, g = _loss_and_grads(model, v, x)
        err[model.conv1x1] = (_rel(out, out32), _rel(stats, stats32), _rel(g, g32))
    for e, c in zip(err['einsum'], err['conv']):
        assert e <= 1.5 * c + 0.01, err
    assert err['einsum'][0] < 0.03 and err['einsum'][1] < 0.02 and err['einsum'][2] < 0.25, err


def test_eval_forward_matches_in_eval_mode():
    conv, einsum = _pair('bottleneck', stages=(1, 1, 1))
    x = jax.random.normal(jax.random.key(4), (2, 40, 40, 3))
    v = conv.init(jax.random.key(5), x, train=False)
    scaled_close(einsum.apply(v, x, train=False), conv.apply(v, x, train=False), 1e-5)


def test_auto_resolves_by_backend_and_bad_values_are_one_line_errors():
    assert registry.resolve_conv1x1('auto', 'cpu') == 'einsum'
    assert registry.resolve_conv1x1('auto', 'gpu') == 'conv'
    assert registry.resolve_conv1x1('auto', 'tpu') == 'conv'
    assert registry.resolve_conv1x1('conv', 'cpu') == 'conv'
    assert registry.resolve_conv1x1('einsum', 'gpu') == 'einsum'
    with pytest.raises(ValueError, match=r'config\.model\.conv1x1 .*matmul'):
        registry.resolve_conv1x1('matmul')
    with pytest.raises(ValueError, match='ResNet.conv1x1'):
        ResNet((1,), num_filters=4, conv1x1='auto').init(
            jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)


def _config(test_config, mode):
    c = test_config.copy_and_resolve_references()
    c.model.conv1x1 = mode
    return c


def test_config_field_reaches_the_model(test_config):
    assert test_config.model.conv1x1 == 'auto'
    for mode in ('conv', 'einsum'):
        assert models.build_model(_config(test_config, mode)).conv1x1 == mode
    want = registry.CONV1X1_AUTO.get(jax.default_backend(), 'conv')
    assert models.build_model(_config(test_config, 'auto')).conv1x1 == want
    with pytest.raises(ValueError, match='config.model.conv1x1'):
        models.build_model(_config(test_config, 'fast'))


def test_checkpoints_are_interchangeable(test_config, tmp_path):
    """A DCINet state saved with one path restores under the other and gives the same
    eval logits; the abstract states (shapes, dtypes, tree) are equal."""
    trainers = {m: state_lib.build_trainer(_config(test_config, m), 10) for m in ('einsum', 'conv')}
    abstract = {m: t.abstract_state() for m, t in trainers.items()}
    assert jax.tree.map(lambda s: (s.shape, s.dtype), abstract['einsum']) == \
        jax.tree.map(lambda s: (s.shape, s.dtype), abstract['conv'])
    saved = trainers['einsum'].init_state()
    ckpt = checkpoints.Checkpointer(tmp_path / 'ck', best_metric='m', async_save=False)
    ckpt.save(1, saved, metrics={'m': 0.0})
    ckpt.wait()
    reader = checkpoints.Checkpointer(tmp_path / 'ck', best_metric='m', read_only=True)
    restored, _ = reader.restore(1, abstract['conv'])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
                 jax.device_get(saved.params))
    size = test_config.data.image_size
    x = {m: jax.random.randint(jax.random.key(i), (2, size, size, 3), 0, 256).astype(jnp.uint8)
         for i, m in enumerate(test_config.data.modalities) if m != 'text'}
    out = {m: jax.jit(functools.partial(t.eval_model.apply, train=False))(
        s.variables(), x)['logits']
        for (m, t), s in zip(trainers.items(), (saved, restored))}
    scaled_close(out['conv'], out['einsum'], 1e-5)


@pytest.mark.slow
def test_cli_bench_both_paths(tmp_path, capsys):
    """`dcinet bench --conv1x1 both`: one run times both paths, alternated, with their ratio."""
    out = tmp_path / 'pair.json'
    cli.main(['bench', '--config', 'configs/test.py', '--conv1x1', 'both', '--steps', '2',
              '--rounds', '2', '--json_out', str(out)])
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert set(r['paths']) == {'conv', 'einsum'} and r['rounds'] == 2 and r['peer'] is None
    for f in r['paths'].values():
        assert len(f['window_step_times_s']) == 2 and f['step_time_s'] > 0
        assert f['images_per_sec'] == pytest.approx(f['images_per_step'] / f['step_time_s'])
        assert np.isfinite(f['final_loss']) and f['flops_per_step'] > 0
    assert r['einsum_over_conv'] == pytest.approx(
        r['paths']['einsum']['images_per_sec'] / r['paths']['conv']['images_per_sec'])
    # The same model, step and data: the paths differ only in float summation order.
    assert r['paths']['einsum']['final_loss'] == pytest.approx(
        r['paths']['conv']['final_loss'], rel=1e-3)
    assert 'einsum / conv images/s' in printed
