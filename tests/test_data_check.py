"""`dcinet data check`: every format against its manifest, with files deleted, damaged and
added; exit codes 0 (matches) / 1 (differs) / 2 (cannot read); the tables that follow."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcinet_jax import cli
from input_pipeline import check

REPO = Path(__file__).resolve().parents[1]

# The published counts, typed in from the releases' documentation (docs/data.md,
# docs/hslm_data.md), independently of the manifests in the code.
FGX_RELEASE = {('image', 'train'): 5994, ('image', 'test'): 5794, ('text', 'train'): 4000,
               ('text', 'test'): 4000, ('audio', 'train'): 6000, ('audio', 'test'): 6000,
               ('video', 'train'): 12666, ('video', 'test'): 5684}


def run_check(capsys, *args):
    """(exit code, JSON report) of `dcinet data check ... --json`, in this process."""
    with pytest.raises(SystemExit) as e:
        cli.main(['data', 'check', *args, '--json'])
    return e.value.code, json.loads(capsys.readouterr().out)


def kinds(report):
    return sorted({f['kind'] for f in report['findings']})


@pytest.fixture(scope='module')
def fgx(tmp_path_factory):
    out = tmp_path_factory.mktemp('fgx') / 'data'
    from input_pipeline.demo import fgxmedia
    fgxmedia.demo_main(out, classes=3, per_class=2, seed=0)
    return out


@pytest.fixture
def fgx_copy(fgx, tmp_path):
    dst = tmp_path / 'data'
    shutil.copytree(fgx, dst)
    return dst


def test_fgxmedia_demo_matches_its_manifest(fgx, capsys):
    code, rep = run_check(capsys, '--config', 'configs/test.py', f'--config.data_dir={fgx}',
                          '--deep')
    assert code == 0, rep['findings']
    counts = {(c['group'], c['split']): (c['expected'], c['found']) for c in rep['counts']}
    assert counts[('image', 'train')] == (6, 6)            # 3 classes x 2 per class
    assert counts[('video', 'test')] == (6, 6)             # 2 clips per class
    assert rep['findings'] == [] and all('comparable (' in t for t in rep['tables'])


def test_fgxmedia_reports_deleted_damaged_added(fgx_copy, capsys):
    root = fgx_copy
    lines = (root / 'list/image/test.txt').read_text().splitlines()
    gone = root / 'image' / lines[0].rsplit(' ', 1)[0]
    gone.unlink()                                            # file deleted, line kept
    text_lines = (root / 'list/text/train.txt').read_text().splitlines()
    (root / 'text' / text_lines[1].rsplit(' ', 1)[0]).unlink()   # file and line deleted
    (root / 'list/text/train.txt').write_text('\n'.join(text_lines[:1] + text_lines[2:]) + '\n')
    bad = root / 'image' / lines[1].rsplit(' ', 1)[0]
    bad.write_bytes(bad.read_bytes()[:200])                  # truncated JPEG
    (root / 'audio/stray.wav').write_bytes(b'RIFF')          # an extra file
    audio = (root / 'list/audio/train.txt').read_text().splitlines()
    audio[0] = audio[0].rsplit(' ', 1)[0] + ' 9'             # label out of range
    (root / 'list/audio/train.txt').write_text('\n'.join(audio) + '\n')

    code, shallow = run_check(capsys, '--config', 'configs/test.py', f'--config.data_dir={root}')
    assert code == 1
    assert kinds(shallow) == ['bad_label', 'extra', 'missing']   # the JPEG is not decoded
    code, rep = run_check(capsys, '--config', 'configs/test.py', f'--config.data_dir={root}',
                          '--deep')
    assert code == 1
    by_kind = {k: [f for f in rep['findings'] if f['kind'] == k] for k in kinds(rep)}
    assert set(by_kind) == {'bad_label', 'extra', 'missing', 'undecodable'}
    missing = {f['where'] for f in by_kind['missing']}
    assert f'{root}/list/image/test.txt:1' in missing                    # named by list line
    assert text_lines[1].rsplit(' ', 1)[0] in ' '.join(missing)          # named by manifest
    assert [f['where'] for f in by_kind['undecodable']] == [str(bad)]
    assert [f['where'] for f in by_kind['extra']] == ['audio/stray.wav']
    assert by_kind['bad_label'][0]['where'] == f'{root}/list/audio/train.txt:1'
    counts = {(c['group'], c['split']): c['found'] for c in rep['counts']}
    assert counts[('image', 'test')] == 5 and counts[('text', 'train')] == 5
    assert counts[('audio', 'train')] == 5
    assert any(t.startswith("DCINet's") and 'NOT comparable' in t for t in rep['tables'])


def test_fgxmedia_missing_test_videos_leave_dcinet_tables_comparable(fgx_copy, capsys):
    """The issue's example: test videos gone, so only the 16-task table is affected."""
    lines = (fgx_copy / 'list/video/test.txt').read_text().splitlines()
    for ln in lines[:3]:                                     # one whole 3-frame clip
        (fgx_copy / 'video' / ln.rsplit(' ', 1)[0]).unlink()
    code, rep = run_check(capsys, '--config', 'configs/test.py',
                          f'--config.data_dir={fgx_copy}')
    assert code == 1
    dcinet, fgcross = rep['tables']
    assert 'comparable (' in dcinet and 'NOT comparable' in fgcross and 'video test' in fgcross
    assert sum(f['kind'] == 'missing' for f in rep['findings']) == 3   # three frames


