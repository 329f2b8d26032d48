"""The prepared items of a split as a viewer sees them: id, label, thumbnail or snippet.

`read_items(config, split, modality)` returns one `Item` per row of the evaluator's
features for that modality (`dcinet_jax/evaluators/features.py`), in the same order:
list order for image, audio and text; for video one item per video, in the order
`features._per_video` aggregates frames (first appearance in the list), carrying its
frames. So `read_items(...)[i]` is the item behind feature row i, which is what search
results and HTML reports need to show what they rank.

`class_names(config)` names the classes: the folder that holds each class's files in
the prepared ids (FG-XMedia and the demo store files under `<class folder>/...`, e.g.
'001.Black_footed_Albatross'), else the raw root's `classes.txt` (CUB's `1 001.Name`
lines), else 'class <k>'.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import Any

from input_pipeline.fgxmedia import text as text_lib

# Modalities whose ids name the class folder most reliably first: several audio folders
# of the real release are misspelled, so audio comes last.
_NAME_SOURCES = ('image', 'video', 'text', 'audio')
CLASSES_FILE = 'classes.txt'


@dataclasses.dataclass(frozen=True)
class Item:
    """One retrievable item.

    id: '<modality>/<list path>' as prepared (for video '<modality>/<video id>', the
      frame path without its last 6 characters); label: class from the list file;
      index: position in the list file (video: of its first frame);
      payload: image / audio → the stored JPEG bytes (spectrogram image for audio);
      video → list of its frames' JPEG bytes, in list order; text → the stored
      character ids decoded back to a string (characters outside the alphabet and
      upper case, lost when prepared, stay lost).
    """
    id: str
    label: int
    index: int
    payload: Any


def _records(config: Any, split: str, modality: str, fields: tuple[str, ...]):
    """Numpy records of the prepared (modality, split) in stored (= list) order."""
    from input_pipeline.fgxmedia import pipeline
    builder = pipeline.load_builder(config)
    name = pipeline._split_name(builder, modality, split)  # noqa: SLF001 - same package
    ds = builder.as_dataset(split=name, shuffle_files=False)
    ds = ds.map(lambda ex: {k: ex[k] for k in fields})
    return ds.as_numpy_iterator()


def _text(value) -> str:
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def read_items(config: Any, split: str, modality: str) -> list[Item]:
    """Items of the prepared (modality, split) in the evaluator's feature order."""
    key = 'text' if modality == 'text' else 'image'
    fields = (key, 'id', 'label', 'index', 'video_id', 'video')
    rows = sorted(_records(config, split, modality, fields), key=lambda r: int(r['index']))
    if modality == 'text':
        alphabet = str(config.data.alphabet)
        return [Item(_text(r['id']), int(r['label']), int(r['index']),
                     text_lib.decode_text(r['text'], alphabet)) for r in rows]
    if modality != 'video':
        return [Item(_text(r['id']), int(r['label']), int(r['index']), bytes(r['image']))
                for r in rows]
    videos: dict[int, dict] = {}
    for r in rows:   # first appearance in index order, as features._per_video
        v = videos.setdefault(int(r['video']), {
            'id': f'{modality}/{_text(r["video_id"])}', 'label': int(r['label']),
            'index': int(r['index']), 'frames': []})
        v['frames'].append(bytes(r['image']))
    return [Item(v['id'], v['label'], v['index'], v['frames']) for v in videos.values()]


def class_names(config_or_root: Any) -> list[str]:
    """Name of every class 0..num_classes-1 (see the module docstring for the sources).

    `config_or_root` is an experiment config (prepared data at `config.data_dir`) or
    an FG-XMedia raw root (its list files and `classes.txt` are read).
    """
    if isinstance(config_or_root, (str, os.PathLike)):
        return _names_from_root(Path(config_or_root))
    config = config_or_root
    n = int(config.data.num_classes)
    found: dict[int, str] = {}
    from input_pipeline.fgxmedia import pipeline
    builder = pipeline.load_builder(config)
    for modality in _NAME_SOURCES:
        for split in ('test', 'train'):
            if f'{modality}_{split}' not in builder.info.splits or len(found) >= n:
                continue
            pairs = ((int(r['label']), _text(r['id']))
                     for r in _records(config, split, modality, ('id', 'label')))
            _add_folder_names(found, pairs)
    if len(found) < n:
        from input_pipeline.fgxmedia import fingerprint
        info = fingerprint.read_info(os.fspath(builder.data_dir)) or {}
        root = info.get('settings', {}).get('manual_dir')
        if root:
            for k, name in enumerate(_read_classes_file(Path(root))):
                found.setdefault(k, name)
    return [found.get(k, f'class {k}') for k in range(n)]


def _add_folder_names(found: dict[int, str], pairs) -> None:
    """For each label not yet named: the most common parent folder of its paths."""
    votes: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for label, item_id in pairs:
        parent = PurePosixPath(item_id.replace('\\', '/')).parent.name
        if parent and '/' in item_id.split('/', 1)[-1]:
            votes[label][parent] += 1
    for label, counter in votes.items():
        if label not in found:
            found[label] = counter.most_common(1)[0][0]


def _read_classes_file(root: Path) -> list[str]:
    """Names from `root/classes.txt` (`<number> <name>` per line), or []."""
    try:
        lines = (root / CLASSES_FILE).read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [ln.split(None, 1)[-1].strip() for ln in lines if ln.strip()]


def _names_from_root(root: Path) -> list[str]:
    """Class names of a raw FG-XMedia root: list paths' folders, then classes.txt."""
    from input_pipeline.fgxmedia import lists
    from input_pipeline.spec import SPLITS
    found: dict[int, str] = {}
    top = -1
    for modality in _NAME_SOURCES:
        for split in SPLITS:
            if not lists.list_file(root, modality, split).is_file():
                continue
            entries = lists.read_list(root, modality, split, num_classes=10**6,
                                      check_files=False)
            top = max([top] + [e.label for e in entries])
            _add_folder_names(found, ((e.label, f'{modality}/{e.path}') for e in entries))
    from_file = _read_classes_file(root)
    n = max(top + 1, len(from_file))
    for k, name in enumerate(from_file):
        found.setdefault(k, name)
    return [found.get(k, f'class {k}') for k in range(n)]
