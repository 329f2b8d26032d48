"""Recovery from divergence, collapse and data or checkpoint faults (issue 22).

With the tiny MLP method (tests/tiny_method.py): going back to an earlier kept step,
a collapse found at an evaluation, a failing final evaluation, a data check before the
first step, a full disk in mid-run, a corrupt step under `dcinet eval`, and a
checkpoint of another method.
"""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tiny_method
from dcinet_jax import checkpoints, evaluate_checkpoint, evaluators, methods, train
from dcinet_jax.evaluators import sanity

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _steps(workdir, kind=''):
    d = Path(workdir) / ('checkpoints' + (f'.{kind}' if kind else ''))
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def test_restore_step_goes_back_before_a_divergence(tmp_path):
    clean = train.train_and_evaluate(tiny_method.get_config(12), tmp_path / 'clean',
                                     progress=False)
    c = tiny_method.get_config(12)
    c.poison_step, c.checkpoint_every_steps, c.log_every_steps = 6, 1, 1
    with pytest.raises(train.NonFiniteLossError,
                       match=r'at step 7; .* all finite: 2 \(loss [\d.]+\), 3 \(loss [\d.]+\), 4 .*, 6 \(loss '
                             r'[\d.]+\); the last good checkpoint is step 6.*--restore_step N'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert _steps(tmp_path / 'run') == [2, 3, 4, 5, 6]   # keep_checkpoints = 5

    c.poison_step = -1
    with pytest.raises(FileNotFoundError, match=r'--restore_step 9: no such checkpoint .* '
                                                r'kept steps: \[2, 3, 4, 5, 6\]'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False, restore_step=9)
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False, restore_step=3)
    assert summary['step'] == 12 and summary['steps_this_run'] == 9
    # Later steps were moved aside, not deleted; the restart equals a run never poisoned
    # (the poison only acts from step 6 on, after the restored step 3).
    assert _steps(tmp_path / 'run', 'superseded') == [4, 5, 6]
    assert summary['params_checksum'] == clean['params_checksum']

    again = train.train_and_evaluate(c, tmp_path / 'run', progress=False, restore_step=0)
    assert again['steps_this_run'] == 12 and again['params_checksum'] == clean['params_checksum']


class _CollapsesAfter:
    """Accuracy, but the logits of every evaluation after the first are one vector."""

    calls = 0

    @classmethod
    def evaluate(cls, outputs, *, config):
        cls.calls += 1
        logits, labels = outputs
        if cls.calls > 1:
            logits = np.tile(logits[:1], (len(labels), 1))
        sanity.check_not_collapsed(logits, 'test logits')
        return tiny_method.Accuracy.evaluate((logits, labels), config=config)

    format_table = staticmethod(tiny_method.Accuracy.format_table)


def test_a_collapse_at_an_evaluation_stops_training_like_a_nan(tmp_path):
    evaluators.register('collapses_after', _CollapsesAfter)
    c = tiny_method.get_config(8)
    c.eval.metrics, c.eval_every_steps = 'collapses_after', 4
    with pytest.raises(train.NonFiniteLossError,
                       match=r'^collapsed model \(test logits: 30 of 30 items have the same '
                             r'feature vector\) at step 8; .* all finite: 2 .*, 4 .*, 6 '):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert _steps(tmp_path / 'run') == [2, 4, 6]   # the collapsed step 8 is not saved


class _Fails:
    evaluate = staticmethod(lambda outputs, *, config: (_ for _ in ()).throw(
        ValueError('test split is broken')))
    format_table = staticmethod(tiny_method.Accuracy.format_table)


