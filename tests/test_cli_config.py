"""dcinet_jax/cli_config.py: a bad `--config` file, or another method's config, is one line."""

from pathlib import Path

import pytest

from dcinet_jax import cli, cli_config

CONFIGS = Path(__file__).resolve().parent.parent / 'configs'


def _error(argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    message = str(e.value.code)
    assert 'Traceback' not in message
    return message.splitlines()[0]


@pytest.mark.parametrize('source,spec,expected', [
    (None, 'nope.py', r'--config .*nope.py: no such config file$'),
    ('def get_config(:\n', 'bad.py', r'--config .*bad.py:1: syntax error: '),
    ('X = 1\n', 'noget.py', r'--config .*noget.py: defines no get_config\(\)'),
    ('import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict()\n',
     'noarg.py:cmci', r"noarg.py's get_config\(\) takes no argument; drop \":cmci\""),
])
def test_bad_config_files_are_one_line(tmp_path, source, spec, expected):
    """Issue 22.7 and weak spots: a missing file and a syntax error were 30-50-line
    tracebacks; a file without get_config was 'no such config field'."""
    path = tmp_path / spec.split(':')[0]
    if source is not None:
        path.write_text(source)
    for command in ('summary', 'train'):
        line = _error([command, '--config', str(tmp_path / spec), '--workdir',
                       str(tmp_path / 'wd')][:4 if command == 'summary' else 6])
        assert line.startswith(f'dcinet {command}: error: --config ')
        assert __import__('re').search(expected, line), line
    assert not (tmp_path / 'wd').exists()


def test_a_config_file_is_checked_without_running_it(tmp_path):
    marker = tmp_path / 'ran'
    (tmp_path / 'c.py').write_text(f'open({str(marker)!r}, "w")\nX = (\n')
    with pytest.raises(ValueError, match='syntax error'):
        cli_config.check_file(str(tmp_path / 'c.py'))
    assert not marker.exists()


@pytest.mark.parametrize('config,method,field', [
    ('test.py', 'dsffn', 'data.visual_dim'),
    ('dsffn_test.py', 'dcinet', 'data.modalities'),
    ('dsffn_test.py', 'hslm', 'model.vocab_size'),
])
def test_another_methods_config_names_the_missing_field(config, method, field):
    """Issue 22.7: `--config.method=dsffn` on a DCINet config (and the reverse) was a
    30-50-line AttributeError traceback."""
    line = _error(['summary', '--config', str(CONFIGS / config), f'--config.method={method}'])
    assert line == (f"dcinet summary: error: the config has no field {field}, which "
                    f"config.method='{method}' reads; is it a config for another method? "
                    f"start from configs/{method}_demo.py or another {method} config"
                    if method != 'dcinet' else
                    f"dcinet summary: error: the config has no field {field}, which "
                    "config.method='dcinet' reads; is it a config for another method? "
                    "start from configs/dcinet_fgxmedia.py or another dcinet config")


def test_other_attribute_errors_are_not_disguised():
    try:
        object().missing  # noqa: B018
    except AttributeError as e:
        assert cli_config.missing_field(e) is None
