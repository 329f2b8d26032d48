"""PyTorch state dict -> Flax conversion: prefixes, head skipping, errors, full DCINet tree."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dcinet_jax import pretrained
from dcinet_jax.models import build_model, init_variables
from dcinet_jax.models.backbones.resnet import ResNet
from test_resnet import TORCH_BLOCKS, TorchResNet, nchw, randomize_bn, scaled_close

STAGES = (1, 1, 1, 1)
WIDTH = 4


def tiny_torch(num_classes=5, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(TorchResNet(TORCH_BLOCKS['bottleneck'], STAGES, num_classes, WIDTH), seed).eval()


def abstract_vars(num_classes=5):
    fm = ResNet(stage_sizes=STAGES, block='bottleneck', num_filters=WIDTH, num_classes=num_classes)
    return fm, jax.eval_shape(functools.partial(fm.init, train=False), jax.random.key(0),
                              jnp.zeros((1, 32, 32, 3)))


def sd_numpy(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_layout_transposes_and_names():
    tm = tiny_torch()
    sd = sd_numpy(tm)
    _, init = abstract_vars()
    v = pretrained.convert_resnet_state_dict(sd, init)
    np.testing.assert_array_equal(v['params']['conv1']['kernel'], sd['conv1.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v['params']['layer2']['0']['downsample']['0']['kernel'],
                                  sd['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v['params']['layer3']['0']['downsample']['1']['scale'],
                                  sd['layer3.0.downsample.1.weight'])
    np.testing.assert_array_equal(v['batch_stats']['layer4']['0']['bn3']['var'], sd['layer4.0.bn3.running_var'])
    np.testing.assert_array_equal(v['params']['fc']['kernel'], sd['fc.weight'].T)
    np.testing.assert_array_equal(v['params']['fc']['bias'], sd['fc.bias'])
    assert jax.tree.structure(v) == jax.tree.structure(init)


@pytest.mark.parametrize('prefix', ['module.', 'backbone.', 'model.backbone.'])
def test_prefix_is_detected_and_stripped(prefix):
    sd = {prefix + k: v for k, v in sd_numpy(tiny_torch()).items()}
    _, init = abstract_vars()
    v = pretrained.convert_resnet_state_dict(sd, init)
    np.testing.assert_array_equal(v['params']['bn1']['bias'], sd[prefix + 'bn1.bias'])


def test_imagenet_head_is_skipped_with_notice(caplog):
    sd = sd_numpy(tiny_torch(num_classes=1000))
    _, init = abstract_vars(num_classes=5)
    init = jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), init)  # stand-in head values
    with caplog.at_level(logging.INFO, logger='dcinet_jax.pretrained'):
        v = pretrained.convert_resnet_state_dict(sd, init)
    assert 'head' in caplog.text and '1000' in caplog.text
    assert np.all(v['params']['fc']['kernel'] == 7.0)  # kept
    np.testing.assert_array_equal(v['params']['conv1']['kernel'], sd['conv1.weight'].transpose(2, 3, 1, 0))
    with pytest.raises(ValueError, match=r'fc\.weight: checkpoint \(1000, 128\).*vs model \(128, 5\)'):
        pretrained.convert_resnet_state_dict(sd, init, skip_head_on_mismatch=False)


def test_headless_checkpoint_keeps_head():
    sd = {k: v for k, v in sd_numpy(tiny_torch()).items() if not k.startswith('fc.')}
    _, init = abstract_vars()
    init = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), init)
    v = pretrained.convert_resnet_state_dict(sd, init)
    assert np.all(v['params']['fc']['bias'] == 0)


def test_missing_key_error():
    sd = sd_numpy(tiny_torch())
    del sd['layer2.0.bn2.running_mean'], sd['layer1.0.conv3.weight']
    _, init = abstract_vars()
    with pytest.raises(ValueError, match=r'missing keys \(2\): layer1\.0\.conv3\.weight, '
                                         r'layer2\.0\.bn2\.running_mean'):
        pretrained.convert_resnet_state_dict(sd, init)


def test_unexpected_key_error_and_num_batches_tracked_ignored():
    sd = sd_numpy(tiny_torch())
    assert any(k.endswith('num_batches_tracked') for k in sd)  # present, and must be ignored
    sd['layer1.0.se.fc.weight'] = np.zeros((2, 2), np.float32)
    _, init = abstract_vars()
    with pytest.raises(ValueError, match=r'unexpected keys \(1\): layer1\.0\.se\.fc\.weight') as e:
        pretrained.convert_resnet_state_dict(sd, init)
    assert 'missing' not in str(e.value) and 'num_batches_tracked' not in str(e.value)


def test_wrong_shape_error_names_both_shapes():
    sd = sd_numpy(tiny_torch())
    sd['layer3.0.conv2.weight'] = np.zeros((16, 8, 3, 3), np.float32)  # model: (16, 16, 3, 3) OIHW
    _, init = abstract_vars()
    with pytest.raises(ValueError, match=r'shape mismatches \(1\):\n +layer3\.0\.conv2\.weight: '
                                         r'checkpoint \(16, 8, 3, 3\) .*vs model \(3, 3, 16, 16\)'):
        pretrained.convert_resnet_state_dict(sd, init)


def test_pth_without_torch_gives_clear_message(tmp_path, monkeypatch):
    path = tmp_path / 'w.pth'
    torch.save(tiny_torch().state_dict(), path)
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *a, **k):
        if name == 'torch':
            raise ImportError('no torch here')
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, '__import__', no_torch)
    with pytest.raises(ImportError, match='needs PyTorch'):
        pretrained.load_state_dict(path)


def test_load_state_dict_formats_agree(tmp_path):
    from safetensors.torch import save_file
    sd = tiny_torch().state_dict()
    torch.save({'state_dict': sd}, tmp_path / 'w.pt')  # wrapped, like many training checkpoints
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'))
    a = pretrained.load_state_dict(tmp_path / 'w.pt')
    b = pretrained.load_state_dict(tmp_path / 'w.safetensors')
    assert set(a) == set(b) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(a[k], sd[k].numpy())
        np.testing.assert_array_equal(b[k], sd[k].numpy())
    with pytest.raises(ValueError, match='unknown weight file type'):
        (tmp_path / 'w.npz').write_bytes(b'x')
        pretrained.load_state_dict(tmp_path / 'w.npz')


def test_load_pretrained_backbone_on_dcinet_tree(test_config, tmp_path):
    """Only the backbone changes; the DCINet image branch then equals the torch model."""
    cfg = test_config  # custom bottleneck (1,1,1,1), width 4, 64 px, 4 classes
    tm = tiny_torch(num_classes=cfg.data.num_classes, seed=3)
    path = tmp_path / 'w.pth'
    torch.save(tm.state_dict(), path)
    model = build_model(cfg)
    init = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), cfg))
    init = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), init)
    v = pretrained.load_pretrained_backbone(path, init)
    assert jax.tree.structure(v) == jax.tree.structure(init)
    assert all(np.all(a == 0.5) for a in jax.tree.leaves(v['params']['text_net']))
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = jax.jit(functools.partial(model.apply, train=False))(v, {'image': x})
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        want = tm(nchw(((x / 255.0 - mean) / std).astype(np.float32))).numpy()
    scaled_close(out['logits'], want)


def test_text_file_or_pickled_module_is_not_a_state_dict(tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('these are not weights\n')
    module = tmp_path / 'whole_model.pth'
    torch.save(torch.nn.Linear(2, 2), module)
    for path in (text, module):
        with pytest.raises(ValueError, match=r'not a PyTorch state dict .*'
                                             r'torch.save\(model.state_dict\(\), path\)'):
            pretrained.load_state_dict(path)
    with pytest.raises(ValueError, match='whole module'):
        pretrained.load_state_dict(module)
