"""What data a result was computed on: counts per group and split, and a fingerprint.

Every results.json carries one of these under "data" (methods build it through the
optional `data_description(config)` of the method contract), and results.md, the HTML
report and the sweep tables print its one-line form, so two results can be compared
knowing whether they used the same data (docs/data_check.md#results-name-their-data).

A card is {'format', 'path', 'counts': {group: {split: n}}, 'unit', 'fingerprint',
'fingerprint_of'}. Fingerprints are cheap on purpose (no file is read whole):
- FG-XMedia: the prepared variant's staleness record (`fgxmedia/fingerprint.py`): the
  digest of the source table (size and mtime of every source file) and the settings;
- precomp, VEGAS/AVE: the name, size and mtime of each file the run reads.
Equal fingerprints mean the same files (as far as size and mtime tell); a copy of the same
download gets other mtimes, hence another fingerprint: compare the counts then.
Standard library only (the accelerator side formats cards).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

FINGERPRINT_CHARS = 16


def stat_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over (file name, size, mtime_ns) of each existing path, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        if p.is_file():
            st = p.stat()
            h.update(f'{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
    return h.hexdigest()[:FINGERPRINT_CHARS]


def card(fmt: str, path: str | os.PathLike, counts: Mapping[str, Mapping[str, int]], *,
         fingerprint: str | None, fingerprint_of: str, unit: str = 'items',
         **extra: Any) -> dict[str, Any]:
    return {'format': fmt, 'path': os.fspath(path),
            'counts': {g: dict(s) for g, s in counts.items()}, 'unit': unit,
            'fingerprint': fingerprint, 'fingerprint_of': fingerprint_of, **extra}


def one_line(data: Mapping[str, Any] | None) -> str:
    """'fgxmedia data 3f2a…: image 5994/5794, text 4000/4000 (train/test)'."""
    if not data:
        return 'data: not recorded'
    if 'error' in data:
        return f'data: {data["error"]}'
    counts = data.get('counts', {})
    splits = list(dict.fromkeys(s for by in counts.values() for s in by))
    cells = ', '.join(f'{g} ' + '/'.join(str(by.get(s, '—')) for s in splits)
                      for g, by in counts.items())
    fp = data.get('fingerprint') or 'no fingerprint'
    return f'data: {data.get("format", "?")} {fp}: {cells} ({"/".join(splits)})'


def same_data(cards: Iterable[Mapping[str, Any] | None]) -> bool:
    """True when every card has the same fingerprint and counts (None cards are unknown)."""
    keys = {(c.get('fingerprint'), repr(sorted((g, sorted(s.items()))
                                               for g, s in c.get('counts', {}).items())))
            for c in cards if c}
    return len(keys) <= 1
