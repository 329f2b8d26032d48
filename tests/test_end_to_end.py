"""Training end to end on the prepared demo data: learning, resume, NaN stop, eval, CLI.

These run the real loop (tf.data, shard_map step on 4 CPU devices, orbax, evaluation)
with configs/test.py, so they are the slowest tests of the suite.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dcinet_jax import checkpoints, state, train
from dcinet_jax.evaluators import fgxmedia

REPO = Path(__file__).resolve().parents[1]


def _config(test_config, data_dir, **overrides):
    c = test_config.copy_and_resolve_references()
    c.data_dir = str(data_dir)
    for key, value in overrides.items():
        node = c
        *path, last = key.split('.')
        for p in path:
            node = node[p]
        node[last] = value
    return c


def _checkpointer(workdir):
    return checkpoints.Checkpointer(Path(workdir) / 'checkpoints', read_only=True,
                                    best_metric='bimodal_average')


def _restore_state(config, workdir, step=None):
    ckpt = _checkpointer(workdir)
    restored, _ = ckpt.restore(step, state.build_trainer(config, 1).abstract_state())
    ckpt.close()
    return jax.tree.map(np.asarray, restored)


def _restore_params(config, workdir, step=None):
    return _restore_state(config, workdir, step).params


def _chance_map(labels_by_modality, seed=0):
    """mAP of random features with the same label sets: what 'chance' means here."""
    rng = np.random.default_rng(seed)
    feats = {m: (rng.random((len(y), 4)).astype(np.float32), y)
             for m, y in labels_by_modality.items()}
    return fgxmedia.evaluate_features(feats)["bimodal_average"]


@pytest.mark.slow
def test_demo_training_beats_chance(test_config, demo_prepared_dir, tmp_path):
    c = _config(test_config, demo_prepared_dir, num_train_steps=60,
                checkpoint_every_steps=1000, log_every_steps=20, eval_every_steps=30)
    c.optim.learning_rate = 0.05
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    results = summary['results']
    assert summary['step'] == 60
    assert set(results['bimodal']) == {'i2t', 'i2a', 't2i', 't2a', 'a2i', 'a2t'}
    labels = {m: n for m, n in results['protocol']['counts'].items()}
    rng = np.random.default_rng(0)
    chance = _chance_map({m: rng.integers(0, 4, n) for m, n in labels.items()})
    assert results['bimodal_average'] > chance + 0.15, (results['bimodal_average'], chance)
    saved = json.loads((tmp_path / 'run' / 'eval' / 'results.json').read_text())
    assert saved['step'] == 60
    assert set(saved) >= {'step', 'bimodal', 'multimodal', 'bimodal_average',
                          'multimodal_average', 'protocol'}
    assert (tmp_path / 'run' / 'eval' / '60' / 'results.json').exists()
    # Periodic evaluation at step 30 saved a checkpoint with its mAP; best = higher mAP.
    at_30 = json.loads((tmp_path / 'run' / 'eval' / '30' / 'results.json').read_text())
    ckpt = _checkpointer(tmp_path / 'run')
    best = 30 if at_30['bimodal_average'] > saved['bimodal_average'] else 60
    assert ckpt.best_step() == best and set(ckpt.all_steps()) == {30, 60}
    ckpt.close()
    assert list((tmp_path / 'run' / 'tensorboard').glob('events.out.tfevents.*'))


def _train_cmd(config_overrides, workdir):
    return [sys.executable, '-m', 'dcinet_jax', 'train', '--config',
            str(REPO / 'configs' / 'test.py'), '--workdir', str(workdir), '--progress=false',
            *config_overrides]


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
    return env


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(test_config, demo_prepared_dir,
                                                       tmp_path):
    overrides = [f'--config.data_dir={demo_prepared_dir}', '--config.num_train_steps=10',
                 '--config.checkpoint_every_steps=2', '--config.log_every_steps=2']
    full = tmp_path / 'full'
    subprocess.run(_train_cmd(overrides, full), check=True, env=_env(), capture_output=True)

    interrupted = tmp_path / 'interrupted'
    proc = subprocess.Popen(_train_cmd(overrides, interrupted), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt_dir = interrupted / 'checkpoints'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpt_dir / '2').exists():
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out  # unfinished: "run the same command again"
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped['stopped_by_signal'] == 'SIGTERM', out
    assert 2 <= stopped['step'] < 10
    assert 'exiting; run the same command again to resume' in out

    resumed = subprocess.run(_train_cmd(overrides, interrupted), check=True, env=_env(),
                             capture_output=True, text=True)
    assert f'resuming from step {stopped["step"]}' in resumed.stdout + resumed.stderr
    c = _config(test_config, demo_prepared_dir)
    a, b = _restore_params(c, full, 10), _restore_params(c, interrupted, 10)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(test_config, demo_prepared_dir,
                                                       tmp_path):
    workdir = tmp_path / 'nan'
    c = _config(test_config, demo_prepared_dir, num_train_steps=4, checkpoint_every_steps=2,
                log_every_steps=2)
    train.train_and_evaluate(c, workdir, progress=False)
    # Resume with an absurd learning rate: the loss becomes non-finite within a few steps.
    c = _config(test_config, demo_prepared_dir, num_train_steps=12, checkpoint_every_steps=2,
                log_every_steps=2)
    c.optim.learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r'non-finite loss .* at step \d+'):
        train.train_and_evaluate(c, workdir, progress=False)
    ckpt = _checkpointer(workdir)
    latest = ckpt.latest_step()
    ckpt.close()
    params = _restore_params(c, workdir, latest)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    assert latest >= 4

    # A half-written checkpoint (orbax's temporary directory) is never restored.
    partial = workdir / 'checkpoints' / '99.orbax-checkpoint-tmp-1234567'
    (partial / 'state').mkdir(parents=True)
    (partial / 'state' / 'junk').write_text('incomplete')
    ckpt = _checkpointer(workdir)
    assert ckpt.latest_step() == latest
    ckpt.close()
    _restore_params(c, workdir)


@pytest.mark.slow
def test_eval_cli_restores_onto_fewer_devices(test_config, demo_prepared_dir, tmp_path):
    workdir = tmp_path / 'ev'
    c = _config(test_config, demo_prepared_dir, num_train_steps=2, checkpoint_every_steps=2)
    train.train_and_evaluate(c, workdir, progress=False)
    # The final step is evaluated before it is saved, so it ranks as the best checkpoint.
    ckpt = _checkpointer(workdir)
    assert ckpt.best_step() == 2
    ckpt.close()
    # Written from 4 devices, restored onto 1.
    one_device = dict(_env(), XLA_FLAGS='--xla_force_host_platform_device_count=1')
    out = subprocess.run(
        [sys.executable, '-m', 'dcinet_jax', 'eval', '--config', str(REPO / 'configs/test.py'),
         '--workdir', str(workdir), f'--config.data_dir={demo_prepared_dir}', '--step', '2',
         '--config.eval.exclude_self=True'],
        check=True, env=one_device, capture_output=True, text=True).stdout
    assert '| i2t |' in out or 'i2t' in out
    saved = json.loads((workdir / 'eval' / '2' / 'results.json').read_text())
    assert saved['protocol']['exclude_self'] is True
    assert saved['step'] == 2
    # The results name their data: the prepared variant's counts (conftest: 4 x 6 items).
    assert saved['data']['format'] == 'fgxmedia' and len(saved['data']['fingerprint']) == 16
    assert saved['data']['counts']['image'] == {'train': 24, 'test': 24}
    bad = subprocess.run(
        [sys.executable, '-m', 'dcinet_jax', 'eval', '--config', str(REPO / 'configs/test.py'),
         '--workdir', str(workdir), f'--config.data_dir={demo_prepared_dir}', '--step', '7'],
        env=_env(), capture_output=True, text=True)
    assert bad.returncode != 0 and 'no checkpoint for step 7' in bad.stderr
    other = subprocess.run(
        [sys.executable, '-m', 'dcinet_jax', 'eval', '--config', str(REPO / 'configs/test.py'),
         '--workdir', str(workdir), f'--config.data_dir={demo_prepared_dir}',
         '--config.data.num_classes=5'], env=_env(), capture_output=True, text=True)
    assert other.returncode == 1 and 'Traceback' not in other.stderr, other.stderr
    assert 'the checkpoint has data.num_classes=4, this config says 5' in other.stderr


@pytest.mark.slow
def test_two_process_cpu_launch(demo_prepared_dir, tmp_path):
    workdir = tmp_path / 'two'
    env = dict(_env(), PYTHON=sys.executable)
    env.pop('XLA_FLAGS', None)
    proc = subprocess.run(
        ['bash', str(REPO / 'launch' / 'local_two_process_cpu.sh'), str(REPO / 'configs/test.py'),
         str(workdir), f'--config.data_dir={demo_prepared_dir}', '--config.num_train_steps=4',
         '--config.checkpoint_every_steps=2'],
        env=env, capture_output=True, text=True, timeout=600)
    logs = [(workdir / f'process_{i}.log').read_text() for i in (0, 1)]
    assert proc.returncode == 0, proc.stdout + proc.stderr + '\n'.join(logs)
    summaries = [json.loads(log.strip().splitlines()[-1]) for log in logs]
    assert [s['step'] for s in summaries] == [4, 4]
    assert summaries[0]['params_checksum'] == summaries[1]['params_checksum']
    assert '2 process(es)' in logs[0]
    assert (workdir / 'checkpoints' / '4').exists()


def test_ablation_configs():
    from configs import ablations
    base = ablations.get_config('baseline')
    assert (base.interaction.cmsi, base.interaction.cmci, base.model.cut) == (False, False,
                                                                               'layer4')
    both = ablations.get_config('both-layer2@demo')
    assert (both.interaction.cmsi, both.interaction.cmci, both.model.cut) == (True, True,
                                                                               'layer2')
    assert both.data.image_size == 112
    assert ablations.get_config('cmci').interaction.cmsi is False
    for bad in ('mixup', 'both-layer5', 'both@big'):
        with pytest.raises(ValueError):
            ablations.get_config(bad)


def test_summary_cli_prints_total():
    out = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'summary', '--config',
                          str(REPO / 'configs' / 'dcinet_fgxmedia.py')],
                         check=True, env=_env(), capture_output=True, text=True).stdout
    resnet50_200 = 25_557_032 - (2048 * 1000 + 1000) + (2048 * 200 + 200)  # torchvision count
    text_net = 70 * 16 + (16 * 3 * 224 + 224) + (224 * 3 * 448 + 448) + (9 + 1) * 3
    assert f'total parameters: {resnet50_200 + text_net:,}' in out


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(demo_prepared_dir,
                                                                     tmp_path):
    workdir = tmp_path / 'two_sig'
    workdir.mkdir()
    port = 20000 + os.getpid() % 20000
    procs = []
    for i in (0, 1):
        env = dict(_env(), JAX_PLATFORMS='cpu', JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                   JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i),
                   XLA_FLAGS='--xla_force_host_platform_device_count=2')
        procs.append(subprocess.Popen(
            _train_cmd([f'--config.data_dir={demo_prepared_dir}', '--config.num_train_steps=200',
                        '--config.checkpoint_every_steps=2', '--config.log_every_steps=2'],
                       workdir),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if (workdir / 'checkpoints' / '2').exists():
            procs[1].send_signal(signal.SIGTERM)   # only process 1 is told to stop
            break
        time.sleep(0.2)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [75, 75], outs
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    assert summaries[0]['step'] == summaries[1]['step'] < 200, outs
    assert summaries[0]['stopped_by_signal'] == summaries[1]['stopped_by_signal'] == 'SIGTERM'
    assert summaries[0]['params_checksum'] == summaries[1]['params_checksum']
    assert (workdir / 'checkpoints' / str(summaries[0]['step'])).exists()


def test_cli_help_and_flag_errors():
    run = functools.partial(subprocess.run, env=_env(), capture_output=True, text=True)
    top = run([sys.executable, '-m', 'dcinet_jax', '--help'])
    assert top.returncode == 0
    for name in ('demo-data', 'prepare', 'summary', 'train', 'eval', 'bench', 'profile'):
        assert name in top.stdout
    sub = run([sys.executable, '-m', 'dcinet_jax', 'train', '--help'])
    assert sub.returncode == 0 and '--workdir' in sub.stdout
    missing = run([sys.executable, '-m', 'dcinet_jax', 'train', '--config',
                   str(REPO / 'configs' / 'test.py')])
    assert missing.returncode != 0 and '--workdir' in missing.stderr
    unknown = run([sys.executable, '-m', 'dcinet_jax', 'fly'])
    assert unknown.returncode != 0 and "unknown command 'fly'" in unknown.stderr
    typo = run([sys.executable, '-m', 'dcinet_jax', 'summary', '--config',
                str(REPO / 'configs' / 'test.py'), '--config.optim.learning_rat=0.1'])
    assert typo.returncode == 1
    assert typo.stderr.strip() == ('dcinet summary: error: --config.optim.learning_rat: no '
                                   'such config field (did you mean learning_rate?)')
