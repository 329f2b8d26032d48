"""Host arrays that go to disk when large (docs/recall.md#memory).

Why: a learned-head evaluation (HSLM) holds arrays that grow with the gallery: every
caption's word embeddings (N_cap, L, d), every image's regions, the (N_img, N_cap)
score matrix and an ensemble's mean. At COCO 5K that is several GB of host memory
although only one block of each is in use at a time. `host_array` returns a plain
array when it is small and otherwise a memory map of a file in a spill directory, so
host memory stays bounded by the blocks in use; the kernel pages the rest to and from
disk.

The file is unlinked as soon as it is opened: Linux keeps an open file's blocks until
the last mapping goes, so nothing is left behind, even when the process is killed. Its
blocks are reserved up front (`posix_fallocate`), so a full disk is one clear error
here rather than a SIGBUS at the first write into a hole of a sparse file.

Where the files go matters: when the spill directory is a tmpfs (a RAM disk, as `/tmp`
is on some systems), spilled pages still live in memory (as shared memory, swappable);
point `eval.spill_dir` at a real disk there.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ['SPILL_MB', 'Spill', 'host_array', 'stack_rows']

SPILL_MB = 256.0  # arrays above this many MiB go to disk (config.eval.spill_mb)
_MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Spill:
    """Where large host arrays go: arrays of more than `mb` MiB are memory-mapped files
    in `directory` ('' = the system temp dir); `mb` < 0 keeps every array in memory,
    0 spills every non-empty one."""

    mb: float = SPILL_MB
    directory: str = ''

    @classmethod
    def from_config(cls, config: Any) -> 'Spill':
        """From config.eval.spill_mb and config.eval.spill_dir (defaults when absent)."""
        e = getattr(config, 'eval', None)
        e = e if hasattr(e, 'get') else {}
        mb, directory = e.get('spill_mb', SPILL_MB), e.get('spill_dir', '')
        try:
            mb = float(mb)
        except (TypeError, ValueError):
            raise ValueError(f'config.eval.spill_mb={mb!r}: expected a number of MiB '
                             '(< 0: never spill)') from None
        return cls(mb=mb, directory=str(directory or ''))

    def spills(self, nbytes: int) -> bool:
        return self.mb >= 0 and nbytes > 0 and nbytes > self.mb * _MIB


def _spill_dir(spill: Spill, what: str, nbytes: int) -> str:
    where = spill.directory or tempfile.gettempdir()
    need = f'{what} ({nbytes:,} bytes)'
    if not os.path.isdir(where):
        raise ValueError(f'config.eval.spill_dir={where!r} does not exist (a directory); '
                         f'needed to spill {need}')
    if not os.access(where, os.W_OK | os.X_OK):
        raise ValueError(f'config.eval.spill_dir={where!r} is not writable; needed to '
                         f'spill {need}')
    return where


def _mapped(shape: tuple, dtype: np.dtype, what: str, nbytes: int, spill: Spill) -> np.ndarray:
    where = _spill_dir(spill, what, nbytes)
    need = f'{what} ({nbytes:,} bytes)'
    try:
        fd, path = tempfile.mkstemp(prefix='dcinet-spill-', suffix='.bin', dir=where)
    except OSError as err:
        raise ValueError(f'config.eval.spill_dir={where!r}: cannot create a file to spill '
                         f'{need}: {err.strerror}') from err
    with os.fdopen(fd, 'w+b') as f:
        os.unlink(path)        # the open descriptor (then the mapping) keeps the blocks
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                free = os.statvfs(where)
                raise ValueError(
                    f'config.eval.spill_dir={where!r} has no room to spill {need}: '
                    f'{free.f_bavail * free.f_frsize:,} bytes free (set eval.spill_dir '
                    'to a larger disk)') from err
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise ValueError(f'config.eval.spill_dir={where!r}: cannot reserve '
                                 f'{need}: {err.strerror}') from err
            f.truncate(nbytes)  # no reservation on this file system: a sparse file
        return np.memmap(f, dtype=dtype, mode='r+', shape=shape)


def host_array(shape, dtype, *, what: str, spill: Spill | None = None) -> np.ndarray:
    """An uninitialised host array of `shape` and `dtype`: `np.empty` when it takes at
    most `spill.mb` MiB, else an `np.memmap` of an unlinked file in the spill directory
    (a numpy array to every reader). `what` names the array in errors."""
    spill = Spill() if spill is None else spill
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not spill.spills(nbytes):
        return np.empty(shape, dtype)
    return _mapped(shape, dtype, what, nbytes, spill)


def stack_rows(blocks, n: int, *, what: str, spill: Spill | None = None) -> np.ndarray:
    """The row blocks of `blocks` (an iterable of arrays, in order, n rows in all)
    written one after another into one `host_array` made for the first block's
    trailing shape and dtype: `np.concatenate` without holding the list, so encoded
    galleries spill like everything else."""
    out, start = None, 0
    for rows in blocks:
        rows = np.asarray(rows)
        if out is None:
            out = host_array((n,) + rows.shape[1:], rows.dtype, what=what, spill=spill)
        out[start:start + rows.shape[0]] = rows
        start += rows.shape[0]
    return out
