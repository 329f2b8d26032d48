"""`dcinet prepare`: FG-XMedia files on disk → TFDS shards that tf.data only decodes.

The expensive work (audio → spectrogram, image resize, text encoding) runs once here,
in a process pool sized to the machine, and never again per epoch. Each stored image
is an RGB JPEG already resized to `resize_size` square (see `fg_xmedia.py` for the
quality choice), so training only decodes the crop window.

Bad files: with `on_error='fail'` the first bad item (in list order) stops the run
with its `DataError` naming the file (and list line); with `'skip'` every bad item is
left out, listed with its reason in `<prepared dir>/skipped.tsv`, and counted in the
summary. Re-running on a prepared directory only reads its metadata.

This module imports no TensorFlow at import time: the pool workers (spawned
processes) import it to run `encode_entry`, and must start fast.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import dataclasses
import io
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from input_pipeline import lists
from input_pipeline.errors import DataError, DecodeError

ON_ERROR = ('fail', 'skip')
# JPEG quality of the stored images. 95 with 4:4:4 chroma (no subsampling) keeps the
# error far below what the network can see (PSNR > 40 dB on photos, ~1 grey level mean
# absolute error), keeps the sharp colour edges of spectrograms, and is still ~3x
# smaller and faster to decode than PNG; JPEG also allows decode_and_crop_jpeg.
JPEG_QUALITY = 95
SKIPPED_REPORT = 'skipped.tsv'
# Below this many items in total the pool is threads: spawning processes (each
# importing numpy/PIL/soundfile) would cost more than it saves.
MIN_ITEMS_FOR_PROCESSES = 512


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """The data-config fields that change the stored bytes (and so name a variant)."""
    resize_size: int = 512
    text_length: int = 448
    alphabet: str = 'lower_space'
    text_mode: str = 'whole'

    @classmethod
    def from_data_config(cls, data_config: Any) -> 'StoreSpec':
        return cls(resize_size=int(data_config.resize_size),
                   text_length=int(data_config.text_length),
                   alphabet=str(data_config.alphabet), text_mode=str(data_config.text_mode))

    @property
    def name(self) -> str:
        """Deterministic builder-config name, e.g. `r512_t448_lower_space_whole`."""
        return f'r{self.resize_size}_t{self.text_length}_{self.alphabet}_{self.text_mode}'


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8[H, W, 3] → JPEG bytes (4:4:4, see JPEG_QUALITY)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img, 'RGB').save(buf, format='JPEG', quality=quality, subsampling=0)
    return buf.getvalue()


def encode_entry(root: str, entry: lists.ListEntry, spec: StoreSpec) -> dict[str, Any]:
    """Decode one list entry into what the builder stores: {'image': JPEG bytes} for
    image-like modalities (image, video frames, audio) or {'text': uint8[L]}.

    Raises DataError (usually DecodeError) naming the file; a missing file raises
    ListFormatError naming the list file and line.
    """
    from input_pipeline import audio, images, text  # light modules, imported in workers

    path = lists.resolve_path(root, entry)
    if entry.modality == 'text':
        ids = text.load_text(path, alphabet=spec.alphabet, length=spec.text_length,
                             mode=spec.text_mode)
        return {'text': ids}
    if entry.modality == 'audio' and audio.is_raw_audio(path):
        img = audio.audio_to_image(path, spec.resize_size)
    else:
        img = images.load_image(path, spec.resize_size, spec.resize_size)
    want = (spec.resize_size, spec.resize_size, 3)
    if img.shape != want or img.dtype != np.uint8:
        raise DecodeError(path, f'decoded to {img.dtype}{list(img.shape)}, expected uint8{list(want)}')
    return {'image': encode_jpeg(img)}


def _work(args: tuple[str, lists.ListEntry, StoreSpec]) -> tuple[bool, Any]:
    """Pool task: (True, encoded) or (False, DataError). Never raises, so one bad
    file does not tear down the pool; the caller decides to fail or skip."""
    root, entry, spec = args
    try:
        return True, encode_entry(root, entry, spec)
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


def make_executor(num_items: int, num_workers: int | None = None,
                  kind: str = 'auto') -> cf.Executor | None:
    """A pool sized to the cores: processes for real datasets (decoding holds the
    GIL in parts), threads for tiny ones; None when one worker is asked for."""
    n = num_workers or os.cpu_count() or 1
    if n <= 1:
        return None
    if kind == 'auto':
        kind = 'process' if num_items >= MIN_ITEMS_FOR_PROCESSES else 'thread'
    if kind == 'thread':
        return cf.ThreadPoolExecutor(n)
    if kind == 'process':
        # 'spawn', not fork: the parent has TensorFlow's threads running.
        return cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context('spawn'))
    raise ValueError(f'unknown pool kind {kind!r}; expected auto, thread or process')


def prepared_dir(data_dir: str | os.PathLike, data_config: Any) -> Path:
    """Where `prepare` writes the variant of `data_config` (the TFDS version dir)."""
    from input_pipeline import fg_xmedia
    return (Path(data_dir) / fg_xmedia.FgXMedia.name / StoreSpec.from_data_config(data_config).name
            / str(fg_xmedia.FgXMedia.VERSION))


def prepare(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, data_config: Any, *,
            on_error: str = 'fail', progress: bool = True, num_workers: int | None = None,
            pool: str = 'auto') -> dict[str, dict[str, int]]:
    """Build (or reuse) the `fg_xmedia` variant of `data_config` in `data_dir`.

    Returns {modality: {split: number of stored examples}}. A directory already
    prepared for this variant is reused without touching the source files.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
    manual_dir = Path(manual_dir)
    if not (manual_dir / 'list').is_dir():
        raise FileNotFoundError(f'{manual_dir} is not an FG-XMedia data root: it has no list/ '
                                'folder (expected list/<modality>/{train,test}.txt)')
    import tensorflow_datasets as tfds

    from input_pipeline import fg_xmedia

    spec = StoreSpec.from_data_config(data_config)
    builder = fg_xmedia.FgXMedia(data_dir=os.fspath(data_dir), config=fg_xmedia.make_config(spec),
                                 on_error=on_error, progress=progress,
                                 num_classes=int(data_config.num_classes))
    out_dir = Path(builder.data_dir)
    rebuilt = not builder.is_prepared()
    if rebuilt:
        num_items = _count_list_lines(manual_dir)
        executor = make_executor(num_items, num_workers, pool)
        builder.executor = executor
        try:
            tfds.disable_progress_bar()  # our per-file bar (fg_xmedia) says more
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
        finally:
            builder.executor = None
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        write_skipped_report(out_dir / SKIPPED_REPORT, builder.skipped)
    counts = counts_of(builder)
    if progress:
        print(summary(counts, out_dir, rebuilt, _read_skipped_count(out_dir / SKIPPED_REPORT)))
    return counts


