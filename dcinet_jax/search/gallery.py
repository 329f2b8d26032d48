"""A checkpoint's retrieval features of every item of a split: the gallery of search and reports.

`compute_gallery(config, workdir)` restores a checkpoint exactly as `dcinet eval` does
(`evaluate_checkpoint.restore_for_eval`: read-only, params and collections only) and
runs the method's own `eval_outputs` (the test split) or the same feature extraction
over another split, so a gallery row is bit for bit the feature the evaluator ranks.
Each modality's rows carry their labels and item ids (`input_pipeline.fgxmedia.items`, same
order). The gallery records where it came from: the step, the config, a fingerprint
of the config fields that change features (`config_fingerprint`) and a digest of the
weights (`weights_digest`), so a saved gallery can refuse to be used with another
checkpoint (`Gallery.check_source`).

Saved as a directory: `features.npz` (per modality `<m>/features`, `<m>/labels`) and
`gallery.json` (step, config, meta, ids and the npz's sha256). Each file is written to a
temporary name and renamed; the json, written last, names the npz it belongs to, so
a half-replaced pair is refused on load instead of being silently mixed.

No TensorFlow here: the input pipeline is imported inside the functions that read data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMAT = 1
FEATURES_FILE = 'features.npz'
META_FILE = 'gallery.json'

# Config fields that change what a feature is (besides the weights): the method and
# model, the stored variant and crop of the data, and the feature kind.
FINGERPRINT_FIELDS = ('method', 'model', 'data.resize_size', 'data.image_size',
                      'data.text_length', 'data.alphabet', 'data.text_mode',
                      'data.text_errors', 'data.store_source_jpegs', 'data.num_classes',
                      'eval.feature')
# Fields added after indexes existed: a record without one reads as this value, and a
# field at this value is left out of the fingerprint, so older indexes of the same
# setting stay valid (an index of the other setting does not).
FIELD_DEFAULTS = {'data.store_source_jpegs': False}


@dataclasses.dataclass
class GalleryPart:
    """One modality: features (N, D) float32, labels (N,) int64, ids (N item ids)."""
    features: np.ndarray
    labels: np.ndarray
    ids: list[str]

    def __post_init__(self):
        self.features = np.asarray(self.features, np.float32)
        self.labels = np.asarray(self.labels, np.int64)
        self.ids = [str(i) for i in self.ids]
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.labels.shape != (n,) or len(self.ids) != n:
            raise ValueError(f'gallery part: features {self.features.shape}, labels '
                             f'{self.labels.shape} and {len(self.ids)} ids do not line up')


@dataclasses.dataclass
class Gallery:
    """Features of a checkpoint per modality; `meta` holds 'fingerprint', 'weights'
    (see the module docstring) and 'source' ({'split': ...} or {'folder': ...})."""
    step: int
    config_record: dict
    modalities: dict[str, GalleryPart]
    meta: dict = dataclasses.field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for m, part in self.modalities.items():
            arrays[f'{m}/features'] = part.features
            arrays[f'{m}/labels'] = part.labels
        tmp = path / f'.{FEATURES_FILE}.{os.getpid()}.tmp'
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
        digest = _sha256(tmp)
        os.replace(tmp, path / FEATURES_FILE)
        record = {'format': FORMAT, 'step': int(self.step), 'config': self.config_record,
                  'meta': self.meta, 'features_sha256': digest,
                  'modalities': {m: {'ids': p.ids} for m, p in self.modalities.items()}}
        tmp = path / f'.{META_FILE}.{os.getpid()}.tmp'
        tmp.write_text(json.dumps(record, indent=1, default=_json_default), encoding='utf-8')
        os.replace(tmp, path / META_FILE)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'Gallery':
        path = Path(path)
        meta_file, features_file = path / META_FILE, path / FEATURES_FILE
        if not meta_file.is_file() or not features_file.is_file():
            raise FileNotFoundError(f'no gallery in {path} (expected {META_FILE} and '
                                    f'{FEATURES_FILE})')
        try:
            record = json.loads(meta_file.read_text(encoding='utf-8'))
        except ValueError as e:
            raise ValueError(f'{meta_file}: not valid JSON ({e})') from None
        if record.get('format') != FORMAT:
            raise ValueError(f'{meta_file}: gallery format {record.get("format")!r}, this '
                             f'version reads {FORMAT}; rebuild it')
        if _sha256(features_file) != record.get('features_sha256'):
            raise ValueError(f'{features_file} does not belong to {meta_file} (another '
                             'build replaced one of them); rebuild the gallery')
        with np.load(features_file) as z:
            parts = {m: GalleryPart(z[f'{m}/features'], z[f'{m}/labels'], info['ids'])
                     for m, info in record['modalities'].items()}
        return cls(int(record['step']), record['config'], parts, record.get('meta', {}))

    def check_source(self, *, step: int, fingerprint: str, weights: str,
                     what: str = 'this gallery', hint: str = '',
                     fields: Mapping | None = None) -> None:
        """ValueError (one line) unless the gallery came from this step, config
        fingerprint and weights digest. `fields` (the current `fingerprint_fields`)
        lets a config difference name each field, saved and current value."""
        problems = []
        if int(step) != int(self.step):
            problems.append(f'it was built from step {self.step}, the checkpoint used is '
                            f'step {step}')
        elif self.meta.get('weights') != weights:
            problems.append(f'its step-{self.step} weights differ from the checkpoint\'s '
                            '(retrained in this workdir?)')
        if self.meta.get('fingerprint') != fingerprint:
            changed = changed_fields(self.config_record, fields) if fields is not None else {}
            problems.append('the config fields that shape features differ ('
                            + ('; '.join(f'config.{k}: {old!r} in the index, {new!r} now'
                                         for k, (old, new) in changed.items()) if changed
                               else _fingerprint_diff(self.config_record, fingerprint)) + ')')
        if problems:
            raise ValueError(f'{what} does not match the checkpoint: ' + '; '.join(problems)
                             + (f'; {hint}' if hint else ''))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


def _field(record: Mapping, dotted: str) -> Any:
    value: Any = record
    for key in dotted.split('.'):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def fingerprint_fields(config_or_record: Any) -> dict:
    """{field: value} of FINGERPRINT_FIELDS from a config or its JSON record."""
    from dcinet_jax import checkpoints
    record = config_or_record if isinstance(config_or_record, Mapping) \
        else checkpoints.config_record(config_or_record)
    fields = {f: _field(record, f) for f in FINGERPRINT_FIELDS}
    return {f: FIELD_DEFAULTS[f] if v is None and f in FIELD_DEFAULTS else v
            for f, v in fields.items()}


def config_fingerprint(config_or_record: Any) -> str:
    """sha256 (16 hex digits) of the config fields that change a feature."""
    fields = {f: v for f, v in fingerprint_fields(config_or_record).items()
              if not (f in FIELD_DEFAULTS and v == FIELD_DEFAULTS[f])}
    text = json.dumps(fields, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_fields(saved_record: Mapping, fields: Mapping) -> dict[str, tuple]:
    """{field: (saved, current)} of the feature-shaping fields that differ, sections
    (`model`) down to their own fields."""
    def flat(tree: Mapping, prefix: str = '') -> dict:
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f'{prefix}{k}.') if isinstance(v, Mapping)
                       else {f'{prefix}{k}': v})
        return out
    saved, now = flat(fingerprint_fields(saved_record)), flat(fields)
    return {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now), key=list(
        dict.fromkeys([*now, *saved])).index) if saved.get(k) != now.get(k)}


def _fingerprint_diff(saved_record: Mapping, fingerprint: str) -> str:
    saved = fingerprint_fields(saved_record)
    return 'saved ' + ', '.join(f'{k}={v!r}' for k, v in saved.items()
                                if not k.startswith('model'))[:300] \
        + f'; fingerprint {config_fingerprint(saved_record)} vs {fingerprint}'


def weights_digest(variables: Any) -> str:
    """sha256 (16 hex digits) over every variable's path, dtype, shape and bytes."""
    import jax
    from dcinet_jax.checkpoints import leaf_path
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    for p, x in sorted(leaves, key=lambda t: leaf_path(t[0])):
        a = np.ascontiguousarray(np.asarray(x))
        h.update(f'{leaf_path(p)}|{a.dtype}|{a.shape}|'.encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def features_by_modality(outputs: Any, method_name: str) -> Mapping[str, tuple]:
    """The method's eval outputs when they are {modality: (features, labels)}."""
    ok = isinstance(outputs, Mapping) and all(
        isinstance(v, tuple) and len(v) == 2 for v in outputs.values())
    if not ok:
        raise ValueError(f'method {method_name!r} does not evaluate per-modality item '
                         'features, so it has no gallery (search and reports cover the '
                         'FG-XMedia methods: dcinet, fgcrossnet)')
    return outputs


def gallery_from_variables(config: Any, method: Any, model: Any, variables: Mapping, *,
                           step: int, split: str = 'test') -> Gallery:
    """The gallery of host `variables` over the prepared `split` of every modality."""
    from dcinet_jax import checkpoints
    from input_pipeline.fgxmedia import items
    if split == 'test':   # the evaluator's own path
        outputs = method.eval_outputs(model, variables, config)
    else:                  # the same extraction over another split
        from dcinet_jax.evaluators import features
        from input_pipeline.fgxmedia import pipeline
        outputs = features.extract_features(
            model, variables, pipeline.create_eval_iterators(config, split),
            feature=config.eval.feature)
    outputs = features_by_modality(outputs, str(config.method))
    parts = {}
    for m, (feats, labels) in outputs.items():
        its = items.read_items(config, split, m)
        got = [it.label for it in its]
        if len(got) != len(labels) or np.any(np.asarray(got) != np.asarray(labels)):
            raise RuntimeError(f'{m}: the {len(labels)} feature rows and the {len(its)} '
                               f'prepared {split} items do not line up')
        parts[m] = GalleryPart(feats, labels, [it.id for it in its])
    return Gallery(int(step), checkpoints.config_record(config), parts, meta={
        'fingerprint': config_fingerprint(config), 'weights': weights_digest(variables),
        'source': {'split': split}})


def compute_gallery(config: Any, workdir: str | os.PathLike, *, step: int | None = None,
                    split: str = 'test') -> Gallery:
    """Gallery of checkpoint `step` (default: latest) of `workdir` over `split`."""
    from dcinet_jax import evaluate_checkpoint
    trainer, variables, step = evaluate_checkpoint.restore_for_eval(config, workdir, step=step)
    return gallery_from_variables(config, trainer.method, trainer.eval_model, variables,
                                  step=step, split=split)
