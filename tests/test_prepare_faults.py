"""`dcinet prepare` on faulty and changing inputs: skip mode for bad list lines, one
message per error with a hint that fits the mode, stale prepared data, 0-byte files,
paths with spaces, non-UTF-8 text, and the progress bar."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_prepare import _builder, _examples, _small_raw

from input_pipeline.fgxmedia import fingerprint, lists, prepare, text
from input_pipeline.errors import DataError, DecodeError, ListFormatError

CONFIG_FILE = str(Path(__file__).resolve().parents[1] / 'configs' / 'test.py')


@pytest.fixture
def raw(demo_raw_dir, tmp_path):
    """3 train items of image, audio and text, paths relative to the data root."""
    return _small_raw(Path(demo_raw_dir), tmp_path / 'raw')


def _append(root: Path, modality: str, *lines: str) -> None:
    with open(root / 'list' / modality / 'train.txt', 'a') as f:
        f.write(''.join(f'{line}\n' for line in lines))


def _first_path(root: Path, modality: str) -> str:
    return lists.read_list(root, modality, 'train')[0].path


def _cli(*args: str) -> str:
    """Run `dcinet prepare ARGS`; the message it exits with ('' when it succeeds)."""
    from unittest import mock

    from dcinet_jax import cli
    argv = ['prepare', '--config', CONFIG_FILE, *args]
    # ml_collections finds --config.* overrides in sys.argv, as on a real command line.
    with mock.patch('sys.argv', ['dcinet', *argv]):
        try:
            cli.main(argv)
        except SystemExit as e:
            return str(e.code)
    return ''


# ----------------------------------------------------------------------------- bad list lines

def _add_bad_lines(raw: Path) -> dict[int, str]:
    """Four bad image list lines (after the 3 good ones): line -> reason fragment."""
    first = _first_path(raw, 'image')
    copy = raw / 'image' / 'extra' / 'copy.jpg'
    copy.parent.mkdir(parents=True)
    shutil.copy(raw / first, copy)
    _append(raw, 'image',
            f'{first} 0 extra',          # 3 fields, the last not a label
            'image/extra/copy.jpg 7',    # label out of range (4 classes)
            'image/extra/copy.jpg -1',   # negative label
            f'{first} 0')                # duplicate of line 1
    return {4: 'not an integer', 5: 'outside [0, 4)', 6: 'outside [0, 4)', 7: 'duplicate'}


def test_skip_mode_skips_bad_list_lines_and_prepares_the_rest(raw, test_config, tmp_path):
    bad = _add_bad_lines(raw)
    counts = prepare.prepare(raw, tmp_path / 'out', test_config.data, on_error='skip',
                             progress=False)
    assert counts['image'] == {'train': 3} and counts['text'] == {'train': 3}
    rows = prepare.read_skipped_report(prepare.prepared_dir(tmp_path / 'out', test_config.data)
                                       / prepare.SKIPPED_REPORT)
    list_file = str(raw / 'list' / 'image' / 'train.txt')
    assert sorted(int(r['line']) for r in rows) == sorted(bad)
    for r in rows:
        assert r['list_file'] == list_file and r['modality'] == 'image' and r['split'] == 'train'
        assert bad[int(r['line'])] in r['reason']
        assert r['reason'].startswith(f'{list_file}:{r["line"]}: ')
    exs = _examples(_builder(tmp_path / 'out', test_config.data), 'image_train')
    assert [int(e['index']) for e in exs] == [0, 1, 2]


def test_fail_mode_stops_at_the_first_bad_line_and_hints_skip(raw, test_config, tmp_path,
                                                              capsys):
    _add_bad_lines(raw)
    with pytest.raises(ListFormatError) as info:
        prepare.prepare(raw, tmp_path / 'out', test_config.data, on_error='fail', progress=False)
    assert info.value.line == 4
    capsys.readouterr()
    msg = _cli('--manual_dir', str(raw), '--data_dir', str(tmp_path / 'out2'), '--on_error=fail')
    assert msg.startswith(f'dcinet prepare: error: {raw / "list/image/train.txt"}:4: ')
    assert '--on_error=skip' in msg
    assert msg.count('not an integer') == 1
    # Printed once: by the exit message only, nothing before it.
    assert 'not an integer' not in capsys.readouterr().err


def test_skip_mode_hint_never_names_the_flag_already_given(raw, tmp_path, capsys):
    (raw / 'list' / 'image' / 'train.txt').write_bytes(b'image/a.jpg 0\n\xff\xfe 1\n')
    msg = _cli('--manual_dir', str(raw), '--data_dir', str(tmp_path / 'out'), '--on_error=skip')
    assert 'not UTF-8' in msg and msg.count('not UTF-8') == 1
    assert '--on_error' not in msg and 'skip' in msg
    assert 'not UTF-8' not in capsys.readouterr().err


# ----------------------------------------------------------------------------- item errors

def test_decode_error_in_fail_mode_names_its_list_line(raw, test_config, tmp_path):
    bad = raw / 'image' / 'bad' / 'corrupt.jpg'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    _append(raw, 'image', 'image/bad/corrupt.jpg 1')
    with pytest.raises(DecodeError) as info:
        prepare.prepare(raw, tmp_path / 'out', test_config.data, progress=False)
    assert info.value.path == str(bad)
    assert str(info.value).endswith(f'(listed at {raw / "list/image/train.txt"}:4)')


@pytest.mark.parametrize('modality,rel', [('image', 'image/bad/empty.jpg'),
                                          ('audio', 'audio/bad/empty.wav'),
                                          ('text', 'text/bad/empty.txt')])
def test_zero_byte_file_is_empty(raw, test_config, tmp_path, modality, rel):
    (raw / rel).parent.mkdir(parents=True)
    (raw / rel).write_bytes(b'')
    _append(raw, modality, f'{rel} 1')
    with pytest.raises(DecodeError) as info:
        prepare.prepare(raw, tmp_path / 'out', test_config.data, progress=False)
    list_file = raw / 'list' / modality / 'train.txt'
    assert str(info.value) == f'{raw / rel}: file is empty (0 bytes) (listed at {list_file}:4)'
    prepare.prepare(raw, tmp_path / 'skip', test_config.data, on_error='skip', progress=False)
    (row,) = prepare.read_skipped_report(prepare.prepared_dir(tmp_path / 'skip', test_config.data)
                                         / prepare.SKIPPED_REPORT)
    assert row['path'] == rel and 'file is empty' in row['reason'] and row['line'] == '4'


def test_path_with_spaces_is_supported(raw, test_config, tmp_path):
    first = _first_path(raw, 'image')
    spaced = raw / 'image' / 'with space' / 'a  b.jpg'
    spaced.parent.mkdir(parents=True)
    shutil.copy(raw / first, spaced)
    _append(raw, 'image', 'image/with space/a  b.jpg\t2')
    (entry,) = lists.read_list(raw, 'image', 'train', num_classes=4)[3:]
    assert (entry.path, entry.label) == ('image/with space/a  b.jpg', 2)
    prepare.prepare(raw, tmp_path / 'out', test_config.data, progress=False)
    exs = _examples(_builder(tmp_path / 'out', test_config.data), 'image_train')
    assert exs[3]['id'].decode() == 'image/image/with space/a  b.jpg' and exs[3]['label'] == 2
    assert exs[3]['image'] == exs[0]['image']


def test_non_utf8_text_strict_error_and_config_choice(raw, test_config, tmp_path):
    bad = raw / 'text' / 'bad' / 'latin1.txt'
    bad.parent.mkdir(parents=True)
    bad.write_bytes('A caf\xe9 bird\n'.encode('latin-1'))
    _append(raw, 'text', 'text/bad/latin1.txt 1')
    msg = _cli('--manual_dir', str(raw), '--data_dir', str(tmp_path / 'out'))
    assert msg.startswith(f'dcinet prepare: error: {bad}:1: not valid UTF-8')
    assert 'byte offset 5' in msg
    assert 'set --config.data.text_errors=replace to decode anyway' in msg
    # The config field reaches text.read_text: the bad byte is dropped, the rest kept.
    assert _cli('--manual_dir', str(raw), '--data_dir', str(tmp_path / 'out'),
                '--config.data.text_errors=replace') == ''
    exs = _examples(_builder(tmp_path / 'out', test_config.data), 'text_train')
    want = text.encode_text('A caf\ufffd bird', length=test_config.data.text_length)
    np.testing.assert_array_equal(exs[3]['text'], want)
    c = test_config.copy_and_resolve_references()
    c.data.text_errors = 'latin-1'
    with pytest.raises(ValueError, match='text_errors must be one of'):
        prepare.prepare(raw, tmp_path / 'x', c.data, progress=False)


def test_progress_bar_ends_at_100_percent(raw, test_config, tmp_path, capsys):
    prepare.prepare(raw, tmp_path / 'out', test_config.data, progress=True)
    err = capsys.readouterr().err
    for m in ('image', 'audio', 'text'):
        lines = [ln for ln in err.replace('\r', '\n').splitlines() if ln.startswith(f'{m}/train')]
        assert lines and '100%' in lines[-1] and '3/3' in lines[-1], lines


# ----------------------------------------------------------------------------- stale data

def _prepare(raw, out, data_config, **kw):
    return prepare.prepare(raw, out, data_config, progress=False, **kw)


def _stored_images(out, data_config):
    return [e['image'] for e in _examples(_builder(out, data_config), 'image_train')]


def test_changed_source_file_is_noticed_and_rebuilt(raw, test_config, tmp_path, capsys):
    out = tmp_path / 'out'
    _prepare(raw, out, test_config.data)
    before = _stored_images(out, test_config.data)
    pdir = prepare.prepared_dir(out, test_config.data)
    info = json.loads((pdir / fingerprint.INFO_FILE).read_text())
    assert info['num_classes'] == 4 and info['settings']['on_error'] == 'fail'
    assert set(info['max_labels']) == {'image_train', 'audio_train', 'text_train'}
    capsys.readouterr()

    first, second = (lists.read_list(raw, 'image', 'train')[i].path for i in (0, 1))
    shutil.copy(raw / second, raw / first)     # "fix" an image: other content
    _prepare(raw, out, test_config.data)
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert err.startswith(f'warning: prepared data at {pdir} is out of date')
    assert f'1 modified ({first})' in err and 'rebuilding it' in err
    after = _stored_images(out, test_config.data)
    assert after[0] == after[1] != before[0]
    _prepare(raw, out, test_config.data)     # now up to date: no warning
    assert capsys.readouterr().err == ''


def test_settings_and_another_manual_dir_are_noticed(raw, test_config, tmp_path, capsys):
    out = tmp_path / 'out'
    _prepare(raw, out, test_config.data)
    capsys.readouterr()
    _prepare(raw, out, test_config.data, on_error='skip')
    assert "on_error was 'fail', now 'skip'" in capsys.readouterr().err
    other = tmp_path / 'other_raw'
    shutil.copytree(raw, other)
    _prepare(other, out, test_config.data, on_error='skip')
    err = capsys.readouterr().err
    assert f"manual_dir was '{raw.resolve()}', now '{other.resolve()}'" in err
    _prepare(other, out, test_config.data, on_error='skip', force=True)
    assert capsys.readouterr().err.startswith('rebuilding the prepared data at ')


def test_fixed_bad_item_is_picked_up_in_skip_mode(raw, test_config, tmp_path):
    out = tmp_path / 'out'
    bad = raw / 'image' / 'bad' / 'b.jpg'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'broken')
    _append(raw, 'image', 'image/bad/b.jpg 1')
    assert _prepare(raw, out, test_config.data, on_error='skip')['image'] == {'train': 3}
    shutil.copy(raw / _first_path(raw, 'image'), bad)
    assert _prepare(raw, out, test_config.data, on_error='skip')['image'] == {'train': 4}
    assert prepare.read_skipped_report(prepare.prepared_dir(out, test_config.data)
                                       / prepare.SKIPPED_REPORT) == []


def test_rebuild_never_touches_sources_even_with_data_dir_inside(raw, test_config, capsys):
    out = raw / 'prepared'       # data dir inside the manual dir: not fingerprinted
    _prepare(raw, out, test_config.data)
    sources = fingerprint.source_table(raw, exclude=(out,))
    assert not any(p.startswith('prepared/') for p in sources)
    _prepare(raw, out, test_config.data)
    assert capsys.readouterr().err == ''     # its own output does not make it stale
    _prepare(raw, out, test_config.data, force=True)
    assert fingerprint.source_table(raw, exclude=(out,)) == sources
    pdir = prepare.prepared_dir(out, test_config.data)
    with pytest.raises(ValueError, match='refusing to replace'):
        prepare._remove_variant(pdir.parent.parent.parent, pdir)   # would hold the sources
    assert pdir.is_dir()
    _prepare(raw, raw, test_config.data)     # the data dir is the manual dir itself
    _prepare(raw, raw, test_config.data)
    assert 'out of date' not in capsys.readouterr().err


def test_errors_pickle_with_list_line():
    import pickle

    from input_pipeline.errors import with_list_line
    e = with_list_line(DecodeError('a.jpg', 'broken'), 'list/image/train.txt', 3)
    assert isinstance(e, DataError) and str(e) == 'a.jpg: broken (listed at list/image/train.txt:3)'
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    same = ListFormatError('l.txt', 'bad', line=2)
    assert with_list_line(same, 'l.txt', 2) is same


@pytest.mark.parametrize('force', [False, True])
def test_a_failed_rebuild_keeps_the_previous_prepared_data(raw, test_config, tmp_path,
                                                           capsys, force):
    """Issue 22 weak spot: a rebuild that stopped on a bad item had already deleted the
    previous good variant. It is built beside it now and replaces it only on success."""
    out = tmp_path / 'out'
    _prepare(raw, out, test_config.data)
    pdir = prepare.prepared_dir(out, test_config.data)
    before = _stored_images(out, test_config.data)
    files = sorted(str(p.relative_to(pdir)) for p in pdir.rglob('*'))
    good = (raw / _first_path(raw, 'image')).read_bytes()
    bad = raw / 'image' / 'bad' / 'corrupt.jpg'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    _append(raw, 'image', 'image/bad/corrupt.jpg 1')      # sources changed: a rebuild
    capsys.readouterr()
    with pytest.raises(DecodeError):
        _prepare(raw, out, test_config.data, force=force)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'the rebuild failed; the previous prepared data at {pdir} is kept')
    assert sorted(str(p.relative_to(pdir)) for p in pdir.rglob('*')) == files
    assert _stored_images(out, test_config.data) == before
    assert sorted(p.name for p in pdir.parent.iterdir()) == [pdir.name]   # nothing aside
    bad.write_bytes(good)                                 # fixed: the rebuild goes through
    assert _prepare(raw, out, test_config.data)['image'] == {'train': 4}
    assert sorted(p.name for p in pdir.parent.iterdir()) == [pdir.name]


def test_a_rebuild_killed_midway_is_recovered_on_the_next_run(raw, test_config, tmp_path):
    out = tmp_path / 'out'
    _prepare(raw, out, test_config.data)
    pdir = prepare.prepared_dir(out, test_config.data)
    before = _stored_images(out, test_config.data)
    pdir.rename(prepare._aside(pdir))                    # as a kill after the move aside
    (pdir / 'partial').mkdir(parents=True)
    assert _prepare(raw, out, test_config.data)['image'] == {'train': 3}   # reused as is
    assert _stored_images(out, test_config.data) == before
    assert sorted(p.name for p in pdir.parent.iterdir()) == [pdir.name]
