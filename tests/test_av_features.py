"""VEGAS / AVE h5 reader: format quirks, one-line errors, the in-memory pipeline, and the
synthetic demo files of `dcinet demo-data --format vegas|ave`."""

import h5py
import numpy as np
import pytest

from configs import dsffn_test
from input_pipeline.vegas_ave import reader as av
from input_pipeline.demo import vegas_ave as av_demo


def _write(path, **arrays):
    base = {'visual_train': np.ones((6, 4), np.float32), 'audio_train': np.ones((6, 2)),
            'lab_train': np.arange(6) % 3, 'visual_test': np.ones((3, 4)),
            'audio_test': np.ones((3, 2), np.float32), 'lab_test': np.arange(3)}
    base.update(arrays)
    with h5py.File(path, 'w') as f:
        for k, v in base.items():
            if v is not None:
                f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize('labels', [
    (np.arange(6) % 3).astype(np.int64)[:, None],      # (N, 1) int64
    (np.arange(6) % 3).astype(np.float64),             # (N,) integral float64
    (np.arange(6) % 3).astype(np.uint8),
    (np.arange(6) % 3).astype(np.float32)[:, None],
])
def test_label_layouts_and_dtypes_are_accepted(tmp_path, labels):
    s = av.read_split(_write(tmp_path / 'f.h5', lab_train=labels), 'train', num_classes=3)
    assert s.label.dtype == np.int32 and s.label.shape == (6,)
    assert s.label.tolist() == [0, 1, 2, 0, 1, 2]
    assert s.visual.dtype == s.audio.dtype == np.float32


@pytest.mark.parametrize('arrays,message', [
    ({'audio_test': None}, r"f.h5: missing dataset\(s\) \['audio_test'\]"),
    ({'lab_train': np.arange(5) % 3}, r'row counts differ within the train split'),
    ({'lab_train': np.array([0, 1, 2.5, 0, 1, 2])}, r'f.h5:lab_train: label 2.5 at row 2 is not an integer'),
    ({'lab_train': np.array([0, 1, 3, 0, 1, 2])}, r'f.h5:lab_train: label 3 at row 2 is out of range \(expected 0..2\)'),
    ({'lab_train': np.array([0, -1, 2, 0, 1, 2])}, r'label -1 at row 1 is out of range'),
    ({'lab_train': np.array([0, np.nan, 2, 0, 1, 2])}, r'label nan at row 1 is not an integer'),
    ({'lab_train': np.zeros((6, 2))}, r'labels must have shape \(N,\) or \(N, 1\)'),
    ({'lab_train': np.array([b'a'] * 6)}, r'labels must be integers'),
    ({'visual_train': np.full((6, 4), np.inf)}, r'f.h5:visual_train: 6 row\(s\) hold NaN/Inf \(first: row 0\)'),
    ({'audio_train': np.where(np.eye(6, 2) > 0, np.nan, 1.0)}, r'f.h5:audio_train: 2 row\(s\) hold NaN/Inf'),
    ({'visual_train': np.ones(6)}, r'features must be a \(N, D\) matrix'),
])
def test_errors_name_the_file_and_dataset(tmp_path, arrays, message):
    path = _write(tmp_path / 'f.h5', **arrays)
    with pytest.raises(av.AVDataError, match=message) as e:
        av.read_file(path, num_classes=3)
    assert '\n' not in str(e.value)


def test_width_mismatch_between_splits_and_unreadable_file(tmp_path):
    with pytest.raises(av.AVDataError, match='feature widths differ between splits'):
        av.read_file(_write(tmp_path / 'f.h5', visual_test=np.ones((3, 5))))
    bad = tmp_path / 'bad.h5'
    bad.write_bytes(b'not hdf5')
    with pytest.raises(av.AVDataError, match='not a readable HDF5 file'):
        av.read_split(bad, 'train')
    with pytest.raises(FileNotFoundError, match='no such feature file'):
        av.feature_file(tmp_path / 'none', 'vegas')


@pytest.mark.parametrize('fmt,classes', [('vegas', 10), ('ave', 15)])
def test_demo_files_have_the_layout_and_quirks(tmp_path, fmt, classes):
    info = av_demo.generate_av_features(tmp_path, fmt, per_class=8, seed=1)
    path = tmp_path / av.FILE_NAMES[fmt]
    assert info['path'] == str(path) and info['classes'] == classes
    with h5py.File(path) as f:
        assert sorted(f) == sorted(['visual_train', 'visual_test', 'audio_train', 'audio_test',
                                    'lab_train', 'lab_test'])
        assert f['visual_train'].shape[1] == 1024 and f['audio_test'].shape[1] == 128
        label_forms = {(f[k].ndim, f[k].dtype.kind) for k in ('lab_train', 'lab_test')}
    assert label_forms == ({(2, 'i'), (1, 'f')})        # (N, 1) ints and (N,) floats
    data = av.read_file(path, num_classes=classes)
    assert len(data['train']) % 8 != 0 and len(data['train']) % 16 != 0
    assert classes - 1 not in data['test'].label       # a class absent from test
    assert set(data['train'].label.tolist()) == set(range(classes))
    # Deterministic per seed.
    av_demo.generate_av_features(tmp_path / 'again', fmt, per_class=8, seed=1)
    again = av.read_file(tmp_path / 'again' / av.FILE_NAMES[fmt])
    np.testing.assert_array_equal(again['test'].visual, data['test'].visual)
    # Class-conditional: nearest class mean on train classifies most test items.
    tr, te = data['train'], data['test']
    for m in ('visual', 'audio'):
        means = np.stack([getattr(tr, m)[tr.label == c].mean(0) for c in range(classes)])
        pred = np.argmin(((getattr(te, m)[:, None] - means[None]) ** 2).sum(-1), 1)
        assert (pred == te.label).mean() > 0.6, m


