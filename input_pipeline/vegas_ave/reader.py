"""Precomputed audio-visual features in the VEGAS / AVE HDF5 layout (docs/dsffn.md#data).

One file per dataset (`vegas_feature_norm.h5`, `ave_feature_norm.h5`) holds six root
datasets whose rows are aligned clips:

    visual_train, visual_test   (N, Dv)  float   (Inception, Dv = 1024)
    audio_train,  audio_test    (N, Da)  float   (VGGish, Da = 128)
    lab_train,    lab_test      (N,) or (N, 1)   class id 0..m-1, any integer dtype or
                                                 an integral float

`read_split` casts features to float32 and labels to int32 and rejects, in one line
naming the file and the dataset: a missing key, a wrong rank, row counts that differ
between the three datasets of a split, a group where a dataset belongs, a feature width that differs between splits,
non-integral or negative / out-of-range labels, and NaN/Inf features.

The data path is in memory (VEGAS is about 0.1 GB): `AVData` holds the train, optional
validation and test arrays after the optional input normalisation; `train_batches` yields
this process's slice of each global batch, a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import numpy as np

SPLITS = ('train', 'test')
FILE_NAMES = {'vegas': 'vegas_feature_norm.h5', 'ave': 'ave_feature_norm.h5'}
INPUT_NORMS = ('none', 'l2', 'standardize')


class AVDataError(ValueError):
    """A VEGAS/AVE feature file that does not follow the layout (one line, names the file)."""


@dataclasses.dataclass(frozen=True)
class Split:
    visual: np.ndarray   # (N, Dv) float32
    audio: np.ndarray    # (N, Da) float32
    label: np.ndarray    # (N,) int32

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: np.ndarray) -> 'Split':
        return Split(self.visual[index], self.audio[index], self.label[index])


def feature_file(data_dir: str | os.PathLike, name: str, file: str = '') -> Path:
    """The h5 file of dataset `name` ('vegas' / 'ave') in `data_dir` (or `file` there)."""
    if not file and name not in FILE_NAMES:
        raise ValueError(f'data.name={name!r}: expected one of {sorted(FILE_NAMES)} '
                         '(or set data.file)')
    path = Path(data_dir) / (file or FILE_NAMES[name])
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such feature file (config.data_dir / data.file; '
                                '`dcinet demo-data --format vegas --out DIR` writes a synthetic one)')
    return path


def _labels(raw: np.ndarray, where: str, num_classes: int | None) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise AVDataError(f'{where}: labels must have shape (N,) or (N, 1), got {raw.shape}')
    if raw.dtype.kind == 'b' or raw.dtype.kind not in 'iuf':
        raise AVDataError(f'{where}: labels must be integers or integral floats, '
                          f'got dtype {raw.dtype}')
    if raw.dtype.kind == 'f':
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            i = int(np.argmax(bad))
            raise AVDataError(f'{where}: label {raw[i].item()!r} at row {i} is not an integer '
                              f'({int(bad.sum())} such rows)')
    if raw.size:
        lo, hi = raw.min(), raw.max()
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bad = raw < 0
            if num_classes is not None:
                bad = bad | (raw >= num_classes)
            i = int(np.argmax(bad))
            limit = f'0..{num_classes - 1}' if num_classes else '>= 0'
            raise AVDataError(f'{where}: label {raw[i].item()!r} at row {i} is out of range '
                              f'(expected {limit})')
        if hi > np.iinfo(np.int32).max:
            raise AVDataError(f'{where}: label {hi} does not fit int32')
    return raw.astype(np.int32)


def _features(raw: np.ndarray, where: str) -> np.ndarray:
    if raw.ndim != 2:
        raise AVDataError(f'{where}: features must be a (N, D) matrix, got shape {raw.shape}')
    if raw.dtype.kind not in 'iuf':
        raise AVDataError(f'{where}: features must be numeric, got dtype {raw.dtype}')
    x = raw.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise AVDataError(f'{where}: {rows.size} row(s) hold NaN/Inf (first: row {rows[0]})')
    return x


def read_split(path: str | os.PathLike, split: str, *, num_classes: int | None = None) -> Split:
    """The aligned (visual, audio, label) arrays of `split` ('train' or 'test')."""
    import h5py

    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    path = Path(path)
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        raise AVDataError(f'{path}: not a readable HDF5 file ({e})') from None
    with f:
        keys = {m: f'{m}_{split}' for m in ('visual', 'audio', 'lab')}
        missing = [k for k in keys.values() if k not in f]
        if missing:
            raise AVDataError(f'{path}: missing dataset(s) {missing}; the file has '
                              f'{sorted(f.keys())}')
        groups = [k for k in keys.values() if not isinstance(f[k], h5py.Dataset)]
        if groups:  # a group (or other object) where an array is expected
            raise AVDataError(f'{path}:{groups[0]}: expected a dataset (an array), found '
                              f'{type(f[groups[0]]).__name__.lower()}')
        arrays = {m: f[k][()] for m, k in keys.items()}
    visual = _features(np.asarray(arrays['visual']), f'{path}:{keys["visual"]}')
    audio = _features(np.asarray(arrays['audio']), f'{path}:{keys["audio"]}')
    label = _labels(np.asarray(arrays['lab']), f'{path}:{keys["lab"]}', num_classes)
    rows = {keys['visual']: visual.shape[0], keys['audio']: audio.shape[0],
            keys['lab']: label.shape[0]}
    if len(set(rows.values())) != 1:
        raise AVDataError(f'{path}: row counts differ within the {split} split: {rows}')
    return Split(visual, audio, label)


def read_file(path: str | os.PathLike, *, num_classes: int | None = None) -> dict[str, Split]:
    """Both splits, with the feature widths checked to agree between them."""
    out = {s: read_split(path, s, num_classes=num_classes) for s in SPLITS}
    for m in ('visual', 'audio'):
        widths = {f'{m}_{s}': getattr(out[s], m).shape[1] for s in SPLITS}
        if len(set(widths.values())) != 1:
            raise AVDataError(f'{path}: feature widths differ between splits: {widths}')
    return out


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): `fraction` of every class (at least one row of a
    class with two or more), drawn with `seed`; both sorted (file order kept)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f'data.val_fraction must lie in (0, 1), got {fraction}')
    rng = np.random.default_rng([seed, 0x5A1])
    val = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * rows.size))
        k = min(max(k, 1 if rows.size >= 2 else 0), rows.size - 1)
        val.append(rng.choice(rows, size=k, replace=False))
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_rows = np.setdiff1d(np.arange(labels.size), val_rows)
    return train_rows, val_rows


def _normalise(splits: dict[str, Split], mode: str, stats_from: Split) -> dict[str, Split]:
    if mode == 'none':
        return splits
    if mode == 'l2':
        def f(x, m):
            return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    elif mode == 'standardize':
        stats = {m: (getattr(stats_from, m).mean(0), getattr(stats_from, m).std(0))
                 for m in ('visual', 'audio')}

        def f(x, m):
            mean, std = stats[m]
            return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float32)
    else:
        raise ValueError(f'data.input_norm={mode!r}: expected one of {INPUT_NORMS}')
    return {k: Split(f(s.visual, 'visual'), f(s.audio, 'audio'), s.label) for k, s in splits.items()}


@dataclasses.dataclass(frozen=True)
class AVData:
    """train / val (may be empty) / test splits after the validation carve and input norm."""
    train: Split
    val: Split
    test: Split
    path: str

    @property
    def visual_dim(self) -> int:
        return int(self.train.visual.shape[1])

    @property
    def audio_dim(self) -> int:
        return int(self.train.audio.shape[1])


_CACHE: dict[tuple, AVData] = {}


def load(data_dir: str | os.PathLike, data_config) -> AVData:
    """The data in `data_dir` (the config's `data_dir`) as its `data` section says
    (cached per process by its settings).

    Reads name, file, num_classes, select_on ('val' carves val_fraction of train with
    split_seed; 'test' keeps the whole train split), input_norm.
    """
    d = data_config
    path = feature_file(data_dir, d.name, d.get('file', ''))
    select_on = str(d.get('select_on', 'val'))
    if select_on not in ('val', 'test'):
        raise ValueError(f"data.select_on={select_on!r}: expected 'val' or 'test'")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, int(d.num_classes), select_on,
           float(d.get('val_fraction', 0.1)), int(d.get('split_seed', 0)),
           str(d.get('input_norm', 'none')))
    if key in _CACHE:
        return _CACHE[key]
    splits = read_file(path, num_classes=int(d.num_classes))
    train = splits['train']
    empty = train.take(np.zeros(0, np.int64))
    val = empty
    if select_on == 'val':
        tr_rows, val_rows = validation_split(train.label, float(d.get('val_fraction', 0.1)),
                                             int(d.get('split_seed', 0)))
        train, val = train.take(tr_rows), train.take(val_rows)
    out = _normalise({'train': train, 'val': val, 'test': splits['test']},
                     str(d.get('input_norm', 'none')), stats_from=train)
    data = AVData(out['train'], out['val'], out['test'], str(path))
    _CACHE.clear()
    _CACHE[key] = data
    return data


def steps_per_epoch(num_train: int, global_batch: int) -> int:
    """Full batches per epoch (the reference drops the last partial batch)."""
    if global_batch < 1:
        raise ValueError(f'data.batch_per_modality must be >= 1, got {global_batch}')
    steps = num_train // global_batch
    if steps < 1:
        raise ValueError(f'the train split has {num_train} pairs, fewer than one batch of '
                         f'{global_batch} (data.batch_per_modality)')
    return steps


def epoch_order(num: int, epoch: int, *, seed: int, shuffle: bool) -> np.ndarray:
    """Row order of `epoch`: a seeded permutation, or file order when not shuffling."""
    if not shuffle:
        return np.arange(num)
    return np.random.default_rng([seed, 0xE90C, epoch]).permutation(num)


def train_batches(split: Split, *, global_batch: int, seed: int, shuffle: bool,
                  start_step: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's slice of every global batch from `start_step` on, forever.

    Step s is batch s % steps_per_epoch of epoch s // steps_per_epoch (drop_last). The
    global batch is cut into `process_count` equal consecutive slices.
    """
    if global_batch % process_count:
        raise ValueError(f'data.batch_per_modality={global_batch} is not divisible by the '
                         f'{process_count} processes')
    per_epoch = steps_per_epoch(len(split), global_batch)
    local = global_batch // process_count
    lo = process_index * local
    step = int(start_step)
    epoch, order = None, None
    while True:
        e, b = divmod(step, per_epoch)
        if e != epoch:
            epoch, order = e, epoch_order(len(split), e, seed=seed, shuffle=shuffle)
        rows = order[b * global_batch + lo: b * global_batch + lo + local]
        yield {'visual': split.visual[rows], 'audio': split.audio[rows],
               'label': split.label[rows]}
        step += 1
