"""Collapsed features are refused by every evaluator (fgxmedia, audiovisual, recall).

A collapsed model gives every item the same feature vector; ranking then breaks every
tie by gallery index and used to report a plausible mAP (0.430 bi-modal on the 4-class
demo, chance ~0.25). The reference for "how many rows are the common vector" is a
plain Python loop over the rows.
"""

import ml_collections
import numpy as np
import pytest

from dcinet_jax.evaluators import audiovisual, fgxmedia, recall, report, sanity


def _loop_identical(x, normalise=True):
    """Independent count: the largest group of rows equal (to 1e-9) to one another."""
    x = np.asarray(x, np.float64)
    if normalise:
        x = np.array([r / max(np.sqrt(sum(v * v for v in r)), 1e-12) for r in x])
    best = 0
    for i in range(len(x)):
        best = max(best, sum(1 for j in range(len(x))
                             if max(abs(a - b) for a, b in zip(x[i], x[j])) <= 1e-9))
    return best


def _features(n=24, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % 4


@pytest.mark.parametrize('same', [0, 5, 97, 99, 100])
def test_identical_rows_matches_a_loop(same):
    x, _ = _features(100, 6, seed=same)
    x[:same] = x[0] * 3.0   # a scaled copy is the same direction
    for normalise in (True, False):
        got, want = sanity.identical_rows(x, normalise=normalise), _loop_identical(x, normalise)
        # Exact whenever one vector holds most rows (the only case the check acts on).
        assert got == want if want > 50 else got <= want


def test_fgxmedia_refuses_collapsed_and_nearly_collapsed_modalities():
    x, y = _features()
    collapsed = np.tile(np.eye(4)[0] * 0.9 + 0.025, (24, 1))   # one saturated softmax
    feats = {'image': (collapsed, y), 'text': (x, y), 'audio': (x + 1, y)}
    # Without the check this scored a plausible number through the tie rule alone.
    with pytest.raises(sanity.DegenerateFeaturesError,
                       match=r'^features of modality image: 24 of 24 items have the same '
                             r'feature vector, .* evaluate an earlier step with --step N'):
        fgxmedia.evaluate_features(feats)
    big, yb = _features(200, 8)
    nearly = big.copy()
    nearly[:198] = big[0]                  # 99 % the same vector
    with pytest.raises(sanity.DegenerateFeaturesError, match='198 of 200 items'):
        fgxmedia.evaluate_features({'image': (nearly, yb), 'text': (big, yb)})
    spread = big.copy()
    spread[:190] = big[0]                  # 95 %: poor, but rankable
    r = fgxmedia.evaluate_features({'image': (spread, yb), 'text': (big, yb)})
    assert 0 <= r['bimodal_average'] <= 1


def test_audiovisual_refuses_a_collapsed_modality():
    x, y = _features(40, 8)
    with pytest.raises(sanity.DegenerateFeaturesError, match='^audio features: 40 of 40'):
        audiovisual.pair_map({'visual': (x, y), 'audio': (np.ones((40, 8)), y)})
    assert 0 < audiovisual.pair_map({'visual': (x, y), 'audio': (x, y)})['average'] <= 1


def _recall_config():
    return ml_collections.ConfigDict({'eval': {'best_metric': 'selection'}})


def test_recall_refuses_a_collapsed_image_or_caption_side():
    rng = np.random.default_rng(0)
    ci = np.arange(50) // 5
    s = rng.normal(size=(10, 50)).astype(np.float32)
    config = _recall_config()
    with pytest.raises(sanity.DegenerateFeaturesError, match='^test scores, image rows: '
                                                             '10 of 10 items'):
        recall.evaluate({'test': {'scores': np.tile(s[:1], (10, 1)), 'caption_image': ci}},
                        config=config)
    with pytest.raises(sanity.DegenerateFeaturesError, match='caption columns: 50 of 50'):
        recall.evaluate({'test': {'scores': np.tile(s[:, :1], (1, 50)), 'caption_image': ci}},
                        config=config)
    assert recall.evaluate({'test': {'scores': s, 'caption_image': ci}},
                           config=config)['rsum'] >= 0


def test_an_ensemble_is_labelled_and_filed_apart_from_the_run(tmp_path):
    rng = np.random.default_rng(1)
    ci = np.arange(50) // 5
    own = recall.evaluate({'test': {'scores': rng.normal(size=(10, 50)), 'caption_image': ci}},
                          config=_recall_config())
    both = recall.evaluate({'test': {'scores': [rng.normal(size=(10, 50)) for _ in range(2)],
                                     'caption_image': ci}}, config=_recall_config())
    assert '| This run |' in recall.format_table(own)
    assert '| Ensemble of 2 runs |' in recall.format_table(both)
    assert 'This run' not in recall.format_table(both)
    from dcinet_jax import evaluate
    for results in (dict(own, step=4), dict(both, step=4)):
        report.save_results(results, tmp_path, 4, markdown='x',
                            variant=evaluate.results_variant(results))
    assert evaluate.results_path(tmp_path, dict(both, step=4)).endswith(
        'eval/4/ensemble2/results.json')
    import json
    mine = json.loads((tmp_path / 'eval' / '4' / 'results.json').read_text())
    assert mine['protocol']['ensemble_size'] == 1   # the run's own results are intact
    theirs = json.loads((tmp_path / 'eval' / '4' / 'ensemble2' / 'results.json').read_text())
    assert theirs['protocol']['ensemble_size'] == 2
