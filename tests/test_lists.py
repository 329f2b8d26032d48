"""input_pipeline/fgxmedia/lists.py: list parsing, validation errors, the path rule."""

import pickle
from pathlib import Path

import pytest

from input_pipeline.fgxmedia import lists
from input_pipeline.errors import DataError, ListFormatError


def _touch(root: Path, rel: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b'x')


def _list(root: Path, modality: str, split: str, body: str) -> Path:
    p = root / 'list' / modality / f'{split}.txt'
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


@pytest.fixture
def root(tmp_path):
    for rel in ('image/001.A/a1.jpg', 'image/002.B/b1.jpg', 'image/002.B/b2.jpg',
                'audio/audioimg/001.A/s1.png', 'audio/001.A/r1.wav', 'text/001.A/t1.txt',
                'text/002.B/t2.txt', 'video/001.A/clip_01.jpg', 'video/001.A/clip_02.jpg'):
        _touch(tmp_path, rel)
    return tmp_path


def test_good_list_round_trips(root):
    f = _list(root, 'image', 'train', '001.A/a1.jpg 0\n\n  002.B/b1.jpg\t1  \n002.B/b2.jpg 1')
    got = lists.read_list(root, 'image', 'train', num_classes=2)
    assert [(e.path, e.label, e.line, e.index) for e in got] == [
        ('001.A/a1.jpg', 0, 1, 0), ('002.B/b1.jpg', 1, 3, 1), ('002.B/b2.jpg', 1, 4, 2)]
    assert all(e.modality == 'image' and e.split == 'train' and e.list_file == str(f)
               for e in got)
    assert lists.resolve_path(root, got[1]) == root / 'image/002.B/b1.jpg'


def _expect(root, modality, split, line, match, file=None, **kw):
    with pytest.raises(ListFormatError, match=match) as e:
        lists.read_list(root, modality, split, **kw)
    want = file or str(root / 'list' / modality / f'{split}.txt')
    assert e.value.path == str(want)
    assert e.value.line == line
    assert str(e.value).startswith(f'{want}:{line}: ')
    return e.value


def test_malformed_line(root):
    _list(root, 'image', 'train', '001.A/a1.jpg 0\n002.B/b1.jpg 1 extra\n')
    _expect(root, 'image', 'train', 2, 'expected "relative/path label"')


def test_missing_label_without_testlabel(root):
    _list(root, 'image', 'train', '001.A/a1.jpg 0\n002.B/b1.jpg\n')
    _expect(root, 'image', 'train', 2, 'no label')


@pytest.mark.parametrize('label', ['x', '1.0', '0x1'])
def test_non_integer_label(root, label):
    _list(root, 'image', 'train', f'001.A/a1.jpg {label}\n')
    _expect(root, 'image', 'train', 1, 'not an integer')


@pytest.mark.parametrize('label', ['-1', '2', '200'])
def test_label_out_of_range(root, label):
    _list(root, 'image', 'train', f'001.A/a1.jpg 0\n\n002.B/b1.jpg {label}\n')
    _expect(root, 'image', 'train', 3, r'outside \[0, 2\)', num_classes=2)


def test_missing_file(root):
    _list(root, 'image', 'train', '001.A/a1.jpg 0\n001.A/nope.jpg 0\n')
    err = _expect(root, 'image', 'train', 2, 'not found')
    assert 'image/001.A/nope.jpg' in str(err).replace('\\', '/')
    # check_files=False reads the list without touching the media files.
    assert len(lists.read_list(root, 'image', 'train', check_files=False)) == 2


def test_duplicate_entry(root):
    _list(root, 'image', 'train', '001.A/a1.jpg 0\n002.B/b1.jpg 1\n001.A/a1.jpg 0\n')
    _expect(root, 'image', 'train', 3, 'duplicate.*first on line 1')


def test_path_escaping_root_refused(root):
    _list(root, 'image', 'train', '../outside.jpg 0\n')
    _expect(root, 'image', 'train', 1, 'relative', check_files=False)


def test_missing_list_file(root):
    with pytest.raises(ListFormatError, match='does not exist'):
        lists.read_list(root, 'text', 'train')


def test_testlabel_supplies_and_checks(root):
    _list(root, 'text', 'test', '001.A/t1.txt\n002.B/t2.txt\n')
    tl = root / 'list/text/testlabel.txt'
    tl.write_text('0\n1\n')
    got = lists.read_list(root, 'text', 'test', num_classes=2)
    assert [e.label for e in got] == [0, 1]
    # Labels on both sides must agree.
    _list(root, 'text', 'test', '001.A/t1.txt 0\n002.B/t2.txt 0\n')
    err = _expect(root, 'text', 'test', 2, 'disagrees', num_classes=2)
    assert f'{tl}:2' in str(err)
    # testlabel.txt is only used for the test split.
    _list(root, 'text', 'train', '001.A/t1.txt\n')
    _expect(root, 'text', 'train', 1, 'no label', num_classes=2)


@pytest.mark.parametrize('labels,line', [('0\n', 2), ('0\n1\n1\n', 3)])
def test_testlabel_count_mismatch(root, labels, line):
    _list(root, 'text', 'test', '001.A/t1.txt\n002.B/t2.txt\n')
    tl = root / 'list/text/testlabel.txt'
    tl.write_text(labels)
    _expect(root, 'text', 'test', line, 'holds', file=tl, num_classes=2)


def test_testlabel_bad_value(root):
    _list(root, 'text', 'test', '001.A/t1.txt\n')
    tl = root / 'list/text/testlabel.txt'
    tl.write_text('7\n')
    _expect(root, 'text', 'test', 1, 'outside', file=tl, num_classes=2)


