"""Per-item encoding shared by `dcinet prepare` and the `fg_xmedia` TFDS builder.

One list entry (an image, a spectrogram image, raw audio or a text file) becomes the
bytes the builder stores: a JPEG of the square-resized RGB image, or the text's
character ids. With `StoreSpec.store_source_jpegs`, an image or video frame that is
already a small RGB JPEG is stored as its own bytes instead, and the training input
resizes it (`docs/data.md#source-jpegs`). The pool helpers here run that over a whole
list in list order.

No TensorFlow and no TFDS at import time: spawned pool workers import this module to
run `encode_entry`, and must start fast. The stored layout is described in
`docs/data.md`.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import io
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from input_pipeline.fgxmedia import lists
from input_pipeline.errors import DataError, DecodeError

# JPEG quality of the stored images. 95 with 4:4:4 chroma (no subsampling) keeps the
# error far below what the network can see (PSNR > 40 dB on photos, ~1 grey level mean
# absolute error), keeps the sharp colour edges of spectrograms, and is still ~3x
# smaller and faster to decode than PNG; JPEG also allows decode_and_crop_jpeg.
JPEG_QUALITY = 95
# Below this many items in total the pool is threads: spawning processes (each
# importing numpy/PIL/soundfile) would cost more than it saves.
MIN_ITEMS_FOR_PROCESSES = 512
POOL_KINDS = ('auto', 'thread', 'process')
# Media whose JPEG sources may be stored as they are (store_source_jpegs): photos and
# video frames. Spectrograms are always rendered or re-encoded at resize_size.
SOURCE_JPEG_MODALITIES = ('image', 'video')
SOURCE_SUFFIX = '_srcjpeg'   # the variant-name mark of store_source_jpegs


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """The data-config fields that change the stored bytes (and so name a variant)."""
    resize_size: int = 512
    text_length: int = 448
    alphabet: str = 'lower_space'
    text_mode: str = 'whole'
    # Keep small RGB JPEG photos/frames as their source bytes (see SOURCE_JPEG_MODALITIES).
    # False when a config lacks the field: configs written before it existed read the
    # variant they were prepared as.
    store_source_jpegs: bool = False

    @classmethod
    def from_data_config(cls, data_config: Any) -> 'StoreSpec':
        return cls(resize_size=int(data_config.resize_size),
                   text_length=int(data_config.text_length),
                   alphabet=str(data_config.alphabet), text_mode=str(data_config.text_mode),
                   store_source_jpegs=bool(getattr(data_config, 'store_source_jpegs', False)))

    @property
    def name(self) -> str:
        """Deterministic builder-config name, e.g. `r512_t448_lower_space_whole`, and
        `r512_t448_lower_space_whole_srcjpeg` with store_source_jpegs (the other
        storage format must never be read as this one, so it is another variant)."""
        base = f'r{self.resize_size}_t{self.text_length}_{self.alphabet}_{self.text_mode}'
        return base + (SOURCE_SUFFIX if self.store_source_jpegs else '')


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8[H, W, 3] → JPEG bytes (4:4:4, see JPEG_QUALITY)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img, 'RGB').save(buf, format='JPEG', quality=quality, subsampling=0)
    return buf.getvalue()


def encode_entry(root: str, entry: lists.ListEntry, spec: StoreSpec, *,
                 text_errors: str = 'strict') -> dict[str, Any]:
    """Decode one list entry into what the builder stores: {'image': JPEG bytes} for
    image-like modalities (image, video frames, audio) or {'text': uint8[L]}.
    `text_errors` is the `errors=` of text.read_text (undecodable bytes).

    With spec.store_source_jpegs, a photo or frame that decodes (fully, with PIL: a
    damaged file fails exactly as without the flag) to a plain RGB JPEG no larger than
    resize_size is returned as its own bytes, with 'source': True; anything else is
    resized and re-encoded as without the flag.

    Raises DataError (usually DecodeError) naming the file; a missing file raises
    ListFormatError naming the list file and line.
    """
    from input_pipeline.fgxmedia import audio, images, text  # light modules, imported in workers

    path = lists.resolve_path(root, entry)
    if entry.modality == 'text':
        ids = text.load_text(path, alphabet=spec.alphabet, length=spec.text_length,
                             mode=spec.text_mode, errors=text_errors)
        return {'text': ids}
    r = spec.resize_size
    if entry.modality == 'audio' and audio.is_raw_audio(path):
        img = audio.audio_to_image(path, r)
    else:
        data = images.read_image_file(path)
        img, kind = images.decode_image_kind(data, source=os.fspath(path))
        if (spec.store_source_jpegs and entry.modality in SOURCE_JPEG_MODALITIES
                and images.is_plain_rgb_jpeg(kind, img.shape, r)):
            return {'image': data, 'source': True}
        img = images.resize_center_crop(img, r, r)
    want = (r, r, 3)
    if img.shape != want or img.dtype != np.uint8:
        raise DecodeError(path, f'decoded to {img.dtype}{list(img.shape)}, expected uint8{list(want)}')
    return {'image': encode_jpeg(img)}


def try_encode(args: tuple[str, lists.ListEntry, StoreSpec, str]) -> tuple[bool, Any]:
    """Pool task on (root, entry, spec, text_errors): (True, encoded) or (False,
    DataError). Never raises, so one bad file does not tear down the pool; the caller
    decides to fail or skip."""
    root, entry, spec, text_errors = args
    try:
        return True, encode_entry(root, entry, spec, text_errors=text_errors)
    except DataError as e:
        return False, e
    except Exception as e:  # noqa: BLE001 - any library error becomes a per-file error
        return False, DecodeError(getattr(e, 'filename', None) or entry.path,
                                  f'{type(e).__name__}: {e}')


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any],
                executor: cf.Executor | None, window: int) -> Iterator[Any]:
    """fn over items, results in input order, at most `window` tasks in flight (so
    finished JPEGs do not pile up in memory while the writer catches up)."""
    if executor is None:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def resolve_workers(num_workers: int | None) -> int:
    """Workers to use: `num_workers`, or every core when None/0."""
    return max(1, int(num_workers or os.cpu_count() or 1))


def make_executor(num_items: int, num_workers: int, kind: str = 'auto') -> cf.Executor | None:
    """A pool of `num_workers`: processes for real datasets (decoding holds the GIL in
    parts), threads for tiny ones; None (run inline) for one worker."""
    if kind not in POOL_KINDS:
        raise ValueError(f'unknown pool kind {kind!r}; expected one of {POOL_KINDS}')
    if num_workers <= 1:
        return None
    if kind == 'auto':
        kind = 'process' if num_items >= MIN_ITEMS_FOR_PROCESSES else 'thread'
    if kind == 'thread':
        return cf.ThreadPoolExecutor(num_workers)
    # 'spawn', not fork: the parent has TensorFlow's threads running.
    return cf.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context('spawn'))
