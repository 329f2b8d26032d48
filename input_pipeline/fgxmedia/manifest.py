"""The published PKU FG-XMedia release, and `dcinet data check` of a folder against it.

The counts below are the release's (docs/data.md#dataset): items per modality and split,
videos counted as videos (a video is up to 25 frame files, one list line each). They are
written here once; everything else reads them from this module.

A folder is checked through its own list files, as `dcinet prepare` reads it: every list
line whose file the path rule cannot find is *missing* (named by list file and line), a
label outside [0, classes) is *out of range*, a file under a modality folder that no list
names is *extra*, and with `--deep` every listed file goes through the decoder `prepare`
uses (a file that fails is named with the decoder's reason). A folder written by
`dcinet demo-data` carries its own manifest with the path of every item, so an item
whose file and list line were both removed is still named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from input_pipeline.check import Count, Report, Table, Unreadable, decode_all, read_manifest
from input_pipeline.errors import ListFormatError
from input_pipeline.fgxmedia import lists
from input_pipeline.spec import MODALITIES, SPLITS

RELEASE_NAME = 'the published PKU FG-XMedia release'
RELEASE_CLASSES = 200
RELEASE_COUNTS: dict[str, dict[str, int]] = {
    'image': {'train': 5994, 'test': 5794},
    'text': {'train': 4000, 'test': 4000},
    'audio': {'train': 6000, 'test': 6000},
    'video': {'train': 12666, 'test': 5684},
}
DCINET_MEDIA = ('image', 'text', 'audio')
TABLES = (
    Table("DCINet's tables (6 bi-modal + 3 X->all tasks on image, text, audio)",
          tuple((m, 'test') for m in DCINET_MEDIA), tuple((m, 'train') for m in DCINET_MEDIA)),
    Table("FGCrossNet's tables (12 bi-modal + 4 X->all tasks, with video)",
          tuple((m, 'test') for m in MODALITIES), tuple((m, 'train') for m in MODALITIES)),
)


def unit(modality: str) -> str:
    return 'videos' if modality == 'video' else 'items'


def count_items(modality: str, entries: list[lists.ListEntry]) -> int:
    """Items of a list: its lines, or for video its distinct videos."""
    if modality == 'video':
        return len({lists.video_id(e) for e in entries})
    return len(entries)


def demo_manifest(root: str | os.PathLike, *, name: str, classes: int) -> dict[str, Any]:
    """The manifest of a folder `dcinet demo-data` just wrote: its counts and the
    root-relative path of every item, from the lists the generator wrote."""
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    items: dict[str, dict[str, list[str]]] = {}
    for m in lists.available_modalities(root):
        for s in SPLITS:
            if lists.list_file(root, m, s).is_file():
                entries = lists.read_list(root, m, s, num_classes=classes)
                counts.setdefault(m, {})[s] = count_items(m, entries)
                items.setdefault(m, {})[s] = [
                    lists.resolve_path(root, e).relative_to(root).as_posix() for e in entries]
    return {'format': 'fgxmedia', 'name': name, 'classes': classes, 'counts': counts,
            'items': items}


def _source_root(root: Path, report_notes: list[str]) -> Path:
    """A prepared data_dir is followed to the sources it was prepared from."""
    if (root / 'list').is_dir() or read_manifest(root) is not None:
        return root
    for info_path in sorted(root.glob('fg_xmedia/*/*/prepare_info.json')):
        try:
            manual = json.loads(info_path.read_text(encoding='utf-8'))['settings']['manual_dir']
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (Path(manual) / 'list').is_dir():
            report_notes.append(f'{root} is prepared data; checked its sources {manual} '
                                f'(recorded in {info_path})')
            return Path(manual)
    raise Unreadable(f'{root}: no list/ folder, and no prepared variant records a source '
                     'folder that still exists (pass the FG-XMedia root: --config.data_dir=DIR)')


def _kind(error: ListFormatError) -> str:
    if 'not found' in error.what:
        return 'missing'
    if 'outside [' in error.what:
        return 'bad_label'
    return 'bad_line'


def _decoder(modality: str, path: Path, config: Any) -> Callable[[str], Any]:
    """The decoder `prepare` applies to this file (no resizing: decoding is the test)."""
    from input_pipeline.fgxmedia import audio, images, text
    if modality == 'text':
        errors = str(config.data.get('text_errors', 'strict')) if config is not None else 'strict'
        return lambda p: text.read_text(p, errors=errors)
    if modality == 'audio' and audio.is_raw_audio(path):
        return audio.load_audio
    return lambda p: images.decode_image(Path(p).read_bytes(), source=p)


def check(root: Path, config: Any = None, *, deep: bool = False,
          progress: bool = True) -> Report:
    """Report of the FG-XMedia folder `root` (or the sources of a prepared data_dir)."""
    notes: list[str] = []
    root = _source_root(Path(root), notes)
    own = read_manifest(root)
    if own is not None:
        name, classes = own.get('name', 'its own manifest'), int(own['classes'])
        expected, items = own.get('counts', {}), own.get('items')
        notes.append('a generated folder: checked against its own manifest, so "comparable" '
                     'below means "as generated", not "as in the paper"')
    else:
        name, classes, expected, items = RELEASE_NAME, RELEASE_CLASSES, RELEASE_COUNTS, None
    report = Report('fgxmedia', str(root), f'{name} ({classes} classes)', TABLES, notes=notes,
                    deep=deep)
    referenced: set[str] = set()       # root-relative paths some list line names
    jobs = []
    modalities = [m for m in MODALITIES
                  if m in expected or m in lists.available_modalities(root)]
    for m in modalities:
        for s in SPLITS:
            exp = expected.get(m, {}).get(s)
            resolved, reported = _read_split(root, m, s, classes, report)
            if resolved is None:
                if exp is not None:
                    report.counts.append(Count(m, s, exp, 0, unit(m)))
                continue
            entries, found_paths = [e for e, _ in resolved], [p for _, p in resolved]
            rels = {p.relative_to(root).as_posix() for p in found_paths}
            referenced |= rels
            try:
                found = count_items(m, entries)
            except ListFormatError as e:   # a frame name too short to hold a video id
                report.add('bad_line', m, s, f'{e.path}:{e.line}', e.what)
                found = len(entries)
            report.counts.append(Count(m, s, exp, found, unit(m)))
            present = {e.label for e in entries}
            absent = [c for c in range(classes) if c not in present]
            if absent:
                shown = ', '.join(map(str, absent[:10])) + (' ...' if len(absent) > 10 else '')
                report.add('classes', m, s, lists.list_file(root, m, s),
                           f'{len(absent)} of {classes} classes have no item (labels {shown})')
            for rel in (items or {}).get(m, {}).get(s, []):
                if rel not in rels and rel not in reported:
                    why = ('not in the list' if (root / rel).is_file()
                           else 'file and list line both gone')
                    report.add('missing', m, s, rel, f'in the manifest, {why}')
            if deep:
                jobs += [(m, s, str(p), _decoder(m, p, config)) for p in found_paths]
    _extras(root, modalities, referenced, items, report)
    if deep:
        decode_all(jobs, report, progress=progress)
    return report


def _read_split(root: Path, m: str, s: str, classes: int, report: Report):
    """([(entry, its file)] or None, root-relative paths already reported missing) of
    one list. Each file is looked up once (one stat per candidate: at full size the
    check is bound by these lookups)."""
    path = lists.list_file(root, m, s)
    if not path.is_file():
        report.add('missing', m, s, path, 'list file missing')
        return None, set()
    bad: list[lists.BadLine] = []
    try:
        entries = lists.read_list(root, m, s, num_classes=classes, check_files=False,
                                  skipped=bad)
    except ListFormatError as e:           # a fault of the whole file
        report.add('bad_line', m, s, e.path if e.line is None else f'{e.path}:{e.line}', e.what)
        return None, set()
    resolved, reported = [], set()
    for e in entries:
        try:
            resolved.append((e, lists.resolve_path(root, e)))
        except ListFormatError as err:     # the path rule found no file
            bad.append(lists.BadLine(m, s, e.list_file, e.line, e.path, err))
    for b in sorted(bad, key=lambda b: b.line):
        report.add(_kind(b.error), m, s, f'{b.list_file}:{b.line}', b.error.what)
        for c in lists.candidate_paths(root, lists.ListEntry(m, s, b.path, 0, '', 0, 0)):
            try:
                reported.add(c.relative_to(root).as_posix())
            except ValueError:
                pass
    return resolved, reported


def _extras(root: Path, modalities: list[str], referenced: set[str], items, report: Report):
    """Files under the modality folders that neither a list nor the manifest names."""
    known = set(referenced)
    for by_split in (items or {}).values():
        for paths in by_split.values():
            known.update(paths)
    for m in modalities:
        folder = root / m
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for f in sorted(filenames):
                if f.startswith('.'):
                    continue
                rel = Path(dirpath, f).relative_to(root).as_posix()
                if rel not in known:
                    report.add('extra', m, '', rel, 'no list line names this file')
