"""`dcinet prepare`: FG-XMedia files on disk → TFDS shards that tf.data only decodes.

The expensive work (audio → spectrogram, image resize, text encoding) runs once here,
in a process pool sized to the machine, and never again per epoch. Each stored image
is an RGB JPEG already resized to `resize_size` square (see `encode.JPEG_QUALITY` for
the quality choice), so training only decodes the crop window.

Bad items: with `on_error='fail'` the first fault stops the run with its `DataError`
naming the file and the list line (list faults are found before anything is
decoded); with `'skip'` every bad list line and every bad file is left out, listed
with its reason in `<prepared dir>/skipped.tsv`, and counted in the summary. Only
faults of a whole list file (missing, not UTF-8, a testlabel.txt of the wrong length)
stop a skip-mode run.

Re-running on a prepared variant only reads its metadata and the sizes and mtimes of
the source files: a variant whose sources or settings changed is rebuilt (see
`fingerprint.py`), and `force=True` (`--force`) rebuilds it anyway. A rebuild is made
beside the previous variant, which is replaced only when the new one is complete: a
rebuild that stops on a bad item keeps the previous good data.

The per-item encoding lives in `encode.py`; TensorFlow and TFDS are imported only
when a variant is built or read.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

from input_pipeline.fgxmedia import encode, fingerprint
from input_pipeline.fgxmedia.encode import StoreSpec
from input_pipeline.spec import MODALITIES, SPLITS, TEXT_ERRORS

ON_ERROR = ('fail', 'skip')
SKIPPED_REPORT = fingerprint.SKIPPED_FILE   # beside the variant's other record files


def prepared_dir(data_dir: str | os.PathLike, data_config: Any) -> Path:
    """Where `prepare` writes the variant of `data_config` (the TFDS version dir)."""
    from input_pipeline.fgxmedia import builder as fg_xmedia
    return (Path(data_dir) / fg_xmedia.FgXMedia.name / StoreSpec.from_data_config(data_config).name
            / str(fg_xmedia.FgXMedia.VERSION))


def prepare(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, data_config: Any, *,
            on_error: str = 'fail', progress: bool = True, num_workers: int | None = None,
            pool: str = 'auto', force: bool = False) -> dict[str, dict[str, int]]:
    """Build (or reuse) the `fg_xmedia` variant of `data_config` in `data_dir`.

    Returns {modality: {split: number of stored examples}}. A variant already prepared
    from the same sources and settings (fingerprint.py) is reused without decoding
    anything. When its record differs (a source file changed, was added or removed,
    another manual dir, another on_error, num_classes or text_errors), or `force`,
    one warning line says why and the variant directory (only it; never a source
    file) is replaced by a fresh build. The previous variant is moved aside first and
    removed only once the new build is complete: a failed rebuild puts it back.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
    text_errors = str(getattr(data_config, 'text_errors', 'strict'))
    if text_errors not in TEXT_ERRORS:
        raise ValueError(f'data.text_errors must be one of {TEXT_ERRORS}, got {text_errors!r}')
    manual_dir = Path(manual_dir)
    if not (manual_dir / 'list').is_dir():
        raise FileNotFoundError(f'{manual_dir} is not an FG-XMedia data root: it has no list/ '
                                'folder (expected list/<modality>/{train,test}.txt)')
    import tensorflow_datasets as tfds

    from input_pipeline.fgxmedia import builder as fg_xmedia

    out_dir = prepared_dir(data_dir, data_config)
    aside = _aside(out_dir)
    _recover(out_dir, aside)
    settings = {'manual_dir': str(manual_dir.resolve()), 'on_error': on_error,
                'num_classes': int(data_config.num_classes), 'text_errors': text_errors}
    table = fingerprint.source_table(manual_dir, exclude=_outputs(data_dir, manual_dir))
    if (out_dir / 'dataset_info.json').is_file():
        why = None if force else fingerprint.what_changed(out_dir, settings, table)
        if force:
            print(f'rebuilding the prepared data at {out_dir} (--force)', file=sys.stderr)
        elif why:
            print(f'warning: prepared data at {out_dir} is out of date ({why}); rebuilding it',
                  file=sys.stderr)
        if force or why:
            _check_overlap(out_dir, manual_dir)
            out_dir.rename(aside)   # kept until the new build succeeds

    spec = StoreSpec.from_data_config(data_config)
    try:
        builder = fg_xmedia.open_builder(
            data_dir, spec, on_error=on_error, progress=progress,
            num_classes=int(data_config.num_classes),
            num_workers=encode.resolve_workers(num_workers), pool=pool,
            text_errors=text_errors)
        rebuilt = not builder.is_prepared()
        if rebuilt:
            tfds.disable_progress_bar()  # our per-file bar (fg_xmedia) says more
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
            write_skipped_report(out_dir / SKIPPED_REPORT, builder.skipped)
            fingerprint.record(out_dir, settings=settings, table=table,
                               max_labels=builder.max_labels)
    except BaseException:
        if aside.is_dir():
            _recover(out_dir, aside)
            print(f'the rebuild failed; the previous prepared data at {out_dir} is kept',
                  file=sys.stderr)
        raise
    if aside.is_dir():
        shutil.rmtree(aside)
    counts = counts_of(builder)
    if progress:
        print(summary(counts, out_dir, rebuilt, _read_skipped_count(out_dir / SKIPPED_REPORT)))
    return counts


