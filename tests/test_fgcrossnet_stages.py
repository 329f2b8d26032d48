"""FGCrossNet's stages are explicit: a stage that starts from an earlier stage's weights
and has no `init_from` stops at start-up, naming the earlier stage's command, instead of
training from scratch; the demo config's default stage is stage 1."""

import subprocess
import sys
from pathlib import Path

import pytest

from configs import fgcrossnet_demo, fgcrossnet_fgxmedia, fgcrossnet_test
from dcinet_jax import exit_codes
from dcinet_jax.methods import fgcrossnet

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_defaults_to_stage_one_which_needs_no_earlier_stage():
    c = fgcrossnet_demo.get_config()
    assert c.variant == 'stage1' and c.loss.ranking_weight == 0.0 and c.previous_stage == ''
    fgcrossnet.check_training(c)
    assert fgcrossnet_demo.get_config('stage2').previous_stage == \
        'configs/fgcrossnet_demo.py:stage1'
    assert fgcrossnet_test.get_config('stage2').previous_stage == \
        'configs/fgcrossnet_test.py:stage1'
    # The paper's stage 1 starts from the ImageNet fine-tuning of stage 0.
    assert fgcrossnet_fgxmedia.get_config('stage1').previous_stage == \
        'configs/fgcrossnet_fgxmedia.py:stage0'
    for free in ('stage0', 'cls', 'centre', 'ranking'):
        assert fgcrossnet_fgxmedia.get_config(free).previous_stage == ''


def test_a_later_stage_needs_init_from_unless_told_otherwise():
    c = fgcrossnet_demo.get_config('stage2')
    with pytest.raises(ValueError, match=r'dcinet train --config configs/fgcrossnet_demo.py'
                                         r':stage1 .*--config\.init_from='):
        fgcrossnet.check_training(c)
    c.init_from = '/runs/stage1'
    fgcrossnet.check_training(c)
    c.init_from, c.previous_stage = '', ''      # from scratch, on purpose
    fgcrossnet.check_training(c)


def test_the_cli_stops_a_stage_two_without_init_from_before_reading_data(tmp_path):
    """Stage 2 of the demo, with a data folder that does not exist: the stage error
    comes first (before any data is read or the workdir is created), on one line, with
    the exit code of config errors."""
    run = tmp_path / 'run'
    p = subprocess.run(
        [sys.executable, '-m', 'dcinet_jax', 'train', '--config',
         'configs/fgcrossnet_demo.py:stage2', '--workdir', str(run),
         f'--config.data_dir={tmp_path / "no_data"}', '--noprogress'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == exit_codes.ERROR, p.stderr[-2000:]
    error = p.stderr.strip().splitlines()
    assert error[0].startswith('dcinet train: error: config.init_from is empty'), p.stderr
    assert 'dcinet train --config configs/fgcrossnet_demo.py:stage1 --workdir DIR1' in error[0]
    assert '--config.init_from=DIR1' in error[0]
    assert error[1:] == ['(set DCINET_TRACEBACK=1 for the traceback)']
    assert not run.exists()
