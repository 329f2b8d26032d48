"""One training run per workdir: an advisory lock file naming the host and pid that hold it.

Two runs on one workdir would interleave checkpoint saves and fail at random (or both
"succeed" with a mixed history), so the second is refused with one line naming the
first. The lock is a kernel `flock` on `<workdir>/train.lock`: it disappears with the
process that held it, so a lock file left by a killed run is recognised as stale and
taken over (the takeover is reported). In a multi-process run only process 0 locks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

LOCK_FILE = 'train.lock'


class WorkdirBusyError(ValueError):
    """Another live training run holds the workdir."""


class WorkdirLock:
    """Context manager: holds the workdir's lock for the duration of a training run.

    `lock_file`, `user` and `flag` let other one-at-a-time users of a folder (a sweep
    on its root: `sweep.lock`, 'sweep', '--root') share the mechanism and the message.
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
                 lock_file: str = LOCK_FILE, user: str = 'training run',
                 flag: str = '--workdir'):
        self.path = Path(workdir) / lock_file
        self.enabled = enabled
        self.user, self.flag = user, flag
        self._fd: int | None = None

    def __enter__(self) -> 'WorkdirLock':
        if not self.enabled:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _describe(_read(self.path))
            raise WorkdirBusyError(
                f'{self.path.parent} is in use by another {self.user} ({holder}); wait for '
                f'it to finish, stop it, or choose another {self.flag}') from None
        previous = _read(self.path)
        if previous:
            logging.warning('taking over a stale lock in %s: the run that held it (%s) '
                            'ended without releasing it', self.path.parent, _describe(previous))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                                 'since': time.strftime('%Y-%m-%d %H:%M:%S')}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file means "released cleanly"
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def holder_if_busy(workdir: str | os.PathLike, lock_file: str = LOCK_FILE) -> str | None:
    """'pid P on host H, since T' when a live process holds the lock, else None (the
    lock is only tested: taken and released at once, its file left as it was)."""
    path = Path(workdir) / lock_file
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return _describe(_read(path))
    finally:
        os.close(fd)   # closing releases a lock taken here
    return None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or '{}')
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return 'holder unknown'
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
