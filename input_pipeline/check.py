"""`dcinet data check`: a data folder against the release it stands for, in one report.

What users of these methods report most is data that is not the paper's data (videos
gone from YouTube, split layouts that differ, files missing or damaged), so the check
says how a folder differs from the published release and which paper tables its numbers
can still be compared with (docs/data_check.md).

The published counts live once, in a `manifest.py` per format
(`input_pipeline/{fgxmedia,precomp,vegas_ave}/manifest.py`); a folder written by
`dcinet demo-data` carries its own manifest (`MANIFEST_FILE`, derived from the
generator's parameters), which then replaces the release's. This module holds what
every format shares: the report (counts, findings, the tables that stay comparable,
text and JSON), the parallel decode of `--deep` and the exit codes. Standard library,
numpy and tqdm only; no TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


MANIFEST_FILE = 'dcinet_manifest.json'
FORMATS = ('fgxmedia', 'precomp', 'vegas_ave')
# Exit codes of `dcinet data check` (the README's "Exit codes" lists them).
EXIT_MATCHES, EXIT_DIFFERS, EXIT_UNREADABLE = 0, 1, 2
KINDS = {  # finding kind -> heading in the report
    'missing': 'missing', 'extra': 'extra (not in the manifest)',
    'bad_label': 'labels out of range', 'bad_line': 'malformed list lines',
    'undecodable': 'do not decode', 'shape': 'shapes that differ',
    'classes': 'classes that differ'}
MAX_LISTED = 20   # findings of one kind printed by name in the text report (JSON has all)


class Unreadable(Exception):
    """The input cannot be read at all (no folder, no file of a known format): exit 2."""


@dataclasses.dataclass(frozen=True)
class Table:
    """A paper table and the (group, split) pairs it evaluates on and trains on."""
    name: str
    evaluated_on: tuple[tuple[str, str], ...]
    trained_on: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Count:
    group: str            # modality, or 'images' / 'captions' / 'pairs'
    split: str
    expected: int | None  # None: not published, not checked
    found: int
    unit: str = 'items'

    @property
    def differs(self) -> bool:
        return self.expected is not None and self.found != self.expected


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str             # a key of KINDS
    group: str
    split: str
    where: str            # the file (and line) at fault
    what: str


@dataclasses.dataclass
class Report:
    """Everything one check found; `exit_code` 0 when it matches its manifest."""
    format: str
    root: str
    manifest: str                      # which manifest the folder was checked against
    tables: tuple[Table, ...]
    counts: list[Count] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    deep: bool = False

    def add(self, kind: str, group: str, split: str, where: str, what: str) -> None:
        if kind not in KINDS:
            raise ValueError(f'unknown finding kind {kind!r}')
        self.findings.append(Finding(kind, group, split, str(where), what))

    def affected(self, *, used_only: bool = False) -> set[tuple[str, str]]:
        """(group, split) pairs whose data differ from the manifest; `used_only` leaves
        out extra files (no reader uses them, so no table changes)."""
        out = {(c.group, c.split) for c in self.counts if c.differs}
        return out | {(f.group, f.split) for f in self.findings
                      if not (used_only and f.kind == 'extra')}

    @property
    def exit_code(self) -> int:
        return EXIT_DIFFERS if self.affected() else EXIT_MATCHES

    def consequences(self) -> list[str]:
        """One line per paper table: comparable, trained on other data, or not comparable."""
        bad = self.affected(used_only=True)
        lines = []
        for t in self.tables:
            hit_eval = sorted({p for p in t.evaluated_on if _touches(p, bad)})
            hit_train = sorted({p for p in t.trained_on if _touches(p, bad)})
            if hit_eval:
                lines.append(f'{t.name}: NOT comparable with the paper (the evaluation data '
                             f'differ: {_pairs(hit_eval)})')
            elif hit_train:
                lines.append(f'{t.name}: evaluation data as published; training data differ '
                             f'({_pairs(hit_train)}), so compare with care')
            else:
                lines.append(f'{t.name}: comparable (the data it uses match)')
        return lines

    def to_json(self) -> dict[str, Any]:
        return {'format': self.format, 'root': self.root, 'manifest': self.manifest,
                'deep': self.deep, 'matches': self.exit_code == EXIT_MATCHES,
                'counts': [dataclasses.asdict(c) | {'differs': c.differs} for c in self.counts],
                'findings': [dataclasses.asdict(f) for f in self.findings],
                'notes': list(self.notes), 'tables': self.consequences()}

    def format_text(self) -> str:
        out = [f'{self.format} data at {self.root}', f'checked against: {self.manifest}'
               + ('' if self.deep else ' (files not decoded; --deep decodes every one)'), '',
               f'{"":<10}{"split":<9}{"expected":>10}{"found":>10}']
        for c in self.counts:
            exp = '—' if c.expected is None else f'{c.expected:,}'
            mark = '  <- differs' if c.differs else ''
            out.append(f'{c.group:<10}{c.split:<9}{exp:>10}{c.found:>10,} {c.unit}{mark}')
        for kind, heading in KINDS.items():
            found = [f for f in self.findings if f.kind == kind]
            if found:
                out += ['', f'{heading}: {len(found)}']
                out += [f'  {f.where}: {f.what}' for f in found[:MAX_LISTED]]
                if len(found) > MAX_LISTED:
                    out.append(f'  ... and {len(found) - MAX_LISTED} more (--json lists all)')
        out += [''] + [f'note: {n}' for n in self.notes] + [''] * bool(self.notes)
        out += ['what follows:'] + [f'  {line}' for line in self.consequences()]
        verdict = ('the data match the manifest' if self.exit_code == EXIT_MATCHES
                   else 'the data DIFFER from the manifest (listed above)')
        return '\n'.join(out + ['', verdict])


def _touches(pair: tuple[str, str], bad: set[tuple[str, str]]) -> bool:
    group, split = pair
    return pair in bad or (group, '') in bad or ('', split) in bad


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ', '.join(f'{g} {s}'.strip() for g, s in pairs)


# ----------------------------------------------------------------------------- manifests

def write_manifest(root: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write a generated folder's own manifest (`dcinet demo-data` does)."""
    path = Path(root) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + '\n', encoding='utf-8')
    return path


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's own manifest, or None when it has none. A manifest that is not JSON
    is Unreadable (never guessed at)."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise Unreadable(f'{path}: not a readable manifest ({e})') from None
    if not isinstance(data, dict) or data.get('format') not in FORMATS:
        raise Unreadable(f'{path}: "format" must be one of {FORMATS}')
    return data


