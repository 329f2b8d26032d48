"""Training batch schedules: which stored items form each global batch of an epoch.

Pure NumPy (no TensorFlow), so the sampling rules can be tested and reasoned about on
their own; `pipeline.py` turns a schedule into decoded batches. Every schedule is a
function of (seed, epoch, modality) only, which is what makes the training iterator
deterministic and resumable at any step. The rules are written up in `docs/training.md#samplers`.

- Random sampler (the paper's): each modality's split is permuted per epoch and cut
  into global batches of b items; an epoch ends with the shortest modality
  (`steps_per_epoch` = min over modalities of n_m // b), remainders dropped.
- Class-aligned sampler: every step draws P distinct classes (from a stream of
  per-epoch permutations of the classes present in every modality) and b/P items of
  each class in every modality, class by class, so batch slot j holds the same class
  in every modality.
"""

from __future__ import annotations

import functools
from typing import Mapping

import numpy as np

from input_pipeline.spec import MODALITY_IDS

# Stream tags: keep the random streams of different uses independent.
TAG_PERMUTE, TAG_CLASSES, TAG_ITEMS, TAG_ELEMENT, TAG_QUADS = 1, 2, 3, 4, 5


def rng(*keys: int) -> np.random.Generator:
    """A generator seeded by a tuple of integers (each taken modulo 2**32)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) % 2**32 for k in keys]))


def local_batch(batch_per_modality: int, process_count: int) -> int:
    """Items per process and step: b / process_count (b must split evenly)."""
    b = int(batch_per_modality)
    if b <= 0 or b % process_count:
        raise ValueError(f'data.batch_per_modality={b} must be a positive multiple of the '
                         f'process count {process_count} (each process takes b / processes)')
    return b // process_count


def steps_per_epoch(sizes: Mapping[str, int], batch_per_modality: int) -> int:
    """min over modalities of n_m // b: the epoch ends with the shortest modality."""
    b = int(batch_per_modality)
    spe = min(n // b for n in sizes.values())
    if spe == 0:
        raise ValueError(f'batch_per_modality={b} exceeds the smallest training split '
                         f'{dict(sizes)}')
    return spe


def element_seed(seed: int, modality: str) -> int:
    """Base seed of the per-element random ops (crop, flip, text shift) of a modality."""
    return int(rng(seed, MODALITY_IDS[modality], TAG_ELEMENT).integers(2**31))


def random_schedule(n: int, seed: int, epoch: int, modality: str, spe: int, b: int) -> np.ndarray:
    """int[spe, b]: item positions of every global batch of one epoch (random sampler)."""
    perm = rng(seed, epoch, TAG_PERMUTE, MODALITY_IDS[modality]).permutation(n)
    return perm[:spe * b].reshape(spe, b)


def sequential_schedule(n: int, spe: int, b: int) -> np.ndarray:
    """int[spe, b]: the list order cut into batches, the same every epoch (the
    FGCrossNet reference's unshuffled loader, `data.shuffle=False`)."""
    if spe * b > n:
        raise ValueError(f'sequential schedule: {spe} steps of {b} exceed the {n} items')
    return np.arange(spe * b, dtype=np.int64).reshape(spe, b)


def aligned_classes(labels: Mapping[str, np.ndarray], seed: int, epoch: int, spe: int,
                    num_per_batch: int) -> np.ndarray:
    """int[spe, P]: the classes of every step of one epoch (class-aligned sampler).

    Classes come from a stream of permutations of the classes present in every
    modality; a class already picked for the step is passed over."""
    common = functools.reduce(np.intersect1d, [np.unique(y) for y in labels.values()])
    if len(common) < num_per_batch:
        raise ValueError(f'class-aligned sampling needs classes_per_batch={num_per_batch} classes '
                         f'present in every modality {tuple(labels)}; only {len(common)} are')
    r = rng(seed, epoch, TAG_CLASSES)
    out = np.empty((spe, num_per_batch), np.int64)
    stream, pos = r.permutation(common), 0
    for t in range(spe):
        picked: list[int] = []
        while len(picked) < num_per_batch:
            if pos == len(stream):
                stream, pos = r.permutation(common), 0
            c = int(stream[pos])
            pos += 1
            if c not in picked:
                picked.append(c)
        out[t] = picked
    return out


def aligned_schedule(labels: Mapping[str, np.ndarray], modality: str, seed: int, epoch: int,
                     spe: int, b: int, num_per_batch: int) -> np.ndarray:
    """int[spe, b] item positions of one modality (class-aligned sampler): step t holds
    b/P items of each class of aligned_classes(...)[t], class by class. Items of a
    class are drawn without replacement from a per-epoch permutation, refilled when
    used up."""
    if b % num_per_batch:
        raise ValueError(f'class-aligned sampling needs batch_per_modality={b} divisible by '
                         f'classes_per_batch={num_per_batch}')
    classes = aligned_classes(labels, seed, epoch, spe, num_per_batch)
    slot_classes = np.repeat(classes, b // num_per_batch, axis=1)  # class by class
    return _draw_by_class(slot_classes, labels[modality],
                          rng(seed, epoch, TAG_ITEMS, MODALITY_IDS[modality]))


def _draw_by_class(slot_classes: np.ndarray, y: np.ndarray,
                   r: np.random.Generator) -> np.ndarray:
    """int[spe, b] item positions whose labels are `slot_classes` [spe, b]: the items of
    a class come without replacement from a permutation of that class, drawn afresh
    (from `r`) each time the previous one is used up."""
    members = {int(c): np.flatnonzero(y == c) for c in np.unique(slot_classes)}
    queues: dict[int, list[int]] = {c: [] for c in members}
    out = np.empty(slot_classes.shape, np.int64)
    for t, row in enumerate(slot_classes):
        for j, c in enumerate(row):
            q = queues[int(c)]
            if not q:
                q.extend(r.permutation(members[int(c)]).tolist()[::-1])
            out[t, j] = q.pop()
    return out


def quadruplet_classes(labels: Mapping[str, np.ndarray], seed: int, epoch: int, spe: int,
                       b: int) -> np.ndarray:
    """int[spe, b, M] (M = len(labels), media in the mapping's order): per step and slot,
    the class each medium's item must have. Two media drawn at random share one class;
    every other medium gets its own class, all distinct (M - 1 classes per slot)."""
    media = list(labels)
    m = len(media)
    common = functools.reduce(np.intersect1d, [np.unique(y) for y in labels.values()])
    if m < 2 or len(common) < m - 1:
        raise ValueError(f'quadruplet sampling needs at least 2 media and {m - 1} classes '
                         f'present in every medium {tuple(media)}; {len(common)} are')
    r = rng(seed, epoch, TAG_QUADS)
    out = np.empty((spe, b, m), np.int64)
    for t in range(spe):
        for j in range(b):
            classes = r.choice(common, m - 1, replace=False)
            pair = r.choice(m, 2, replace=False)
            others = [k for k in range(m) if k not in pair]
            out[t, j, pair] = classes[0]
            out[t, j, others] = classes[1:]
    return out


def quadruplet_schedule(labels: Mapping[str, np.ndarray], modality: str, seed: int,
                        epoch: int, spe: int, b: int) -> np.ndarray:
    """int[spe, b] item positions of one medium under `quadruplet_classes`; items of a
    class come without replacement from per-epoch permutations, refilled when used up."""
    classes = quadruplet_classes(labels, seed, epoch, spe, b)[:, :, list(labels).index(modality)]
    return _draw_by_class(classes, labels[modality],
                          rng(seed, epoch, TAG_ITEMS, MODALITY_IDS[modality]))
