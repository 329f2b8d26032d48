"""`dcinet prepare`: FG-XMedia files on disk → TFDS shards that tf.data only decodes.

The expensive work (audio → spectrogram, image resize, text encoding) runs once here,
in a process pool sized to the machine, and never again per epoch. Each stored image
is an RGB JPEG already resized to `resize_size` square (see `encode.JPEG_QUALITY` for
the quality choice), so training only decodes the crop window.

Bad files: with `on_error='fail'` the first bad item (in list order) stops the run
with its `DataError` naming the file (and list line); with `'skip'` every bad item is
left out, listed with its reason in `<prepared dir>/skipped.tsv`, and counted in the
summary. Re-running on a prepared directory only reads its metadata.

The per-item encoding lives in `encode.py`; TensorFlow and TFDS are imported only
when a variant is built or read.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from input_pipeline import encode
from input_pipeline.encode import StoreSpec
from input_pipeline.errors import DataError
from input_pipeline.spec import MODALITIES, SPLITS

ON_ERROR = ('fail', 'skip')
SKIPPED_REPORT = 'skipped.tsv'


def prepared_dir(data_dir: str | os.PathLike, data_config: Any) -> Path:
    """Where `prepare` writes the variant of `data_config` (the TFDS version dir)."""
    from input_pipeline import fg_xmedia
    return (Path(data_dir) / fg_xmedia.FgXMedia.name / StoreSpec.from_data_config(data_config).name
            / str(fg_xmedia.FgXMedia.VERSION))


def prepare(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, data_config: Any, *,
            on_error: str = 'fail', progress: bool = True, num_workers: int | None = None,
            pool: str = 'auto') -> dict[str, dict[str, int]]:
    """Build (or reuse) the `fg_xmedia` variant of `data_config` in `data_dir`.

    Returns {modality: {split: number of stored examples}}. A directory already
    prepared for this variant is reused without touching the source files.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
    manual_dir = Path(manual_dir)
    if not (manual_dir / 'list').is_dir():
        raise FileNotFoundError(f'{manual_dir} is not an FG-XMedia data root: it has no list/ '
                                'folder (expected list/<modality>/{train,test}.txt)')
    import tensorflow_datasets as tfds

    from input_pipeline import fg_xmedia

    spec = StoreSpec.from_data_config(data_config)
    builder = fg_xmedia.FgXMedia(data_dir=os.fspath(data_dir), config=fg_xmedia.make_config(spec),
                                 on_error=on_error, progress=progress,
                                 num_classes=int(data_config.num_classes),
                                 num_workers=encode.resolve_workers(num_workers), pool=pool)
    out_dir = Path(builder.data_dir)
    rebuilt = not builder.is_prepared()
    if rebuilt:
        tfds.disable_progress_bar()  # our per-file bar (fg_xmedia) says more
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
        write_skipped_report(out_dir / SKIPPED_REPORT, builder.skipped)
    counts = counts_of(builder)
    if progress:
        print(summary(counts, out_dir, rebuilt, _read_skipped_count(out_dir / SKIPPED_REPORT)))
    return counts


def counts_of(builder: Any) -> dict[str, dict[str, int]]:
    """{modality: {split: examples}} from the builder's stored metadata."""
    counts: dict[str, dict[str, int]] = {}
    for name, info in builder.info.splits.items():
        modality, split = name.rsplit('_', 1)
        counts.setdefault(modality, {})[split] = int(info.num_examples)
    return {m: counts[m] for m in MODALITIES if m in counts}


def summary(counts: Mapping[str, Mapping[str, int]], out_dir: Path, rebuilt: bool,
            skipped: int) -> str:
    """Human-readable per-modality/split table for the end of `dcinet prepare`."""
    splits = list(SPLITS)
    rows = [f'{"modality":<10}' + ''.join(f'{s:>10}' for s in splits)]
    for m, per in counts.items():
        rows.append(f'{m:<10}' + ''.join(f'{per.get(s, 0):>10}' for s in splits))
    head = ('prepared' if rebuilt else 'already prepared (reused, nothing decoded)') + f': {out_dir}'
    tail = (f'{skipped} item(s) skipped, listed with reasons in {out_dir / SKIPPED_REPORT}'
            if skipped else 'no item skipped')
    return '\n'.join([head, *rows, tail])


def write_skipped_report(path: Path, skipped: list[dict[str, Any]]) -> None:
    """TSV: modality, split, list_file, line, path, reason (header always written,
    so an empty report says 'nothing skipped' rather than 'unknown')."""
    fields = ('modality', 'split', 'list_file', 'line', 'path', 'reason')
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter='\t', lineterminator='\n')
        w.writeheader()
        for row in skipped:
            w.writerow({k: str(row[k]).replace('\t', ' ').replace('\n', ' ') for k in fields})


def read_skipped_report(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a skipped.tsv written by `write_skipped_report`."""
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def _read_skipped_count(path: Path) -> int:
    return len(read_skipped_report(path)) if path.is_file() else 0


def prepare_main(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                 config: Any = None, on_error: str | None = None) -> dict[str, dict[str, int]]:
    """CLI entry (`dcinet prepare --manual_dir SRC --data_dir DST [--config] [--on_error]`).

    `config` is a full config (with `.data`), a data config, or None for the paper
    config; `on_error` None takes `config.data.on_error`. Prints progress and the
    summary; a DataError is printed as `path:line: what` and re-raised.
    """
    if config is None:
        from configs import dcinet_fgxmedia
        config = dcinet_fgxmedia.get_config()
    data_config = config.data if hasattr(config, 'data') else config
    on_error = on_error or getattr(data_config, 'on_error', 'fail')
    try:
        return prepare(manual_dir, data_dir, data_config, on_error=on_error, progress=True)
    except DataError as e:
        print(f'error: {e}\n(rerun with --on_error skip to leave bad items out and get a report)',
              file=sys.stderr)
        raise
