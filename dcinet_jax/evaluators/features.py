"""Per-item retrieval features of a model in eval mode (docs/evaluation.md#features).

Features are computed in eval mode (running BatchNorm statistics) for every test item
exactly once, each batch split over this process's local devices. An iterator that
says it is this process's share (`process_share = True`, as the FG-XMedia eval
iterators built with `process_share=True` do) holds only this process's batches: the
rows are then gathered from every process once (`sharding.gather_rows`), so every
process ends with the whole test set's features and process 0 writes the results. Feature of an item: softmax of its logits (the benchmark)
or its pooled backbone feature; a video's is the softmax of the mean of its frames' logits.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dcinet_jax.evaluators import sharding
from dcinet_jax.parallel import DATA_AXIS

__all__ = ['extract_features']


@functools.partial(jax.jit, static_argnames=('model', 'modality'))
def _forward(variables, inputs, *, model, modality):
    out = model.apply(variables, {modality: inputs}, train=False)
    return out['logits'].astype(jnp.float32), out['pooled'].astype(jnp.float32)


def extract_features(model, variables, iterators: Mapping[str, Iterable[dict]], *,
                     feature: str = 'softmax', progress: bool = False
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns {modality: (features [N, D], labels [N])} in test-list order."""
    if feature not in ('softmax', 'pooled'):
        raise ValueError(f"eval.feature={feature!r}: expected 'softmax' or 'pooled'")
    mesh = sharding.local_mesh()
    n_dev = mesh.devices.size
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    variables = jax.device_put(variables, rep)
    result = {}
    for modality, batches in iterators.items():
        t0 = time.time()
        rows = {'logits': [], 'pooled': [], 'label': [], 'index': [], 'video': []}
        for batch in batches:
            x = np.asarray(batch['inputs'])
            if x.shape[0] % n_dev:
                raise ValueError(f'eval batch of {x.shape[0]} is not divisible by {n_dev} '
                                 'local devices: set data.eval_batch_size accordingly')
            logits, pooled = _forward(variables, jax.device_put(x, shard), model=model,
                                      modality=modality)
            keep = np.asarray(batch['mask'], bool)
            rows['logits'].append(np.asarray(logits)[keep])
            rows['pooled'].append(np.asarray(pooled)[keep])
            rows['label'].append(np.asarray(batch['label'])[keep])
            rows['index'].append(np.asarray(batch['index'])[keep])
            if 'video' in batch:
                rows['video'].append(np.asarray(batch['video'])[keep])
        if not rows['label']:
            raise ValueError(f'the {modality} test set is empty')
        cat = {k: np.concatenate(v) for k, v in rows.items() if v}
        if getattr(batches, 'process_share', False):
            cat = sharding.gather_rows(cat)
        order = np.argsort(cat['index'], kind='stable')
        if len(np.unique(cat['index'])) != len(order):
            raise RuntimeError(f'{modality}: an evaluation item was seen twice')
        cat = {k: v[order] for k, v in cat.items()}
        if 'video' in cat:
            feats, labels = _per_video(cat, feature)
        else:
            feats = _softmax(cat['logits']) if feature == 'softmax' else cat['pooled']
            labels = cat['label']
        result[modality] = (feats, labels)
        if progress:
            dt = time.time() - t0
            logging.info('features %s: %d items in %.1fs (%.0f items/s)', modality,
                         len(order), dt, len(order) / max(dt, 1e-9))
    return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _per_video(cat: dict, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the frames' logits (or pooled features) per video, in first-seen order."""
    videos, first, inverse = np.unique(cat['video'], return_index=True, return_inverse=True)
    order = np.argsort(first)
    key = 'logits' if feature == 'softmax' else 'pooled'
    sums = np.zeros((len(videos), cat[key].shape[1]), np.float64)
    np.add.at(sums, inverse, cat[key])
    means = (sums / np.bincount(inverse)[:, None]).astype(np.float32)[order]
    labels = cat['label'][first][order]
    return (_softmax(means) if feature == 'softmax' else means), labels
