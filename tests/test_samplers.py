"""input_pipeline/samplers.py: the NumPy batch schedules, without TensorFlow."""


import numpy as np
import pytest

from input_pipeline import samplers


def test_steps_per_epoch_is_the_shortest_modality():
    assert samplers.steps_per_epoch({'image': 30, 'audio': 25, 'text': 17}, 8) == 2
    assert samplers.steps_per_epoch({'image': 16}, 8) == 2
    with pytest.raises(ValueError, match='exceeds the smallest'):
        samplers.steps_per_epoch({'image': 30, 'text': 7}, 8)


def test_local_batch():
    assert samplers.local_batch(8, 1) == 8 and samplers.local_batch(8, 2) == 4
    for b, pc in ((8, 3), (0, 1), (-4, 2)):
        with pytest.raises(ValueError, match='multiple of the process count'):
            samplers.local_batch(b, pc)


def test_random_schedule_is_a_deterministic_permutation_per_epoch():
    n, spe, b = 30, 3, 8
    a = samplers.random_schedule(n, 0, 0, 'image', spe, b)
    assert a.shape == (spe, b)
    assert len(set(a.ravel().tolist())) == spe * b and a.min() >= 0 and a.max() < n
    np.testing.assert_array_equal(a, samplers.random_schedule(n, 0, 0, 'image', spe, b))
    # Other epoch, seed or modality: another order.
    for other in (samplers.random_schedule(n, 0, 1, 'image', spe, b),
                  samplers.random_schedule(n, 1, 0, 'image', spe, b),
                  samplers.random_schedule(n, 0, 0, 'audio', spe, b)):
        assert not np.array_equal(a, other)


def _labels(num_classes=4, per_class=(6, 5, 7)):
    return {m: np.repeat(np.arange(num_classes), k) for m, k in zip(('image', 'audio', 'text'),
                                                                    per_class)}


def test_aligned_classes_are_distinct_and_cycle_evenly():
    labels = _labels()
    cls = samplers.aligned_classes(labels, 0, 0, spe=6, num_per_batch=2)
    assert cls.shape == (6, 2)
    assert all(len(set(row)) == 2 for row in cls.tolist())
    counts = np.bincount(cls.ravel(), minlength=4)
    assert counts.max() - counts.min() <= 1          # 12 picks over 4 classes: 3 each
    # A class missing from one modality is never drawn.
    labels['audio'] = labels['audio'][labels['audio'] != 3]
    cls = samplers.aligned_classes(labels, 0, 0, spe=6, num_per_batch=2)
    assert 3 not in cls
    with pytest.raises(ValueError, match='present in every modality'):
        samplers.aligned_classes(labels, 0, 0, spe=1, num_per_batch=4)


def test_aligned_schedule_same_class_in_every_slot():
    labels, spe, b, P = _labels(), 5, 8, 2
    rows = {m: samplers.aligned_schedule(labels, m, 3, 1, spe, b, P) for m in labels}
    classes = samplers.aligned_classes(labels, 3, 1, spe, P)
    for m, sched in rows.items():
        assert sched.shape == (spe, b)
        y = labels[m][sched]
        np.testing.assert_array_equal(y, np.repeat(classes, b // P, axis=1))
        # Within a class, items repeat only after all of that class were used.
        for c in range(4):
            used = sched[y == c].tolist()
            k = int((labels[m] == c).sum())
            for start in range(0, len(used) - k + 1, k):
                assert len(set(used[start:start + k])) == k
    with pytest.raises(ValueError, match='divisible'):
        samplers.aligned_schedule(labels, 'image', 0, 0, spe, 6, 4)


def test_element_seed_depends_on_seed_and_modality():
    s = samplers.element_seed(0, 'image')
    assert s == samplers.element_seed(0, 'image') and 0 <= s < 2**31
    assert s != samplers.element_seed(0, 'text') and s != samplers.element_seed(1, 'image')
