"""The published VEGAS and AVE feature files, and `dcinet data check` against them.

What is published (docs/dsffn.md#data) is written here once: the class counts (VEGAS 10,
AVE 15), the feature widths (visual 1024, audio 128), the six datasets of the h5 layout
and VEGAS' test split of 5,621 pairs. No source states VEGAS' train size or AVE's sizes,
so those are reported, never checked. `config.data.name` ('vegas' / 'ave') picks the
file (or `config.data.file`); a file written by `dcinet demo-data --format vegas|ave`
comes with its own manifest.

Without `--deep` only labels and dataset shapes are read; `--deep` reads every feature
row and names NaN/Inf rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from input_pipeline.check import Count, Report, Table, Unreadable, decode_all, read_manifest
from input_pipeline.vegas_ave.reader import FILE_NAMES, SPLITS

VISUAL_DIM, AUDIO_DIM = 1024, 128
# name -> (title, classes, {split: pairs or None = not published})
RELEASES: dict[str, tuple[str, int, dict[str, int | None]]] = {
    'vegas': ('the VEGAS feature release (vegas_feature_norm.h5)', 10,
              {'train': None, 'test': 5621}),
    'ave': ('the AVE feature release (ave_feature_norm.h5)', 15,
            {'train': None, 'test': None}),
}
TABLE_NAMES = {'vegas': 'DSFFN on VEGAS (paper Table I, a2v / v2a mAP)',
               'ave': 'DSFFN on AVE (paper Table II, a2v / v2a mAP)'}
BLOCK_ROWS = 4096


def tables(name: str) -> tuple[Table, ...]:
    return (Table(TABLE_NAMES[name], (('pairs', 'test'),), (('pairs', 'train'),)),)


def demo_manifest(*, name: str, dataset: str, file: str, classes: int, visual_dim: int,
                  audio_dim: int, sizes: dict[str, int]) -> dict[str, Any]:
    """The manifest of a file `dcinet demo-data --format vegas|ave` wrote (its parameters)."""
    return {'format': 'vegas_ave', 'name': name, 'dataset': dataset, 'file': file,
            'classes': classes, 'visual_dim': visual_dim, 'audio_dim': audio_dim,
            'splits': dict(sizes)}


def _which(root: Path, config: Any, own: dict | None) -> str:
    if own is not None:
        return own['dataset']
    name = str(config.data.get('name', '')) if config is not None else ''
    if name in RELEASES:
        return name
    present = [n for n, f in FILE_NAMES.items() if (root / f).is_file()]
    if len(present) != 1:
        raise Unreadable(f'{root}: set config.data.name to vegas or ave (found '
                         f'{present or "neither"} of {sorted(FILE_NAMES.values())})')
    return present[0]


def check(root: Path, config: Any = None, *, deep: bool = False,
          progress: bool = True) -> Report:
    import h5py

    own = read_manifest(root)
    name = _which(root, config, own)
    if own is not None:
        title, classes, sizes = own.get('name', 'its own manifest'), int(own['classes']), own['splits']
        file_name, dims = own['file'], (int(own['visual_dim']), int(own['audio_dim']))
        notes = ['a generated file: checked against its own manifest, so "comparable" below '
                 'means "as generated", not "as in the paper"']
    else:
        title, classes, sizes = RELEASES[name]
        data = config.get('data', None) if config is not None else None
        file_name = str(data.get('file', '') or '') if data is not None else ''
        file_name, dims, notes = file_name or FILE_NAMES[name], (VISUAL_DIM, AUDIO_DIM), []
        notes += [f'{s} size of {name} is not published: reported, not checked'
                  for s, n in sizes.items() if n is None]
    path = root / file_name
    if not path.is_file():
        raise Unreadable(f'{path}: no such feature file')
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        raise Unreadable(f'{path}: not a readable HDF5 file ({e})') from None
    report = Report('vegas_ave', str(path), f'{title} ({classes} classes)', tables(name),
                    notes=notes, deep=deep)
    jobs = []
    with f:
        expected_keys = {f'{m}_{s}' for s in SPLITS for m in ('visual', 'audio', 'lab')}
        for key in sorted(set(f.keys()) - expected_keys):
            report.add('extra', 'pairs', '', f'{path}:{key}', 'a dataset the layout does not have')
        for split in SPLITS:
            rows = _check_split(f, path, split, classes, dims, report)
            report.counts.append(Count('pairs', split, sizes.get(split), rows, 'pairs'))
            if deep:
                jobs += [('pairs', split, f'{path}:{m}_{split}', _finite_rows)
                         for m in ('visual', 'audio') if f'{m}_{split}' in f]
    if deep:
        decode_all(jobs, report, workers=1, progress=progress)   # h5py serialises anyway
    return report


def _check_split(f, path: Path, split: str, classes: int, dims: tuple[int, int],
                 report: Report) -> int:
    """Rows of the split (the label count); faults become findings."""
    shapes = {}
    for m, width in zip(('visual', 'audio', 'lab'), dims + (None,)):
        key = f'{m}_{split}'
        if key not in f:
            report.add('missing', 'pairs', split, f'{path}:{key}', 'dataset missing')
            continue
        shape = f[key].shape
        shapes[key] = shape[0] if shape else 0
        if width is not None and (len(shape) != 2 or shape[1] != width):
            report.add('shape', 'pairs', split, f'{path}:{key}',
                       f'shape {shape}, expected (N, {width})')
    if len(set(shapes.values())) > 1:
        report.add('shape', 'pairs', split, str(path), f'row counts differ: {shapes}')
    key = f'lab_{split}'
    if key not in f:
        return max(shapes.values(), default=0)
    labels = np.asarray(f[key][()]).reshape(-1)
    if labels.dtype.kind not in 'iuf':
        report.add('bad_label', 'pairs', split, f'{path}:{key}', f'labels of dtype {labels.dtype}')
        return int(labels.size)
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0) | (labels >= classes)
    if bad.any():
        i = int(np.argmax(bad))
        report.add('bad_label', 'pairs', split, f'{path}:{key}',
                   f'{int(bad.sum())} label(s) not in 0..{classes - 1} (first: row {i}, '
                   f'{labels[i].item()!r})')
    present = np.unique(labels[~bad]).size
    report.notes.append(f'{split}: {present} of {classes} classes present')
    return int(labels.size)


def _finite_rows(where: str) -> None:
    import h5py
    path, key = where.rsplit(':', 1)
    with h5py.File(path, 'r') as f:
        data = f[key]
        for start in range(0, data.shape[0], BLOCK_ROWS):
            block = np.asarray(data[start:start + BLOCK_ROWS], np.float64)
            bad = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
            if bad.any():
                rows = np.flatnonzero(bad) + start
                raise ValueError(f'{rows.size} row(s) hold NaN/Inf from row {start} on '
                                 f'(first: row {rows[0]})')



def describe(path: str | os.PathLike) -> dict:
    """The data card (`input_pipeline/data_card.py`) of a VEGAS/AVE feature file: pairs
    per split (dataset shapes only) and a fingerprint of its name, size and mtime."""
    import h5py
    from input_pipeline import data_card
    with h5py.File(path, 'r') as f:
        counts = {'pairs': {s: int(f[f'lab_{s}'].shape[0]) for s in SPLITS
                            if f'lab_{s}' in f}}
    return data_card.card('vegas_ave', path, counts, unit='pairs',
                          fingerprint=data_card.stat_fingerprint([path]),
                          fingerprint_of='name, size and mtime of the feature file')
