"""tf.data training and evaluation input for DCINet, from the `dcinet prepare` output.

Batches are NumPy, uint8 pixels: `{modality: {'inputs': uint8[b, S, S, 3] (image,
audio, video) or int32[b, L] (text), 'label': int32[b]}}`. ImageNet mean/std
normalisation is NOT done here: it runs on the accelerator (the model takes uint8), so
the host ships 4x fewer bytes and does less per-pixel work.

Training (`create_train_iterator`)
- Every process keeps the encoded training items of its modalities in memory (the
  FG-XMedia training splits are ~6k items per modality, ~0.5 GB of 512 px JPEGs) and
  reads them by index. So an epoch's order is a pure function of (seed, epoch): the
  iterator is deterministic, and `start_step=s` recomputes epoch s // steps_per_epoch
  and starts inside it without reading or decoding the skipped items. Each epoch
  permutes the whole split, so no shuffle buffer is needed.
- Batch schedules (random sampler, the paper's default; class-aligned sampler with
  `data.class_aligned`; list order with `data.shuffle=False`) are NumPy functions of (seed, epoch, modality) in
  `samplers.py`; both give steps_per_epoch = min over modalities of n_m // b.
- Processes: the global batch (b per modality) is split in slices of
  b_local = b // process_count; process p takes slice p of every global batch, so
  the shards are disjoint and together are exactly the single-process batches.
- Per-element randomness (text shift, random crop, flip) uses stateless ops seeded by
  (seed, modality, global position of the element), so it is identical whatever the
  process count and resumes exactly.
- Images of a `data.store_source_jpegs` variant may be smaller source JPEGs: they are
  decoded whole and resized to resize_size square here before the crop (`_resized_crop`).
- Text: train-time position shift (prepend k zeros, k uniform in spec.TEXT_SHIFTS) when
  `data.text_shift`. Images: centre crop, or with `data.augment` a random crop from
  the stored resize_size image plus a horizontal flip (flip for image/video only: a
  flipped spectrogram is time reversed, not a plausible recording).

Labels: before any batch is made, every split read (train for training, the eval
split for evaluation) is checked to hold no label >= data.num_classes (`check_labels`,
from the largest labels `dcinet prepare` records); such a label is a ValueError
naming the split and the label.

Evaluation (`create_eval_iterators`): every item of the split once, in list order,
centre crop, no shift; batches of eval_batch_size with 'mask' False on padding rows
(label, index, video = -1 there) and 'index' the item's position in its list file.
Every process reads the whole split, or, given a `share`, its own range of the batches.

TensorFlow is told to see no GPU before anything else: the accelerator belongs to JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

try:
    tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialised its devices; nothing left to hide
    pass

from input_pipeline.fgxmedia import builder as fg_xmedia, fingerprint  # noqa: E402
from input_pipeline import samplers
from input_pipeline.fgxmedia.encode import SOURCE_JPEG_MODALITIES, StoreSpec  # noqa: E402
from input_pipeline.spec import TEXT_SHIFTS, center_offset  # noqa: E402

FLIP_MODALITIES = ('image', 'video')


# ----------------------------------------------------------------------------- data access

def load_builder(config: Any) -> fg_xmedia.FgXMedia:
    """The prepared `fg_xmedia` variant implied by config.data, from config.data_dir."""
    data_dir = os.path.expanduser(str(config.data_dir or ''))
    if not data_dir:
        raise ValueError('config.data_dir is empty: set it to the --data_dir given to '
                         '`dcinet prepare`')
    return _builder(data_dir, StoreSpec.from_data_config(config.data))


@functools.lru_cache(maxsize=8)
def _builder(data_dir: str, spec: StoreSpec) -> fg_xmedia.FgXMedia:
    builder = fg_xmedia.open_builder(data_dir, spec)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f'no prepared data for this config at {builder.data_dir} (variant {spec.name}): '
            f'run `dcinet prepare --manual_dir <FG-XMedia root> --data_dir {data_dir} '
            '--config <this config>` first')
    return builder


def _split_name(builder: Any, modality: str, split: str) -> str:
    name = f'{modality}_{split}'
    if name not in builder.info.splits:
        have = ', '.join(sorted(builder.info.splits)) or 'none'
        raise ValueError(f'split {name!r} is not in the prepared data at {builder.data_dir} '
                         f'(it has: {have}); was {modality!r} in the manual dir\'s list/ '
                         'folder when `dcinet prepare` ran?')
    return name


def check_labels(config: Any, split: str) -> None:
    """Raise ValueError when a `split` split of config.data.modalities holds a label
    >= data.num_classes (it would train or rank as no class at all).

    The largest label of every split is recorded by `dcinet prepare`
    (fingerprint.INFO_FILE); data prepared before that record existed is read once.
    """
    builder = load_builder(config)
    for m in config.data.modalities:
        name = _split_name(builder, m, split)
        _check_max_label(name, _max_label(builder, name), config)


def _check_max_label(split_name: str, top: int, config: Any) -> None:
    n = int(config.data.num_classes)
    if top >= n:
        raise ValueError(f'{split_name} holds label {top} but data.num_classes={n} '
                         '(labels must be < num_classes)')


@functools.lru_cache(maxsize=32)
def _max_label(builder: fg_xmedia.FgXMedia, split_name: str) -> int:
    info = fingerprint.read_info(builder.data_dir) or {}
    recorded = info.get('max_labels', {})
    if split_name in recorded:
        return int(recorded[split_name])
    ds = builder.as_dataset(split=split_name, shuffle_files=False)
    top = -1
    for y in ds.map(lambda ex: ex['label']).batch(4096).as_numpy_iterator():
        top = max(top, int(y.max()))
    return top


def num_examples(config: Any, modality: str, split: str) -> int:
    """Items of (modality, split) in the prepared data (skipped items excluded)."""
    builder = load_builder(config)
    return int(builder.info.splits[_split_name(builder, modality, split)].num_examples)


@dataclasses.dataclass(frozen=True)
class _Store:
    """One split in memory: encoded payloads (JPEG bytes or uint8 text ids) by position."""
    payload: np.ndarray   # object[n] of bytes, or uint8[n, L]
    labels: np.ndarray    # int64[n]


@functools.lru_cache(maxsize=8)
def _load_store(builder: fg_xmedia.FgXMedia, split_name: str, modality: str) -> _Store:
    # Keyed on the builder object, which _builder() caches per (data_dir, variant).
    key = 'text' if modality == 'text' else 'image'
    ds = builder.as_dataset(split=split_name, shuffle_files=False)
    ds = ds.map(lambda ex: (ex[key], ex['label'])).batch(1024)
    parts, labels = [], []
    for p, y in ds.as_numpy_iterator():
        parts.append(p)
        labels.append(y)
    if not parts:
        raise ValueError(f'split {split_name!r} at {builder.data_dir} is empty')
    return _Store(np.concatenate(parts), np.concatenate(labels).astype(np.int64))


# ----------------------------------------------------------------------------- schedules

def steps_per_epoch(config: Any, process_count: int = 1) -> int:
    """Training steps per epoch: min over modalities of n_train // batch_per_modality
    (the same for the random and the class-aligned sampler)."""
    samplers.local_batch(config.data.batch_per_modality, process_count)
    check_labels(config, 'train')
    sizes = {m: num_examples(config, m, 'train') for m in config.data.modalities}
    return samplers.steps_per_epoch(sizes, config.data.batch_per_modality)


# ----------------------------------------------------------------------------- decoding (TF)

def _image_fn(resize_size: int, crop_size: int, *, augment: bool, flip: bool,
              source_jpegs: bool = False) -> Callable:
    """JPEG bytes (+ stateless seed) -> the uint8[s, s, 3] crop. Without `source_jpegs`
    every stored JPEG is resize_size square and only the crop window is decoded
    (`decode_and_crop_jpeg`). With it (a `store_source_jpegs` variant, image and video)
    the JPEG may be a smaller source file: decoded whole, resized to resize_size square
    when it is not already, then cropped (`_resized_crop`); the offsets and flips are drawn
    exactly as in the fused path."""
    r, s = resize_size, crop_size
    c = center_offset(r, s)

    def fn(jpeg: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
        if augment:
            off = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=r - s + 1,
                                              dtype=tf.int32)
        else:
            off = tf.constant([c, c], tf.int32)
        if source_jpegs:
            img = _resized_crop(jpeg, r, off, s)
        else:
            img = tf.image.decode_and_crop_jpeg(jpeg, tf.concat([off, [s, s]], 0), channels=3,
                                                dct_method='INTEGER_ACCURATE')
        if augment and flip:
            u = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(seed, 1))
            img = tf.cond(u < 0.5, lambda: tf.image.flip_left_right(img), lambda: img)
        return tf.ensure_shape(img, [s, s, 3])
    return fn


def _resized_crop(jpeg: tf.Tensor, r: int, off: tf.Tensor, s: int) -> tf.Tensor:
    """The s x s window at `off` of the JPEG resized to r x r (aspect not kept; no
    resize when it is r x r): the prepare-time PIL resize (images.resize_center_crop)
    done here instead. Bilinear with half-pixel centres, rounded to uint8 (bilinear
    weights are convex, so no clipping is needed). Not antialiased: prepare keeps only
    sources of at most r a side (the builder checks it with this decoder), so this
    only upscales, where antialiasing changes nothing and costs twice the time."""
    img = tf.io.decode_jpeg(jpeg, channels=3, dct_method='INTEGER_ACCURATE')
    begin = tf.concat([off, [0]], 0)

    def resize():
        x = tf.image.resize(img, (r, r), method='bilinear')
        return tf.cast(tf.round(tf.slice(x, begin, [s, s, 3])), tf.uint8)
    hw = tf.shape(img)[:2]
    return tf.cond(tf.reduce_all(tf.equal(hw, r)), lambda: tf.slice(img, begin, [s, s, 3]),
                   resize)


def _text_fn(length: int, *, shift: bool) -> Callable:
    shifts = tf.constant(TEXT_SHIFTS, tf.int32)

    def fn(ids: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
        ids = tf.cast(ids, tf.int32)
        if shift:
            k = tf.gather(shifts, tf.random.stateless_uniform(
                [], seed=seed, minval=0, maxval=len(TEXT_SHIFTS), dtype=tf.int32))
            ids = tf.concat([tf.zeros([k], tf.int32), ids], 0)[:length]
        return tf.ensure_shape(ids, [length])
    return fn


def _decode_fn(config: Any, modality: str, *, train: bool) -> Callable:
    d = config.data
    if modality == 'text':
        return _text_fn(int(d.text_length), shift=train and bool(d.text_shift))
    kept = StoreSpec.from_data_config(d).store_source_jpegs and modality in SOURCE_JPEG_MODALITIES
    return _image_fn(int(d.resize_size), int(d.image_size), augment=train and bool(d.augment),
                     flip=modality in FLIP_MODALITIES, source_jpegs=kept)


def _options() -> tf.data.Options:
    o = tf.data.Options()
    o.deterministic = True
    o.threading.private_threadpool_size = max(2, os.cpu_count() or 2)
    o.threading.max_intra_op_parallelism = 1
    return o


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # lazily: only for the process index, never for devices
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} outside [0, {process_count})')
    return int(process_index), int(process_count)


# ----------------------------------------------------------------------------- training

def create_train_iterator(config: Any, *, start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None) -> Iterator[dict]:
    """Endless iterator of this process's training batches from global step start_step.

    Yields {modality: {'inputs', 'label'}} (see module docstring) for
    config.data.modalities. Step s of an iterator started at 0 equals step 0 of one
    started at s.
    """
    pi, pc = _process(process_index, process_count)
    b = int(config.data.batch_per_modality)
    bl = samplers.local_batch(b, pc)
    if start_step < 0:
        raise ValueError(f'start_step must be >= 0, got {start_step}')
    builder = load_builder(config)
    modalities = tuple(config.data.modalities)
    stores = {m: _load_store(builder, _split_name(builder, m, 'train'), m) for m in modalities}
    for m, store in stores.items():   # the labels themselves, whatever the record says
        _check_max_label(f'{m}_train', int(store.labels.max()), config)
    spe = steps_per_epoch(config, pc)
    seed = int(config.seed)
    labels = {m: s.labels for m, s in stores.items()}
    if config.data.class_aligned:
        P = int(config.data.classes_per_batch)
        schedule = lambda m, e: samplers.aligned_schedule(labels, m, seed, e, spe, b, P)  # noqa: E731
    elif config.data.get('sampler', '') == 'quadruplet':
        schedule = lambda m, e: samplers.quadruplet_schedule(labels, m, seed, e, spe, b)  # noqa: E731
    elif not config.data.get('shuffle', True):
        schedule = lambda m, e: samplers.sequential_schedule(len(labels[m]), spe, b)  # noqa: E731
    else:
        schedule = lambda m, e: samplers.random_schedule(len(labels[m]), seed, e, m, spe, b)  # noqa: E731

    datasets = {}
    for m in modalities:
        store = stores[m]
        gen = _train_generator(store, functools.partial(schedule, m), spe, b,
                               pi * bl, (pi + 1) * bl, start_step,
                               samplers.element_seed(seed, m))
        if m == 'text':
            payload_spec = tf.TensorSpec([bl, store.payload.shape[1]], tf.uint8)
        else:
            payload_spec = tf.TensorSpec([bl], tf.string)
        ds = tf.data.Dataset.from_generator(gen, output_signature=(
            payload_spec, tf.TensorSpec([bl], tf.int32), tf.TensorSpec([bl, 2], tf.int64)))
        decode = _decode_fn(config, m, train=True)
        ds = ds.unbatch().map(lambda x, y, s, decode=decode: (decode(x, s), y),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(bl, drop_remainder=True)
        datasets[m] = ds.map(lambda x, y: {'inputs': x, 'label': y})
    ds = tf.data.Dataset.zip(datasets).prefetch(max(1, int(config.data.prefetch)))
    return ds.with_options(_options()).as_numpy_iterator()


def _train_generator(store: _Store, schedule: Callable[[int], np.ndarray], spe: int, b: int,
                     lo: int, hi: int, start_step: int, element_seed: int) -> Callable:
    """Python side of one modality: per step, this process's slice of the global batch
    (payloads, labels, per-element stateless seeds). Only indexing happens here."""
    slots = np.arange(lo, hi, dtype=np.int64)

    def gen():
        epoch, t0 = divmod(start_step, spe)
        while True:
            sched = schedule(epoch)[:, lo:hi]
            for t in range(t0, spe):
                idx = sched[t]
                pos = (epoch * spe + t) * b + slots
                seeds = np.stack([np.full_like(pos, element_seed), pos], axis=1)
                yield store.payload[idx], store.labels[idx].astype(np.int32), seeds
            epoch, t0 = epoch + 1, 0
    return gen


# ----------------------------------------------------------------------------- evaluation

@dataclasses.dataclass
class EvalData:
    """Re-iterable eval batches of one modality (each `iter()` starts over)."""
    dataset: tf.data.Dataset
    num_batches: int
    num_examples: int      # items of the split
    process_share: bool = False   # True: only this process's batches (gather after)

    def __iter__(self) -> Iterator[dict]:
        return self.dataset.as_numpy_iterator()

    def __len__(self) -> int:
        return self.num_batches


def create_eval_iterators(config: Any, split: str = 'test', *,
                          share: Callable[[int], range] | None = None
                          ) -> dict[str, Iterable[dict]]:
    """Per modality of config.data.modalities, every item of `split` exactly once.

    Batches: {'inputs', 'label' int32, 'mask' bool, 'index' int32} (+ 'video' int32 for
    video frames) of eval_batch_size rows, the last batch padded. Every process that
    calls this reads the whole split, unless `share` (number of batches -> the range
    of them this process takes, `dcinet_jax.evaluators.sharding.process_share`) gives
    a part: then this process reads and decodes only those batches (the same batches,
    with the same items, as the whole split's) and the EvalData's `process_share` says
    so, for the feature extractor to gather the rows of every process.
    """
    eb = int(config.data.eval_batch_size)
    if eb <= 0:
        raise ValueError(f'data.eval_batch_size={eb} must be positive')
    check_labels(config, split)
    builder = load_builder(config)
    out = {}
    for m in config.data.modalities:
        name = _split_name(builder, m, split)
        n = int(builder.info.splits[name].num_examples)
        num_batches = math.ceil(n / eb)
        part = range(num_batches) if share is None else share(num_batches)
        first, last = part.start * eb, min(n, part.stop * eb)   # this share's items
        ds = builder.as_dataset(split=name, shuffle_files=False)
        ds = ds.skip(first).take(last - first)
        decode = _decode_fn(config, m, train=False)
        key = 'text' if m == 'text' else 'image'
        with_video = m == 'video'

        def to_batch(ex, decode=decode, key=key, with_video=with_video):
            e = {'inputs': decode(ex[key], None), 'label': tf.cast(ex['label'], tf.int32),
                 'mask': tf.constant(True), 'index': tf.cast(ex['index'], tf.int32)}
            if with_video:
                e['video'] = tf.cast(ex['video'], tf.int32)
            return e

        ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        pad = {k: (tf.zeros(v.shape, v.dtype) if k in ('inputs', 'mask')
                   else tf.constant(-1, tf.int32)) for k, v in ds.element_spec.items()}
        ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(
            len(part) * eb - (last - first)))
        ds = ds.batch(eb, drop_remainder=True).prefetch(max(1, int(config.data.prefetch)))
        out[m] = EvalData(ds.with_options(_options()), len(part), n,
                          len(part) < num_batches)
    return out
