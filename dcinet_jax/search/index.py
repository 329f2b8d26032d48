"""`dcinet index`: a checkpoint's gallery of a prepared split or of a folder of raw files.

An index is a saved `gallery.Gallery` at `WORKDIR/index/<name>/` (docs/search.md):
- over a prepared split (default `test`) of every modality of the config: the exact
  features `dcinet eval` ranks (`gallery.compute_gallery`); default name: the split;
- over a folder of raw files: every file goes through `input_pipeline.fgxmedia.raw_query` (the
  preprocessing of `prepare` + eval decoding) and the same feature extraction;
  default name: `folder-<folder name>`.

Folder layout rules (ours, mirroring the FG-XMedia raw layout so a raw data root can
be indexed as it is): hidden files, the top-level `list/` folder and top-level
`classes.txt` are skipped; the modality of a file is its extension's (images,
audio, `.txt`), except that image files under a top-level `audio/` folder are
spectrograms (modality audio) and image files under a top-level `video/` folder
are video frames, grouped into one item per video as `prepare` groups them (the
path without its last 6 characters) with the feature of the mean of the frames'
logits, as the evaluator computes it. A file's label is the class whose name equals
its parent folder (case, '-' and '_' ignored), else -1 (shown as '?').
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dcinet_jax.search import gallery as gallery_lib
from input_pipeline.spec import MODALITIES

INDEX_DIR = 'index'
DEFAULT_SPLIT = 'test'
IMAGE_LIKE = ('image', 'audio', 'video')
SKIPPED_TOP = ('list', 'classes.txt')
VIDEO_SUFFIX_LEN = 6   # as input_pipeline.fgxmedia.lists.VIDEO_SUFFIX_LEN (the frame number + extension)


def index_path(workdir: str | os.PathLike, name: str) -> Path:
    return Path(workdir).absolute() / INDEX_DIR / name


def default_name(split: str | None, folder: str | os.PathLike | None) -> str:
    return f'folder-{Path(folder).resolve().name}' if folder else (split or DEFAULT_SPLIT)


def restore(config: Any, workdir: str | os.PathLike, step: int | None):
    """(trainer, host variables, step): the checkpoint as `dcinet eval` restores it."""
    from dcinet_jax import evaluate_checkpoint
    return evaluate_checkpoint.restore_for_eval(config, workdir, step=step)


def forward_modality(config: Any, modality: str) -> str:
    """The model input name for items of `modality`: itself when the model has it; an
    image-like item (image, spectrogram, frame) goes in as any image-like modality
    of the model (they share the backbone and the eval preprocessing)."""
    have = tuple(config.data.modalities)
    if modality in have:
        return modality
    if modality in IMAGE_LIKE:
        for m in have:
            if m in IMAGE_LIKE:
                return m
    raise ValueError(f'the model of this config takes {have}; it cannot embed {modality} '
                     'items')


def embed_inputs(config: Any, trainer: Any, variables: Mapping,
                 inputs: Mapping[str, tuple[np.ndarray, np.ndarray | None]]
                 ) -> dict[str, np.ndarray]:
    """{modality: features} of preprocessed model inputs `{modality: (x [n, ...], video
    numbers [n] or None)}`, through the evaluator's feature extraction (padded eval
    batches, eval mode, config.eval.feature, per-video means)."""
    from dcinet_jax.evaluators import features
    eb = int(config.data.eval_batch_size)
    out = {}
    for modality, (x, video) in inputs.items():
        name = forward_modality(config, modality)
        n = len(x)
        pad = (-n) % eb
        rows = {'inputs': np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
                'label': np.full(n + pad, -1, np.int32),
                'mask': np.arange(n + pad) < n,
                'index': np.arange(n + pad, dtype=np.int32)}
        if video is not None:
            rows['video'] = np.concatenate([video, np.full(pad, -1)]).astype(np.int32)
        batches = [{k: v[i:i + eb] for k, v in rows.items()} for i in range(0, n + pad, eb)]
        feats, _ = features.extract_features(trainer.eval_model, variables, {name: batches},
                                             feature=config.eval.feature)[name]
        out[modality] = feats
    return out


def _normalised(name: str) -> str:
    return name.lower().replace('-', '_')


def walk_folder(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """[(modality, posix path relative to folder)] by the layout rules, sorted."""
    from input_pipeline.fgxmedia import raw_query
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f'--folder {folder}: no such directory')
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts[:1] == ('list',):
            continue
        for f in sorted(filenames):
            rel = (rel_dir / f).as_posix()
            if f.startswith('.') or rel in SKIPPED_TOP:
                continue
            try:
                modality = raw_query.modality_of(f)
            except ValueError:
                continue
            top = rel_dir.parts[0] if rel_dir.parts else ''
            if modality == 'image' and top in ('audio', 'video'):
                modality = top
            found.append((modality, rel))
    if not found:
        raise FileNotFoundError(f'--folder {folder}: no image, audio or text file in it')
    return found


def folder_gallery(config: Any, trainer: Any, variables: Mapping, step: int,
                   folder: str | os.PathLike) -> gallery_lib.Gallery:
    """The gallery of every file of `folder` (layout rules in the module docstring)."""
    from dcinet_jax import checkpoints
    from input_pipeline.fgxmedia import items, raw_query
    root = Path(folder).absolute()
    labels_by_name = {_normalised(n): k for k, n in enumerate(items.class_names(config))}
    groups: dict[str, dict[str, list]] = {}
    for modality, rel in walk_folder(root):
        _, x = raw_query.model_input(root / rel, config, modality)
        g = groups.setdefault(modality, {'x': [], 'ids': [], 'labels': [], 'video': []})
        label = labels_by_name.get(_normalised(Path(rel).parent.name), -1)
        if modality == 'video':
            vid = f'video/{rel[:-VIDEO_SUFFIX_LEN]}'
            if vid not in g['ids']:
                g['ids'].append(vid)
                g['labels'].append(label)
            g['video'].append(g['ids'].index(vid))
        else:
            g['ids'].append(f'{modality}/{rel}')
            g['labels'].append(label)
        g['x'].append(x)
    groups = {m: groups[m] for m in MODALITIES if m in groups}
    inputs = {m: (np.stack(g['x']), np.asarray(g['video']) if m == 'video' else None)
              for m, g in groups.items()}
    feats = embed_inputs(config, trainer, variables, inputs)
    parts = {m: gallery_lib.GalleryPart(feats[m], groups[m]['labels'], groups[m]['ids'])
             for m in groups}
    return gallery_lib.Gallery(step, checkpoints.config_record(config), parts, meta={
        'fingerprint': gallery_lib.config_fingerprint(config),
        'weights': gallery_lib.weights_digest(variables), 'source': {'folder': str(root)}})


def build_index(config: Any, workdir: str | os.PathLike, *, split: str | None = None,
                folder: str | os.PathLike | None = None, step: int | None = None,
                name: str | None = None, restored=None) -> tuple[Path, gallery_lib.Gallery]:
    """Build and save an index; returns (its directory, the gallery).

    `restored` is a (trainer, variables, step) already restored, to avoid a second restore.
    """
    if split and folder:
        raise ValueError('give either --split or --folder, not both')
    trainer, variables, step = restored or restore(config, workdir, step)
    if folder:
        g = folder_gallery(config, trainer, variables, step, folder)
    else:
        split = split or DEFAULT_SPLIT
        g = gallery_lib.gallery_from_variables(config, trainer.method, trainer.eval_model,
                                               variables, step=step, split=split)
    from input_pipeline.fgxmedia import items
    g.meta['class_names'] = items.class_names(config)
    if not folder:
        g.meta['source']['root'] = prepared_root(config)
    path = g.save(index_path(workdir, name or default_name(split, folder)))
    return path, g


def prepared_root(config: Any) -> str | None:
    """The manual dir `dcinet prepare` recorded for the config's prepared variant."""
    from input_pipeline.fgxmedia import fingerprint, pipeline
    info = fingerprint.read_info(os.fspath(pipeline.load_builder(config).data_dir)) or {}
    return info.get('settings', {}).get('manual_dir')


def index_main(config: Any, workdir: str, *, split: str | None = None,
               folder: str | None = None, step: int | None = None,
               name: str | None = None) -> Path:
    """`dcinet index`: build, save and describe an index."""
    path, g = build_index(config, workdir, split=split, folder=folder, step=step, name=name)
    sizes = ', '.join(f'{m} {len(p.ids)}' for m, p in g.modalities.items())
    print(f'index {path.name}: step {g.step}, {sizes} items, written to {path}')
    return path


def note(message: str) -> None:
    print(message, file=sys.stderr)
