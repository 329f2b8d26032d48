"""Test-split faults are found before the first step (methods' `validate_data`), and NaN
in HSLM's test regions is blamed on the data, not on the checkpoint (issue 22)."""

import shutil

import h5py
import jax
import numpy as np
import pytest

from configs import dsffn_test, hslm_test
from dcinet_jax import cli, train
from dcinet_jax.methods import dsffn, hslm
from input_pipeline.demo import vegas_ave as av_demo
from input_pipeline.errors import DataError


def test_dsffn_empty_test_split_stops_before_training(tmp_path):
    av_demo.generate_av_features(tmp_path / 'data', 'vegas', num_classes=3, per_class=8,
                                 visual_dim=64, audio_dim=16, seed=0)
    path = tmp_path / 'data' / 'vegas_feature_norm.h5'
    with h5py.File(path, 'r+') as f:
        for key, width in (('visual_test', 64), ('audio_test', 16)):
            del f[key]
            f.create_dataset(key, data=np.zeros((0, width), np.float32))
        del f['lab_test']
        f.create_dataset('lab_test', data=np.zeros((0,), np.int64))
    c = dsffn_test.get_config()
    c.data_dir = str(tmp_path / 'data')
    with pytest.raises(ValueError, match=r'vegas_feature_norm.h5: the test split is empty'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()   # before any step: nothing written


@pytest.fixture(scope='module')
def precomp_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('precomp')
    cli.main(['demo-data', '--format', 'precomp', '--out', str(out), '--classes', '4',
              '--per_class', '6'])
    return out


def _copy(precomp_dir, tmp_path):
    d = tmp_path / 'data'
    shutil.copytree(precomp_dir, d)
    hslm._split.cache_clear()
    hslm._eval_arrays.cache_clear()
    c = hslm_test.get_config()
    c.data_dir = str(d)
    return c, d


def test_hslm_test_captions_not_five_per_image_stop_before_training(precomp_dir, tmp_path):
    c, d = _copy(precomp_dir, tmp_path)
    lines = (d / 'test_caps.txt').read_text().splitlines()
    (d / 'test_caps.txt').write_text('\n'.join(lines[:-1]) + '\n')
    with pytest.raises(DataError, match=r'test_caps.txt: \d+ captions for \d+ feature rows'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('change', ['width', 'count'])
def test_hslm_test_regions_of_another_shape_stop_before_training(precomp_dir, tmp_path,
                                                                  change):
    c, d = _copy(precomp_dir, tmp_path)
    ims = np.load(d / 'test_ims.npy')
    ims = ims[:, :, :-1] if change == 'width' else ims[:, :-1, :]
    np.save(d / 'test_ims.npy', np.ascontiguousarray(ims))
    train_ims = np.load(d / 'train_ims.npy', mmap_mode='r')
    with pytest.raises(DataError, match=rf'test_ims.npy: {ims.shape[1]} regions of width '
                                        rf'{ims.shape[2]}, but the train split has '
                                        rf'{train_ims.shape[1]} of width {train_ims.shape[2]}'):
        train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()


def test_hslm_nan_in_test_regions_blames_the_data(precomp_dir, tmp_path):
    c, d = _copy(precomp_dir, tmp_path)
    ims = np.load(d / 'test_ims.npy')
    ims[2, 0, 0] = np.nan
    np.save(d / 'test_ims.npy', ims)
    c = hslm.resolve(c)
    c.eval.dev_split = ''
    model = hslm.build_model(c)
    variables = hslm.init_variables(model, jax.random.key(0), c)
    with pytest.raises(ValueError, match=r'test_ims.npy: region features of row 2 \(and 0 '
                                         r'more .*\) hold NaN/Inf; the data is at fault, not '
                                         r'the checkpoint'):
        hslm.eval_outputs(model, variables, c)
