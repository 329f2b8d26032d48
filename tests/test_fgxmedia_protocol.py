"""The FG-XMedia protocol (bi-modal and X->all tasks) and the evaluator registry."""

import itertools
import types

import ml_collections
import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine
from test_ranking import loop_ap

from dcinet_jax import evaluators
from dcinet_jax.evaluators import fgxmedia, ranking


def tiny_features():
    """image i0 [1,0] (label 0), i1 [0,1] (1); text t0 [.6,.8] (0), t1 [.8,.6] (1)."""
    return {
        'image': (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])),
        'text': (np.array([[0.6, 0.8], [0.8, 0.6]]), np.array([0, 1])),
    }


def random_features(sizes, seed=6, classes=5, dim=8):
    rng = np.random.default_rng(seed)
    return {m: (rng.random((n, dim)).astype(np.float32), rng.integers(0, classes, n))
            for m, n in sizes.items()}


def tied_features(seed=14):
    """One-hot-ish features shared across modalities: X->all rows are full of exact ties."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, n in (('image', 12), ('text', 9), ('audio', 10), ('video', 7)):
        out[m] = (np.eye(3)[rng.integers(0, 3, n)] * rng.integers(1, 4, (n, 1)),
                  rng.integers(0, 3, n))
    return out


def eval_config(**overrides):
    c = ml_collections.ConfigDict()
    c.eval = {'exclude_self': False, 'feature': 'softmax', 'chunk_size': 1024,
              'num_workers': 1, 'scoring': 'auto'}
    c.eval.update(overrides)
    return c


def test_xall_with_and_without_self_by_hand():
    # Stacked gallery i0 i1 t0 t1, labels 0 1 0 1.
    # i0: cos 1 0 .6 .8 -> i0 t1 t0 i1: relevant ranks 1, 3 -> 5/6; without i0: t1 t0 i1 -> 1/2.
    # i1 is the mirror image: 5/6 and 1/2.
    # t0: cos .6 .8 1 .96 -> t0 t1 i1 i0: relevant ranks 1, 4 -> 3/4; without t0: rank 3 -> 1/3.
    # t1 mirrors t0. Bi-modal: every query's partner ranks 2nd of 2 -> 1/2 for i2t and t2i.
    for scoring in ('numpy', 'device'):
        keep = fgxmedia.evaluate_features(tiny_features(), scoring=scoring)
        drop = fgxmedia.evaluate_features(tiny_features(), exclude_self=True, scoring=scoring)
        for res in (keep, drop):
            assert res['bimodal'] == pytest.approx({'i2t': 0.5, 't2i': 0.5}, abs=1e-12)
            assert res['bimodal_average'] == pytest.approx(0.5, abs=1e-12)
            assert res['protocol']['scoring'] == scoring
        assert keep['multimodal'] == pytest.approx({'i2all': 5 / 6, 't2all': 3 / 4}, abs=1e-12)
        assert keep['multimodal_average'] == pytest.approx(19 / 24, abs=1e-12)
        assert drop['multimodal'] == pytest.approx({'i2all': 1 / 2, 't2all': 1 / 3}, abs=1e-12)
        assert drop['multimodal_average'] == pytest.approx(5 / 12, abs=1e-12)
        assert keep['protocol']['exclude_self'] is False
        assert drop['protocol']['exclude_self'] is True


def test_evaluate_keys_order_values_and_averages():
    feats = random_features({'audio': 13, 'image': 11, 'text': 9})  # not the paper's order
    res = fgxmedia.evaluate_features(feats, chunk_size=4, feature_kind='softmax')
    assert list(res) == ['bimodal', 'multimodal', 'bimodal_average', 'multimodal_average',
                         'protocol']
    assert list(res['bimodal']) == ['i2t', 'i2a', 't2i', 't2a', 'a2i', 'a2t']
    assert list(res['multimodal']) == ['i2all', 't2all', 'a2all']
    names = {'i': 'image', 't': 'text', 'a': 'audio'}
    for key, value in res['bimodal'].items():
        (qf, ql), (gf, gl) = feats[names[key[0]]], feats[names[key[2]]]
        ref = loop_ap(sk_cosine(qf.astype(np.float64), gf.astype(np.float64)), ql, gl).mean()
        assert value == pytest.approx(ref, abs=1e-12)
    # X->all gallery stacked in the reference order image, text, audio.
    all_f = np.concatenate([feats[m][0] for m in ('image', 'text', 'audio')]).astype(np.float64)
    all_l = np.concatenate([feats[m][1] for m in ('image', 'text', 'audio')])
    for key, value in res['multimodal'].items():
        qf, ql = feats[names[key[0]]]
        ref = loop_ap(sk_cosine(qf.astype(np.float64), all_f), ql, all_l).mean()
        assert value == pytest.approx(ref, abs=1e-12)
    assert res['bimodal_average'] == pytest.approx(np.mean(list(res['bimodal'].values())))
    assert res['multimodal_average'] == pytest.approx(np.mean(list(res['multimodal'].values())))
    proto = res['protocol']
    assert proto['similarity'] == 'cosine' and 'stable' in proto['ranking']
    assert proto['counts'] == {'audio': 13, 'image': 11, 'text': 9}
    assert proto['multimodal_gallery_order'] == ['image', 'text', 'audio']
    assert proto['feature'] == 'softmax' and proto['exclude_self'] is False
    assert proto['scoring'] == 'numpy' and proto['score_dtype'] == 'float64'
    assert all(isinstance(v, float) for v in res['bimodal'].values())


def test_evaluate_with_video_orders_twelve_tasks():
    feats = random_features({'video': 4, 'audio': 4, 'text': 4, 'image': 4})
    res = fgxmedia.evaluate_features(feats)
    assert list(res['bimodal']) == ['i2t', 'i2a', 'i2v', 't2i', 't2a', 't2v',
                                    'a2i', 'a2t', 'a2v', 'v2i', 'v2t', 'v2a']
    assert list(res['multimodal']) == ['i2all', 't2all', 'a2all', 'v2all']
    assert fgxmedia.task_keys(['video', 'image']) == (['i2v', 'v2i'], ['i2all', 'v2all'])
    with pytest.raises(ValueError, match='unknown modality'):
        fgxmedia.evaluate_features({'image': feats['image'], 'lidar': feats['audio']})
    with pytest.raises(ValueError, match='two modalities'):
        fgxmedia.evaluate_features({'image': feats['image']})


@pytest.mark.parametrize('exclude_self', [False, True])
def test_xall_gallery_order_is_image_text_audio_video_whatever_the_dict_order(exclude_self):
    feats = tied_features()
    paper = ['image', 'text', 'audio', 'video']
    ref = fgxmedia.evaluate_features(feats, exclude_self=exclude_self)
    assert ref['protocol']['multimodal_gallery_order'] == paper
    for perm in itertools.islice(itertools.permutations(paper), 1, None, 5):
        res = fgxmedia.evaluate_features({m: feats[m] for m in perm}, exclude_self=exclude_self)
        assert res == ref, perm
    # The numbers are those of the gallery stacked i, t, a, v ...
    gallery = np.concatenate([feats[m][0] for m in paper])
    labels = np.concatenate([feats[m][1] for m in paper])
    start = 0
    for m in paper:
        n = feats[m][0].shape[0]
        self_idx = start + np.arange(n) if exclude_self else None
        expected = ranking.mean_average_precision(feats[m][0], feats[m][1], gallery, labels,
                                                  self_indices=self_idx)
        assert ref['multimodal'][f'{m[0]}2all'] == expected
        start += n
    # ... and these ties make the order matter: stacked v, a, t, i, i2all comes out different.
    rev = paper[::-1]
    other = ranking.mean_average_precision(feats['image'][0], feats['image'][1],
                                           np.concatenate([feats[m][0] for m in rev]),
                                           np.concatenate([feats[m][1] for m in rev]))
    assert other != ref['multimodal']['i2all']


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_modality_and_count(bad):
    feats = random_features({'image': 30, 'text': 20, 'audio': 40})
    audio = feats['audio'][0].copy()
    audio[::4, 3] = bad
    audio[1, :] = bad  # the whole row of one more item
    feats['audio'] = (audio, feats['audio'][1])
    expected = ('features of modality audio: 11 of 40 items are not finite (NaN/Inf); '
                'the checkpoint is probably diverged')
    with pytest.raises(ValueError) as info:
        fgxmedia.evaluate_features(feats)
    assert str(info.value) == expected
    with pytest.raises(ValueError, match='modality audio: 11 of 40'):
        fgxmedia.evaluate(feats, config=eval_config(scoring='device'))


def test_evaluate_reads_config_eval():
    feats = tied_features()
    auto = fgxmedia.evaluate(feats, config=eval_config())
    assert auto['protocol']['scoring'] == 'numpy'  # tests run on the CPU backend
    assert auto['protocol']['feature'] == 'softmax' and auto['protocol']['exclude_self'] is False
    direct = fgxmedia.evaluate_features(feats, feature_kind='softmax')
    assert auto == direct
    dev = fgxmedia.evaluate(feats, config=eval_config(scoring='device', chunk_size=5))
    assert dev['protocol']['scoring'] == 'device' and dev['protocol']['score_dtype'] == 'float32'
    assert dev['bimodal'] == direct['bimodal'] and dev['multimodal'] == direct['multimodal']
    drop = fgxmedia.evaluate(feats, config=eval_config(exclude_self=True, num_workers=3,
                                                       chunk_size=2, feature='pooled'))
    assert drop == fgxmedia.evaluate_features(feats, exclude_self=True, feature_kind='pooled')
    old = ml_collections.ConfigDict({'eval': {'exclude_self': False, 'feature': 'softmax',
                                              'chunk_size': 64}})
    assert fgxmedia.evaluate(feats, config=old) == direct  # fields added later default
    with pytest.raises(ValueError, match="scoring must be one of"):
        fgxmedia.evaluate(feats, config=eval_config(scoring='gpu'))


def test_registry_finds_registers_and_rejects():
    assert evaluators.get('fgxmedia') is fgxmedia
    assert 'fgxmedia' in evaluators.names()
    assert 'recall' in evaluators.names()
    with pytest.raises(ValueError, match=r"unknown evaluator 'precision'.*fgxmedia"):
        evaluators.get('precision')
    with pytest.raises(ValueError, match='unknown evaluator'):
        evaluators.get('ranking')  # a helper module, not an evaluator
    fake = types.ModuleType('fake_eval')
    fake.evaluate = lambda features, *, config: {'score': 1.0}
    fake.format_table = lambda results, *, name='This run', with_paper=False: '| x |'
    evaluators.register('fake', fake)
    try:
        assert evaluators.get('fake') is fake and 'fake' in evaluators.names()
    finally:
        evaluators._registered.pop('fake')
    with pytest.raises(ValueError, match='lacks format_table'):
        evaluators.register('half', types.SimpleNamespace(evaluate=lambda *a, **k: {}))
    with pytest.raises(ValueError, match='unknown evaluator'):
        evaluators.get('half')
