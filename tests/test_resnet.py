"""Flax ResNet vs an independent PyTorch ResNet (torchvision layout, written here).

Also holds the test-local PyTorch reference (`TorchResNet`, `randomize_bn`) that
test_pretrained.py and test_summary.py import.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

from dcinet_jax import pretrained
from dcinet_jax.models.backbones.resnet import BatchNorm, ResNet

torch.set_num_threads(1)

# Flax init compiles one threefry hash per parameter, which takes seconds on a loaded CPU;
# the 'rbg' generator compiles far faster and is as good for drawing test weights.
KEY = jax.random.key(0, impl='rbg')


# --------------------------------------------------------------------------------------
# PyTorch reference: torchvision-compatible ResNet v1.5 (same module names and layout).
class TorchBasic(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idt)


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idt)


class TorchResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(layers):
            setattr(self, f'layer{i + 1}', self._make_layer(block, width * 2 ** i, n, 1 if i == 0 else 2))
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(self.inplanes, num_classes)
        self.num_stages = len(layers)

    def _make_layer(self, block, planes, n, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = tnn.Sequential(tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                  tnn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, n)]
        return tnn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f'layer{i + 1}')(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


TORCH_BLOCKS = {'basic': TorchBasic, 'bottleneck': TorchBottleneck}


def randomize_bn(model: tnn.Module, seed: int = 0) -> tnn.Module:
    """Non-trivial BN affine params and running stats, so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


