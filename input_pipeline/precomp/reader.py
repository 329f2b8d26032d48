"""The SCAN "precomp" image-text format: memory-mapped region features + caption files.

A precomp folder (written up in `docs/hslm_data.md`) holds, per split
(`train`, `dev`, `test`, `testall`):

- `<split>_ims.npy`: float32 (N_img, R, D) region features (R = 36, D = 2048 for the
  bottom-up-attention releases). COCO's train file is ~33 GB, so it is memory-mapped
  and only the rows a batch needs are ever read.
- `<split>_caps.txt`: UTF-8, one caption per line (stripped, as the reference does);
  lines 5i..5i+4 describe image i.
- `<split>_ids.txt` (optional): one image id per row of the features file.

The image-index rule (reference loader): if N_img ≠ N_caps, caption c uses feature row
c // 5 (N_caps must then be 5·N_img); if N_img = N_caps (some releases repeat each
image's row for its 5 captions), caption c uses row c. Either way the split has
N_caps / 5 distinct images, and distinct image i is row `caption_image[5 i]` — rows
0, 1, 2, ... in the usual layout, rows 0, 5, 10, ... in the repeated one (the reference
evaluation keeps every 5th per-caption image the same way). Its captions are 5i..5i+4.

Training: an epoch is one shuffled pass over the captions (each with its image); the
last partial batch is dropped so every step has the same shapes. `train_batches` is a
tf.data pipeline deterministic in (seed, step), so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from input_pipeline.precomp import captions as caps_lib
from input_pipeline import atomic, samplers
from input_pipeline.errors import DataError
# The file names and the 5-captions rule are the releases' (written once in manifest.py).
from input_pipeline.precomp.manifest import CAPTIONS_PER_IMAGE, file_names  # noqa: F401

SPLITS: tuple[str, ...] = ('train', 'dev', 'test', 'testall')
TAG_CAPTION_ORDER = 0x5C  # random-stream tag of the per-epoch caption permutation


@dataclasses.dataclass
class PrecompSplit:
    """One split of a precomp folder. `images` is a read-only np.memmap: index it with
    the rows you need (`images[rows]` reads just those rows)."""
    name: str
    images: np.ndarray            # float32 (N_img, R, D), memory-mapped
    captions: list[str]           # N_caps stripped lines
    caption_image: np.ndarray     # int64 (N_caps,): the feature row of caption c
    ids: list[str] | None         # N_img image ids, None without an _ids.txt
    folder: str = ''              # the precomp folder it was read from (for messages)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    @property
    def num_images(self) -> int:
        """Distinct images: N_caps / 5 in both layouts."""
        return len(self.captions) // CAPTIONS_PER_IMAGE

    @property
    def image_rows(self) -> np.ndarray:
        """int64 (num_images,): the feature row of each distinct image, in order."""
        return self.caption_image[::CAPTIONS_PER_IMAGE]

    @property
    def repeated_rows(self) -> bool:
        """True for the N_img = N_caps layout (one feature row per caption)."""
        return self.images.shape[0] == len(self.captions)

    @property
    def region_count(self) -> int:
        return int(self.images.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.images.shape[2])


def open_split(data_dir: str | os.PathLike, split: str) -> PrecompSplit:
    """Open `<data_dir>/<split>_{ims.npy,caps.txt,ids.txt}`; bad files raise DataError
    naming the file (and line)."""
    root = Path(data_dir)
    names = file_names(split)
    images = _open_features(root / names['images'])
    captions = _read_lines(root / names['captions'])
    n_img, n_caps = images.shape[0], len(captions)
    cap_path = os.fspath(root / names['captions'])
    if n_caps == 0:
        raise DataError(cap_path, 'no captions')
    if n_caps == CAPTIONS_PER_IMAGE * n_img:
        caption_image = np.arange(n_caps, dtype=np.int64) // CAPTIONS_PER_IMAGE
    elif n_caps == n_img:
        if n_caps % CAPTIONS_PER_IMAGE:
            raise DataError(cap_path, f'{n_caps} captions with one feature row each is not '
                                      f'{CAPTIONS_PER_IMAGE} captions per image')
        caption_image = np.arange(n_caps, dtype=np.int64)
    else:
        raise DataError(cap_path, f'{n_caps} captions for {n_img} feature rows in '
                                  f'{names["images"]}: expected {CAPTIONS_PER_IMAGE * n_img} '
                                  f'({CAPTIONS_PER_IMAGE} per image) or {n_img} (one per row)')
    ids = None
    ids_path = root / names['ids']
    if ids_path.exists():
        ids = _read_lines(ids_path)
        if len(ids) != n_img:
            raise DataError(os.fspath(ids_path), f'{len(ids)} ids for {n_img} feature rows')
    return PrecompSplit(split, images, captions, caption_image, ids, folder=os.fspath(root))


def _open_features(path: Path) -> np.ndarray:
    p = os.fspath(path)
    if not path.exists():
        raise DataError(p, 'region feature file not found')
    try:
        images = np.load(p, mmap_mode='r', allow_pickle=False)
    except ValueError as e:
        raise DataError(p, f'not a .npy array file: {e}') from None
    if images.dtype != np.float32:
        raise DataError(p, f'dtype is {images.dtype}, expected float32 region features')
    if images.ndim != 3:
        raise DataError(p, f'shape is {images.shape}, expected 3 dimensions (images, regions, dim)')
    if not images.flags.c_contiguous:
        raise DataError(p, 'array is stored in Fortran order; rows could not be read one by one')
    return images


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, each stripped (the reference's `line.strip()`)."""
    p = os.fspath(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(p, 'file not found') from None
    lines = data.split(b'\n')
    if lines and lines[-1] == b'':
        lines.pop()
    out = []
    for i, raw in enumerate(lines):
        try:
            out.append(raw.decode('utf-8-sig' if i == 0 else 'utf-8').strip())
        except UnicodeDecodeError as e:
            raise DataError(p, f'not UTF-8 ({e.reason} at byte {e.start})', line=i + 1) from None
    return out


# ----------------------------------------------------------------------------- captions

def encode_captions(split: PrecompSplit, vocab: caps_lib.Vocab, *,
                    max_length: int | None = None,
                    cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 (N_caps, L), lengths int32 (N_caps,)) of every caption, padded to
    L = max_length or bucket_length(longest caption with <start>/<end>).

    Tokenizing is the slow part (COCO's 566k train captions take minutes), so with
    `cache_dir` the result is kept in `<cache_dir>/<split>_tokens_<digest>.npz`, the digest
    covering the captions, the vocabulary, max_length and the nltk version: any change
    gives a new file, never a stale one.
    """
    path = None
    if cache_dir is not None:
        digest = _token_digest(split, vocab, max_length)
        path = Path(cache_dir) / f'{split.name}_tokens_{digest}.npz'
        if path.is_file():
            with np.load(path) as cached:
                return cached['tokens'], cached['lengths']
    ids = [vocab.encode(c) for c in split.captions]
    longest = max(len(x) for x in ids)
    length = caps_lib.bucket_length(longest) if max_length is None else int(max_length)
    tokens, lengths = caps_lib.pad_tokens(ids, length)
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, tokens=tokens, lengths=lengths)
        atomic.atomic_write_bytes(path, buffer.getvalue())
    return tokens, lengths


def _token_digest(split: PrecompSplit, vocab: caps_lib.Vocab, max_length: int | None) -> str:
    import nltk
    h = hashlib.sha256()
    for part in (caps_lib.TOKENIZER_RULE, nltk.__version__, str(max_length),
                 '\n'.join(vocab.idx2word), '\n'.join(split.captions)):
        h.update(part.encode('utf-8') + b'\0')
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- training

def num_train_steps_per_epoch(num_captions: int, batch_size: int) -> int:
    """Full global batches in one pass over the captions (the partial one is dropped)."""
    steps = int(num_captions) // int(batch_size)
    if steps == 0:
        raise ValueError(f'batch size {batch_size} exceeds the {num_captions} training captions')
    return steps


def caption_order(num_captions: int, seed: int, epoch: int) -> np.ndarray:
    """int64 (N_caps,): the shuffled caption order of one epoch."""
    return samplers.rng(seed, epoch, TAG_CAPTION_ORDER).permutation(num_captions)


def train_batches(split: PrecompSplit, tokens: np.ndarray, lengths: np.ndarray, *,
                  batch_size: int, seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, prefetch: int = 2) -> Iterator[dict]:
    """Endless iterator of this process's share of each global batch from `start_step`.

    Yields {'images': float32 (b, R, D), 'tokens': int32 (b, L), 'lengths': int32 (b,),
    'image_index': int32 (b,)} with b = batch_size / process_count; 'image_index' is the
    distinct image of each caption (c // 5), so two captions of one image share it.
    Global step s is caption_order(seed, s // spe) cut into batches; process p takes
    slots [p b, (p+1) b) of it. Only the b feature rows a batch needs are read.
    """
    n = split.num_captions
    if tokens.shape[0] != n or lengths.shape != (n,):
        raise ValueError(f'tokens {tokens.shape} / lengths {lengths.shape} do not match the '
                         f'{n} captions of split {split.name!r}')
    if start_step < 0:
        raise ValueError(f'start_step must be >= 0, got {start_step}')
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} outside [0, {process_count})')
    b = samplers.local_batch(batch_size, process_count)
    spe = num_train_steps_per_epoch(n, batch_size)
    lo = process_index * b
    order = functools.lru_cache(maxsize=2)(lambda epoch: caption_order(n, seed, epoch))
    images, caption_image = split.images, split.caption_image
    tokens = np.asarray(tokens, np.int32)
    lengths = np.asarray(lengths, np.int32)

    def fetch(step):
        epoch, t = divmod(int(step), spe)
        idx = order(epoch)[t * batch_size + lo: t * batch_size + lo + b]
        return (gather_rows(images, caption_image[idx]), tokens[idx], lengths[idx],
                (idx // CAPTIONS_PER_IMAGE).astype(np.int32))

    R, D, L = images.shape[1], images.shape[2], tokens.shape[1]

    def to_batch(step):
        ims, tok, lens, img = tf.numpy_function(fetch, [step],
                                                [tf.float32, tf.int32, tf.int32, tf.int32])
        ims.set_shape([b, R, D])
        tok.set_shape([b, L])
        lens.set_shape([b])
        img.set_shape([b])
        return {'images': ims, 'tokens': tok, 'lengths': lens, 'image_index': img}

    ds = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(max(1, int(prefetch)))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).as_numpy_iterator()


def gather_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 images[rows], reading each distinct row once in file order."""
    unique, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(images[unique], np.float32)[inverse.reshape(-1)]


# ----------------------------------------------------------------------------- evaluation

@dataclasses.dataclass
class EvalArrays:
    """What a retrieval evaluation needs from one split.

    images: the split's memmap; image_rows int64 (N,): the feature row of each distinct
    image (read them with `image_blocks`); tokens int32 (5N, L), lengths int32 (5N,):
    the captions; caption_image int64 (5N,): the distinct image (position in
    image_rows) each caption belongs to, = c // 5.
    """
    images: np.ndarray
    image_rows: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    caption_image: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.image_rows.shape[0])

    @property
    def num_captions(self) -> int:
        return int(self.tokens.shape[0])

    def image_blocks(self, block_size: int) -> Iterator[tuple[np.ndarray, int]]:
        """(float32 (block_size, R, D), n_valid) for consecutive blocks of the distinct
        images; the last block is zero-padded to block_size (static shapes)."""
        rows = self.image_rows
        for start in range(0, rows.shape[0], block_size):
            part = rows[start:start + block_size]
            block = gather_rows(self.images, part)
            if part.shape[0] < block_size:
                pad = np.zeros((block_size - part.shape[0],) + block.shape[1:], np.float32)
                block = np.concatenate([block, pad])
            yield block, int(part.shape[0])


def warn_unknown_captions(tokens: np.ndarray, where: str) -> float:
    """Warns when captions hold no vocabulary word (only <unk> between the markers, or
    nothing): every such caption gets the same embedding, every image ties on it, and
    recall comes out at its tie-broken floor (rsum about 20 when all are) instead of
    saying the captions are unusable. Returns the fraction of such captions."""
    if tokens.shape[0] == 0:
        return 0.0
    blank = ~(tokens > caps_lib.UNK).any(axis=1)
    share = float(blank.mean())
    if blank.all():
        logging.warning('%s: none of the %d evaluated captions has a word of the '
                        'vocabulary (all empty or unknown words): every caption scores the '
                        'same and the recall figures mean nothing; check the captions file '
                        'and the vocabulary (data.vocab_path)', where, tokens.shape[0])
    elif share > 0.5:
        logging.warning('%s: %d of %d evaluated captions (%.0f%%) have no word of the '
                        'vocabulary; their recall is at the tie floor', where,
                        int(blank.sum()), tokens.shape[0], 100 * share)
    return share


def eval_arrays(split: PrecompSplit, vocab: caps_lib.Vocab, *, max_images: int | None = None,
                max_length: int | None = None,
                cache_dir: str | os.PathLike | None = None) -> EvalArrays:
    """The first `max_images` distinct images (all by default; the reference validates on
    dev's first 1,000) with their 5 captions each, captions encoded and padded
    (`encode_captions`, cached under `cache_dir` if given)."""
    n = split.num_images if max_images is None else min(int(max_images), split.num_images)
    sub = dataclasses.replace(split, captions=split.captions[:CAPTIONS_PER_IMAGE * n],
                              caption_image=split.caption_image[:CAPTIONS_PER_IMAGE * n])
    tokens, lengths = encode_captions(sub, vocab, max_length=max_length, cache_dir=cache_dir)
    warn_unknown_captions(tokens, os.path.join(split.folder, file_names(split.name)['captions']))
    return EvalArrays(split.images, sub.image_rows.copy(), tokens, lengths,
                      np.arange(CAPTIONS_PER_IMAGE * n, dtype=np.int64) // CAPTIONS_PER_IMAGE)
