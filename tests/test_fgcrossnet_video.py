"""Video as a medium for FGCrossNet (docs/fgcrossnet.md#video): per-video aggregation of
frame logits whatever the frame count and order, and the 16-task protocol on a hand case."""

import numpy as np
import pytest

from dcinet_jax.evaluators import features, fgxmedia


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_per_video_unequal_counts_interleaved_frames_and_one_frame_videos():
    rng = np.random.default_rng(0)
    # video ids in list order: 7 (3 frames, interleaved with 2), 2 (1 frame), 9 (5 frames), 4 (1 frame)
    video = np.array([7, 2, 7, 9, 9, 7, 9, 4, 9, 9], np.int32)
    label_of = {7: 1, 2: 0, 9: 2, 4: 1}
    logits = rng.normal(size=(len(video), 3)).astype(np.float32)
    cat = {'logits': logits, 'pooled': logits * 2, 'video': video,
           'label': np.array([label_of[v] for v in video], np.int32),
           'index': np.arange(len(video), dtype=np.int32)}
    feats, labels = features._per_video(cat, 'softmax')
    order = [7, 2, 9, 4]                       # first-seen order
    want = np.stack([_softmax(logits[video == v].mean(0)) for v in order])
    np.testing.assert_allclose(feats, want, rtol=1e-5)
    assert labels.tolist() == [label_of[v] for v in order]
    # one-frame videos are the softmax of that frame's logits
    np.testing.assert_allclose(feats[1], _softmax(logits[1]), rtol=1e-5)
    pooled, _ = features._per_video(cat, 'pooled')
    np.testing.assert_allclose(pooled[2], (logits * 2)[video == 9].mean(0), rtol=1e-5)


def test_16_tasks_on_a_hand_case():
    e0, e1 = np.eye(2)
    right = (np.stack([e0, e1]), np.array([0, 1]))
    swapped = (np.stack([e1, e0]), np.array([0, 1]))   # text features point at the other class
    r = fgxmedia.evaluate_features({'image': right, 'text': swapped, 'audio': right,
                                    'video': right})
    assert list(r['bimodal']) == ['i2t', 'i2a', 'i2v', 't2i', 't2a', 't2v', 'a2i', 'a2t', 'a2v',
                                  'v2i', 'v2t', 'v2a']
    for k, v in r['bimodal'].items():
        assert v == pytest.approx(0.5 if 't' in k else 1.0), k
    # X->all over image, text, audio, video stacked (query kept), ties by gallery index:
    # an image query ranks i+, t-, a+, v+, i-, t+: AP = (1 + 2/3 + 3/4 + 4/6) / 4.
    xall = (1 + 2 / 3 + 3 / 4 + 4 / 6) / 4
    assert r['multimodal']['i2all'] == pytest.approx(xall)
    assert r['multimodal']['a2all'] == pytest.approx(xall)
    assert r['multimodal']['v2all'] == pytest.approx(xall)
    # a text query ranks i-, t+, a-, v-, i+, t-, a+, v+: AP = (1/2 + 2/5 + 3/7 + 4/8) / 4.
    assert r['multimodal']['t2all'] == pytest.approx((1 / 2 + 2 / 5 + 3 / 7 + 4 / 8) / 4)
    assert r['protocol']['multimodal_gallery_order'] == ['image', 'text', 'audio', 'video']
