"""`dcinet bench` (dcinet_jax.perf) and the PyTorch peer on the tiny test config (4 CPU devices)."""

import copy
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
import setuptools
import torch

from dcinet_jax import cli
from dcinet_jax.models import build_model, init_variables
from dcinet_jax.perf import bench, harness, processes
from dcinet_jax.perf import torch_peer as peer

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(REPO / 'configs' / 'test.py')


# ----------------------------------------------------------------------------- helpers

def test_window_sizes_cover_every_step():
    for steps in (1, 2, 5, 7, 20, 23):
        sizes = harness.window_sizes(steps)
        assert sum(sizes) == steps
        assert 1 <= len(sizes) <= 5 and min(sizes) >= 1
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        harness.window_sizes(0)


@pytest.mark.parametrize('granularity,limit', [(4, 512), (8, 100), (1, 37)])
def test_search_max_batch_matches_brute_force(granularity, limit):
    for edge in list(range(0, 40)) + [63, 64, 65, 200, 511, 512, 1000]:
        calls = []

        def fits(b):
            calls.append(b)
            return b <= edge

        for start in (granularity, 3 * granularity, 32):
            calls.clear()
            got = bench.search_max_batch(fits, start, granularity, limit)
            multiples = [m for m in range(granularity, limit + 1, granularity)]
            expected = max([m for m in multiples if m <= edge], default=0)
            assert got == expected, (edge, start, got, expected)
            assert all(c % granularity == 0 and 0 < c <= limit for c in calls)
            assert len(calls) <= 2 * math.log2(limit / granularity + 1) + 3


def test_oom_detection():
    assert bench._is_oom(RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 3GiB'))
    assert not bench._is_oom(ValueError('shapes do not match'))


def test_find_max_batch_stops_at_out_of_memory(test_config, monkeypatch):
    """The search with a fake step that runs out of memory above 40 per modality."""
    class FakeXlaError(RuntimeError):
        pass

    seen = []

    def fake_run(config, *, steps, warmup_steps=2, mesh=None):
        b = config.data.batch_per_modality
        seen.append(b)
        if b > 40:
            raise FakeXlaError(f'RESOURCE_EXHAUSTED: Out of memory while allocating {b}')
        return {'images_per_sec': float(b)}, None, None

    monkeypatch.setattr(bench, 'run_train_bench', fake_run)
    r = bench.find_max_batch_per_modality(test_config, limit=1024)
    # 4 devices x even local batch (3 modalities): multiples of 8.
    assert r['granularity'] == 8 and r['max_batch_per_modality'] == 40
    assert all(b % 8 == 0 for b in seen) and r['tried']['48'] == 'OOM'

    def broken(config, **kw):
        raise ValueError('a real bug, not memory')

    monkeypatch.setattr(bench, 'run_train_bench', broken)
    with pytest.raises(ValueError, match='real bug'):
        bench.find_max_batch_per_modality(test_config, limit=64)


def _backbone_flops(c):
    """Independent count of one sample's backbone FLOPs (2 x MACs of convs and fc) for
    bottleneck stages."""
    def out(h, k, s, p):
        return (h + 2 * p - k) // s + 1

    w = c.model.num_filters
    h = out(c.data.image_size, 7, 2, 3)
    f = 2 * h * h * 49 * 3 * w
    h, cin = out(h, 3, 2, 1), w
    for i, n in enumerate(c.model.stage_sizes):
        planes = w * 2 ** i
        for j in range(n):
            stride = (1 if i == 0 else 2) if j == 0 else 1
            h2 = out(h, 3, stride, 1)
            f += 2 * h * h * cin * planes + 2 * h2 * h2 * 9 * planes * planes
            f += 2 * h2 * h2 * planes * 4 * planes
            if stride != 1 or cin != 4 * planes:
                f += 2 * h2 * h2 * cin * 4 * planes
            h, cin = h2, 4 * planes
    return f + 2 * cin * c.data.num_classes


def _forward_flops(c):
    """Forward FLOPs of one DCINet batch: three backbone passes per index + text net."""
    length, e = c.data.text_length, c.model.text_embed_dim
    hidden = c.model.text_hidden or length // 2
    text = 2 * length * 3 * e * hidden + 2 * length * 3 * hidden * length + 2 * length ** 2 * 27
    b = c.data.batch_per_modality
    return 3 * b * _backbone_flops(c) + b * text


def test_backbone_flops_reference_is_resnet50(test_config):
    c = copy.deepcopy(test_config)
    c.data.image_size, c.data.num_classes = 224, 1000
    c.model.stage_sizes, c.model.num_filters = (3, 4, 6, 3), 64
    assert abs(_backbone_flops(c) / 2 / 1e9 - 4.09) < 0.02   # torchvision: 4.09 GMACs


# ----------------------------------------------------------------------------- peer pieces

def test_peer_resnet_has_torchvision_parameter_counts():
    # Published torchvision counts (1000 classes).
    for stages, block, expected in (((3, 4, 6, 3), 'bottleneck', 25_557_032),
                                    ((2, 2, 2, 2), 'basic', 11_689_512)):
        net = peer.ResNet(stages, block, 64, 1000, 'layer4')
        assert sum(p.numel() for p in net.parameters()) == expected


def test_peer_has_the_jax_models_parameters(test_config):
    """Same work: the peer's parameter count equals the Flax model's, layer for layer."""
    model = build_model(test_config)
    shapes = jax.eval_shape(lambda k: init_variables(model, k, test_config),
                            jax.random.key(0))
    n_jax = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))
    args = processes.peer_arguments(test_config, steps=1)
    net = peer.PeerNet(stage_sizes=args['stage_sizes'], block=args['block'],
                       width=args['width'], num_classes=args['num_classes'], cut=args['cut'],
                       text_modality=True, vocab_size=args['vocab_size'],
                       text_length=args['text_length'], text_embed_dim=args['text_embed_dim'],
                       text_hidden=args['text_hidden'])
    assert sum(p.numel() for p in net.parameters()) == n_jax


