"""Whole-model import/export against PyTorch modules in the public code's layout
(tests/weights_public.py): same outputs within 1e-4 relative, exact round trips,
and one-line refusals."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch

from dcinet_jax import methods, weights
from dcinet_jax.weights import files, layout
from test_resnet import nchw, scaled_close
from weights_public import dsffn_torch, fgcrossnet_torch


def _fresh(config, seed=0):
    """(model, variables): random values of the model's shapes (no XLA compile of init)."""
    method = methods.from_config(config)
    model = method.build_model(config)
    return model, _randomised(_abstract(config), seed)


def _abstract(config):
    """Shapes only: enough for the key checks, which refuse before converting anything."""
    method = methods.from_config(config)
    model = method.build_model(config)
    return jax.eval_shape(lambda: method.init_variables(model, jax.random.key(0), config))


def _config(name, **model):
    import importlib
    c = importlib.import_module(f'configs.{name}').get_config()
    for k, v in model.items():
        c.model[k] = v
    return c


def _state(net, prefix=''):
    return {prefix + k: v for k, v in net.state_dict().items()}


def _save_load(state, path, allowed=()):
    if str(path).endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return files.load_torch_file(path, allowed)


def _randomised(variables, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), variables)


def _text_ids(rng, n, length, vocab):
    ids = rng.integers(1, vocab, (n, length))
    ids[:, length // 2:] = 0                       # padding, as a short text has
    return ids


# ----------------------------------------------------------------------------- FGCrossNet, DCINet

@pytest.mark.parametrize('method,config_name,fmt', [
    ('fgcrossnet', 'fgcrossnet_test', 'pkl'),      # DataParallel's module. prefix, .pkl
    ('dcinet', 'test', 'safetensors'),
])
def test_resnet_text_checkpoint_matches_public_torch_model(method, config_name, fmt, tmp_path):
    config = _config(config_name, text_norm='none')
    size, k = int(config.data.image_size), int(config.data.num_classes)
    net = fgcrossnet_torch(num_classes=k, width=int(config.model.num_filters), length=size, seed=1)
    prefix = 'module.' if method == 'fgcrossnet' else ''
    obj = _save_load(_state(net, prefix), tmp_path / f'w.{fmt}')
    model, fresh = _fresh(config)
    v = weights.for_method(method).import_state(obj, fresh, config, source='w')
    assert jax.tree.structure(v) == jax.tree.structure(fresh)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, size, size, 3)).astype(np.float32)
    ids = _text_ids(rng, 2, size, 70)
    out = jax.jit(functools.partial(model.apply, train=False))(v, {'image': images, 'text': ids})
    with torch.no_grad():
        want = torch.cat([net.forward_share(nchw(images)), net.forward_txt(torch.from_numpy(ids))])
    scaled_close(out['logits'], want.numpy(), rtol=1e-4)
    # The test would fail on a wrong mapping: a fresh model is far from the torch outputs.
    fresh_out = model.apply(fresh, {'image': images, 'text': ids}, train=False)
    assert not np.allclose(fresh_out['logits'], want.numpy(), rtol=1e-2, atol=1e-2)


def test_fgcrossnet_embedding_rows_and_centres():
    """70 public rows onto the 69-row 'original' alphabet (row 69 is never used); a
    CenterLoss `centers` key is loaded; export pads back and leaves the centres out."""
    config = _config('fgcrossnet_test', text_norm='none')
    config.data.alphabet = 'original'
    net = fgcrossnet_torch(num_classes=4, length=64, seed=2)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    state['centers'] = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    _, fresh = _fresh(config)
    mod = weights.for_method('fgcrossnet')
    v = mod.import_state(state, fresh, config)
    np.testing.assert_array_equal(v['params']['net']['text_net']['embedding'],
                                  state['embed.weight'][:69])
    np.testing.assert_array_equal(v['params']['centres'], state['centers'])
    out = mod.export_state(v, config)
    assert out['embed.weight'].shape == (70, 16) and not out['embed.weight'][69].any()
    assert 'centers' not in out and set(out) == set(net.state_dict())
    net.load_state_dict({k: torch.from_numpy(a) for k, a in out.items()}, strict=True)


