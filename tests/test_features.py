"""Eval-mode feature extraction: order, padding masks, softmax and per-video means."""

import jax
import numpy as np
import pytest
from scipy.special import softmax

from dcinet_jax.evaluators import features
from dcinet_jax.models import build_model, init_variables


@pytest.fixture(scope='module')
def model_and_variables(test_config):
    model = build_model(test_config)
    variables = init_variables(model, jax.random.key(0), test_config)
    return model, jax.tree.map(np.asarray, variables)


def _batches(x, labels, *, batch, order, extra=None):
    """Eval batches in a scrambled item order, the last one padded with mask False."""
    out = []
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        pad = batch - len(idx)
        b = {'inputs': np.concatenate([x[idx], np.zeros((pad,) + x.shape[1:], x.dtype)]),
             'label': np.concatenate([labels[idx], -np.ones(pad, np.int32)]),
             'index': np.concatenate([idx, -np.ones(pad, np.int32)]).astype(np.int32),
             'mask': np.concatenate([np.ones(len(idx), bool), np.zeros(pad, bool)])}
        if extra is not None:
            b['video'] = np.concatenate([extra[idx], -np.ones(pad, np.int32)])
        out.append(b)
    return out


def test_features_are_softmax_of_eval_logits_in_list_order(test_config, model_and_variables):
    model, variables = model_and_variables
    rng = np.random.default_rng(0)
    s = test_config.data.image_size
    x = rng.integers(0, 256, (10, s, s, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 10).astype(np.int32)
    order = rng.permutation(10)
    feats = features.extract_features(
        model, variables, {'image': _batches(x, labels, batch=4, order=order)})
    got, got_labels = feats['image']
    ref_logits = model.apply(variables, {'image': x}, train=False)['logits']
    np.testing.assert_allclose(got, softmax(np.asarray(ref_logits, np.float64), axis=-1),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)

    pooled, _ = features.extract_features(
        model, variables, {'image': _batches(x, labels, batch=4, order=order)},
        feature='pooled')['image']
    ref_pooled = model.apply(variables, {'image': x}, train=False)['pooled']
    np.testing.assert_allclose(pooled, np.asarray(ref_pooled), rtol=1e-4, atol=1e-6)


def test_video_feature_is_softmax_of_mean_frame_logits(test_config, model_and_variables):
    model, variables = model_and_variables
    rng = np.random.default_rng(1)
    s = test_config.data.image_size
    video = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2], np.int32)
    video_labels = np.array([3, 1, 2], np.int32)
    x = rng.integers(0, 256, (len(video), s, s, 3), dtype=np.uint8)
    frame_labels = video_labels[video]
    batches = _batches(x, frame_labels, batch=4, order=rng.permutation(len(video)),
                       extra=video)
    feats, labels = features.extract_features(model, variables, {'image': batches})['image']

    logits = np.asarray(model.apply(variables, {'image': x}, train=False)['logits'], np.float64)
    expected = np.stack([softmax(logits[video == v].mean(0)) for v in range(3)])
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(labels, video_labels)


def test_a_duplicated_item_is_an_error(test_config, model_and_variables):
    model, variables = model_and_variables
    s = test_config.data.image_size
    x = np.zeros((4, s, s, 3), np.uint8)
    labels = np.zeros(4, np.int32)
    batches = _batches(x, labels, batch=4, order=np.array([0, 1, 2, 2]))
    with pytest.raises(RuntimeError, match='seen twice'):
        features.extract_features(model, variables, {'image': batches})