def make_pair(block, stages, width, num_classes, tmp_path, fmt='pth', seed=0):
    """(torch model, flax ResNet, converted flax variables) with identical weights."""
    torch.manual_seed(seed)
    tm = randomize_bn(TorchResNet(TORCH_BLOCKS[block], stages, num_classes, width), seed).eval()
    sd = tm.state_dict()
    if fmt == 'pth':
        path = tmp_path / 'w.pth'
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file
        path = tmp_path / 'w.safetensors'
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    fm = ResNet(stage_sizes=stages, block=block, num_filters=width, num_classes=num_classes)
    init = jax.eval_shape(functools.partial(fm.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
    variables = pretrained.convert_resnet_state_dict(pretrained.load_state_dict(path), init)
    return tm, fm, variables


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def scaled_close(got, want, rtol=1e-4):
    """|got - want| <= rtol * (|want| + max|want|): float32 relative to the output scale."""
    got, want = np.asarray(got), np.asarray(want)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


LAYOUTS = {
    'resnet18': ('basic', (2, 2, 2, 2), 64),
    'resnet50_w16': ('bottleneck', (3, 4, 6, 3), 16),
}


@pytest.mark.parametrize('layout,fmt', [('resnet18', 'pth'), ('resnet50_w16', 'safetensors')])
def test_eval_forward_matches_torch(layout, fmt, tmp_path):
    block, stages, width = LAYOUTS[layout]
    tm, fm, variables = make_pair(block, stages, width, 10, tmp_path, fmt)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        want = tm(nchw(x)).numpy()
    got = jax.jit(functools.partial(fm.apply, train=False))(variables, x)
    assert got.dtype == jnp.float32 and got.shape == (2, 10)
    scaled_close(got, want)


@pytest.mark.parametrize('layout', ['resnet18', 'resnet50_w16'])
def test_train_forward_and_running_stats_match_torch(layout, tmp_path):
    block, stages, width = LAYOUTS[layout]
    if layout == 'resnet18':
        width = 16  # the layout is what matters here; keep it quick
    tm, fm, variables = make_pair(block, stages, width, 7, tmp_path, seed=1)
    x = np.random.default_rng(1).standard_normal((3, 64, 64, 3)).astype(np.float32)
    tm.train()
    with torch.no_grad():
        want = tm(nchw(x)).numpy()
    got, updated = jax.jit(functools.partial(fm.apply, train=True, mutable=['batch_stats']))(variables, x)
    scaled_close(got, want)
    # Every running stat after one training forward, incl. torch's unbiased running_var.
    sd = tm.state_dict()
    flat = jax.tree_util.tree_flatten_with_path(updated['batch_stats'])[0]
    assert len(flat) == 2 * sum(isinstance(m, tnn.BatchNorm2d) for m in tm.modules())
    for path, value in flat:
        keys = [p.key for p in path]
        tkey = '.'.join(keys[:-1]) + ('.running_mean' if keys[-1] == 'mean' else '.running_var')
        scaled_close(value, sd[tkey].numpy(), rtol=2e-4)


@pytest.mark.parametrize('shape', [(4, 5, 5, 3), (2, 1, 1, 6)])
def test_batchnorm_matches_torch_batchnorm2d(shape):
    """Direct check of the normaliser and the running-stat update (momentum 0.1, unbiased var)."""
    rng = np.random.default_rng(2)
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    c = shape[-1]
    tbn = tnn.BatchNorm2d(c)
    with torch.no_grad():
        tbn.weight.copy_(torch.linspace(0.5, 1.5, c))
        tbn.bias.copy_(torch.linspace(-1, 1, c))
        tbn.running_mean.copy_(torch.linspace(-0.3, 0.3, c))
        tbn.running_var.copy_(torch.linspace(0.7, 1.3, c))
    variables = {'params': {'scale': tbn.weight.detach().numpy().copy(), 'bias': tbn.bias.detach().numpy().copy()},
                 'batch_stats': {'mean': tbn.running_mean.numpy().copy(), 'var': tbn.running_var.numpy().copy()}}
    bn = BatchNorm()
    tbn.eval()
    np.testing.assert_allclose(bn.apply(variables, x, train=False),
                               tbn(nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    tbn.train()
    want = tbn(nchw(x)).detach().numpy().transpose(0, 2, 3, 1)
    got, upd = bn.apply(variables, x, train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd['batch_stats']['mean'], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upd['batch_stats']['var'], tbn.running_var.numpy(), rtol=1e-5, atol=1e-6)


def test_sync_bn_under_shard_map_equals_global_batch():
    """bn_axis_name='data': 4 shards x 2 samples give the statistics of the 8-sample batch."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip('needs 4 (virtual CPU) devices')
    kw = dict(stage_sizes=(1, 1), block='bottleneck', num_filters=4, num_classes=3)
    plain, synced = ResNet(**kw), ResNet(**kw, bn_axis_name='data')
    x = np.random.default_rng(3).standard_normal((8, 32, 32, 3)).astype(np.float32)
    abstract = jax.eval_shape(functools.partial(plain.init, train=False), KEY, x[:1])
    rng = np.random.default_rng(4)  # numpy weights: skips compiling flax init
    variables = jax.tree.map(lambda a: (0.5 + rng.random(a.shape)).astype(np.float32) if a.ndim == 1
                             else rng.standard_normal(a.shape).astype(np.float32) / np.sqrt(np.prod(a.shape[:-1])),
                             abstract)
    want, want_upd = jax.jit(functools.partial(plain.apply, train=True, mutable=['batch_stats']))(variables, x)

    mesh = jax.make_mesh((4,), ('data',), devices=devices[:4])
    xs = jax.device_put(x, NamedSharding(mesh, P('data')))
    vs = jax.device_put(variables, NamedSharding(mesh, P()))

    def run(model, v, xb):
        return model.apply(v, xb, train=True, mutable=['batch_stats'])

    def sharded(model, check_vma):
        return jax.jit(jax.shard_map(functools.partial(run, model), mesh=mesh, in_specs=(P(), P('data')),
                                     out_specs=(P('data'), P()), check_vma=check_vma))

    # check_vma=True: JAX itself verifies that the synced running stats are replicated.
    got, got_upd = sharded(synced, True)(vs, xs)
    scaled_close(got, want)
    jax.tree.map(lambda a, b: scaled_close(a, b), got_upd, want_upd)
    # Per-device statistics give something else (so this test can fail).
    local, _ = sharded(plain, False)(vs, xs)
    assert np.abs(np.asarray(local) - np.asarray(want)).max() > 1e-3


def test_init_like_torchvision():
    """Kaiming-normal fan_out convs, unit BN, zero_init_last_bn zeroes bn3/bn2 of each block."""
    fm = ResNet(stage_sizes=(1, 2), block='bottleneck', num_filters=32, num_classes=5, zero_init_last_bn=True)
    v = jax.jit(functools.partial(fm.init, train=False))(KEY, jnp.zeros((1, 32, 32, 3)))
    kernel = np.asarray(v['params']['layer2']['0']['conv2']['kernel'])  # (3, 3, 64, 64)
    want_std = np.sqrt(2.0 / (3 * 3 * 64))
    assert abs(kernel.std() / want_std - 1) < 0.05
    for blk in ('0', '1'):
        assert np.all(np.asarray(v['params']['layer2'][blk]['bn3']['scale']) == 0)
        assert np.all(np.asarray(v['params']['layer2'][blk]['bn2']['scale']) == 1)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    basic = ResNet(stage_sizes=(1,), block='basic', num_filters=4, zero_init_last_bn=True)
    vb = jax.jit(functools.partial(basic.init, train=False))(KEY, jnp.zeros((1, 16, 16, 3)))
    assert np.all(np.asarray(vb['params']['layer1']['0']['bn2']['scale']) == 0)


def test_bad_block_name_is_a_clear_error():
    with pytest.raises(ValueError, match="'basic' or 'bottleneck'"):
        ResNet(stage_sizes=(1,), block='wide').init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