def _outputs(data_dir: str | os.PathLike, manual_dir: Path) -> tuple[Path, ...]:
    """What `prepare` writes, left out of the source table when it lies inside the
    manual dir: the data dir, or (when it is the manual dir itself) TFDS's folders."""
    data_dir = Path(data_dir)
    tfds_dirs = (data_dir / 'fg_xmedia', data_dir / 'downloads')
    return tfds_dirs if data_dir.resolve() == manual_dir.resolve() else (data_dir,)


def _check_overlap(out_dir: Path, manual_dir: Path) -> None:
    """Refuses to replace a variant directory that holds the sources."""
    out, src = out_dir.resolve(), manual_dir.resolve()
    if out == src or out in src.parents:
        raise ValueError(f'refusing to replace {out_dir}: it overlaps the source data at '
                         f'{manual_dir}; choose a --data_dir outside the manual dir\'s files')


def _remove_variant(out_dir: Path, manual_dir: Path) -> None:
    """Delete one prepared variant directory, refusing anything that holds the sources."""
    _check_overlap(out_dir, manual_dir)
    shutil.rmtree(out_dir.resolve())


def _aside(out_dir: Path) -> Path:
    """Where a rebuild keeps the previous variant: a hidden sibling, which TFDS (reading
    version folders by name) never takes for a version."""
    return out_dir.parent / f'.{out_dir.name}.previous'


def _recover(out_dir: Path, aside: Path) -> None:
    """After a failed (or killed) rebuild, put the previous variant back in place of
    whatever the rebuild left; after a finished one, drop the leftover copy."""
    if not aside.is_dir():
        return
    if (out_dir / fingerprint.INFO_FILE).is_file() and (out_dir / 'dataset_info.json').is_file():
        shutil.rmtree(aside)   # the new build completed before the old copy was removed
        return
    if out_dir.exists():
        shutil.rmtree(out_dir)   # a partial build
    aside.rename(out_dir)


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


def error_hint(on_error: str) -> str:
    """What to do after a DataError stopped `dcinet prepare` in mode `on_error`."""
    if on_error == 'skip':
        return ('(this fault concerns a whole list file, which cannot be skipped item by '
                'item: fix it and rerun)')
    return ('(to leave bad items out and list them in skipped.tsv instead, rerun with '
            '--on_error=skip)')


def prepare_main(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                 config: Any = None, on_error: str | None = None, *,
                 force: bool = False) -> dict[str, dict[str, int]]:
    """CLI entry (`dcinet prepare --manual_dir SRC --data_dir DST [--config] [--on_error]
    [--force]`).

    `config` is a full config (with `.data`), a data config, or None for the paper
    config; `on_error` None takes `config.data.on_error`. Prints progress and the
    summary; errors propagate (the CLI prints them once, with `error_hint`).
    """
    if config is None:
        from configs import dcinet_fgxmedia
        config = dcinet_fgxmedia.get_config()
    data_config = config.data if hasattr(config, 'data') else config
    on_error = on_error or getattr(data_config, 'on_error', 'fail')
    return prepare(manual_dir, data_dir, data_config, on_error=on_error, progress=True,
                   force=force)