def test_fgxmedia_without_manifest_is_checked_against_the_release(fgx_copy, capsys):
    (fgx_copy / check.MANIFEST_FILE).unlink()
    code, rep = run_check(capsys, '--config', 'configs/test.py',
                          f'--config.data_dir={fgx_copy}')
    assert code == 1
    assert {(c['group'], c['split']): c['expected'] for c in rep['counts']} == FGX_RELEASE
    assert all(c['differs'] for c in rep['counts'])
    # labels 0..2 of 200: 197 classes have no item in each list
    assert all('197 of 200 classes' in f['what'] for f in rep['findings']
               if f['kind'] == 'classes')


def test_fgxmedia_prepared_dir_is_followed_to_its_sources(demo_raw_dir, demo_prepared_dir,
                                                          capsys):
    code, rep = run_check(capsys, '--config', 'configs/test.py',
                          f'--config.data_dir={demo_prepared_dir}')
    assert rep['root'] == str(Path(demo_raw_dir).resolve())
    assert any('is prepared data' in n for n in rep['notes'])
    assert code == 1                                 # the small demo is not the release


def test_unreadable_input_exits_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for folder in (tmp_path / 'nothing', tmp_path):          # absent; empty
        out = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'data', 'check', '--config',
                              'configs/test.py', f'--config.data_dir={folder}'],
                             capture_output=True, text=True, env=env, cwd=REPO)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count('\n') == 1 and str(folder) in out.stderr


