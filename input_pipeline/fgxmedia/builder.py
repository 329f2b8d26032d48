"""TFDS builder `fg_xmedia`: a PKU FG-XMedia data root (manual dir) → TFDS shards.

One builder config per variant of the stored bytes (resize size, text length,
alphabet, text mode, source JPEGs kept or not), named from them
(`r512_t448_lower_space_whole_srcjpeg`: encode.StoreSpec.name), so several
prepared variants share one data_dir. One split per (modality, split) found in the
manual dir: `image_train`, `audio_test`, `text_train`, `video_test`, ...

Every example has the same features (TFDS needs one schema for all splits):
- `image`: RGB JPEG bytes, already resized to resize_size square (quality 95, 4:4:4:
  see encode.JPEG_QUALITY); b'' for text. In a `store_source_jpegs` variant, a photo
  or frame that was a small RGB JPEG is its source file's bytes instead (any size up
  to resize_size; the input pipeline resizes it), after a check here that TensorFlow's
  decoder reads it too (else it is stored resized, as without the flag).
- `text`: uint8[text_length] character ids (0 = padding); zeros for other modalities.
- `label` (int64, from the list file), `modality` (int64, spec.MODALITY_IDS),
  `id` ('<modality>/<relative path>', stable across runs), `index` (position in the
  list file; items skipped by `prepare` leave gaps), `video_id` (frames only, else
  ''), `video` (int64 video number in order of first appearance in the list, -1 for
  non-frames: lets the evaluator average frame logits without strings).
Examples are stored in list order (shuffling disabled): evaluation reads them in that
order, training shuffles by itself. The example keys given to TFDS are `ordered_key`s,
not the bare list positions, so that a split bigger than TFDS's 1 GB in-memory buffer
is written through many small temporary buckets instead of one that holds the whole
split in memory (found preparing video at full size).

The decoding itself lives in encode.encode_entry; this file only wires it into TFDS.
The builder runs it over `num_workers` workers (a thread or spawned-process pool, see
encode.make_executor), created for the build and shut down after it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from input_pipeline.fgxmedia import encode, lists
from input_pipeline import errors
from input_pipeline.fgxmedia.encode import StoreSpec
from input_pipeline.spec import MODALITY_IDS, SPLITS

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Pass the PKU FG-XMedia data root as the manual dir (`dcinet prepare --manual_dir ROOT`).
Layout (as the public FGCrossNet reference code reads it):
  ROOT/list/<modality>/train.txt, test.txt   one `relative/path label` per line, label
                                             0-based; test labels may come from a
                                             `testlabel.txt` beside test.txt instead
  ROOT/image/...             CUB-200-2011 JPEGs
  ROOT/audio/audioimg/...    shipped spectrogram images, or raw audio under ROOT/audio/
  ROOT/text/...              one text file per sample
  ROOT/video/...             video frames as images (optional)
A modality is prepared when its list folder exists. List paths are relative to ROOT or
to the modality folder (see input_pipeline/fgxmedia/lists.py).
"""


