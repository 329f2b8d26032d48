"""Sharded evaluation equals one-device evaluation, for all four methods.

Each method's `eval_outputs` (features of DCINet, FGCrossNet and DSFFN; HSLM's learned
score matrix) is computed by tests/sharded_eval_worker.py three ways, in subprocesses:
one process on one CPU device (the reference), one process on 2 forced host devices,
and two `jax.distributed` processes of 2 devices each. Two processes must give exactly
the arrays of one process with the same devices, on every process (each batch or tile
is computed with the same shape and contents wherever it runs); 2 devices against 1:
bit-identical for HSLM's tiles (one whole tile per device), within FEATURE_RTOL/ATOL for
features (a batch split over devices runs at another shape).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcinet_jax.evaluators import sharding

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / 'tests' / 'sharded_eval_worker.py'
METHODS = ('dcinet', 'fgcrossnet', 'dsffn', 'hslm')
# Features (softmax probabilities) of a batch split over devices against one device:
# float32 rounding of convolutions at another batch shape (measured 6e-8).
FEATURE_RTOL, FEATURE_ATOL = 1e-5, 1e-6


def test_process_share_is_balanced_contiguous_and_complete():
    for n in range(0, 12):
        for count in (1, 2, 3, 5):
            parts = [sharding.process_share(n, index=i, count=count) for i in range(count)]
            assert [u for p in parts for u in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert sharding.process_share(7) == range(7)          # one process: everything
    assert sharding.gather_rows({'a': np.arange(3)})['a'].tolist() == [0, 1, 2]


def test_sharded_score_matrix_equals_the_one_device_matrix():
    """4 local devices (conftest), 11 images in blocks of 2: 6 blocks, scored 4 at a time,
    the last group filled up with copies; every tile is the one-device tile."""
    import jax
    import jax.numpy as jnp
    from dcinet_jax.evaluators import blockwise
    assert jax.local_device_count() == 4
    rng = np.random.default_rng(3)
    images = rng.normal(size=(11, 3, 4)).astype(np.float32)
    captions = (rng.normal(size=(13, 5, 4)).astype(np.float32),
                rng.integers(1, 6, 13).astype(np.int32))
    params = {'w': np.float32(1.5)}

    def score(p, img, cap):
        words, lengths = cap
        dots = jnp.einsum('ire,cle->icrl', img, words)
        valid = jnp.arange(words.shape[1])[None, None, None, :] < lengths[None, :, None, None]
        return p['w'] * (jnp.where(valid, dots, 0).sum(-1) / lengths[None, :, None]).max(-1)

    one = jax.jit(score)
    want = blockwise.score_matrix(lambda i, c: one(params, i, c), images, captions,
                                  image_block=2, caption_block=5)
    got = blockwise.sharded_score_matrix(score, params, images, captions, image_block=2,
                                         caption_block=5)
    np.testing.assert_array_equal(got, want)
    dots = np.einsum('ire,cle->icrl', images.astype(np.float64), captions[0])
    valid = np.arange(5)[None, None, None, :] < captions[1][None, :, None, None]
    ref = 1.5 * (np.where(valid, dots, 0).sum(-1) / captions[1][None, :, None]).max(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO),
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    for k in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
        env.pop(k, None)
    env.update(extra)
    return env


def _run(out: Path, specs: list[str], *, devices: int, processes: int = 1) -> None:
    out.mkdir()
    port = 20000 + os.getpid() % 20000
    procs = []
    for i in range(processes):
        extra = {} if processes == 1 else dict(
            JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES=str(processes),
            JAX_PROCESS_ID=str(i))
        with open(out / f'log.{i}', 'w') as log:   # a file: a full pipe cannot stall it
            procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *specs],
                                          env=_env(devices, **extra), stdout=log,
                                          stderr=subprocess.STDOUT))
    for i, p in enumerate(procs):
        p.wait(timeout=1800)
    for i, p in enumerate(procs):
        assert p.returncode == 0, (out / f'log.{i}').read_text()[-3000:]


@pytest.fixture(scope='module')
def data_specs(demo_prepared_dir, tmp_path_factory):
    from dcinet_jax import cli
    from input_pipeline.demo import vegas_ave as av_demo
    root = tmp_path_factory.mktemp('sharded_eval_data')
    av_demo.generate_av_features(root / 'av', 'vegas', num_classes=3, per_class=10,
                                 visual_dim=64, audio_dim=16, seed=0)
    cli.main(['demo-data', '--format', 'precomp', '--out', str(root / 'precomp'),
              '--classes', '6'])
    dirs = {'dcinet': demo_prepared_dir, 'fgcrossnet': demo_prepared_dir,
            'dsffn': root / 'av', 'hslm': root / 'precomp'}
    return [f'{m}={dirs[m]}' for m in METHODS]


def _compare(got_dir: Path, want_dir: Path, method: str, *, exact: bool) -> None:
    want = np.load(want_dir / f'{method}.0.npz')
    assert len(want.files) >= 2, want.files
    for got_file in sorted(got_dir.glob(f'{method}.*.npz')):
        got = np.load(got_file)
        assert sorted(got.files) == sorted(want.files), got_file
        for key in want.files:
            where = f'{method} {got_file.parent.name}/{got_file.name} {key}'
            if exact or not np.issubdtype(want[key].dtype, np.floating):
                np.testing.assert_array_equal(got[key], want[key], err_msg=where)
            else:
                np.testing.assert_allclose(got[key], want[key], rtol=FEATURE_RTOL,
                                           atol=FEATURE_ATOL, err_msg=where)


@pytest.mark.slow
def test_two_devices_and_two_processes_equal_one_device(data_specs, tmp_path):
    _run(tmp_path / 'one', data_specs, devices=1)
    _run(tmp_path / 'devices', data_specs, devices=2)
    _run(tmp_path / 'processes', data_specs, devices=2, processes=2)
    for method in METHODS:
        # HSLM: every device scores whole one-device tiles, so bit-identical. Features:
        # a batch split over 2 devices runs the convolutions at half the batch, which
        # may round differently (~1 ulp); splitting over processes changes nothing more.
        _compare(tmp_path / 'devices', tmp_path / 'one', method, exact=method == 'hslm')
        _compare(tmp_path / 'processes', tmp_path / 'devices', method, exact=True)