def test_cli_text_report_and_exit_1_in_a_subprocess(fgx_copy):
    (fgx_copy / 'text/extra_file.txt').write_text('hello')
    out = subprocess.run([sys.executable, '-m', 'dcinet_jax', 'data', 'check', '--config',
                          'configs/test.py', f'--config.data_dir={fgx_copy}'],
                         capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 1, out.stderr
    assert 'text/extra_file.txt' in out.stdout and 'DIFFER' in out.stdout


# ----------------------------------------------------------------------------- precomp

@pytest.fixture
def precomp(tmp_path):
    from input_pipeline.demo import precomp as demo
    demo.write_precomp_demo(tmp_path / 'pc', values=3, train_images=20, dev_images=5,
                            test_images=6, testall_images=7, feature_dim=8)
    return tmp_path / 'pc'


def test_precomp_demo_and_its_faults(precomp, capsys):
    args = ['--config', 'configs/hslm_test.py', f'--config.data_dir={precomp}', '--deep']
    code, rep = run_check(capsys, *args)
    assert code == 0, rep['findings']
    counts = {(c['group'], c['split']): c['found'] for c in rep['counts']}
    assert counts[('images', 'dev')] == 5 and counts[('captions', 'dev')] == 25
    (precomp / 'test_caps.txt').unlink()                                  # deleted
    ims = np.load(precomp / 'train_ims.npy')
    ims[3, 2, 1] = np.nan                                                 # damaged row
    np.save(precomp / 'train_ims.npy', ims)
    data = (precomp / 'testall_ims.npy').read_bytes()
    (precomp / 'testall_ims.npy').write_bytes(data[:len(data) // 2])      # truncated
    (precomp / 'val_ims.npy').write_bytes(b'x')                           # added
    code, rep = run_check(capsys, *args)
    assert code == 1
    found = {(f['kind'], f['where'].rsplit('/', 1)[-1]) for f in rep['findings']}
    assert found == {('missing', 'test_caps.txt'), ('undecodable', 'train_ims.npy'),
                     ('undecodable', 'testall_ims.npy'), ('extra', 'val_ims.npy')}
    nan = next(f for f in rep['findings'] if f['where'].endswith('train_ims.npy'))
    assert 'row 3' in nan['what']
    assert all('NOT comparable' in t for t in rep['tables'])


def test_precomp_release_counts(tmp_path, capsys):
    """A folder without a manifest is checked against the release of config.data.name."""
    root = tmp_path / 'f30k'
    root.mkdir()
    for split, n in (('train', 2), ('dev', 1), ('test', 1)):
        np.save(root / f'{split}_ims.npy', np.zeros((n, 36, 2048), np.float32))
        (root / f'{split}_caps.txt').write_text('a cap\n' * 5 * n)
    code, rep = run_check(capsys, '--config', 'configs/hslm_f30k.py',
                          f'--config.data_dir={root}')
    assert code == 1
    expected = {(c['group'], c['split']): c['expected'] for c in rep['counts']}
    assert expected == {('images', 'train'): 29000, ('captions', 'train'): 145000,
                        ('images', 'dev'): 1014, ('captions', 'dev'): 5070,
                        ('images', 'test'): 1000, ('captions', 'test'): 5000}
    assert not rep['findings']                       # shapes are the release's


# ----------------------------------------------------------------------------- VEGAS / AVE

def test_vegas_demo_and_its_faults(tmp_path, capsys):
    import h5py
    from input_pipeline.demo import vegas_ave
    info = vegas_ave.generate_av_features(tmp_path, 'vegas', per_class=4)
    args = ['--config', 'configs/dsffn_test.py', f'--config.data_dir={tmp_path}', '--deep']
    code, rep = run_check(capsys, *args)
    assert code == 0, rep['findings']
    assert [c['found'] for c in rep['counts']] == [info['train'], info['test']]
    with h5py.File(info['path'], 'r+') as f:
        f['visual_test'][2, 5] = np.inf
        lab = f['lab_train'][()]
        lab[4] = 10                                   # classes are 0..9
        del f['lab_train']
        f['lab_train'] = lab
        f['extra_feature'] = np.zeros(3)
    code, rep = run_check(capsys, *args)
    assert code == 1
    found = {(f['kind'], f['where'].rsplit(':', 1)[-1]) for f in rep['findings']}
    assert found == {('undecodable', 'visual_test'), ('bad_label', 'lab_train'),
                     ('extra', 'extra_feature')}
    assert 'NOT comparable' in rep['tables'][0]
    Path(info['path']).write_bytes(b'not hdf5')
    code, rep = run_check(capsys, *args)
    assert code == 2 and 'not a readable HDF5' in rep['error']


def test_vegas_release_sizes(tmp_path, capsys):
    import h5py
    with h5py.File(tmp_path / 'vegas_feature_norm.h5', 'w') as f:
        for split, n in (('train', 4), ('test', 5621)):
            f[f'visual_{split}'] = np.zeros((n, 1024), np.float32)
            f[f'audio_{split}'] = np.zeros((n, 128), np.float32)
            f[f'lab_{split}'] = np.arange(n) % 10
    code, rep = run_check(capsys, '--config', 'configs/dsffn_vegas.py',
                          f'--config.data_dir={tmp_path}')
    assert code == 0, rep                              # train size unpublished: not checked
    assert [(c['split'], c['expected']) for c in rep['counts']] == [('train', None),
                                                                   ('test', 5621)]


# ----------------------------------------------------------------------------- pieces

def test_the_old_data_folder_field_is_refused_naming_the_new_one(capsys):
    """`data check` reads `--config.data_dir` like every command (issue 18): the old
    DSFFN/HSLM field is a one-line error, not a second accepted spelling."""
    with pytest.raises(SystemExit, match=r'config\.data\.data_dir was renamed: use '
                       r'--config\.data_dir'):
        cli.main(['data', 'check', '--config', 'configs/dsffn_test.py',
                  '--config.data.data_dir=/b'])


def test_consequences_separate_training_from_evaluation_data():
    t = check.Table('T', (('image', 'test'),), (('image', 'train'),))
    r = check.Report('fgxmedia', '/r', 'm', (t,))
    r.counts.append(check.Count('image', 'test', 5, 5))
    assert r.exit_code == 0 and 'comparable (' in r.consequences()[0]
    r.counts.append(check.Count('image', 'train', 5, 4))
    assert r.exit_code == 1 and 'training data differ' in r.consequences()[0]
    r.add('undecodable', 'image', 'test', 'f.jpg', 'truncated')
    assert 'NOT comparable' in r.consequences()[0]
    extra_only = check.Report('fgxmedia', '/r', 'm', (t,))
    extra_only.add('extra', 'image', '', 'x.jpg', 'unlisted')
    assert extra_only.exit_code == 1 and 'comparable (' in extra_only.consequences()[0]
