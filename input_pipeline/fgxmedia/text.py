"""Text files → fixed-length character index sequences (see `docs/data.md#text-to-character-ids`).

Index 0 is padding; character alphabet[i] has index i + 1. Characters outside the
alphabet are dropped (not mapped to an "unknown" index), then the sequence is
truncated or zero-padded to `length`, as in the reference char-CNN code.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from input_pipeline.errors import DecodeError
from input_pipeline.spec import ALPHABETS, TEXT_ERRORS, TEXT_MODES, VOCAB_SIZES


def vocab_size(alphabet: str = 'lower_space') -> int:
    """Embedding rows needed: the alphabet plus the padding index 0."""
    _alphabet(alphabet)
    return VOCAB_SIZES[alphabet]


@functools.lru_cache(maxsize=None)
def _index_table(alphabet: str) -> dict[str, int]:
    return {c: i + 1 for i, c in enumerate(_alphabet(alphabet))}


def _alphabet(name: str) -> str:
    try:
        return ALPHABETS[name]
    except KeyError:
        raise ValueError(f'unknown alphabet {name!r}; expected one of {tuple(ALPHABETS)}') from None


def encode_text(text: str, *, alphabet: str = 'lower_space', length: int = 448) -> np.ndarray:
    """Character indices of `text`, uint8[length] (0 = padding).

    'lower_space' lower-cases first; 'original' does not, so its upper-case letters
    are dropped like any other character outside the alphabet.
    """
    if length <= 0:
        raise ValueError(f'length must be positive, got {length}')
    table = _index_table(alphabet)
    if alphabet == 'lower_space':
        text = text.lower()
    ids = [table[c] for c in text if c in table][:length]
    out = np.zeros(length, np.uint8)
    out[:len(ids)] = ids
    return out


def decode_text(ids: np.ndarray, alphabet: str) -> str:
    """The inverse of `encode_text` as far as it goes: the characters of the non-padding
    ids (what was dropped or lower-cased stays so); for viewers of prepared texts."""
    chars = _alphabet(alphabet)
    return ''.join(chars[int(i) - 1] for i in np.asarray(ids).reshape(-1) if int(i) > 0)


def read_text(path: str | os.PathLike, *, mode: str = 'whole', errors: str = 'strict') -> str:
    r"""The text of one sample file.

    mode 'whole' (default): every non-empty line, stripped, joined by one space.

    mode 'last_line': the reference reading. The reference loader is described as
    reading only the last line of a file; we read "line" as Python's text-mode file
    iteration defines it: lines end at LF, CR LF or a lone CR (and nowhere else: form
    feed, U+0085 and U+2028 stay inside the line), and a final line break ends the
    last line instead of starting an empty one. So the result is
    `open(path).readlines()[-1]` without its line break: nothing is stripped (spaces
    are kept; space is index 1 of the 'lower_space' alphabet), "a\nb\n" gives "b",
    and a file ending in a blank line ("a\nb\n\n") gives "" (an all-padding sample,
    as in the reference).

    The file is UTF-8 (a leading BOM is ignored). `errors` is bytes.decode's: with
    'strict' undecodable bytes raise DecodeError naming the file, line and byte
    offset; 'replace' turns them into U+FFFD and 'ignore' drops them (U+FFFD is in no
    alphabet, so both lose the same characters). A 0-byte file raises DecodeError,
    and so does a file without a non-blank line in mode 'whole'.
    """
    if mode not in TEXT_MODES:
        raise ValueError(f'unknown text mode {mode!r}; expected one of {TEXT_MODES}')
    if errors not in TEXT_ERRORS:
        raise ValueError(f'unknown errors choice {errors!r}; expected one of {TEXT_ERRORS}')
    path = os.fspath(path)
    try:
        data = open(path, 'rb').read()
    except OSError as e:
        raise DecodeError(path, f'cannot read text file: {e.strerror or e}') from None
    if not data:
        raise DecodeError(path, 'file is empty (0 bytes)')
    try:
        text = data.decode('utf-8-sig', errors=errors)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise DecodeError(path, f'not valid UTF-8 ({e.reason} at byte offset {e.start}: '
                                f'{data[e.start:e.start + 1]!r}); set '
                                '--config.data.text_errors=replace to decode anyway',
                          line=line) from None
    if mode == 'last_line':
        return _last_line(text)
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DecodeError(path, 'text file is empty (no non-blank line)')
    return ' '.join(lines)


def _last_line(text: str) -> str:
    """The last line, line breaks as in Python's universal newlines (LF, CR LF, CR)."""
    lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
    if len(lines) > 1 and lines[-1] == '':
        lines.pop()          # the final break ends the last line
    return lines[-1]


def load_text(path: str | os.PathLike, *, alphabet: str = 'lower_space', length: int = 448,
              mode: str = 'whole', errors: str = 'strict') -> np.ndarray:
    """read_text + encode_text. In mode 'whole' a text of which nothing is in the
    alphabet (the sample would be all padding) raises DecodeError; mode 'last_line'
    keeps such a sample, as the reference does."""
    ids = encode_text(read_text(path, mode=mode, errors=errors), alphabet=alphabet,
                      length=length)
    if mode == 'whole' and not ids.any():
        raise DecodeError(path, f'no character of the text is in the {alphabet!r} alphabet')
    return ids


def position_shift(ids: np.ndarray, k: int) -> np.ndarray:
    """Prepend k padding zeros and keep the length (the tail is cut off)."""
    ids = np.asarray(ids)
    if k < 0:
        raise ValueError(f'shift must be >= 0, got {k}')
    out = np.zeros_like(ids)
    n = ids.shape[-1]
    if k < n:
        out[..., k:] = ids[..., :n - k]
    return out
