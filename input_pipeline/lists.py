"""FG-XMedia list files → typed records (SPEC 1.1).

A list file `root/list/<modality>/<split>.txt` holds one sample per line:
`relative/path label`, whitespace separated, label 0-based. Labels always come from
these lists, never from folder names (several audio folders are spelled differently
from the class names).

Path rule (`resolve_path`). Public reference code joins list paths with a
per-modality folder (`image/`, `audio/audioimg/`, ...), while a hand-made list may
be relative to the data root. The candidates are tried in this order and the first
existing file wins:

1. `root/<path>`                      (path relative to the data root)
2. `root/<modality folder>/<path>`    for each of the modality's folders, in order:
   image → `image/`; audio → `audio/audioimg/` (shipped spectrogram PNGs), then
   `audio/` (raw audio); text → `text/`; video → `video/`.

A path that starts with `..` or is absolute is refused: the dataset must stay inside
its root so prepared data can be moved.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath

from input_pipeline.errors import ListFormatError
from input_pipeline.spec import MODALITIES, SPLITS

# Folders that list paths may be relative to, per modality, in the order tried.
MODALITY_DIRS: dict[str, tuple[str, ...]] = {
    'image': ('image',),
    'audio': ('audio/audioimg', 'audio'),
    'text': ('text',),
    'video': ('video',),
}

TESTLABEL_FILE = 'testlabel.txt'
# Characters stripped from the end of a frame's path to get its video id (SPEC 1.1).
VIDEO_SUFFIX_LEN = 6


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One line of a list file; `path` is exactly as written (use `resolve_path`)."""
    modality: str
    split: str
    path: str
    label: int
    list_file: str
    line: int    # 1-based line number in `list_file`
    index: int   # position among the entries of this list (0-based)


def list_file(root: str | os.PathLike, modality: str, split: str) -> Path:
    """Where the list of (modality, split) lives."""
    _check_modality(modality)
    return Path(root) / 'list' / modality / f'{split}.txt'


def available_modalities(root: str | os.PathLike) -> tuple[str, ...]:
    """Modalities (in `MODALITIES` order) that have at least one split list file."""
    return tuple(m for m in MODALITIES
                 if any(list_file(root, m, s).is_file() for s in SPLITS))


def candidate_paths(root: str | os.PathLike, entry: ListEntry) -> list[Path]:
    """Every location the path rule (module docstring) tries, in order."""
    root = Path(root)
    rel = PurePosixPath(entry.path.replace('\\', '/'))
    return [root / rel] + [root / d / rel for d in MODALITY_DIRS[entry.modality]]


def resolve_path(root: str | os.PathLike, entry: ListEntry) -> Path:
    """The file an entry points at, by the path rule in the module docstring.

    Raises ListFormatError naming the list file and line when no candidate exists.
    """
    candidates = candidate_paths(root, entry)
    for c in candidates:
        if c.is_file():
            return c
    tried = ', '.join(str(c) for c in candidates)
    raise ListFormatError(entry.list_file, f'file {entry.path!r} not found (tried {tried})',
                          line=entry.line)


def video_id(entry: ListEntry) -> str:
    """Video a frame belongs to: its path without the last 6 characters (SPEC 1.1).

    The directory part is kept so that two videos with the same file-name stem in
    different class folders stay distinct; within one folder this equals the
    reference rule on the bare file name.
    """
    name = PurePosixPath(entry.path.replace('\\', '/')).name
    if len(name) <= VIDEO_SUFFIX_LEN:
        raise ListFormatError(
            entry.list_file,
            f'video frame name {name!r} is too short: the video id is the name without its '
            f'last {VIDEO_SUFFIX_LEN} characters (e.g. "clip_01.jpg" -> "clip_")',
            line=entry.line)
    return entry.path.replace('\\', '/')[:-VIDEO_SUFFIX_LEN]