@pytest.mark.parametrize('method,config_name', [('fgcrossnet', 'fgcrossnet_test'),
                                                ('dcinet', 'test'), ('dcinet', 'demo')])
def test_export_then_import_is_bit_exact(method, config_name):
    config = _config(config_name)                  # demo: with the text BatchNorm
    _, fresh = _fresh(config)
    v = _randomised(fresh, 3)
    mod = weights.for_method(method)
    exported = mod.export_state(v, config)
    back = mod.import_state(exported, fresh, config)
    if method == 'fgcrossnet':                      # centres: not in the public file
        back['params']['centres'] = v['params']['centres']
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(back)))


# ----------------------------------------------------------------------------- DSFFN

def test_dsffn_checkpoint_matches_public_torch_model(tmp_path):
    config = _config('dsffn_test')
    net = dsffn_torch(config, seed=4)
    state = _state(net)
    state_np = {k: v.numpy() for k, v in state.items()}
    centres = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    obj = _save_load({**state, 'center': torch.from_numpy(centres)}, tmp_path / 'net.pth')
    model, fresh = _fresh(config)
    mod = weights.for_method('dsffn')
    v = mod.import_state(obj, fresh, config)
    np.testing.assert_array_equal(v['params']['centers'], centres)

    rng = np.random.default_rng(0)
    vis = rng.standard_normal((5, int(config.data.visual_dim))).astype(np.float32)
    aud = rng.standard_normal((5, int(config.data.audio_dim))).astype(np.float32)
    out = model.apply(v, vis, aud, train=False)
    with torch.no_grad():
        want = net(torch.from_numpy(vis), torch.from_numpy(aud))
    for name, w in zip(('visual', 'audio', 'logits_visual', 'logits_audio'), want):
        scaled_close(out[name], w.numpy(), rtol=1e-4)
    fresh_out = model.apply(fresh, vis, aud, train=False)
    assert not np.allclose(fresh_out['visual'], want[0].numpy(), rtol=1e-2, atol=1e-2)

    exported = mod.export_state(v, config)        # the public layout, loadable strictly
    assert set(exported) == set(state)
    for k in state:
        np.testing.assert_array_equal(exported[k], state_np[k] if 'num_batches' not in k
                                      else np.zeros((), np.int64))
    net.load_state_dict({k: torch.from_numpy(a) for k, a in exported.items()}, strict=True)
    back = mod.import_state(exported, v, config)
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- refusals

def _lines(error) -> list[str]:
    return str(error.value).splitlines()


def test_refusals_are_one_line_each():
    config = _config('fgcrossnet_test', text_norm='none')
    fresh = _abstract(config)
    mod = weights.for_method('fgcrossnet')
    good = {k: v.numpy() for k, v in fgcrossnet_torch(num_classes=4, length=64).state_dict().items()}

    missing = {k: v for k, v in good.items() if k != 'layer2.0.conv1.weight'}
    with pytest.raises(ValueError) as e:
        mod.import_state(missing, fresh, config, source='a.pth')
    assert _lines(e) == ['a.pth: does not fit the model:',
                         '  1 missing key(s): layer2.0.conv1.weight']

    shaped = dict(good, **{'fc.weight': good['fc.weight'][:3]})
    with pytest.raises(ValueError) as e:
        mod.import_state(shaped, fresh, config, source='a.pth')
    assert _lines(e)[1:] == ['  1 mis-shaped key(s): fc.weight (3, 128) (as Flax (128, 3)) '
                             'vs model (128, 4)']

    dsffn = {k: v.numpy() for k, v in dsffn_torch(_config('dsffn_test')).state_dict().items()}
    with pytest.raises(ValueError) as e:                 # another method's state dict
        mod.import_state(dsffn, fresh, config, source='dsffn.pth')
    lines = _lines(e)
    assert len(lines) == 3 and 'unknown key(s): MmFA.' in lines[1] and 'more)' in lines[1]
    assert 'missing key(s): bn1.bias, bn1.running_mean' in lines[2]


