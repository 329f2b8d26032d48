"""methods.validate_config: values no run can use are one-line errors at start-up
(issue 22, weak spots), before anything is compiled or written."""

from pathlib import Path

import pytest

from dcinet_jax import cli, methods

REPO = Path(__file__).resolve().parent.parent


def _config(name, **fields):
    import importlib
    c = importlib.import_module(f'configs.{name}').get_config()
    for path, value in fields.items():
        node = c
        *parents, leaf = path.split('__')
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


@pytest.mark.parametrize('name,fields,message', [
    ('test', {'optim__learning_rate': -0.1}, r'^config.optim.learning_rate=-0.1: must be > 0'),
    ('hslm_test', {'optim__learning_rate': 0.0}, r'^config.optim.learning_rate=0.0: must be'),
    ('test', {'num_epochs': 0}, r'^config.num_epochs=0 and config.num_train_steps=-1: '
     r'nothing to train'),
    ('dsffn_test', {'data__num_classes': 0}, r'^config.data.num_classes=0: must be >= 1'),
    ('test', {'data__modalities': ('image',)},
     r"^config.data.modalities=\('image',\): expected two or more distinct of"),
    ('fgcrossnet_test', {'data__modalities': ('image', 'image')}, r'modalities=\(.image., '
     r'.image.\): expected two or more distinct'),
    ('test', {'data__modalities': ('image,text',)}, r'as a tuple'),
    ('test', {'data__num_classes': 0}, r'^config.data.num_classes=0: must be >= 1$'),
])
def test_unusable_values_are_refused(name, fields, message):
    with pytest.raises(ValueError, match=message) as e:
        methods.from_config(_config(name, **fields))
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('name,fields', [
    ('test', {}), ('dsffn_test', {}), ('hslm_test', {}), ('fgcrossnet_test', {}),
    ('dcinet_video', {}), ('test', {'num_epochs': 0, 'num_train_steps': 5}),
    ('test', {'data__modalities': ('image',), 'eval__metrics': 'classification'}),
    ('test', {'data__modalities': ('image', 'text')}),
])
def test_usable_configs_pass(name, fields):
    methods.from_config(_config(name, **fields))


def test_fgcrossnet_image_only_stage_is_valid():
    from configs import fgcrossnet_fgxmedia
    methods.from_config(fgcrossnet_fgxmedia.get_config('stage0'))   # classification eval
    c = fgcrossnet_fgxmedia.get_config('stage0')
    c.eval.metrics = 'fgxmedia'
    with pytest.raises(ValueError, match=r"modalities=\('image',\): expected two or more"):
        methods.from_config(c)


def test_tiny_method_without_a_hook_passes_the_generic_checks():
    import tiny_method
    methods.validate_config(tiny_method, tiny_method.get_config())
    c = tiny_method.get_config()
    c.optim.learning_rate = -1.0
    with pytest.raises(ValueError, match='learning_rate'):
        methods.validate_config(tiny_method, c)


@pytest.mark.parametrize('override', ['--config.optim.learning_rate=-0.1',
                                      '--config.num_epochs=0',
                                      '--config.data.modalities=image'])
def test_train_refuses_before_creating_the_workdir(tmp_path, override):
    """A negative learning rate and num_epochs=0 trained (or evaluated an untrained model)
    with exit code 0; data.modalities=image trained and failed only at evaluation."""
    with pytest.raises(SystemExit, match=r'^dcinet train: error: config\.') as e:
        cli.main(['train', '--config', str(REPO / 'configs/test.py'), '--workdir',
                  str(tmp_path / 'wd'), override, '--config.data_dir=/nonexistent'])
    assert len(str(e.value.code).splitlines()) == 2
    assert not (tmp_path / 'wd').exists()
