"""Text files → fixed-length character index sequences (SPEC 2.3).

Index 0 is padding; character alphabet[i] has index i + 1. Characters outside the
alphabet are dropped (not mapped to an "unknown" index), then the sequence is
truncated or zero-padded to `length`, as in the reference char-CNN code.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from input_pipeline.errors import DecodeError
from input_pipeline.spec import ALPHABETS, TEXT_MODES, VOCAB_SIZES


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


def read_text(path: str | os.PathLike, *, mode: str = 'whole', errors: str = 'strict') -> str:
    """The text of one sample file.

    mode 'whole' (default): every non-empty line, stripped, joined by one space.
    mode 'last_line': the last non-empty line, stripped. The reference code keeps the
    file's last line; files there hold one paragraph, so this is the same text, and
    skipping trailing blank lines avoids an empty sample.

    The file is UTF-8 (a leading BOM is ignored). Undecodable bytes raise DecodeError
    naming the file and line; `errors='replace'` instead turns them into U+FFFD,
    which no alphabet contains, so they are dropped by `encode_text`. A file with no
    text raises DecodeError: an empty text cannot be a sample.
    """
    if mode not in TEXT_MODES:
        raise ValueError(f'unknown text mode {mode!r}; expected one of {TEXT_MODES}')
    path = os.fspath(path)
    try:
        data = open(path, 'rb').read()
    except OSError as e:
        raise DecodeError(path, f'cannot read text file: {e.strerror or e}') from None
    try:
        text = data.decode('utf-8-sig', errors=errors)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise DecodeError(path, f'not valid UTF-8 ({e.reason}, byte {e.start}: '
                                f'{data[e.start:e.start + 1]!r}); pass errors="replace" to '
                                'drop undecodable bytes', line=line) from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DecodeError(path, 'text file is empty (no non-blank line)')
    return ' '.join(lines) if mode == 'whole' else lines[-1]


def load_text(path: str | os.PathLike, *, alphabet: str = 'lower_space', length: int = 448,
              mode: str = 'whole', errors: str = 'strict') -> np.ndarray:
    """read_text + encode_text. Raises DecodeError when nothing of the text is in the
    alphabet (the sample would be all padding)."""
    ids = encode_text(read_text(path, mode=mode, errors=errors), alphabet=alphabet,
                      length=length)
    if not ids.any():
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