def test_path_rule(root):
    # Relative to the modality folder (reference layout), relative to the root, and for
    # audio: audio/audioimg/ (spectrograms) before audio/ (raw audio).
    _list(root, 'audio', 'train', '001.A/s1.png 0\n001.A/r1.wav 0\naudio/001.A/r1.wav 0\n')
    got = lists.read_list(root, 'audio', 'train', num_classes=2)
    assert [lists.resolve_path(root, e) for e in got] == [
        root / 'audio/audioimg/001.A/s1.png', root / 'audio/001.A/r1.wav',
        root / 'audio/001.A/r1.wav']
    # The root-relative candidate wins when both exist.
    _touch(root, '001.A/a1.jpg')
    _list(root, 'image', 'train', '001.A/a1.jpg 0\n')
    (e,) = lists.read_list(root, 'image', 'train', num_classes=2)
    assert lists.resolve_path(root, e) == root / '001.A/a1.jpg'
    assert lists.candidate_paths(root, e) == [root / '001.A/a1.jpg',
                                              root / 'image/001.A/a1.jpg']


def test_video_id_and_available_modalities(root):
    _list(root, 'video', 'train', '001.A/clip_01.jpg 0\n001.A/clip_02.jpg 0\n')
    _list(root, 'text', 'test', '001.A/t1.txt 0\n')
    frames = lists.read_list(root, 'video', 'train', num_classes=2)
    assert {lists.video_id(e) for e in frames} == {'001.A/clip_'}
    assert lists.available_modalities(root) == ('text', 'video')
    short = lists.ListEntry('video', 'train', 'a/1.jpg', 0, 'l.txt', 5, 0)
    with pytest.raises(ListFormatError, match='too short') as e:
        lists.video_id(short)
    assert e.value.line == 5


def test_errors_are_value_errors_and_pickle():
    err = ListFormatError('list/image/train.txt', 'bad label', line=3)
    assert isinstance(err, DataError) and isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ListFormatError and (back.path, back.line) == (err.path, 3)
    assert str(back) == 'list/image/train.txt:3: bad label'
    assert str(DataError('a.jpg', 'broken')) == 'a.jpg: broken'


def test_path_with_spaces_label_is_the_last_field(root):
    _touch(root, 'image/001.A/a b  c.jpg')
    _list(root, 'image', 'train', '001.A/a b  c.jpg 1\n 001.A/a1.jpg\t0 \n')
    got = lists.read_list(root, 'image', 'train', num_classes=2)
    assert [(e.path, e.label) for e in got] == [('001.A/a b  c.jpg', 1), ('001.A/a1.jpg', 0)]
    assert lists.resolve_path(root, got[0]) == root / 'image/001.A/a b  c.jpg'
    # A spaced path whose last field is no label says where the label belongs.
    _list(root, 'image', 'train', '001.A/a b  c.jpg\n')
    _expect(root, 'image', 'train', 1, 'the label is the last field')


def test_testlabel_with_spaced_paths(root):
    _touch(root, 'text/001.A/my text.txt')
    _list(root, 'text', 'test', '001.A/my text.txt\n002.B/t2.txt 1\n')
    (root / 'list/text/testlabel.txt').write_text('0\n1\n')
    got = lists.read_list(root, 'text', 'test', num_classes=2)
    assert [(e.path, e.label) for e in got] == [('001.A/my text.txt', 0), ('002.B/t2.txt', 1)]


def test_skip_collects_bad_lines_and_keeps_the_rest(root):
    f = _list(root, 'image', 'train',
              '001.A/a1.jpg 0\n'
              '002.B/b1.jpg 1 extra\n'     # last field is not a label
              '002.B/b2.jpg 5\n'           # out of range
              '002.B/b2.jpg -1\n'          # negative
              '001.A/a1.jpg 0\n'           # duplicate
              '001.A/nope.jpg 0\n'         # missing file
              '../out.jpg 1\n'             # leaves the root
              '002.B/b2.jpg 1\n')
    bad: list = []
    got = lists.read_list(root, 'image', 'train', num_classes=2, skipped=bad)
    assert [(e.path, e.line, e.index) for e in got] == [('001.A/a1.jpg', 1, 0),
                                                        ('002.B/b2.jpg', 8, 7)]
    assert [(b.line, b.path) for b in bad] == [
        (2, '002.B/b1.jpg 1'), (3, '002.B/b2.jpg'), (4, '002.B/b2.jpg'),
        (5, '001.A/a1.jpg'), (6, '001.A/nope.jpg'), (7, '../out.jpg')]
    reasons = [str(b.error) for b in bad]
    for fragment, reason in zip(['not an integer', r'outside [0, 2)', r'outside [0, 2)',
                                 'duplicate', 'not found', 'relative'], reasons):
        assert fragment in reason
    assert all(b.list_file == str(f) and b.modality == 'image' and b.split == 'train'
               and isinstance(b.error, ListFormatError) for b in bad)
    # Whole-file faults are not line faults: they still raise.
    (root / 'list/image/test.txt').write_bytes(b'\xff\n')
    with pytest.raises(ListFormatError, match='not UTF-8'):
        lists.read_list(root, 'image', 'test', skipped=[])


def test_skip_with_testlabel_faults(root):
    _list(root, 'text', 'test', '001.A/t1.txt\n002.B/t2.txt 0\n')
    (root / 'list/text/testlabel.txt').write_text('9\n1\n')
    bad: list = []
    assert lists.read_list(root, 'text', 'test', num_classes=2, skipped=bad) == []
    assert [b.line for b in bad] == [1, 2]
    assert 'outside' in str(bad[0].error) and 'disagrees' in str(bad[1].error)