def counts_of(builder: Any) -> dict[str, dict[str, int]]:
    """{modality: {split: examples}} from the builder's stored metadata."""
    counts: dict[str, dict[str, int]] = {}
    for name, info in builder.info.splits.items():
        modality, split = name.rsplit('_', 1)
        counts.setdefault(modality, {})[split] = int(info.num_examples)
    return {m: counts[m] for m in lists.MODALITIES if m in counts}


def summary(counts: Mapping[str, Mapping[str, int]], out_dir: Path, rebuilt: bool,
            skipped: int) -> str:
    """Human-readable per-modality/split table for the end of `dcinet prepare`."""
    splits = list(lists.SPLITS)
    rows = [f'{"modality":<10}' + ''.join(f'{s:>10}' for s in splits)]
    for m, per in counts.items():
        rows.append(f'{m:<10}' + ''.join(f'{per.get(s, 0):>10}' for s in splits))
    head = ('prepared' if rebuilt else 'already prepared (reused, nothing decoded)') + f': {out_dir}'
    tail = (f'{skipped} item(s) skipped, listed with reasons in {out_dir / SKIPPED_REPORT}'
            if skipped else 'no item skipped')
    return '\n'.join([head, *rows, tail])


def write_skipped_report(path: Path, skipped: list[dict[str, Any]]) -> None:
    """TSV: modality, split, list_file, line, path, reason (header always written,
    so an empty report says 'nothing skipped' rather than 'unknown')."""
    fields = ('modality', 'split', 'list_file', 'line', 'path', 'reason')
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter='\t', lineterminator='\n')
        w.writeheader()
        for row in skipped:
            w.writerow({k: str(row[k]).replace('\t', ' ').replace('\n', ' ') for k in fields})


def read_skipped_report(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a skipped.tsv written by `write_skipped_report`."""
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def _read_skipped_count(path: Path) -> int:
    return len(read_skipped_report(path)) if path.is_file() else 0


def _count_list_lines(root: Path) -> int:
    n = 0
    for f in (root / 'list').glob('*/*.txt'):
        n += sum(1 for line in open(f, 'rb') if line.strip())
    return n


def prepare_main(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                 config: Any = None, on_error: str | None = None) -> dict[str, dict[str, int]]:
    """CLI entry (`dcinet prepare --manual_dir SRC --data_dir DST [--config] [--on_error]`).

    `config` is a full config (with `.data`), a data config, or None for the paper
    config; `on_error` None takes `config.data.on_error`. Prints progress and the
    summary; a DataError is printed as `path:line: what` and re-raised.
    """
    if config is None:
        from configs import dcinet_fgxmedia
        config = dcinet_fgxmedia.get_config()
    data_config = config.data if hasattr(config, 'data') else config
    on_error = on_error or getattr(data_config, 'on_error', 'fail')
    try:
        return prepare(manual_dir, data_dir, data_config, on_error=on_error, progress=True)
    except DataError as e:
        print(f'error: {e}\n(rerun with --on_error skip to leave bad items out and get a report)',
              file=sys.stderr)
        raise
