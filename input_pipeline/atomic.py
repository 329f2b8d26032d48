"""Writing output files: atomic writes, and the checks that keep computed work from being lost.

A temporary file in the target's folder, flushed and fsynced, then `os.replace`: a
reader (a sweep aggregating runs, a second training process) sees the old file or the
whole new one, never a partial write. `tempfile.mkstemp` creates its file with mode
0600; the finished file gets the mode an ordinary `open()` would have given it
(0666 minus the umask), so `results.json` or `vocab.json` stay readable by the group
and others under the usual umask 022, as every other file the project writes.
Standard library only: both the accelerator side and the input pipeline import it.

Commands that compute for minutes before writing (`dcinet eval`, `dcinet report`) call
`check_writable_folder` first, so a read-only or blocked output place is refused before
the work; a write that still fails afterwards raises `NotWrittenError`, which carries
the computed text so the CLI prints it instead of dropping it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc), else
    by setting and restoring it (os.umask has no read-only form)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (creating its folder); mode 0666 & ~umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` of `text` as UTF-8 (a TypeError for anything but str)."""
    if not isinstance(text, str):
        raise TypeError(f'atomic_write_text: expected str, got {type(text).__name__}')
    atomic_write_bytes(path, text.encode('utf-8'))


class NotWrittenError(OSError):
    """Work was done but its output could not be written; `text` is that output in a
    printable form (the CLI prints it, then this one-line error). Keeps the errno of the
    failed write, so a full disk is still told apart."""

    def __init__(self, where: str | os.PathLike, error: OSError, text: str):
        super().__init__(error.errno, f'could not write to {os.fspath(where)} '
                         f'({error.strerror or error}); the results are printed above')
        self.where, self.text = os.fspath(where), text

    def __str__(self) -> str:
        return self.args[1]


def check_writable_folder(path: str | os.PathLike, purpose: str) -> None:
    """ValueError (one line) unless `path` is, or can be created as, a folder that
    accepts files: a file in the way, a file among its parents, or a read-only place.
    Probed by creating and removing a temporary file in the nearest existing folder
    (permission bits alone miss read-only mounts, and root ignores them)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = 'it exists and' if existing == path else f'{existing}'
        raise ValueError(f'cannot write {purpose} to {path}: {where} is not a folder')
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix='.write-check-')
    except OSError as e:
        raise ValueError(f'cannot write {purpose} to {path}: {existing} is not writable '
                         f'({e.strerror or e})') from None
    os.close(fd)
    os.unlink(probe)
