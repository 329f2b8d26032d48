"""Per-file data errors that say exactly which file (and line) is at fault.

A dataset of ~40k files always holds a few bad ones; `dcinet prepare` either stops at
the first or skips and reports them (config `data.on_error`), so every error must
carry the file and, for list files, the line in a machine-readable form.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A problem with one input file.

    `str(err)` reads "path:line: what is wrong" (or "path: what is wrong" without a
    line), the layout compilers use, so editors and terminals can jump to it.
    """

    def __init__(self, path: str | os.PathLike, what: str, *, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        self.what = what
        where = self.path if line is None else f'{self.path}:{line}'
        super().__init__(f'{where}: {what}')

    def __reduce__(self):
        # Keep the fields when the error crosses a process boundary (multiprocessing).
        return (_rebuild, (type(self), self.path, self.what, self.line))


def _rebuild(cls, path, what, line):
    return cls(path, what, line=line)


def with_list_line(err: DataError, list_file: str, line: int) -> DataError:
    """`err` about a media file, saying which list line named that file: the same
    error type and path, with " (listed at list_file:line)" added. An error that
    already points at the list file is returned as it is."""
    if err.path == list_file:
        return err
    return type(err)(err.path, f'{err.what} (listed at {list_file}:{line})', line=err.line)


class ListFormatError(DataError):
    """A list file (`list/<modality>/<split>.txt`, `testlabel.txt`) is malformed or
    points at something that is not there."""


class DecodeError(DataError):
    """A media file (image, audio, text) cannot be read or decoded."""
