"""Checkpoint faults as one line each: the error types, and the noise they bring along.

Why a module of its own: orbax and tensorstore report a failed read or write as pages
of asyncio tracebacks, pybind object reprs and expected warnings. Here they become
CorruptCheckpointError (step and file), CheckpointMismatchError (what differs),
DiskFullError (what a rerun will do); `checkpoints` raises them.
"""

from __future__ import annotations

import errno
import logging
import re
import sys
from typing import Any


# Orbax warnings that are expected here: saves between evaluations carry no metrics, and
# readers open directories read-only on purpose.
_ORBAX_NOISE = ('Requested `tracked_metric`', 'read_only=True, setting save_interval_steps',
                'Given directory is read only')


class _DropOrbaxNoise(logging.Filter):
    """Drops the expected orbax warnings listed in _ORBAX_NOISE."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in _ORBAX_NOISE)


logging.getLogger('absl').addFilter(_DropOrbaxNoise())


def _drop_closed_loop_noise(hook):
    """After a failed restore, tensorstore callbacks still finishing report 'Event loop
    is closed' on orbax's already closed asyncio loop as unraisable exceptions: pages of
    tracebacks after the one-line error. Those (and only those) are dropped."""
    def unraisable(args):
        if isinstance(args.exc_value, RuntimeError) and 'Event loop is closed' in str(
                args.exc_value):
            return
        hook(args)
    unraisable.drops_closed_loop_noise = True
    return unraisable


if not getattr(sys.unraisablehook, 'drops_closed_loop_noise', False):
    sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)


class CorruptCheckpointError(ValueError):
    """A saved step cannot be read back; names the step and the file at fault."""

    def __init__(self, step: int, where: str, detail: str):
        self.step, self.where, self.detail = step, where, detail
        super().__init__(f'checkpoint step {step} is corrupt ({where}: {detail})')


class CheckpointMismatchError(ValueError):
    """A saved step was written by a differently configured model."""


class DiskFullError(OSError):
    """No room for a checkpoint; raised at the save that does not fit."""


class OneLineDiskErrors:
    """Turns an out-of-space failure anywhere in a save (often an async one surfacing at
    the next save) into one DiskFullError line instead of pages of asyncio tracebacks."""

    def __init__(self, ckpt: Any, step: int):  # a checkpoints.Checkpointer
        self.ckpt, self.step = ckpt, step

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, DiskFullError):
            return False
        e = error
        while e is not None:
            if getattr(e, 'errno', None) == errno.ENOSPC or 'No space left' in str(e):
                raise DiskFullError(
                    errno.ENOSPC, f'disk full while writing checkpoints to '
                    f'{self.ckpt.directory}; free space and run the same command again to '
                    f'{self.ckpt.resume_point()}') from None
            e = e.__cause__ or e.__context__
        return False


def size_text(n: int) -> str:
    return f'{n / 2**20:.0f} MiB' if n >= 2**20 else f'{max(n, 1) / 2**10:.0f} KiB'


def first_line(e: BaseException) -> str:
    """The first line of an error, without Python object reprs (pybind handles)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r'<[^<>]* object at 0x[0-9a-fA-F]+>', '', text).strip(' :;,') \
        or type(e).__name__
    return text if len(text) < 300 else text[:300] + '...'
