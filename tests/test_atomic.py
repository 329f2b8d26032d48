"""input_pipeline/atomic.py: atomic writes that honour the umask (results, vocabulary)."""

import contextlib
import os
import stat

import pytest

from dcinet_jax.evaluators import report
from input_pipeline import atomic
from input_pipeline.precomp import captions


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize('mask', [0o022, 0o077, 0o002])
def test_results_and_vocab_files_get_the_umask_mode(tmp_path, mask):
    """Weak spot of issue 22: results.json, results.md and vocab.json were 0600 under
    umask 022 (mkstemp's mode); an ordinary open() would give 0666 & ~umask."""
    with _umask(mask):
        paths = report.save_results({'bimodal_average': 0.5}, tmp_path, step=3,
                                    markdown='| table |')
        vocab = captions.Vocab.build(['a bird', 'a bird sings'], min_count=1)
        vocab.save(tmp_path / 'vocab.json')
        with open(tmp_path / 'plain', 'w'):
            pass
    expected = 0o666 & ~mask
    assert _mode(tmp_path / 'plain') == expected
    for path in [*paths.values(), tmp_path / 'vocab.json']:
        assert _mode(path) == expected, path
    assert captions.Vocab.load(tmp_path / 'vocab.json').idx2word == vocab.idx2word
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eval', 'plain', 'vocab.json']


def test_atomic_write_replaces_whole_files_and_cleans_up(tmp_path):
    path = tmp_path / 'a' / 'b.bin'
    atomic.atomic_write_bytes(path, b'one')
    atomic.atomic_write_bytes(path, b'two')
    assert path.read_bytes() == b'two'
    with pytest.raises(TypeError):
        atomic.atomic_write_text(path, b'bytes')
    assert path.read_bytes() == b'two'
    assert [p.name for p in path.parent.iterdir()] == ['b.bin']


def test_umask_is_read_without_being_changed():
    with _umask(0o027):
        assert atomic._umask() == 0o027
        assert os.umask(0o027) == 0o027