# ----------------------------------------------------------------------------- --deep

def decode_all(jobs: list[tuple[str, str, str, Callable[[str], Any]]], report: Report, *,
               workers: int | None = None, progress: bool = True) -> None:
    """Run `decode(path)` for every (group, split, path, decode) job in a thread pool
    (PIL, libsndfile and numpy release the GIL) with a progress bar; every exception is
    an 'undecodable' finding naming the file. Results are added in job order."""
    from tqdm import tqdm

    workers = workers or min(32, (os.cpu_count() or 1) * 2)

    def one(job):
        group, split, path, decode = job
        try:
            decode(path)
        except Exception as e:  # noqa: BLE001 - every failure is a finding, never a crash
            return group, split, path, _one_line(e)
        return None

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        bar = tqdm(total=len(jobs), desc='decoding', unit='file', disable=not progress,
                   leave=False)
        results = []
        for r in pool.map(one, jobs, chunksize=16):
            results.append(r)
            bar.update()
        bar.close()
    for r in results:
        if r is not None:
            group, split, path, why = r
            report.add('undecodable', group, split, path, why)


def _one_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    path = getattr(e, 'path', None)
    if path and text.startswith(f'{path}: '):   # DataError already names the file
        text = text[len(path) + 2:]
    return text


# ----------------------------------------------------------------------------- entry point

def detect_format(root: Path, config: Any = None) -> str:
    """The format of a folder: its own manifest's, else by what it holds."""
    own = read_manifest(root)
    if own is not None:
        return own['format']
    if (root / 'list').is_dir():
        return 'fgxmedia'
    if any(root.glob('*_ims.npy')):
        return 'precomp'
    if any(root.glob('*.h5')):
        return 'vegas_ave'
    name = str(config.get('method', '')) if config is not None else ''
    if name in ('dcinet', 'fgcrossnet') and any(root.glob('fg_xmedia/*/*/prepare_info.json')):
        return 'fgxmedia'    # a prepared data_dir: the check follows it to its sources
    raise Unreadable(f'{root}: not a data folder of a known format (an FG-XMedia root with '
                     'list/, a precomp folder with <split>_ims.npy, or a VEGAS/AVE .h5 file)')


def run_check(config: Any, *, deep: bool = False, progress: bool = True) -> Report:
    """Check `config.data_dir` against its manifest. Raises Unreadable."""
    root = Path(str(config.data_dir))
    if not str(root) or not root.exists():
        raise Unreadable(f'{root}: no such data folder (--config.data_dir=DIR)')
    if root.is_file():
        raise Unreadable(f'{root}: is a file; pass the folder that holds the data')
    fmt = detect_format(root, config)
    module = importlib.import_module(f'input_pipeline.{fmt}.manifest')
    return module.check(root, config, deep=deep, progress=progress)


def check_main(config: Any, *, deep: bool = False, as_json: bool = False) -> int:
    """`dcinet data check`: print the report (text or JSON); returns the exit code."""
    import sys
    try:
        report = run_check(config, deep=deep, progress=not as_json)
    except (Unreadable, OSError) as e:
        if as_json:
            print(json.dumps({'matches': False, 'error': str(e)}))
        print(f'dcinet data check: cannot read the data: {e}', file=sys.stderr)
        return EXIT_UNREADABLE
    print(json.dumps(report.to_json(), indent=1) if as_json else report.format_text())
    return report.exit_code