class FgXMediaConfig(tfds.core.BuilderConfig):
    """BuilderConfig carrying the StoreSpec of the variant."""

    def __init__(self, *, spec: StoreSpec, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec


def make_config(spec: StoreSpec) -> FgXMediaConfig:
    """Builder config for one stored variant (the registered one for the paper's)."""
    if spec == _PAPER_CONFIG.spec:
        return _PAPER_CONFIG   # TFDS refuses a second config object with its name
    return _new_config(spec)


def _new_config(spec: StoreSpec) -> FgXMediaConfig:
    kept = ' (small RGB JPEG sources kept as they are)' if spec.store_source_jpegs else ''
    return FgXMediaConfig(name=spec.name, spec=spec,
                          description=f'images/spectrograms {spec.resize_size}px JPEG{kept}, '
                                      f'text {spec.text_length} ids, alphabet {spec.alphabet}, '
                                      f'text mode {spec.text_mode}')


_PAPER_CONFIG = _new_config(StoreSpec())   # configs/dcinet_fgxmedia.py

# TFDS's writer (tensorflow_datasets.core.shuffle) keeps a split in memory up to 1 GB,
# then moves it to BUCKETS temporary files by key, key k going to bucket
# floor(k * BUCKETS / 2**KEY_BITS), and at the end reads each bucket whole into memory
# to sort it. With shuffling disabled the key is ours, unhashed: bare list positions
# (all far below 2**128) would all land in bucket 0, so a 14 GB video split would be read
# back into memory at once. `ordered_key` gives ITEMS_PER_BUCKET consecutive positions
# to each bucket instead, in order, so memory at the end is one bucket's worth.
_TFDS_BUCKETS, _TFDS_KEY_BITS = 1000, 128
ITEMS_PER_BUCKET = 1024
_BUCKET_STRIDE = (1 << _TFDS_KEY_BITS) // _TFDS_BUCKETS + 1


def ordered_key(index: int) -> int:
    """The TFDS example key of list position `index` (>= 0): strictly increasing in
    `index` (the stored order is the list order), below 2**128 (TFDS stores 16 bytes),
    and ITEMS_PER_BUCKET consecutive positions per TFDS bucket (the last bucket takes
    whatever is past 1,024,000 items)."""
    bucket = min(index // ITEMS_PER_BUCKET, _TFDS_BUCKETS - 1)
    return bucket * _BUCKET_STRIDE + (index - bucket * ITEMS_PER_BUCKET)


def open_builder(data_dir: str | os.PathLike, spec: StoreSpec, **build_options: Any) -> 'FgXMedia':
    """The builder of variant `spec` in `data_dir`; `build_options` are FgXMedia's own
    constructor arguments."""
    return FgXMedia(data_dir=os.fspath(data_dir), config=make_config(spec), **build_options)


class _QuietTfds(logging.Filter):
    """Drops TFDS's warnings about what is normal here: a custom builder config, and a
    variant folder that has no dataset_info.json yet (it is being built)."""
    NORMAL = ('Using custom data configuration', 'has no dataset_info.json')

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.NORMAL)


logging.getLogger('absl').addFilter(_QuietTfds())


class FgXMedia(tfds.core.GeneratorBasedBuilder):
    """PKU FG-XMedia (200 bird species; image, audio, text, video) from a manual dir."""

    name = 'fg_xmedia'
    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'First release.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [_PAPER_CONFIG]  # the paper's setting; others are custom

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this through importlib_resources, which is not always
        # installed; the builder's own file is the right answer anyway.
        return epath.Path(__file__)

    def __init__(self, *, on_error: str = 'fail', progress: bool = False,
                 num_classes: int = 200, num_workers: int = 1, pool: str = 'auto',
                 text_errors: str = 'strict', **kwargs: Any):
        """Build options (reading ignores them): `on_error` 'fail' or 'skip';
        `num_classes` bounds the list labels; `num_workers` items are encoded at a
        time, in a pool of kind `pool` ('thread', 'process', or 'auto': processes from
        encode.MIN_ITEMS_FOR_PROCESSES items on); `text_errors` is how undecodable
        text bytes are handled (text.read_text)."""
        super().__init__(**kwargs)
        if pool not in encode.POOL_KINDS:
            raise ValueError(f'unknown pool kind {pool!r}; expected one of {encode.POOL_KINDS}')
        self.on_error = on_error
        self.progress = progress
        self.num_classes = num_classes
        self.num_workers = max(1, int(num_workers))
        self.pool = pool
        self.text_errors = text_errors
        self._executor = None                 # lives for one _download_and_prepare
        self.skipped: list[dict[str, Any]] = []   # rows of the skipped report
        self.max_labels: dict[str, int] = {}      # split name -> largest stored label

    @property
    def spec(self) -> StoreSpec:
        return self.builder_config.spec

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        return self.dataset_info_from_configs(
            description='PKU FG-XMedia fine-grained cross-media retrieval benchmark '
                        '(200 bird species), one split per modality and split.',
            features=f.FeaturesDict({
                'image': f.Tensor(shape=(), dtype=np.object_),
                'text': f.Tensor(shape=(self.spec.text_length,), dtype=np.uint8),
                'label': f.Scalar(dtype=np.int64),
                'modality': f.Scalar(dtype=np.int64),
                'id': f.Text(),
                'index': f.Scalar(dtype=np.int64),
                'video_id': f.Text(),
                'video': f.Scalar(dtype=np.int64),
            }),
            disable_shuffling=True,
            homepage='https://github.com/PKU-ICST-MIPL/FGCrossNet_ACMMM2019',
        )

    def _log_download_bytes(self) -> None:
        """Quiet: TFDS would announce an "Unknown size" download; the per-file bars and
        `prepare`'s summary say what happens."""

    def _log_download_done(self) -> None:
        """Quiet, as _log_download_bytes."""

    def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
        num_items = _count_list_lines(os.fspath(dl_manager.manual_dir))
        self._executor = encode.make_executor(num_items, self.num_workers, self.pool)
        try:
            super()._download_and_prepare(dl_manager, download_config)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        root = os.fspath(dl_manager.manual_dir)
        modalities = lists.available_modalities(root)
        if not modalities:
            raise FileNotFoundError(f'{root}: no list/<modality>/<split>.txt found\n'
                                    + MANUAL_DOWNLOAD_INSTRUCTIONS)
        # Failing fast: every list fault, missing files included, stops the build
        # before anything is decoded. Skipping: a bad list line is one skipped row,
        # and a missing file becomes a per-item error like any other bad item.
        skip = self.on_error == 'skip'
        out = {}
        for m in modalities:
            for s in SPLITS:
                if lists.list_file(root, m, s).is_file():
                    bad: list[lists.BadLine] = []
                    entries = lists.read_list(root, m, s, num_classes=self.num_classes,
                                              check_files=not skip,
                                              skipped=bad if skip else None)
                    for b in bad:
                        self._skip(b.modality, b.split, b.list_file, b.line, b.path, b.error)
                    out[f'{m}_{s}'] = self._generate_examples(root, entries, f'{m}_{s}')
        return out

    def _skip(self, modality: str, split: str, list_file: str, line: int, path: str,
              error: Exception) -> None:
        self.skipped.append(dict(modality=modality, split=split, list_file=list_file,
                                 line=line, path=path, reason=str(error)))

    def _video_numbers(self, entries: list[lists.ListEntry]) -> dict[str, int]:
        """Video id -> video number (order of first appearance); in skip mode a frame
        whose name is too short for a video id is skipped and left out of `entries`."""
        numbers: dict[str, int] = {}
        for e in list(entries):
            if e.modality != 'video':
                continue
            try:
                numbers.setdefault(lists.video_id(e), len(numbers))
            except lists.ListFormatError as err:
                if self.on_error == 'fail':
                    raise
                self._skip(e.modality, e.split, e.list_file, e.line, e.path, err)
                entries.remove(e)
        return numbers

    def _generate_examples(self, root: str, entries: list[lists.ListEntry], split_name: str):
        spec = self.spec
        entries = list(entries)
        video_numbers = self._video_numbers(entries)
        tasks = ((root, e, spec, self.text_errors) for e in entries)
        results = encode.ordered_map(encode.try_encode, tasks, self._executor,
                                     window=max(8, 4 * self.num_workers))
        bar = None
        if self.progress and entries:
            from tqdm import tqdm
            bar = tqdm(total=len(entries), unit='file',
                       desc=f'{entries[0].modality}/{entries[0].split}')
        blank_text = np.zeros(spec.text_length, np.uint8)
        try:
            for e, (ok, value) in zip(entries, results):
                if bar is not None:
                    bar.update(1)   # counted when its result arrives: the bar ends at 100 %
                if ok and value.get('source'):
                    ok, value = self._tf_checked(root, e, value)
                if not ok:
                    if self.on_error == 'fail':
                        raise errors.with_list_line(value, e.list_file, e.line)
                    self._skip(e.modality, e.split, e.list_file, e.line, e.path, value)
                    continue
                self.max_labels[split_name] = max(self.max_labels.get(split_name, -1), e.label)
                vid = lists.video_id(e) if e.modality == 'video' else ''
                rel = e.path.replace('\\', '/')
                yield ordered_key(e.index), {
                    'image': value.get('image', b''),
                    'text': value.get('text', blank_text),
                    'label': e.label,
                    'modality': MODALITY_IDS[e.modality],
                    'id': f'{e.modality}/{rel}',
                    'index': e.index,
                    'video_id': vid,
                    'video': video_numbers[vid] if vid else -1,
                }
        finally:
            if bar is not None:
                bar.close()

    def _tf_checked(self, root: str, entry: lists.ListEntry, value: dict) -> tuple[bool, Any]:
        """A kept source JPEG, if TensorFlow's decoder (the one training uses) reads it
        as PIL did; else the entry encoded as without store_source_jpegs. PIL and
        libjpeg-turbo under TF differ in what they tolerate, and a file only PIL reads
        would otherwise stop training, not prepare."""
        import tensorflow as tf
        try:
            shape = tf.io.decode_jpeg(value['image'], channels=3).shape
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            shape = None
        if shape is not None and max(shape[:2]) <= self.spec.resize_size:
            return True, value
        plain = dataclasses.replace(self.spec, store_source_jpegs=False)
        return encode.try_encode((root, entry, plain, self.text_errors))


def _count_list_lines(root: str) -> int:
    """Non-blank lines of every list file: the number of items, to size the pool."""
    n = 0
    for f in (Path(root) / 'list').glob('*/*.txt'):
        with open(f, 'rb') as fh:
            n += sum(1 for line in fh if line.strip())
    return n
