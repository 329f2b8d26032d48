"""The FG-XMedia folder layout as the demo generators write it (demo.py, demo_hard.py).

Files under their modality folders, one list file per modality and split
(`<relative path> <label>` per line), the text test labels file the release ships, and
the one-screen summary `dcinet demo-data` prints. The generators decide the content;
this module only puts it on disk the way `dcinet prepare` reads it (docs/data.md).
"""

from __future__ import annotations

import time
from pathlib import Path


def write_file(root: Path, rel: str, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to root/rel, creating folders."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode('utf-8')
    p.write_bytes(data)


def write_split_lists(root: Path, split: str, lines: dict, counts: dict) -> None:
    """One split's list files (`<rel path> <label>` per line) and, for the test split,
    the text test labels file the FG-XMedia release ships; counts[m][split] = items."""
    for m, ls in lines.items():
        write_file(root, f'list/{m}/{split}.txt', '\n'.join(ls) + '\n')
        counts[m][split] = len(ls)
    if split == 'test':
        labels = [ln.rsplit(' ', 1)[1] for ln in lines['text']]
        write_file(root, 'list/text/testlabel.txt', '\n'.join(labels) + '\n')


def generate_and_report(title: str, generate, out, classes: int, per_class: int,
                        seed: int) -> dict:
    """Runs a generator (`generate(out, num_classes=, per_class=, seed=)` -> counts),
    writes the folder's own manifest (`dcinet data check` checks against it) and prints
    what it wrote, per modality and split."""
    t0 = time.perf_counter()
    counts = generate(out, num_classes=classes, per_class=per_class, seed=seed)
    from input_pipeline import check
    from input_pipeline.fgxmedia import manifest
    check.write_manifest(out, manifest.demo_manifest(
        out, classes=classes,
        name=f'{title} (classes {classes}, per_class {per_class}, seed {seed})'))
    dt = time.perf_counter() - t0
    print(f'{title}: {classes} classes, seed {seed}, written to {out} in {dt:.1f} s')
    for m, by_split in counts.items():
        print(f'  {m:6s} ' + '  '.join(f'{s} {n:5d}' for s, n in by_split.items()))
    return counts
