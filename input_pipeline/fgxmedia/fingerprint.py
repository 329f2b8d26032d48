"""What a prepared variant was built from, so `dcinet prepare` notices stale data.

Beside the shards of a variant, `prepare` records (see `docs/data.md#prepared-variants`):
- `prepare_info.json`: the settings that decide what gets stored (the manual dir's
  absolute path, `on_error`, `num_classes`, `text_errors`), a digest of the source
  table, the class count the lists were validated against and the largest label of
  every split (the training and evaluation input check it against the config);
- `prepare_sources.json`: the source table, {relative path: [size, mtime_ns]} of every
  file under the manual dir (hidden names and a data dir inside it left out).

A later `prepare` compares the current settings and table with the record; any
difference is described in one line and the variant is rebuilt. Standard library
only: no TensorFlow here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

INFO_FILE = 'prepare_info.json'
SOURCES_FILE = 'prepare_sources.json'
SKIPPED_FILE = 'skipped.tsv'   # what `prepare --on_error=skip` left out (prepare.py)
FORMAT = 1
_MAX_NAMED = 3   # changed files named in the one-line description


def source_table(manual_dir: str | os.PathLike,
                 exclude: tuple[str | os.PathLike, ...] = ()) -> dict[str, list[int]]:
    """{posix relative path: [size, mtime_ns]} of every file under `manual_dir`.

    Names starting with '.' are skipped, and so is any directory in `exclude` (a data
    dir placed inside the manual dir must not fingerprint its own output).
    """
    root = Path(manual_dir).resolve()
    skip = {Path(p).resolve() for p in exclude}
    table: dict[str, list[int]] = {}
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name.startswith('.'):
                    continue
                if e.is_dir(follow_symlinks=True):
                    p = Path(e.path)
                    if p.resolve() not in skip:
                        stack.append(p)
                elif e.is_file(follow_symlinks=True):
                    st = e.stat(follow_symlinks=True)
                    rel = Path(e.path).relative_to(root).as_posix()
                    table[rel] = [int(st.st_size), int(st.st_mtime_ns)]
    return dict(sorted(table.items()))


def digest(table: Mapping[str, list[int]]) -> str:
    """sha256 of the source table (order independent)."""
    h = hashlib.sha256()
    for rel in sorted(table):
        size, mtime = table[rel]
        h.update(f'{rel}\0{size}\0{mtime}\n'.encode('utf-8', 'surrogateescape'))
    return h.hexdigest()


def read_info(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded prepare_info.json of a variant, or None (none, or unreadable)."""
    try:
        with open(Path(out_dir) / INFO_FILE, encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def record(out_dir: str | os.PathLike, *, settings: Mapping[str, Any],
           table: Mapping[str, list[int]], max_labels: Mapping[str, int]) -> None:
    """Write prepare_sources.json, then prepare_info.json (each atomically)."""
    out_dir = Path(out_dir)
    _write_json(out_dir / SOURCES_FILE, table)
    _write_json(out_dir / INFO_FILE, {
        'format': FORMAT,
        'settings': dict(settings),
        'sources_digest': digest(table),
        'num_files': len(table),
        'num_classes': int(settings['num_classes']),
        'max_labels': {k: int(v) for k, v in sorted(max_labels.items())},
    })


def what_changed(out_dir: str | os.PathLike, settings: Mapping[str, Any],
                 table: Mapping[str, list[int]]) -> str | None:
    """None when the record of `out_dir` matches; else one line saying what differs."""
    info = read_info(out_dir)
    if info is None or info.get('format') != FORMAT:
        return 'it has no record of its sources (prepared by an older version)'
    was = info.get('settings', {})
    changes = [f'{k} was {was.get(k)!r}, now {v!r}' for k, v in settings.items()
               if was.get(k) != v]
    if info.get('sources_digest') != digest(table):
        changes.append(_describe_files(_read_table(Path(out_dir) / SOURCES_FILE), table))
    return '; '.join(changes) or None


def _describe_files(old: Mapping[str, list[int]] | None, new: Mapping[str, list[int]]) -> str:
    if old is None:
        return 'source files changed (no file table recorded)'
    kinds = (('modified', [p for p in new if p in old and list(old[p]) != list(new[p])]),
             ('added', [p for p in new if p not in old]),
             ('removed', [p for p in old if p not in new]))
    parts = []
    for word, paths in kinds:
        if paths:
            named = ', '.join(paths[:_MAX_NAMED])
            more = f' and {len(paths) - _MAX_NAMED} more' if len(paths) > _MAX_NAMED else ''
            parts.append(f'{len(paths)} {word} ({named}{more})')
    return 'source files changed: ' + ', '.join(parts)


def _read_table(path: Path) -> dict[str, list[int]] | None:
    try:
        with open(path, encoding='utf-8') as f:
            table = json.load(f)
    except (OSError, ValueError):
        return None
    return table if isinstance(table, dict) else None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, separators=(',', ':'))
    os.replace(tmp, path)


def describe_prepared(data_dir: str | os.PathLike, data_config: Any) -> dict[str, Any] | None:
    """The data card (`input_pipeline/data_card.py`) of the prepared variant that
    `data_config` reads from `data_dir`: stored examples per modality and split (video:
    frames) from TFDS's dataset_info.json, skipped items, and a fingerprint of the
    staleness record (source-table digest, settings, variant). None when not prepared."""
    from input_pipeline import data_card
    from input_pipeline.fgxmedia.encode import StoreSpec

    variant = StoreSpec.from_data_config(data_config).name
    found = sorted(Path(data_dir).glob(f'fg_xmedia/{variant}/*/dataset_info.json'))
    if not found:
        return None
    out_dir = found[-1].parent
    try:
        with open(found[-1], encoding='utf-8') as f:
            splits = json.load(f).get('splits', [])
    except (OSError, ValueError):
        return None
    counts: dict[str, dict[str, int]] = {}
    for s in splits:
        modality, split = str(s.get('name', '_')).rsplit('_', 1)
        counts.setdefault(modality, {})[split] = sum(int(n) for n in s.get('shardLengths', []))
    info = read_info(out_dir) or {}
    settings = {k: v for k, v in info.get('settings', {}).items() if k != 'manual_dir'}
    fp = None
    if info.get('sources_digest'):
        h = hashlib.sha256(f'{info["sources_digest"]}\0{variant}\0'
                           f'{json.dumps(settings, sort_keys=True)}'.encode())
        fp = h.hexdigest()[:data_card.FINGERPRINT_CHARS]
    skipped = out_dir / SKIPPED_FILE
    n_skipped = max(0, len(skipped.read_text().splitlines()) - 1) if skipped.is_file() else None
    return data_card.card('fgxmedia', out_dir, counts, fingerprint=fp, unit='examples (video: frames)',
                          fingerprint_of=f'prepared variant {variant}: source table digest '
                          f'({info.get("num_files", "?")} files, size and mtime) and settings',
                          skipped=n_skipped)