def test_a_failing_final_evaluation_loses_no_training(tmp_path):
    evaluators.register('fails', _Fails)
    c = tiny_method.get_config(7)
    c.eval.metrics, c.checkpoint_every_steps = 'fails', 4
    with pytest.raises(ValueError, match='test split is broken'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert _steps(tmp_path / 'run') == [4, 7]          # the final step is on disk, complete
    assert not list((tmp_path / 'run' / 'checkpoints').glob('*tmp*'))
    c.eval.metrics = ''
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert summary['steps_this_run'] == 0 and summary['results']['accuracy'] > 0


def test_data_is_validated_before_the_first_step(tmp_path):
    def validate_data(config):
        raise ValueError('test_caps.txt: 14 captions for 3 images')
    bad = types.SimpleNamespace(**{k: getattr(tiny_method, k) for k in methods.REQUIRED},
                                validate_data=validate_data)
    methods.register('tiny_bad_test_split', bad)
    c = tiny_method.get_config(4)
    c.method = 'tiny_bad_test_split'
    with pytest.raises(ValueError, match='14 captions for 3 images'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()


def test_full_disk_in_mid_run_names_the_step_a_rerun_resumes_from(tmp_path, monkeypatch):
    real = checkpoints.shutil.disk_usage
    calls = []

    def usage(path):
        calls.append(path)
        return types.SimpleNamespace(free=(1 << 20) if len(calls) > 2 else real(path).free)

    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', usage)
    with pytest.raises(checkpoints.DiskFullError, match=r'checkpoint step 6 needs .* run the '
                                                        r'same command again to resume from '
                                                        r'step 4$'):
        train.train_and_evaluate(tiny_method.get_config(8), tmp_path / 'run', progress=False)
    # The step named is complete on disk when the error is raised (its asynchronous save
    # was waited for), not a save still in flight that a dying process would abandon.
    assert _steps(tmp_path / 'run') == [2, 4]
    assert not list((tmp_path / 'run' / 'checkpoints').glob('*tmp*'))
    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', real)
    summary = train.train_and_evaluate(tiny_method.get_config(8), tmp_path / 'run',
                                       progress=False)
    assert summary['steps_this_run'] == 4


def test_corrupt_step_under_eval_is_one_line_naming_an_intact_step(tmp_path):
    train.train_and_evaluate(tiny_method.get_config(4), tmp_path / 'run', progress=False)
    for p in (tmp_path / 'run' / 'checkpoints' / '4').rglob('*'):
        if p.is_file() and p.parent.name == 'd':
            with open(p, 'r+b') as f:
                f.truncate(5)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['PYTHONPATH'] = os.pathsep.join([str(TESTS), str(REPO), env.get('PYTHONPATH', '')])
    p = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'eval', '--config',
                        str(TESTS / 'tiny_method.py'), '--workdir', str(tmp_path / 'run')],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2 and 'Traceback' not in p.stderr, p.stderr   # no asyncio pages
    assert lines[0].startswith('dcinet eval: error: checkpoint step 4 is corrupt (')
    assert lines[0].endswith('; step 2 is intact: evaluate it with --step 2)')
    assert ' object at 0x' not in p.stderr


def test_checkpoint_of_another_method_says_so_first(tmp_path):
    train.train_and_evaluate(tiny_method.get_config(2), tmp_path / 'run', progress=False)
    methods.register('tiny_other_method', tiny_method)
    c = tiny_method.get_config(4)
    c.method = 'tiny_other_method'
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r'^checkpoint step 2 in .* was trained with method '
                             r"'tiny_method', this config has method 'tiny_other_method'"):
        evaluate_checkpoint.run(c, tmp_path / 'run')


def test_a_refused_initialisation_leaves_no_workdir(tmp_path):
    """init_from / pretrained weights that do not fit are refused before the workdir
    exists (they used to leave checkpoints/ and train.lock behind)."""
    def load_pretrained(variables, config):
        raise ValueError("init_from='elsewhere': that checkpoint was trained with method "
                         "'dcinet', not fgcrossnet")
    bad = types.SimpleNamespace(**{k: getattr(tiny_method, k) for k in methods.REQUIRED},
                                load_pretrained=load_pretrained)
    methods.register('tiny_bad_init', bad)
    c = tiny_method.get_config(4)
    c.method = 'tiny_bad_init'
    with pytest.raises(ValueError, match="trained with method 'dcinet'"):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()


def test_a_nan_before_the_first_checkpoint_says_so(tmp_path):
    """It used to read 'the last good checkpoint is step None' (HSLM with NaN features)."""
    c = tiny_method.get_config(6)
    c.poison_step, c.log_every_steps, c.checkpoint_every_steps = 0, 1, 4
    with pytest.raises(train.NonFiniteLossError,
                       match=r'^non-finite parameters .* at step 1; training stopped before '
                             r'any checkpoint was written\. Lower the learning rate \(or fix '
                             r'the data\) and rerun\.$'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
