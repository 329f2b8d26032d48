"""Fault injection on the generic loop: nothing lost, nothing silently wrong.

Uses the tiny MLP method (tests/tiny_method.py), so each fault costs seconds:
a state that turns NaN at a chosen step, a checkpoint truncated on disk, evaluation
beside a live training, two trainings on one workdir, SIGTERM's exit code, a workdir
without checkpoints, a checkpoint of a differently shaped model, a full disk.
"""

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

import tiny_method
from dcinet_jax import checkpoints, evaluate_checkpoint, exit_codes, state as state_lib, train
from dcinet_jax.workdir_lock import LOCK_FILE, WorkdirBusyError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _checkpointer(workdir):
    return checkpoints.Checkpointer(Path(workdir) / 'checkpoints', read_only=True,
                                    best_metric='accuracy')


def _all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def test_state_poisoned_before_its_loss_is_never_saved(tmp_path):
    """Step 5's update makes the params NaN while its loss is finite (the loss of step s
    is computed before update s); checkpointing every step must still stop at step 5
    and keep step 4, finite in every leaf."""
    c = tiny_method.get_config(12)
    c.poison_step, c.checkpoint_every_steps, c.log_every_steps = 4, 1, 1  # 0-based: 5th update
    with pytest.raises(train.NonFiniteLossError,
                       match=r'non-finite parameters or optimizer state .* at step 5; .* '
                             r'all finite: 1 \(loss [\d.]+\), 2 .*, 4 \(loss [\d.]+\); the '
                             r'last good checkpoint is step 4, .*--restore_step N'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    ckpt = _checkpointer(tmp_path / 'run')
    assert ckpt.all_steps() == [1, 2, 3, 4]
    restored, _ = ckpt.restore(4, state_lib.build_trainer(c, 12).abstract_state())
    ckpt.close()
    assert _all_finite(restored.params) and _all_finite(restored.opt_state)

    # Resuming with the fault gone continues from the good step.
    c.poison_step = -1
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert summary['step'] == 12 and summary['steps_this_run'] == 8


def test_truncated_checkpoint_falls_back_to_the_newest_intact_step(tmp_path, caplog):
    c = tiny_method.get_config(4)
    train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    data_files = [p for p in (tmp_path / 'run' / 'checkpoints' / '4').rglob('*')
                  if p.is_file() and p.parent.name == 'd']
    assert data_files
    for p in data_files:
        with open(p, 'r+b') as f:
            f.truncate(5)

    with pytest.raises(checkpoints.CorruptCheckpointError,
                       match=r'checkpoint step 4 is corrupt \(.*checkpoints/4/'):
        evaluate_checkpoint.run(c, tmp_path / 'run', step=4)

    c.num_train_steps = 6
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert summary['step'] == 6 and summary['steps_this_run'] == 4  # resumed from step 2
    assert 'checkpoint step 4 is corrupt' in caplog.text
    assert 'falling back to the previous step' in caplog.text
    assert (tmp_path / 'run' / 'checkpoints.corrupt' / '4').is_dir()  # kept, never deleted
    ckpt = _checkpointer(tmp_path / 'run')
    assert 4 in ckpt.all_steps() and 6 in ckpt.all_steps()  # step 4 was trained again
    ckpt.close()


def test_checkpoint_of_another_model_names_the_array_and_the_config_field(tmp_path):
    c = tiny_method.get_config(2)
    train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    wider = tiny_method.get_config(4)
    wider.batch = 16  # a config change that does not change the model: resumes fine
    ckpt = checkpoints.Checkpointer(tmp_path / 'run' / 'checkpoints', best_metric='accuracy',
                                    read_only=True, config=wider)
    ckpt.restore(2, state_lib.build_trainer(wider, 4).abstract_state())
    ckpt.close()

    saved_dim = tiny_method.DIM
    try:
        tiny_method.DIM = saved_dim + 1  # the model now expects wider inputs
        with pytest.raises(checkpoints.CheckpointMismatchError,
                           match=r'params/Dense_0/kernel is \(8, 16\) in the checkpoint and '
                                 r'\(9, 16\) with this config'):
            ckpt = checkpoints.Checkpointer(tmp_path / 'run' / 'checkpoints',
                                            best_metric='accuracy', read_only=True, config=c)
            ckpt.restore(2, state_lib.build_trainer(c, 4).abstract_state())
    finally:
        tiny_method.DIM = saved_dim


def test_eval_without_checkpoints_is_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoints in .*train first'):
        evaluate_checkpoint.run(tiny_method.get_config(2), tmp_path / 'typo')
    assert not (tmp_path / 'typo').exists()


def test_rejected_config_leaves_no_workdir(tmp_path):
    c = tiny_method.get_config(2)
    c.batch = 6  # not divisible by the 4 test devices
    with pytest.raises(ValueError, match='batch=6 is not divisible by the 4 devices'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()


def test_full_disk_is_one_line_at_the_failing_save(tmp_path, monkeypatch):
    c = tiny_method.get_config(4)

    class Usage:
        free = 1 << 20  # 1 MiB

    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', lambda path: Usage)
    # The tiny state is a few KiB (not '0 MiB'); no step was written: 'start from scratch'
    # (not 'resume from step None').
    with pytest.raises(checkpoints.DiskFullError,
                       match=r'disk full: checkpoint step 2 needs about [1-9]\d* KiB \(plus 64 '
                             r'MiB margin\) but .* has 1 MiB free; free space and run the same '
                             r'command again to start from scratch$'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS='cpu', **extra)
    env['PYTHONPATH'] = os.pathsep.join([str(TESTS), str(REPO), env.get('PYTHONPATH', '')])
    return env


def _train_proc(workdir, *overrides, **env):
    return subprocess.Popen(
        [sys.executable, '-m', 'dcinet_jax', 'train', '--config',
         str(TESTS / 'tiny_method.py'), '--workdir', str(workdir), '--progress=false',
         *overrides], env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _wait_for(path: Path, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_eval_beside_a_live_run_and_a_second_run_on_its_workdir(tmp_path):
    """A training saving every step while `dcinet eval` runs twice and a second training
    is refused: the first finishes with the checksum of a run left alone."""
    overrides = ['--config.num_train_steps=60', '--config.checkpoint_every_steps=1',
                 '--config.batch_delay=0.05']
    alone = _train_proc(tmp_path / 'alone', *overrides)
    out_alone, _ = alone.communicate(timeout=300)
    assert alone.returncode == 0, out_alone

    live = _train_proc(tmp_path / 'live', *overrides)
    try:
        assert _wait_for(tmp_path / 'live' / 'checkpoints' / '3', live), live.stdout
        c = tiny_method.get_config(60)
        for _ in range(2):
            results = evaluate_checkpoint.run(c, tmp_path / 'live')
            assert 0.0 <= results['accuracy'] <= 1.0
        with pytest.raises(WorkdirBusyError, match=r'in use by another training run \(pid '
                                                   rf'{live.pid} on host'):
            train.train_and_evaluate(c, tmp_path / 'live', progress=False)
        out_live, _ = live.communicate(timeout=300)
    finally:
        live.kill()
    assert live.returncode == 0, out_live
    checksum = [json.loads(o.strip().splitlines()[-1])['params_checksum']
                for o in (out_alone, out_live)]
    assert checksum[0] == checksum[1]


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path, caplog):
    workdir = tmp_path / 'run'
    workdir.mkdir()
    (workdir / LOCK_FILE).write_text(json.dumps({'host': 'elsewhere', 'pid': 999999,
                                                 'since': '2026-01-01 00:00:00'}))
    summary = train.train_and_evaluate(tiny_method.get_config(2), workdir, progress=False)
    assert summary['step'] == 2
    assert 'taking over a stale lock' in caplog.text and 'pid 999999' in caplog.text
    assert (workdir / LOCK_FILE).read_text() == ''  # released cleanly


def test_sigterm_saves_and_exits_with_the_resume_code(tmp_path):
    proc = _train_proc(tmp_path / 'run', '--config.num_train_steps=400',
                       '--config.batch_delay=0.02')
    assert _wait_for(tmp_path / 'run' / 'checkpoints' / '2', proc), proc.stdout
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.INTERRUPTED == 75, out
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped['stopped_by_signal'] == 'SIGTERM' and stopped['step'] < 400
    assert (tmp_path / 'run' / 'checkpoints' / str(stopped['step'])).is_dir()