def _config(tmp_path, **data):
    c = dsffn_test.get_config()
    c.data_dir = str(tmp_path)
    c.data.update(data)
    return c


def _load(c):
    return av.load(c.data_dir, c.data)


@pytest.fixture()
def small_file(tmp_path):
    av_demo.generate_av_features(tmp_path, 'vegas', num_classes=3, per_class=20,
                              visual_dim=64, audio_dim=16, seed=0)
    return tmp_path


def test_validation_split_is_stratified_and_disjoint(small_file):
    d = _load(_config(small_file))
    whole = av.read_file(small_file / 'vegas_feature_norm.h5')['train']
    assert len(d.train) + len(d.val) == len(whole)
    assert np.bincount(d.val.label).tolist() == [2, 2, 2]
    # The validation rows are train rows and never used for training.
    train_rows = {r.tobytes() for r in d.train.visual}
    assert not any(r.tobytes() in train_rows for r in d.val.visual)
    test_sel = _load(_config(small_file, select_on='test'))
    assert len(test_sel.val) == 0 and len(test_sel.train) == len(whole)
    with pytest.raises(ValueError, match="data.select_on='x'"):
        _load(_config(small_file, select_on='x'))


def test_input_norm_options(small_file):
    std = _load(_config(small_file, input_norm='standardize'))
    np.testing.assert_allclose(std.train.visual.mean(0), 0, atol=1e-4)
    l2 = _load(_config(small_file, input_norm='l2'))
    np.testing.assert_allclose(np.linalg.norm(l2.test.audio, axis=1), 1, rtol=1e-5)
    raw = _load(_config(small_file))
    assert raw.train.visual.min() >= 0
    with pytest.raises(ValueError, match='data.input_norm'):
        _load(_config(small_file, input_norm='zca'))


def test_train_batches_are_deterministic_resumable_and_process_sliced(small_file):
    split = _load(_config(small_file)).train
    kw = dict(global_batch=8, seed=3, shuffle=True)
    per_epoch = av.steps_per_epoch(len(split), 8)
    it = av.train_batches(split, start_step=0, **kw)
    first = [next(it) for _ in range(per_epoch + 2)]
    resumed = next(av.train_batches(split, start_step=per_epoch + 1, **kw))
    np.testing.assert_array_equal(resumed['visual'], first[per_epoch + 1]['visual'])
    # Every epoch is a permutation (drop_last), and epochs differ.
    seen = np.concatenate([b['label'] for b in first[:per_epoch]])
    assert seen.size == per_epoch * 8
    assert not np.array_equal(first[0]['visual'], first[per_epoch]['visual'])
    # Unshuffled: file order, identical every epoch.
    plain = av.train_batches(split, global_batch=8, seed=3, shuffle=False, start_step=0)
    b0 = next(plain)
    np.testing.assert_array_equal(b0['visual'], split.visual[:8])
    # Two processes each get half of the same global batch.
    halves = [next(av.train_batches(split, start_step=5, process_index=p, process_count=2,
                                    **kw)) for p in (0, 1)]
    whole = next(av.train_batches(split, start_step=5, **kw))
    np.testing.assert_array_equal(np.concatenate([h['label'] for h in halves]), whole['label'])
    assert halves[0]['visual'].shape == (4, 64)
    with pytest.raises(ValueError, match='fewer than one batch'):
        av.steps_per_epoch(5, 8)


@pytest.mark.parametrize('key', ['visual_train', 'lab_test'])
def test_a_group_where_a_dataset_belongs_is_one_line(tmp_path, key):
    """Issue 22.5: a group in place of `visual_train` was a 38-line TypeError traceback."""
    path = _write(tmp_path / 'f.h5', **{key: None})
    with h5py.File(path, 'a') as f:
        f.create_group(key).create_dataset('x', data=np.ones((6, 4)))
    with pytest.raises(av.AVDataError, match=rf'f.h5:{key}: expected a dataset \(an array\), '
                       'found group') as e:
        av.read_file(path, num_classes=3)
    assert '\n' not in str(e.value)