def test_peer_cmsi_is_a_box_cutmix_with_the_opposite_partner():
    torch.manual_seed(0)
    b, k, s = 6, 5, 0.1
    x = torch.randn(b, 3, 14, 14)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, targets = peer.cmsi_mix(x, labels, k, s)
    diff = (mixed != x).any(1).numpy()                  # where each sample changed
    box = diff.any(0)
    rows, cols = np.nonzero(box)
    assert rows.max() - rows.min() + 1 == 7 and cols.max() - cols.min() + 1 == 7
    assert rows.max() < 13 and cols.max() < 13          # timm never touches the last row/col
    xs, ms = x.numpy(), mixed.numpy()
    partner = []
    for i in range(b):
        np.testing.assert_array_equal(ms[i][:, ~box], xs[i][:, ~box])
        matches = [j for j in range(b) if np.array_equal(ms[i][:, box], xs[j][:, box])]
        assert len(matches) == 1 and matches[0] != i
        partner.append(matches[0])
    assert [partner[p] for p in partner] == list(range(b))   # an involution
    onehot = np.full((b, k), s / k)
    onehot[np.arange(b), labels.numpy()] = 1 - s + s / k
    expected = 0.75 * onehot + 0.25 * onehot[partner]
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-6)


def test_peer_cmci_swaps_channel_groups_like_a_loop_reference():
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 0, 5, 2, 7, 1, 2])        # image, audio, text x 3
    modality = torch.arange(3).repeat_interleave(3)
    x = torch.randn(9, 6, 2, 2)
    got = peer.cmci_swap(x, labels, modality, 3).numpy()
    xs, lab, mod = x.numpy(), labels.numpy(), modality.numpy()
    want = xs.copy()
    for i in range(9):
        for n in range(3):
            if n == mod[i]:
                continue
            cands = [j for j in range(9) if mod[j] == n and lab[j] == lab[i]]
            assert len(cands) <= 1                             # unique partners here
            if cands:
                want[i, 2 * n:2 * n + 2] = xs[cands[0], 2 * n:2 * n + 2]
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- end to end

def _positive_finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_cli_bench_with_torch_peer(test_config, tmp_path, capsys):
    """`dcinet bench --config configs/test.py --steps 2 --peer torch --json_out ...`."""
    out = tmp_path / 'bench.json'
    cli.main(['bench', '--config', TEST_CONFIG, '--steps', '2', '--peer', 'torch',
              '--json_out', str(out)])
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    for key in ('images_per_sec', 'step_time_s', 'compile_s', 'trace_lower_s',
                'first_step_s', 'flops_per_step', 'achieved_tflops', 'utilisation',
                'peak_memory_bytes', 'jax_over_torch'):
        assert _positive_finite(r[key]), (key, r[key])
    assert _positive_finite(r['peak']['tflops_total'])
    assert _positive_finite(r['eval']['eval_images_per_sec'])
    assert _positive_finite(r['peer']['images_per_sec'])
    assert r['device_count'] == 4 and r['platform'] == 'cpu'
    assert r['images_per_step'] == 3 * test_config.data.batch_per_modality
    assert r['images_per_sec'] == pytest.approx(r['images_per_step'] / r['step_time_s'])
    assert r['jax_over_torch'] == pytest.approx(
        r['images_per_sec'] / r['peer']['images_per_sec'])
    assert r['donation_ok'] and not r['donation_warnings']
    assert math.isfinite(r['final_loss']) and math.isfinite(r['peer']['final_loss'])
    # cost_analysis is of one device's program: the global figure is ~3x the forward
    # (forward + backward) of the whole batch, counted independently here.
    ratio = r['flops_per_step'] / _forward_flops(test_config)
    assert 2.5 < ratio < 4.5, ratio
    for label in ('median step time', 'images/s', 'model FLOPs / step', 'utilisation',
                  'peak memory / device', 'eval features', 'torch peer', 'JAX / PyTorch'):
        assert label in printed


