"""The published Flickr30K and COCO precomp releases, and `dcinet data check` against them.

Counts are distinct images / captions per split of the SCAN bottom-up-attention releases
(docs/hslm_data.md), with 36 regions x 2048 floats per image; written here once. A
split's images are N_caps / 5 in both row layouts (one row per image or per caption,
`reader.py`). `config.data.name` ('f30k' / 'coco') picks the release; a folder written by
`dcinet demo-data --format precomp` carries its own manifest instead.

Without `--deep` only the .npy headers and the line counts are read (seconds, even for
COCO's 33 GB train file); `--deep` reads every feature row (NaN/Inf rows are named) and
decodes every caption and id line as UTF-8.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from input_pipeline.check import Count, Report, Table, decode_all, read_manifest

CAPTIONS_PER_IMAGE = 5         # lines 5i..5i+4 of <split>_caps.txt describe image i (reader.py)
REGIONS, REGION_DIM = 36, 2048
# name -> (title, {split: (images, captions) or None = may be present, not checked})
RELEASES: dict[str, tuple[str, dict[str, tuple[int, int] | None]]] = {
    'f30k': ('the Flickr30K precomp release (SCAN)',
             {'train': (29000, 145000), 'dev': (1014, 5070), 'test': (1000, 5000)}),
    'coco': ('the COCO precomp release (SCAN)',
             {'train': (113287, 566435), 'dev': (5000, 25000), 'testall': (5000, 25000),
              'test': None}),
}
TABLES = {
    'f30k': (Table('HSLM Flickr30K 1K test (R@1/5/10 both ways)',
                   (('images', 'test'), ('captions', 'test')),
                   tuple((g, s) for s in ('train', 'dev') for g in ('images', 'captions'))),),
    'coco': (Table('HSLM COCO 1K (5 folds of testall) and 5K (R@1/5/10 both ways)',
                   (('images', 'testall'), ('captions', 'testall')),
                   tuple((g, s) for s in ('train', 'dev') for g in ('images', 'captions'))),),
}
BLOCK_ROWS = 1024             # feature rows read at a time by --deep (bounded memory)


def file_names(split: str) -> dict[str, str]:
    """The files of one split: {'images', 'captions', 'ids'} -> file name."""
    return {'images': f'{split}_ims.npy', 'captions': f'{split}_caps.txt',
            'ids': f'{split}_ids.txt'}


def demo_manifest(root: str | os.PathLike, *, name: str, regions: int, feature_dim: int,
                  sizes: dict[str, int]) -> dict[str, Any]:
    """The manifest of a folder `dcinet demo-data --format precomp` wrote: its splits'
    counts from the generator's sizes, the region shape and every file it wrote."""
    files = sorted(n for s in sizes for n in file_names(s).values()) + ['vocab.json']
    return {'format': 'precomp', 'name': name, 'regions': regions, 'feature_dim': feature_dim,
            'splits': {s: [n, CAPTIONS_PER_IMAGE * n] for s, n in sizes.items()},
            'files': files}


def check(root: Path, config: Any = None, *, deep: bool = False,
          progress: bool = True) -> Report:
    own = read_manifest(root)
    notes = []
    if own is not None:
        title, regions, dim = own.get('name', 'its own manifest'), own['regions'], own['feature_dim']
        order = ('train', 'dev', 'test', 'testall')
        splits = {s: tuple(v) for s, v in sorted(
            own['splits'].items(), key=lambda kv: (order + (kv[0],)).index(kv[0]))}
        tables = TABLES['f30k'] + TABLES['coco']
        notes.append('a generated folder: checked against its own manifest, so "comparable" '
                     'below means "as generated", not "as in the paper"')
    else:
        name = str(config.data.get('name', '')) if config is not None else ''
        if name not in RELEASES:
            name = 'coco' if (root / 'testall_caps.txt').is_file() else 'f30k'
            why = 'it has testall' if name == 'coco' else 'it has no testall'
            notes.append(f'config.data.name is not f30k or coco: checked as {name} ({why})')
        title, splits = RELEASES[name]
        regions, dim, tables = REGIONS, REGION_DIM, TABLES[name]
    report = Report('precomp', str(root), title, tables, notes=notes, deep=deep)
    jobs = []
    for split, expected in splits.items():
        names = file_names(split)
        if expected is None:     # optional split: counted when present, never a difference
            if not (root / names['images']).is_file():
                continue
            expected = (None, None)
        found = _check_split(root, split, names, regions, dim, report)
        for group, exp, n in zip(('images', 'captions'), expected, found):
            report.counts.append(Count(group, split, exp, n))
        if deep:
            jobs += [('images', split, str(root / names['images']), _finite_rows)]
            jobs += [('captions', split, str(root / n), _utf8_lines)
                     for n in (names['captions'], names['ids']) if (root / n).is_file()]
    if own is not None:
        expected_files = set(own.get('files', [])) | {'dcinet_manifest.json'}
        for f in sorted(os.listdir(root)):
            if f not in expected_files and not f.startswith('.') and '_tokens_' not in f:
                report.add('extra', '', '', f, 'not a file of the manifest')
    else:
        for f in sorted(os.listdir(root)):
            split = f.rsplit('_', 1)[0]
            if f.endswith(('_ims.npy', '_caps.txt')) and split not in splits:
                report.add('extra', '', split, f, 'a split the release does not have')
    if deep:
        decode_all(jobs, report, progress=progress)
    return report