def read_list(root: str | os.PathLike, modality: str, split: str, *,
              num_classes: int = 200, check_files: bool = True) -> list[ListEntry]:
    """Read and validate `root/list/<modality>/<split>.txt`.

    Lines are `path label` (exactly two whitespace-separated fields; paths with
    spaces are not supported, as in the reference code); blank lines are ignored.
    For the test split a `testlabel.txt` beside `test.txt` (one label per line, same
    order, blank lines ignored) supplies labels for lines that have none, and must
    agree with lines that have one.

    Raises ListFormatError (file and line named) for a missing list, a malformed
    line, a non-integer or out-of-range label, a duplicate path, a testlabel.txt
    whose count or values disagree, and, when `check_files`, a file that the path
    rule cannot find.
    """
    _check_modality(modality)
    path = list_file(root, modality, split)
    if not path.is_file():
        raise ListFormatError(path, f'list file for modality {modality!r}, split {split!r} '
                                    'does not exist')
    fname = str(path)
    rows = _read_rows(path)   # (line number, fields)

    testlabels = None
    tl_path = path.parent / TESTLABEL_FILE
    if split == 'test' and tl_path.is_file():
        testlabels = _read_testlabels(tl_path, num_classes)
        if len(testlabels) != len(rows):
            bad_line = (testlabels[len(rows)][0] if len(testlabels) > len(rows)
                        else (testlabels[-1][0] + 1 if testlabels else 1))
            raise ListFormatError(
                tl_path, f'holds {len(testlabels)} labels but {fname} holds {len(rows)} '
                         'entries (one label per entry, same order)', line=bad_line)

    entries: list[ListEntry] = []
    seen: dict[str, int] = {}
    for index, (lineno, fields) in enumerate(rows):
        if len(fields) == 2:
            rel, label_text = fields
            label = _parse_label(label_text, fname, lineno, num_classes)
            if testlabels is not None and testlabels[index][1] != label:
                tl_line, tl_label = testlabels[index]
                raise ListFormatError(
                    fname, f'label {label} disagrees with {tl_path}:{tl_line} ({tl_label})',
                    line=lineno)
        elif len(fields) == 1 and testlabels is not None:
            rel, label = fields[0], testlabels[index][1]
        elif len(fields) == 1:
            raise ListFormatError(fname, f'line {fields[0]!r} has no label (expected '
                                         '"relative/path label")', line=lineno)
        else:
            raise ListFormatError(fname, f'expected "relative/path label", got {len(fields)} '
                                         f'fields: {" ".join(fields)!r}', line=lineno)
        _check_relative(rel, fname, lineno)
        key = rel.replace('\\', '/')
        if key in seen:
            raise ListFormatError(fname, f'duplicate entry {rel!r} (first on line {seen[key]})',
                                  line=lineno)
        seen[key] = lineno
        entry = ListEntry(modality=modality, split=split, path=rel, label=label,
                          list_file=fname, line=lineno, index=index)
        if check_files:
            resolve_path(root, entry)
        entries.append(entry)
    return entries


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f'unknown modality {modality!r}; expected one of {MODALITIES}')


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_bytes().decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise ListFormatError(path, f'not UTF-8 text ({e.reason} at byte {e.start})') from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            rows.append((lineno, fields))
    return rows


def _read_testlabels(path: Path, num_classes: int) -> list[tuple[int, int]]:
    out = []
    for lineno, fields in _read_rows(path):
        if len(fields) != 1:
            raise ListFormatError(path, f'expected one label per line, got {" ".join(fields)!r}',
                                  line=lineno)
        out.append((lineno, _parse_label(fields[0], str(path), lineno, num_classes)))
    return out


def _parse_label(text: str, fname: str, lineno: int, num_classes: int) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ListFormatError(fname, f'label {text!r} is not an integer', line=lineno) from None
    if not 0 <= label < num_classes:
        raise ListFormatError(fname, f'label {label} outside [0, {num_classes}) '
                                     '(labels are 0-based)', line=lineno)
    return label


def _check_relative(rel: str, fname: str, lineno: int) -> None:
    p = PurePosixPath(rel.replace('\\', '/'))
    if p.is_absolute() or '..' in p.parts or (len(rel) > 1 and rel[1] == ':'):
        raise ListFormatError(fname, f'path {rel!r} must be relative and stay inside the '
                                     'data root', line=lineno)
