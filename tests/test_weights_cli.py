"""`dcinet eval --weights` and `dcinet export` end to end on demo data.

For each method a PyTorch module in the public layout (tests/weights_public.py) is
seeded and saved the way the public code saves it; `dcinet eval --weights` on it must
give the results of evaluating the same features directly, and record what it
evaluated. A checkpoint of those weights in a workdir, exported with `dcinet export`,
must give back the public state dict bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcinet_jax import checkpoints, cli, evaluators, methods, state, weights
from dcinet_jax.evaluators import ranking
from dcinet_jax.weights import commands, files
from weights_public import dsffn_torch, fgcrossnet_torch

REPO = Path(__file__).resolve().parents[1]


def _fgx_config(name, data_dir):
    import importlib
    c = importlib.import_module(f'configs.{name}').get_config()
    c.data_dir = str(data_dir)
    c.model.text_norm = 'none'            # the public network has no text BatchNorm
    return c, [f'--config={REPO / "configs" / f"{name}.py"}', f'--config.data_dir={data_dir}',
               '--config.model.text_norm=none']


@pytest.fixture(scope='module')
def dsffn_data(tmp_path_factory):
    from input_pipeline.demo import vegas_ave as av_demo
    out = tmp_path_factory.mktemp('vegas')
    av_demo.generate_av_features(out, 'vegas', num_classes=3, per_class=12, visual_dim=64,
                                 audio_dim=16, seed=0)
    return out


def _dsffn_config(data_dir):
    from configs import dsffn_test
    c = dsffn_test.get_config()
    c.data_dir = str(data_dir)
    return c, [f'--config={REPO / "configs" / "dsffn_test.py"}',
               f'--config.data_dir={data_dir}']


def _eval_cli(flags, weights_path, workdir) -> dict:
    cli.main(['eval', *flags, f'--weights={weights_path}', f'--workdir={workdir}'])
    return json.loads((Path(workdir) / 'eval' / '0' / 'results.json').read_text())


def _save_checkpoint(config, variables, workdir, step=5):
    """A workdir checkpoint holding `variables` (as training would have saved them)."""
    tx = methods.from_config(config).optimizer(config, 1)
    ckpt = checkpoints.Checkpointer(Path(workdir) / 'checkpoints', best_metric='x',
                                    config=config, async_save=False)
    ckpt.save(step, state.create_train_state(variables, tx),
              meta={'config': checkpoints.config_record(config)})
    ckpt.wait()
    ckpt.close()


def _export_cli(flags, workdir, out, fmt) -> dict:
    cli.main(['export', *flags, f'--workdir={workdir}', f'--out={out}', f'--format={fmt}'])
    return files.load_torch_file(out)


def _assert_same_state(got, public):
    assert set(got) == set(public)
    for k, v in public.items():
        want = v.numpy() if 'num_batches_tracked' not in k else np.zeros((), np.int64)
        assert got[k].shape == want.shape and got[k].dtype == want.dtype, k
        np.testing.assert_array_equal(got[k], want, err_msg=k)


@pytest.mark.parametrize('method,config_name', [('fgcrossnet', 'fgcrossnet_test'),
                                                ('dcinet', 'test')])
def test_fgxmedia_methods_eval_weights_and_export(method, config_name, demo_prepared_dir,
                                                  tmp_path):
    config, flags = _fgx_config(config_name, demo_prepared_dir)
    net = fgcrossnet_torch(num_classes=int(config.data.num_classes),
                           width=int(config.model.num_filters),
                           length=int(config.data.image_size), seed=5)
    public = net.state_dict()
    path = tmp_path / 'authors.pkl'
    # FGCrossNet's main.py saves the DataParallel wrapper's state dict: 'module.' keys.
    torch.save({('module.' if method == 'fgcrossnet' else '') + k: v for k, v in public.items()},
               path)
    results = _eval_cli(flags, path, tmp_path / 'run')
    assert results['weights'] == {'path': str(path), 'sha256': files.sha256(path),
                                  'format': weights.for_method(method).FORMAT}

    # The same features, evaluated directly.
    trainer, variables, _ = commands.load_weights(config, path)
    features = trainer.method.eval_outputs(trainer.eval_model, variables, config)
    direct = evaluators.get(methods.evaluator_name(trainer.method, config)).evaluate(
        features, config=config)
    for group in ('bimodal', 'multimodal'):
        assert results[group] == pytest.approx(direct[group], abs=1e-12)
    assert set(direct['bimodal']) and len(direct['bimodal']) == (12 if method == 'fgcrossnet' else 6)

    _save_checkpoint(config, variables, tmp_path / 'run')
    got = _export_cli(flags, tmp_path / 'run', tmp_path / 'ours.safetensors', 'safetensors')
    _assert_same_state(got, public)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in got.items()}, strict=True)


def test_dsffn_eval_weights_equals_torch_features_and_export(dsffn_data, tmp_path):
    config, flags = _dsffn_config(dsffn_data)
    net = dsffn_torch(config, seed=6)
    path = tmp_path / 'audio_image_vegas_best.pth'      # train_model.py: net.state_dict()
    torch.save(net.state_dict(), path)
    results = _eval_cli(flags, path, tmp_path / 'run')
    assert results['weights']['format'] == 'dsffn-pytorch'

    # The public network's own features on the test split, scored by the mAP oracle.
    from dcinet_jax.methods import dsffn as dsffn_method
    test = dsffn_method.load_data(config).test
    with torch.no_grad():
        ov, oa, _, _ = net(torch.from_numpy(np.asarray(test.visual, np.float32)),
                           torch.from_numpy(np.asarray(test.audio, np.float32)))
    ov, oa, y = ov.numpy(), oa.numpy(), np.asarray(test.label)
    assert results['a2v'] == pytest.approx(ranking.mean_average_precision(oa, y, ov, y), abs=1e-6)
    assert results['v2a'] == pytest.approx(ranking.mean_average_precision(ov, y, oa, y), abs=1e-6)

    _, variables, _ = commands.load_weights(config, path)
    _save_checkpoint(config, variables, tmp_path / 'run')
    got = _export_cli(flags, tmp_path / 'run', tmp_path / 'net.pth', 'pytorch')
    _assert_same_state(got, net.state_dict())
    with pytest.raises(SystemExit, match='exists; pass --force'):
        _export_cli(flags, tmp_path / 'run', tmp_path / 'net.pth', 'pytorch')
    cli.main(['export', *flags, f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "net.pth"}',
              '--force'])


def test_refused_file_is_one_line_exit_1_and_writes_nothing(dsffn_data, tmp_path):
    """A state dict of another method, through the real command line."""
    _, flags = _dsffn_config(dsffn_data)
    path = tmp_path / 'fgcrossnet.pth'
    torch.save(fgcrossnet_torch().state_dict(), path)
    p = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'eval', *flags,
                        f'--weights={path}', f'--workdir={tmp_path / "run"}'],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 1, p.stderr[-2000:]
    err = [line for line in p.stderr.splitlines() if line.strip()
           and not line.startswith(('INFO', 'WARNING', 'I0', 'W0'))]
    assert err[0] == f'dcinet eval: error: {path}: does not fit the model:'
    assert err[1].startswith('  ') and 'unknown key(s): bn1.bias' in err[1]
    assert 'missing key(s): MmFA.joint_attention_map.weight' in err[2]
    assert 'Traceback' not in p.stderr
    assert not (tmp_path / 'run').exists()


def test_hslm_eval_weights_and_export(tmp_path):
    """HSLM through the command line: the public SCAN-style checkpoint (three state dicts,
    argparse options) evaluated with --weights, then exported back from a workdir."""
    import argparse

    import hslm_public_peer as peer
    from configs import hslm_test
    from dcinet_jax.methods import hslm as hslm_method
    from input_pipeline.demo import precomp as precomp_demo
    from test_weights_hslm import public_checkpoint
    data_dir = tmp_path / 'data'
    precomp_demo.write_precomp_demo(data_dir, values=4, train_images=12, dev_images=8,
                                    test_images=12, testall_images=4, regions=8,
                                    feature_dim=16, seed=2)
    config = hslm_test.get_config()
    config.data_dir = str(data_dir)
    config.eval.dev_split = ''
    flags = [f'--config={REPO / "configs" / "hslm_test.py"}', f'--config.data_dir={data_dir}',
             '--config.eval.dev_split=']
    resolved = hslm_method.resolve(config)
    parts = peer.build(resolved, seed=4)
    path = tmp_path / 'model_best.pth.tar'
    torch.save(public_checkpoint(parts, resolved), path)
    results = _eval_cli(flags, path, tmp_path / 'run')
    direct = commands.evaluate_weights(config, path)          # no workdir: nothing written
    recalls = {k: v for k, v in direct.items() if isinstance(v, float)}
    assert len(recalls) >= 7 and 'rsum' in recalls
    assert {k: results[k] for k in recalls} == pytest.approx(recalls, abs=1e-12)
    assert results['weights']['format'] == weights.for_method('hslm').FORMAT

    _, variables, _ = commands.load_weights(config, path)
    _save_checkpoint(config, variables, tmp_path / 'run')
    cli.main(['export', *flags, f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "ours.pth"}'])
    got = files.load_torch_file(tmp_path / 'ours.pth', allowed=(argparse.Namespace,))
    for part, exported in zip(parts, got['model']):
        _assert_same_state(exported, part.state_dict())
        part.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)


def test_eval_flag_combinations_are_one_line_errors(tmp_path, capsys):
    config = f'--config={REPO / "configs" / "test.py"}'
    for argv, message in ((['eval', config], '--workdir DIR (its checkpoint is evaluated) or '
                                             '--weights FILE is required'),
                          (['eval', config, f'--weights={tmp_path / "w.pth"}', '--best'],
                           '--step/--best pick a workdir checkpoint'),
                          (['eval', config, f'--weights={tmp_path / "w.pth"}'],
                           f'weights file not found: {tmp_path / "w.pth"}')):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert str(e.value).splitlines()[0].startswith('dcinet eval: error: ')
        assert message in str(e.value).splitlines()[0]
    assert list(tmp_path.iterdir()) == []
