"""FG-XMedia list files → typed records (the layout is described in `docs/data.md#list-files`).

A list file `root/list/<modality>/<split>.txt` holds one sample per line:
`relative/path label`, label 0-based. The label is the last whitespace-separated
field and everything before it is the path, so paths may contain spaces. Labels always come from
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
# Characters stripped from the end of a frame's path to get its video id.
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
    """Video a frame belongs to: its path without the last 6 characters.

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
              num_classes: int = 200, check_files: bool = True,
              skipped: list[BadLine] | None = None) -> list[ListEntry]:
    """Read and validate `root/list/<modality>/<split>.txt`.

    A line is `path label`: the label is the last whitespace-separated field and
    everything before it (spaces included) is the path. Blank lines are ignored.
    For the test split a `testlabel.txt` beside `test.txt` (one label per line, same
    order, blank lines ignored) supplies labels for lines that have none, and must
    agree with lines that have one; with it, a line whose last field is not an
    integer is all path.

    Line faults (a missing or non-integer label, a label outside [0, num_classes), a
    label that disagrees with testlabel.txt, a path leaving the root, a duplicate
    path, and when `check_files` a file that the path rule cannot find) raise
    ListFormatError naming the list file and line, unless `skipped` is a list: then
    the line is left out and a BadLine is appended to it (a duplicate keeps its first
    occurrence). Faults of a whole file (no list, not UTF-8, a testlabel.txt whose
    count differs) always raise. `index` counts every non-blank line, so a skipped
    line leaves a gap.
    """
    _check_modality(modality)
    path = list_file(root, modality, split)
    if not path.is_file():
        raise ListFormatError(path, f'list file for modality {modality!r}, split {split!r} '
                                    'does not exist')
    fname = str(path)
    rows = _read_rows(path)   # (line number, stripped line)

    testlabels = None
    tl_path = path.parent / TESTLABEL_FILE
    if split == 'test' and tl_path.is_file():
        testlabels = [(n, _label_or_error(line, str(tl_path), n, num_classes))
                      for n, line in _read_rows(tl_path)]
        if len(testlabels) != len(rows):
            bad_line = (testlabels[len(rows)][0] if len(testlabels) > len(rows)
                        else (testlabels[-1][0] + 1 if testlabels else 1))
            raise ListFormatError(
                tl_path, f'holds {len(testlabels)} labels but {fname} holds {len(rows)} '
                         'entries (one label per entry, same order)', line=bad_line)

    entries: list[ListEntry] = []
    seen: dict[str, int] = {}
    for index, (lineno, line) in enumerate(rows):
        rel, label_text = _split_line(line, testlabels is not None)
        try:
            label = _parse_line(rel, label_text, fname, lineno, num_classes,
                                None if testlabels is None else testlabels[index])
            _check_relative(rel, fname, lineno)
            key = rel.replace('\\', '/')
            if key in seen:
                raise ListFormatError(fname, f'duplicate entry {rel!r} (first on line '
                                             f'{seen[key]})', line=lineno)
            seen[key] = lineno
            entry = ListEntry(modality=modality, split=split, path=rel, label=label,
                              list_file=fname, line=lineno, index=index)
            if check_files:
                resolve_path(root, entry)
        except ListFormatError as e:
            if skipped is None:
                raise
            skipped.append(BadLine(modality, split, fname, lineno, rel, e))
            continue
        entries.append(entry)
    return entries


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A list line left out by `read_list(..., skipped=[...])`, and why."""
    modality: str
    split: str
    list_file: str
    line: int
    path: str                 # the path as written (the whole line if it has no label)
    error: ListFormatError


def _split_line(line: str, with_testlabels: bool) -> tuple[str, str | None]:
    """(path, label text or None) of a non-blank line: the label is the last field.
    With a testlabel.txt, a line whose last field is not an integer is all path."""
    fields = line.rsplit(None, 1)
    if len(fields) == 1 or (with_testlabels and not _is_int(fields[1])):
        return line, None
    return fields[0], fields[1]


def _parse_line(rel: str, label_text: str | None, fname: str, lineno: int, num_classes: int,
                testlabel: tuple[int, int | ListFormatError] | None) -> int:
    """The label of one split list line (see _split_line), checked."""
    if testlabel is not None and isinstance(testlabel[1], ListFormatError):
        raise testlabel[1]
    if label_text is None:
        if testlabel is None:
            raise ListFormatError(fname, f'line {rel!r} has no label (expected '
                                         '"relative/path label")', line=lineno)
        return testlabel[1]
    spaced = any(c.isspace() for c in rel)
    hint = ' (expected "relative/path label": the label is the last field)' if spaced else ''
    label = _label_or_error(label_text, fname, lineno, num_classes, hint=hint)
    if isinstance(label, ListFormatError):
        raise label
    if testlabel is not None and testlabel[1] != label:
        raise ListFormatError(fname, f'label {label} disagrees with '
                                     f'{Path(fname).parent / TESTLABEL_FILE}:{testlabel[0]} '
                                     f'({testlabel[1]})', line=lineno)
    return label


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f'unknown modality {modality!r}; expected one of {MODALITIES}')


def _read_rows(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line without surrounding whitespace) of non-blank lines."""
    try:
        text = path.read_bytes().decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise ListFormatError(path, f'not UTF-8 text ({e.reason} at byte {e.start})') from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            rows.append((lineno, line))
    return rows


def _label_or_error(text: str, fname: str, lineno: int, num_classes: int,
                    hint: str = '') -> int | ListFormatError:
    """The label, or the ListFormatError saying why `text` is not one."""
    if len(text.split()) != 1:
        return ListFormatError(fname, f'expected one label per line, got {text!r}', line=lineno)
    try:
        label = int(text)
    except ValueError:
        return ListFormatError(fname, f'label {text!r} is not an integer{hint}', line=lineno)
    if not 0 <= label < num_classes:
        return ListFormatError(fname, f'label {label} outside [0, {num_classes}) '
                                      '(labels are 0-based)', line=lineno)
    return label


def _check_relative(rel: str, fname: str, lineno: int) -> None:
    p = PurePosixPath(rel.replace('\\', '/'))
    if p.is_absolute() or '..' in p.parts or (len(rel) > 1 and rel[1] == ':'):
        raise ListFormatError(fname, f'path {rel!r} must be relative and stay inside the '
                                     'data root', line=lineno)
