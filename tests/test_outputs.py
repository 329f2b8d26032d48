"""Read-only or blocked outputs (issue 22.6): `dcinet eval` and `dcinet report` refuse an
output place they cannot write before the work, and print what they computed when a
write still fails after it."""

import errno
import re
from pathlib import Path

import pytest

from dcinet_jax import cli
from input_pipeline import atomic
from test_html_report import _random_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _read_only(*_, **__):
    raise OSError(errno.EROFS, 'Read-only file system')


def test_check_writable_folder(tmp_path, monkeypatch):
    atomic.check_writable_folder(tmp_path / 'new' / 'deeper', 'x')   # creatable: fine
    assert not (tmp_path / 'new').exists() and list(tmp_path.iterdir()) == []
    (tmp_path / 'f').write_text('keep')
    with pytest.raises(ValueError, match=r'cannot write the report to .*/f: it exists and '
                       r'is not a folder$'):
        atomic.check_writable_folder(tmp_path / 'f', 'the report')
    with pytest.raises(ValueError, match=r'to .*/f/sub: .*/f is not a folder$'):
        atomic.check_writable_folder(tmp_path / 'f' / 'sub', 'the report')
    assert (tmp_path / 'f').read_text() == 'keep'
    monkeypatch.setattr(atomic.tempfile, 'mkstemp', _read_only)
    with pytest.raises(ValueError, match=r'cannot write x to .*/a/b: .* is not writable '
                       r'\(Read-only file system\)$'):
        atomic.check_writable_folder(tmp_path / 'a' / 'b', 'x')


@pytest.fixture(scope='module')
def checkpoint(test_config, demo_prepared_dir, tmp_path_factory):
    c = test_config.copy_and_resolve_references()
    c.data_dir = str(demo_prepared_dir)
    workdir = tmp_path_factory.mktemp('outputs') / 'run'
    _random_checkpoint(c, workdir)
    return workdir, ['--config', str(REPO / 'configs/test.py'), '--workdir', str(workdir),
                     f'--config.data_dir={demo_prepared_dir}']


def _fails(argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return str(e.value.code)


def test_eval_refuses_a_blocked_results_folder_before_the_work(checkpoint, monkeypatch):
    workdir, args = checkpoint
    (workdir / 'eval').write_text('not a folder')
    try:
        from dcinet_jax import evaluate_checkpoint
        monkeypatch.setattr(evaluate_checkpoint, 'restore_for_eval',
                            lambda *a, **k: pytest.fail('restored before checking'))
        message = _fails(['eval', *args])
    finally:
        (workdir / 'eval').unlink()
    assert re.match(r'dcinet eval: error: cannot write the evaluation results to \S+/run/'
                    r'eval: it exists and is not a folder\n', message), message


def test_eval_prints_its_results_when_writing_them_fails(checkpoint, monkeypatch, capsys):
    workdir, args = checkpoint
    from dcinet_jax.evaluators import report
    monkeypatch.setattr(report, 'save_results', _read_only)
    message = _fails(['eval', *args])
    assert message.splitlines()[0] == (
        f'dcinet eval: error: could not write to {workdir}/eval (Read-only file system); '
        'the results are printed above')
    out = capsys.readouterr().out
    assert 'i2t' in out and 'a2all' in out
    assert re.search(r'\| 0\.\d{3} \|', out), out   # the computed mAP table


def test_report_refuses_an_existing_file_as_out(checkpoint, tmp_path, monkeypatch):
    _, args = checkpoint
    (tmp_path / 'page').write_text('mine')
    from dcinet_jax.search import gallery
    monkeypatch.setattr(gallery, 'compute_gallery',
                        lambda *a, **k: pytest.fail('computed before checking'))
    message = _fails(['report', *args, '--out', str(tmp_path / 'page')])
    assert message.splitlines()[0] == (
        f'dcinet report: error: cannot write the report to {tmp_path}/page: it exists and '
        'is not a folder')
    assert (tmp_path / 'page').read_text() == 'mine'


def test_report_prints_the_results_when_writing_the_page_fails(checkpoint, tmp_path,
                                                                monkeypatch, capsys):
    _, args = checkpoint
    from dcinet_jax.html_report import build
    out = tmp_path / 'rep'

    def blocked(folder):
        raise PermissionError(errno.EACCES, 'Permission denied', str(folder / 'figures'))
    monkeypatch.setattr(build, '_clear_previous', blocked)
    message = _fails(['report', *args, '--out', str(out), '--top_k', '2', '--queries', '1'])
    assert message.splitlines()[0] == (
        f'dcinet report: error: could not write to {out} (Permission denied); the results '
        'are printed above')
    assert re.search(r'0\.\d{3}', capsys.readouterr().out)