@pytest.mark.slow
def test_compile_restart_uses_the_persistent_cache(test_config):
    """Cold compile in one process, warm restart in another: the cache must hit."""
    c = copy.deepcopy(test_config)
    c.model.stage_sizes = (1,)          # one stage: the smallest step that still compiles
    c.model.cut = 'layer1'              # the whole train step, CMSI + CMCI included
    c.data.image_size = c.data.text_length = 32
    r = processes.compile_restart_times(c)
    cold, warm = r['cold'], r['warm']
    for phase in (cold, warm):
        assert _positive_finite(phase['compile_s']) and _positive_finite(phase['process_wall_s'])
    assert warm['compile_s'] < 0.5 * cold['compile_s'], (cold, warm)


# ----------------------------------------------------------------------------- harness

def test_harness_uses_the_trainer_and_the_methods_batch(test_config):
    """One assembly: the setup's trainer is `state.build_trainer`'s, and its batch is the
    method's synthetic batch, created split over the devices."""
    from dcinet_jax import methods, parallel, state

    setup = harness.build_train_setup(harness.prepare_config(test_config), total_steps=3)
    assert isinstance(setup.trainer, state.Trainer)
    assert setup.examples_per_step == 3 * test_config.data.batch_per_modality
    want = methods.from_config(test_config).synthetic_batch(
        jax.random.key(test_config.seed + harness.BATCH_SEED_OFFSET), test_config)
    sharding = parallel.batch_sharded(setup.mesh)
    for got, expected in zip(jax.tree.leaves(setup.batch), jax.tree.leaves(want)):
        assert got.sharding.is_equivalent_to(sharding, got.ndim)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    train_state = setup.take_state()
    assert setup.state is None and int(train_state.step) == 0


def test_batch_granularity_follows_the_methods_batch_rule(test_config):
    # 4 devices; 3 modalities need an even per-device batch, 2 do not.
    assert bench.batch_granularity(test_config, 4, limit=64) == 8
    c = copy.deepcopy(test_config)
    c.data.modalities = ('image', 'text')
    assert bench.batch_granularity(c, 4, limit=64) == 4
    assert bench.batch_granularity(test_config, 4, limit=7) == 0


# ----------------------------------------------------------------------------- packaging

def test_peer_is_a_module_of_the_installed_package(tmp_path):
    """The peer ships inside the package (the `[torch]` extra adds torch) and runs as
    `python -m dcinet_jax.perf.torch_peer` from any folder: no file-path loading."""
    assert peer.__name__ == processes.PEER_MODULE
    assert Path(peer.__file__).parent == Path(bench.__file__).parent
    assert not (REPO / 'benchmarks' / 'torch_peer.py').exists()
    for module in (bench, processes, harness):
        assert 'spec_from_file_location' not in Path(module.__file__).read_text()
    # A wheel built from pyproject.toml holds the perf package.
    find = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']
    include = find['packages']['find']['include']
    assert 'dcinet_jax.perf' in setuptools.find_packages(str(REPO), include=include)
    # Run from an unrelated folder with no PYTHONPATH: only the installed package counts.
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    probe = subprocess.run([sys.executable, '-c', 'import dcinet_jax'], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip('dcinet_jax is not installed in this environment (only on PYTHONPATH)')
    out = tmp_path / 'peer.json'
    proc = subprocess.run(
        [sys.executable, '-m', processes.PEER_MODULE, '--preset', 'test', '--steps', '1',
         '--warmup_steps', '1', '--json_out', str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _positive_finite(json.loads(out.read_text())['images_per_sec'])


def test_peer_vocabulary_comes_from_the_data_spec(test_config):
    from input_pipeline import spec

    args = processes.peer_arguments(test_config, steps=1)
    assert args['vocab_size'] == spec.VOCAB_SIZES[test_config.data.alphabet]
    assert peer.VOCAB_SIZES is spec.VOCAB_SIZES


def test_peer_without_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch', None)      # `import torch` now fails
    with pytest.raises(ValueError, match=r"pip install 'dcinet-jax\[torch\]'"):
        processes.require_torch()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['bench', '--config', TEST_CONFIG, '--peer', 'torch'])
    message = str(exit_info.value.code)
    assert "pip install 'dcinet-jax[torch]'" in message.splitlines()[0]