def test_model_options_without_public_counterpart_are_refused():
    config = _config('dsffn_test')
    config.model.gate_form = 'paper'                     # no w2 / w4
    state = {k: v.numpy() for k, v in dsffn_torch(_config('dsffn_test')).state_dict().items()}
    fresh = _abstract(config)
    with pytest.raises(ValueError, match=r'unknown key\(s\): MmFA.w_2.bias'):
        weights.for_method('dsffn').import_state(state, fresh, config, source='n.pth')
    config = _config('dsffn_test')
    config.model.shared_encoder_fc = True
    fresh = _abstract(config)
    with pytest.raises(ValueError, match=r'variable\(s\) this format does not hold '
                                         r'\(params/enc_shared/bias'):
        weights.for_method('dsffn').import_state(state, fresh, config, source='n.pth')


def test_pickled_module_is_refused_without_running_it(tmp_path):
    path = tmp_path / 'whole.pth'
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError) as e:
        files.load_torch_file(path)
    assert len(_lines(e)) == 1 and 'torch.nn.modules.linear.Linear' in str(e.value)

    class Boom:  # a pickle that would run code when unpickled
        def __reduce__(self):
            return (open, (str(tmp_path / 'pwned'), 'w'))
    torch.save({'w': torch.zeros(1), 'x': Boom()}, tmp_path / 'evil.pth')
    with pytest.raises(ValueError, match='needs class'):
        files.load_torch_file(tmp_path / 'evil.pth')
    assert not (tmp_path / 'pwned').exists()


def test_allowed_classes_and_nested_safetensors_round_trip(tmp_path):
    import argparse
    ckpt = {'model': [{'fc.weight': np.ones((2, 3), np.float32)}, {'b': np.arange(3.0)}],
            'opt': argparse.Namespace(lr=2e-4, name='x'), 'epoch': 7}
    files.save(ckpt, tmp_path / 'c.pth')
    with pytest.raises(ValueError, match='argparse.Namespace'):
        files.load_torch_file(tmp_path / 'c.pth')
    for path in (tmp_path / 'c.pth', tmp_path / 'c.safetensors'):
        if path.suffix == '.safetensors':
            files.save(ckpt, path, 'safetensors')
        got = files.load_torch_file(path, allowed=(argparse.Namespace,))
        assert got['epoch'] == 7 and got['opt'] == ckpt['opt']
        np.testing.assert_array_equal(got['model'][0]['fc.weight'], ckpt['model'][0]['fc.weight'])
        np.testing.assert_array_equal(got['model'][1]['b'], ckpt['model'][1]['b'])
    with pytest.raises(ValueError, match='exists; pass --force'):
        files.save(ckpt, tmp_path / 'c.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.pth', 'c.safetensors']


def test_layout_conversions_match_torch_ops():
    """Each conversion gives Flax's op the result of torch's op, and inverts exactly."""
    rng = np.random.default_rng(0)
    import jax.numpy as jnp
    from flax import linen as nn
    x1 = rng.standard_normal((2, 5, 9)).astype(np.float32)           # NCL
    conv1d = torch.nn.Conv1d(5, 4, 3, padding=1)
    k = layout.to_flax(conv1d.weight.detach().numpy(), 'conv1d')
    got = nn.Conv(4, (3,), padding=[(1, 1)]).apply(
        {'params': {'kernel': k, 'bias': conv1d.bias.detach().numpy()}}, x1.transpose(0, 2, 1))
    with torch.no_grad():
        want = conv1d(torch.from_numpy(x1)).numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    lin = torch.nn.Linear(5, 3)
    got = jnp.asarray(x1[:, :, 0]) @ layout.to_flax(lin.weight.detach().numpy(), 'linear')
    np.testing.assert_allclose(got + lin.bias.detach().numpy(),
                               lin(torch.from_numpy(x1[:, :, 0])).detach().numpy(), rtol=1e-5, atol=1e-6)
    for kind, shape in (('linear', (3, 5)), ('conv1d', (4, 5, 3)), ('conv2d', (4, 5, 3, 2))):
        a = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(layout.to_torch(layout.to_flax(a, kind), kind), a)