def _check_split(root: Path, split: str, names: dict[str, str], regions: int, dim: int,
                 report: Report) -> tuple[int, int]:
    """(distinct images, captions) found for one split; faults become findings."""
    caps_path, ims_path = root / names['captions'], root / names['images']
    n_caps = n_rows = 0
    if caps_path.is_file():
        with open(caps_path, 'rb') as f:
            data = f.read()
        n_caps = data.count(b'\n') + (1 if data and not data.endswith(b'\n') else 0)
    else:
        report.add('missing', 'captions', split, caps_path, 'file missing')
    if ims_path.is_file():
        try:
            ims = np.load(ims_path, mmap_mode='r', allow_pickle=False)
        except (ValueError, OSError) as e:
            report.add('undecodable', 'images', split, ims_path, f'not a readable .npy ({e})')
            return n_caps // CAPTIONS_PER_IMAGE, n_caps
        n_rows = int(ims.shape[0]) if ims.ndim else 0
        if ims.dtype != np.float32 or ims.shape[1:] != (regions, dim):
            report.add('shape', 'images', split, ims_path,
                       f'{ims.dtype} {tuple(ims.shape)}, expected float32 (N, {regions}, {dim})')
        if n_caps and n_caps not in (n_rows, CAPTIONS_PER_IMAGE * n_rows):
            report.add('shape', 'captions', split, caps_path,
                       f'{n_caps} captions for {n_rows} feature rows (expected '
                       f'{CAPTIONS_PER_IMAGE * n_rows}, or {n_rows} with one row per caption)')
    else:
        report.add('missing', 'images', split, ims_path, 'file missing')
    ids_path = root / names['ids']
    if ids_path.is_file() and n_rows:
        n_ids = len(ids_path.read_bytes().splitlines())
        if n_ids != n_rows:
            report.add('shape', 'images', split, ids_path, f'{n_ids} ids for {n_rows} feature rows')
    return (n_caps // CAPTIONS_PER_IMAGE if n_caps else n_rows), n_caps


def _finite_rows(path: str) -> None:
    ims = np.load(path, mmap_mode='r', allow_pickle=False)
    for start in range(0, ims.shape[0], BLOCK_ROWS):
        block = np.asarray(ims[start:start + BLOCK_ROWS])
        bad = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad) + start
            raise ValueError(f'{rows.size} feature row(s) hold NaN/Inf from this block on '
                             f'(first: row {rows[0]})')


def _utf8_lines(path: str) -> None:
    data = Path(path).read_bytes()
    try:
        data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise ValueError(f'line {line}: not UTF-8 ({e.reason} at byte {e.start})') from None


def describe(data_dir: str | os.PathLike, vocab_path: str | os.PathLike | None = None) -> dict:
    """The data card (`input_pipeline/data_card.py`) of a precomp folder: distinct images
    and captions of every split present (headers and line counts only) and a fingerprint
    of the name, size and mtime of its split files and vocabulary."""
    from input_pipeline import data_card
    root = Path(data_dir)
    counts: dict[str, dict[str, int]] = {'images': {}, 'captions': {}}
    files = []
    for split in ('train', 'dev', 'test', 'testall'):
        names = file_names(split)
        if not (root / names['images']).is_file():
            continue
        scratch = Report('precomp', str(root), '', ())
        n_img, n_caps = _check_split(root, split, names, 0, 0, scratch)
        counts['images'][split], counts['captions'][split] = n_img, n_caps
        files += [root / n for n in names.values()]
    if vocab_path:
        files.append(Path(vocab_path))
    return data_card.card('precomp', root, counts, fingerprint=data_card.stat_fingerprint(files),
                          fingerprint_of='name, size and mtime of the split files and vocab')
