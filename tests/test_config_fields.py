"""One data-folder field for every method (`config.data_dir`), and the one-line error
that points an old `config.data.data_dir` to it: from the command line, from a sweep's
overrides and from a config file that still sets it."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from dcinet_jax import cli, cli_flags, config_fields, methods
from dcinet_jax.sweep import SweepError, sweep_main

REPO = Path(__file__).resolve().parents[1]
RENAMED = 'config.data.data_dir was renamed: use --config.data_dir'
# The paper config and the small configs of every method.
CONFIGS = ('dcinet_fgxmedia', 'demo', 'test', 'fgcrossnet_fgxmedia', 'fgcrossnet_demo',
           'fgcrossnet_test', 'dsffn_vegas', 'dsffn_ave', 'dsffn_demo', 'dsffn_test',
           'hslm_f30k', 'hslm_coco', 'hslm_demo', 'hslm_test')


@pytest.mark.parametrize('name', CONFIGS)
def test_every_method_reads_the_top_level_data_dir(name):
    c = importlib.import_module(f'configs.{name}').get_config()
    assert 'data_dir' in c and 'data_dir' not in c.data
    config_fields.check_renamed(c)      # nothing renamed left in the repo's configs


@pytest.mark.parametrize('name', ['demo', 'fgcrossnet_demo', 'dsffn_demo', 'hslm_demo'])
def test_the_same_override_parses_for_every_method(name):
    fv = cli_flags.flag_values([f'--config={REPO}/configs/{name}.py', '--config.data_dir=/d'],
                               cli_flags.config_flag, 'dcinet summary')
    assert fv.config.data_dir == '/d'


def test_the_old_override_is_one_line_naming_the_new_field(tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(['train', '--config', str(REPO / 'configs/dsffn_test.py'),
                  '--config.data.data_dir=/x', '--workdir', str(tmp_path / 'run')])
    msg = str(e.value)
    assert RENAMED in msg and '\n' not in msg and msg.startswith('dcinet train: error:')
    assert not (tmp_path / 'run').exists()


def test_the_old_override_from_a_real_process_exits_with_the_config_error_code(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'summary', '--config',
                        str(REPO / 'configs/hslm_test.py'), '--config.data.data_dir=/x'],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f'dcinet summary: error: {RENAMED} '
                                             '(config.data_dir in a config file)']


def test_an_old_config_file_is_refused_at_method_start_up(tmp_path):
    from configs import dsffn_test
    c = dsffn_test.get_config()
    c.data.data_dir = '/old/place'      # a user's config written for the old layout
    with pytest.raises(ValueError, match=RENAMED):
        methods.from_config(c)
    old = tmp_path / 'old_config.py'
    old.write_text('from configs import dsffn_test\n\n\ndef get_config():\n'
                   '    c = dsffn_test.get_config()\n    c.data.data_dir = "/old"\n'
                   '    return c\n')
    with pytest.raises(SystemExit) as e:
        cli.main(['train', '--config', str(old), '--workdir', str(tmp_path / 'run'),
                  '--noprogress'])
    assert RENAMED in str(e.value) and not (tmp_path / 'run').exists()


def test_a_sweep_with_the_old_override_stops_before_planning(tmp_path):
    with pytest.raises(SweepError, match=RENAMED):
        sweep_main(root=str(tmp_path / 'r'), config=str(REPO / 'configs/dsffn_test.py'),
                   overrides=['--config.data.data_dir=/x'])
    assert not (tmp_path / 'r').exists()
