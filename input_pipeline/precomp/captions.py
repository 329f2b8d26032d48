"""Captions → word ids: the tokenizer, the vocabulary (SCAN JSON schema) and padding.

The rules follow the public SCAN/SGRAF/HSLM code (written up in `docs/hslm_data.md`):

- tokenize: lower-case, then NLTK's Treebank word tokenizer. We call it with
  `preserve_line=True`, which needs no downloaded NLTK data (the default call first
  splits sentences with the downloadable punkt model). The only difference: a caption
  holding several sentences is not split at inner sentence ends, so "dog. a cat"
  gives 'dog.' rather than 'dog', '.' — rare in one-line captions, and the vocabulary
  built here uses the same rule, so train and eval agree.
- ids 0-3 are '<pad>', '<start>', '<end>', '<unk>'; a caption is encoded as
  <start> w1 ... wn <end> (its length counts both markers), unknown words → <unk>.
- the vocab file is the reference's JSON: {"word2idx": {word: id}, "idx2word":
  {"id": word}, "idx": size}. Reference vocabularies order words by Python Counter
  iteration, which cannot be reproduced, so only a saved JSON reproduces their ids;
  `Vocab.build` orders words by sorted code points instead (deterministic and
  independent of caption order).
- static shapes: captions are padded with <pad> to a length rounded up to a multiple
  of 8 (`bucket_length`), never truncated; `lengths` carries the true lengths.

nltk is an optional dependency (`pip install 'dcinet-jax[text]'`), imported on first use.
"""

from __future__ import annotations

import collections
import functools
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from input_pipeline import atomic
from input_pipeline.errors import DataError

PAD, START, END, UNK = 0, 1, 2, 3
PAD_WORD, START_WORD, END_WORD, UNK_WORD = '<pad>', '<start>', '<end>', '<unk>'
RESERVED_WORDS: tuple[str, ...] = (PAD_WORD, START_WORD, END_WORD, UNK_WORD)
MIN_WORD_COUNT = 4     # reference threshold: words seen fewer times in train+dev → <unk>
LENGTH_MULTIPLE = 8    # padded caption lengths are multiples of this
TOKENIZER_RULE = 'lower+nltk-treebank-preserve-line'  # names the rule in token caches


class VocabError(DataError):
    """A vocabulary JSON file is missing, unreadable or not in the SCAN schema."""


@functools.lru_cache(maxsize=1)
def _word_tokenize():
    try:
        from nltk.tokenize import word_tokenize
    except ImportError as e:
        raise ImportError("caption tokenization needs nltk: pip install 'dcinet-jax[text]' "
                          "(or pip install nltk)") from e
    return functools.partial(word_tokenize, preserve_line=True)


def tokenize(caption: str) -> list[str]:
    """Lower-cased Treebank word tokens of one caption (offline: no NLTK data needed)."""
    return _word_tokenize()(caption.lower())


class Vocab:
    """Word ↔ id tables. `idx2word` is a list (position = id), `word2idx` a dict."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[:len(RESERVED_WORDS)]) != RESERVED_WORDS:
            raise ValueError(f'a vocabulary must start with {RESERVED_WORDS}, got '
                             f'{tuple(words[:len(RESERVED_WORDS)])}')
        self.idx2word: list[str] = words
        self.word2idx: dict[str, int] = {w: i for i, w in enumerate(words)}
        if len(self.word2idx) != len(words):
            dup = [w for w, n in collections.Counter(words).items() if n > 1]
            raise ValueError(f'duplicate words in a vocabulary: {dup[:5]}')

    def __len__(self) -> int:
        return len(self.idx2word)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.idx2word == other.idx2word

    def __repr__(self) -> str:
        return f'Vocab({len(self)} words)'

    def encode(self, caption: str) -> list[int]:
        """[<start>, ids of the caption's tokens (unknown → <unk>), <end>]."""
        w2i = self.word2idx
        return [START] + [w2i.get(t, UNK) for t in tokenize(caption)] + [END]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of `ids` joined by spaces, without <pad>, <start>, <end> (<unk> kept)."""
        return ' '.join(self.idx2word[int(i)] for i in ids if int(i) not in (PAD, START, END))

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = MIN_WORD_COUNT) -> Vocab:
        """The reserved words, then every token seen at least `min_count` times in
        `captions`, in sorted (code point) order."""
        counts = collections.Counter()
        for caption in captions:
            counts.update(tokenize(caption))
        words = sorted(w for w, n in counts.items() if n >= min_count and w not in RESERVED_WORDS)
        return cls(list(RESERVED_WORDS) + words)

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a SCAN-schema vocab JSON; any deviation is a VocabError naming the field."""
        path = os.fspath(path)
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except FileNotFoundError:
            raise VocabError(path, 'vocabulary file not found') from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VocabError(path, f'not a JSON file: {e}') from None
        if not isinstance(data, dict):
            raise VocabError(path, f'expected a JSON object, got {type(data).__name__}')
        for field in ('word2idx', 'idx2word', 'idx'):
            if field not in data:
                raise VocabError(path, f"missing field '{field}'")
        w2i, i2w, size = data['word2idx'], data['idx2word'], data['idx']
        if not isinstance(w2i, dict) or not isinstance(i2w, dict):
            raise VocabError(path, "'word2idx' and 'idx2word' must be JSON objects")
        if not isinstance(size, int) or isinstance(size, bool) or size != len(w2i):
            raise VocabError(path, f"'idx' must be the number of words {len(w2i)}, got {size!r}")
        words: list[str | None] = [None] * size
        for w, i in w2i.items():
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < size:
                raise VocabError(path, f"'word2idx'[{w!r}] = {i!r} is not an id in [0, {size})")
            if words[i] is not None:
                raise VocabError(path, f"'word2idx' gives id {i} to both {words[i]!r} and {w!r}")
            words[i] = w
        if len(i2w) != size:
            raise VocabError(path, f"'idx2word' has {len(i2w)} entries, 'word2idx' {size}")
        for key, w in i2w.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) < size) \
                    or words[int(key)] != w:
                raise VocabError(path, f"'idx2word'[{key!r}] = {w!r} disagrees with 'word2idx'")
        for i, w in enumerate(RESERVED_WORDS):
            if words[i] != w:
                raise VocabError(path, f"'word2idx': id {i} must be {w!r}, got {words[i]!r}")
        return cls(words)

    def save(self, path: str | os.PathLike) -> None:
        """Write the SCAN-schema JSON atomically (a temporary file, then a rename)."""
        path = os.fspath(path)
        data = {'word2idx': dict(self.word2idx),
                'idx2word': {str(i): w for i, w in enumerate(self.idx2word)},
                'idx': len(self)}
        atomic.atomic_write_text(path, json.dumps(data))


# ----------------------------------------------------------------------------- padding

def bucket_length(n: int, multiple: int = LENGTH_MULTIPLE) -> int:
    """n rounded up to a multiple of `multiple` (at least `multiple`)."""
    if multiple <= 0:
        raise ValueError(f'multiple must be positive, got {multiple}')
    return max(1, -(-int(n) // multiple)) * multiple


def pad_tokens(id_lists: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 (B, length) padded with <pad>, lengths int32 (B,)); no truncation:
    a caption longer than `length` is an error naming it."""
    tokens = np.full((len(id_lists), int(length)), PAD, np.int32)
    lengths = np.zeros(len(id_lists), np.int32)
    for i, ids in enumerate(id_lists):
        if len(ids) > length:
            raise ValueError(f'caption {i} has {len(ids)} tokens (with <start>/<end>), more than '
                             f'the padded length {length}; raise max_length')
        tokens[i, :len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths
