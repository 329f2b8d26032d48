"""Retrieval metrics (SPEC 4) against sklearn, a literal per-query loop and hand computations."""

import json
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

from dcinet_jax import retrieval


def loop_ap(scores, query_labels, gallery_labels, exclude=None):
    """SPEC 4 read literally: sort by (-score, gallery index), walk the ranks, one query at a time."""
    out = []
    for q in range(len(query_labels)):
        kept = [g for g in range(len(gallery_labels)) if exclude is None or not exclude[q][g]]
        ranked = sorted(kept, key=lambda g: (-float(scores[q][g]), g))
        hits, total = 0, 0.0
        for rank, g in enumerate(ranked, start=1):
            if gallery_labels[g] == query_labels[q]:
                hits += 1
                total += hits / rank
        out.append(total / hits if hits else 0.0)
    return np.array(out)


# ------------------------------------------------------------------ AP vs references

@pytest.mark.parametrize('gallery_size', [1, 5, 37, 400])
def test_ap_matches_sklearn_without_ties(gallery_size):
    rng = np.random.default_rng(gallery_size)
    num_q = 60
    scores = rng.normal(size=(num_q, gallery_size))
    assert all(len(np.unique(row)) == gallery_size for row in scores)  # tie-free
    ql = rng.integers(0, 4, num_q)
    gl = rng.integers(0, 4, gallery_size)
    ap = retrieval.average_precision(scores, ql, gl)
    has_rel = [(gl == ql[q]).any() for q in range(num_q)]
    assert any(has_rel)
    for q in range(num_q):
        if has_rel[q]:
            ref = average_precision_score(gl == ql[q], scores[q])
            assert ap[q] == pytest.approx(ref, abs=1e-9), q
        else:
            assert ap[q] == 0.0


def test_ap_matches_sklearn_float32_scores():
    rng = np.random.default_rng(1)
    num_q, size = 30, 250
    scores = np.stack([rng.permutation(size) for _ in range(num_q)]).astype(np.float32) / size
    ql = rng.integers(0, 3, num_q)
    gl = rng.integers(0, 3, size)
    ap = retrieval.average_precision(scores, ql, gl)
    ref = [average_precision_score(gl == ql[q], scores[q]) for q in range(num_q)]
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize('dtype', [np.int64, np.uint8, np.float32, np.float64])
def test_ap_matches_literal_loop_with_many_ties(dtype):
    rng = np.random.default_rng(2)
    num_q, size = 40, 120
    scores = rng.integers(0, 5, (num_q, size)).astype(dtype)  # ~24 items per score value
    ql = rng.integers(0, 3, num_q)
    gl = rng.integers(0, 3, size)
    np.testing.assert_allclose(retrieval.average_precision(scores, ql, gl),
                               loop_ap(scores, ql, gl), rtol=0, atol=1e-12)
    exclude = rng.random((num_q, size)) < 0.3
    np.testing.assert_allclose(retrieval.average_precision(scores, ql, gl, exclude_mask=exclude),
                               loop_ap(scores, ql, gl, exclude), rtol=0, atol=1e-12)


def test_ties_broken_by_lower_gallery_index():
    # All scores equal: the stable order is the gallery order itself.
    # Gallery labels 0 1 0 1, query label 1: relevant at ranks 2 and 4 -> (1/2 + 2/4) / 2.
    ap = retrieval.average_precision(np.ones((1, 4)), [1], [0, 1, 0, 1])
    assert ap[0] == pytest.approx(0.5, abs=1e-15)
    # Reversed gallery: relevant now at ranks 1 and 3 -> (1/1 + 2/3) / 2 = 5/6.
    ap = retrieval.average_precision(np.ones((1, 4)), [1], [1, 0, 1, 0])
    assert ap[0] == pytest.approx(5 / 6, abs=1e-15)
    # A tie between one relevant and one irrelevant item in the middle of the ranking:
    # scores 0.9 0.5 0.5 0.1, labels 0 0 1 1 -> order g0 g1 g2 g3, relevant ranks 3 and 4.
    ap = retrieval.average_precision(np.array([[0.9, 0.5, 0.5, 0.1]]), [1], [0, 0, 1, 1])
    assert ap[0] == pytest.approx(float((Fraction(1, 3) + Fraction(2, 4)) / 2), abs=1e-15)


def test_hand_computed_cases_and_empty_relevant_set():
    # Query 0 (label 1): scores descending already; relevant at ranks 1, 3, 5.
    # Query 1 (label 1): scores 0.2 0.9 0.5 0.1 0.3 -> order g1 g2 g4 g0 g3; relevant
    #   (g0 g2 g4) at ranks 2, 3, 4 -> (1/2 + 2/3 + 3/4) / 3.
    # Query 2 (label 7): no relevant item -> 0.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                       [0.2, 0.9, 0.5, 0.1, 0.3],
                       [0.9, 0.8, 0.7, 0.6, 0.5]])
    gl = np.array([1, 0, 1, 0, 1])
    ap = retrieval.average_precision(scores, [1, 1, 7], gl)
    expected = [(Fraction(1) + Fraction(2, 3) + Fraction(3, 5)) / 3,
                (Fraction(1, 2) + Fraction(2, 3) + Fraction(3, 4)) / 3,
                Fraction(0)]
    np.testing.assert_allclose(ap, [float(e) for e in expected], rtol=0, atol=1e-15)
    # Excluding g0 from query 0: gallery g1..g4, relevant g2 g4 at ranks 2 and 4.
    mask = np.zeros_like(scores, dtype=bool)
    mask[0, 0] = True
    ap = retrieval.average_precision(scores, [1, 1, 7], gl, exclude_mask=mask)
    assert ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)
    assert ap[1] == pytest.approx(float(expected[1]), abs=1e-15)


def test_map_counts_empty_queries_and_zero_vectors():
    # Query [1, 0] against: g0 [1,0] cos 1, g1 [0,1] cos 0, g2 [1,1] cos .707,
    # g3 [-1,0] cos -1, g4 [0,0] cos 0 (zero vector; ties with g1, g1 ranks first).
    # Order g0 g2 g1 g4 g3; label 1 items are g2 and g4 -> ranks 2, 4 -> (1/2 + 2/4)/2 = 1/2.
    # Second query has label 5 (no relevant item) -> 0, and counts in the mean.
    gallery = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 0]], dtype=np.float64)
    gl = np.array([0, 0, 1, 0, 1])
    queries = np.array([[1.0, 0.0], [1.0, 0.0]])
    got = retrieval.mean_average_precision(queries, [1, 5], gallery, gl)
    assert got == pytest.approx(0.25, abs=1e-15)


def test_cosine_similarity_matches_sklearn():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(7, 5))
    b = rng.normal(size=(9, 5))
    a[2] = 0.0
    b[4] = 0.0
    got = retrieval.cosine_similarity(a, b)
    np.testing.assert_allclose(got, sk_cosine(a, b), rtol=0, atol=1e-12)
    assert np.all(got[2] == 0.0) and np.all(got[:, 4] == 0.0)
    got32 = retrieval.cosine_similarity(a.astype(np.float32), b.astype(np.float32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, sk_cosine(a, b), rtol=0, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='NaN'):
        retrieval.average_precision(np.array([[np.nan, 1.0]]), [0], [0, 1])
    with pytest.raises(ValueError, match='gallery_labels'):
        retrieval.average_precision(np.ones((1, 3)), [0], [0, 1])
    with pytest.raises(ValueError, match='exclude_mask'):
        retrieval.average_precision(np.ones((1, 3)), [0], [0, 1, 2], exclude_mask=np.ones((1, 2)))
    with pytest.raises(ValueError, match='self_indices'):
        retrieval.mean_average_precision(np.ones((2, 3)), [0, 1], np.ones((4, 3)), [0, 1, 0, 1],
                                         self_indices=np.array([0, 4]))


# ------------------------------------------------------------------ chunking, self exclusion

def test_chunk_size_and_workers_do_not_change_results():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(23, 6)), rng.normal(size=(31, 6))
    ql, gl = rng.integers(0, 3, 23), rng.integers(0, 3, 31)
    ref = loop_ap(sk_cosine(q, g), ql, gl)
    for chunk in (1, 7, 23, 100):
        got = retrieval.query_average_precisions(q, ql, g, gl, chunk_size=chunk)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        assert retrieval.mean_average_precision(q, ql, g, gl, chunk_size=chunk) == \
            pytest.approx(ref.mean(), abs=1e-12)
    got = retrieval.query_average_precisions(q, ql, g, gl, chunk_size=5, num_workers=3)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_self_indices_remove_only_the_querys_own_row():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(20, 4))
    gl = rng.integers(0, 3, 20)
    gallery[7] = gallery[3]  # an exact duplicate of a query's own row, same label: must stay
    gl[7] = gl[3]
    self_idx = np.array([3, 11, 0, 19])
    queries, ql = gallery[self_idx], gl[self_idx]
    got = retrieval.query_average_precisions(queries, ql, gallery, gl, chunk_size=3,
                                             self_indices=self_idx)
    for n, i in enumerate(self_idx):
        rest = np.delete(np.arange(20), i)
        ref = loop_ap(sk_cosine(queries[n:n + 1], gallery[rest]), ql[n:n + 1], gl[rest])
        assert got[n] == pytest.approx(ref[0], abs=1e-12)
    kept = retrieval.query_average_precisions(queries, ql, gallery, gl)
    assert kept[0] > got[0]  # the query itself ranked first (cos 1) and was relevant


# ------------------------------------------------------------------ the protocol

def tiny_features():
    """image i0 [1,0] (label 0), i1 [0,1] (1); text t0 [.6,.8] (0), t1 [.8,.6] (1)."""
    return {
        'image': (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])),
        'text': (np.array([[0.6, 0.8], [0.8, 0.6]]), np.array([0, 1])),
    }


def test_xall_with_and_without_self_by_hand():
    # Stacked gallery i0 i1 t0 t1, labels 0 1 0 1.
    # i0: cos 1 0 .6 .8 -> i0 t1 t0 i1: relevant ranks 1, 3 -> 5/6; without i0: t1 t0 i1 -> 1/2.
    # i1 is the mirror image: 5/6 and 1/2.
    # t0: cos .6 .8 1 .96 -> t0 t1 i1 i0: relevant ranks 1, 4 -> 3/4; without t0: rank 3 -> 1/3.
    # t1 mirrors t0. Bi-modal: every query's partner ranks 2nd of 2 -> 1/2 for i2t and t2i.
    keep = retrieval.evaluate(tiny_features())
    drop = retrieval.evaluate(tiny_features(), exclude_self=True)
    for res in (keep, drop):
        assert res['bimodal'] == pytest.approx({'i2t': 0.5, 't2i': 0.5}, abs=1e-12)
        assert res['bimodal_average'] == pytest.approx(0.5, abs=1e-12)
    assert keep['multimodal'] == pytest.approx({'i2all': 5 / 6, 't2all': 3 / 4}, abs=1e-12)
    assert keep['multimodal_average'] == pytest.approx(19 / 24, abs=1e-12)
    assert drop['multimodal'] == pytest.approx({'i2all': 1 / 2, 't2all': 1 / 3}, abs=1e-12)
    assert drop['multimodal_average'] == pytest.approx(5 / 12, abs=1e-12)
    assert keep['protocol']['exclude_self'] is False and drop['protocol']['exclude_self'] is True


def random_features(sizes, seed=6, classes=5, dim=8):
    rng = np.random.default_rng(seed)
    return {m: (rng.random((n, dim)).astype(np.float32), rng.integers(0, classes, n))
            for m, n in sizes.items()}


def test_evaluate_keys_order_values_and_averages():
    feats = random_features({'audio': 13, 'image': 11, 'text': 9})  # not the paper's order
    res = retrieval.evaluate(feats, chunk_size=4, feature_kind='softmax')
    assert list(res) == ['bimodal', 'multimodal', 'bimodal_average', 'multimodal_average',
                         'protocol']
    assert list(res['bimodal']) == ['i2t', 'i2a', 't2i', 't2a', 'a2i', 'a2t']
    assert list(res['multimodal']) == ['i2all', 't2all', 'a2all']
    names = {'i': 'image', 't': 'text', 'a': 'audio'}
    for key, value in res['bimodal'].items():
        (qf, ql), (gf, gl) = feats[names[key[0]]], feats[names[key[2]]]
        assert value == pytest.approx(loop_ap(sk_cosine(qf, gf), ql, gl).mean(), abs=1e-6)
    # X->all gallery stacked in the dict's order: audio, image, text.
    all_f = np.concatenate([feats[m][0] for m in feats])
    all_l = np.concatenate([feats[m][1] for m in feats])
    for key, value in res['multimodal'].items():
        qf, ql = feats[names[key[0]]]
        assert value == pytest.approx(loop_ap(sk_cosine(qf, all_f), ql, all_l).mean(), abs=1e-6)
    assert res['bimodal_average'] == pytest.approx(np.mean(list(res['bimodal'].values())))
    assert res['multimodal_average'] == pytest.approx(np.mean(list(res['multimodal'].values())))
    proto = res['protocol']
    assert proto['similarity'] == 'cosine' and 'stable' in proto['ranking']
    assert proto['counts'] == {'audio': 13, 'image': 11, 'text': 9}
    assert proto['feature'] == 'softmax' and proto['exclude_self'] is False
    assert all(isinstance(v, float) for v in res['bimodal'].values())


def test_evaluate_with_video_orders_twelve_tasks():
    feats = random_features({'video': 4, 'audio': 4, 'text': 4, 'image': 4})
    res = retrieval.evaluate(feats)
    assert list(res['bimodal']) == ['i2t', 'i2a', 'i2v', 't2i', 't2a', 't2v',
                                    'a2i', 'a2t', 'a2v', 'v2i', 'v2t', 'v2a']
    assert list(res['multimodal']) == ['i2all', 't2all', 'a2all', 'v2all']
    with pytest.raises(ValueError, match='unknown modality'):
        retrieval.evaluate({'image': feats['image'], 'lidar': feats['audio']})
    with pytest.raises(ValueError, match='two modalities'):
        retrieval.evaluate({'image': feats['image']})


# ------------------------------------------------------------------ tables and files

def test_format_table_lists_every_task_with_three_decimals():
    res = retrieval.evaluate(tiny_features())
    text = retrieval.format_table(res)
    for key in ['i2t', 't2i', 'i2all', 't2all', 'Avg']:
        assert f' {key} |' in text
    assert '| This run | 0.500 | 0.500 | 0.500 |' in text
    assert '| This run | 0.833 | 0.750 | 0.792 |' in text
    paper = retrieval.paper_reference_table()
    for value in ['0.242', '0.572', '0.294', '0.585', '0.205', '0.357', '0.535', '0.238',
                  '0.458', '0.411', '0.340', '0.397', '0.366', '0.412']:
        assert value in paper
    assert 'real' in paper and 'paper' in paper
    side = retrieval.format_table(res, with_paper=True)
    assert '0.357' in side and 'This run' in side


def test_save_results_writes_documented_files(tmp_path):
    res = retrieval.evaluate(tiny_features())
    paths = retrieval.save_results(res, tmp_path, step=1200)
    assert 'step' not in res  # the caller's dict is left alone
    assert paths['step_json'] == tmp_path / 'eval' / '1200' / 'results.json'
    assert paths['latest_json'] == tmp_path / 'eval' / 'results.json'
    assert paths['step_md'] == tmp_path / 'eval' / '1200' / 'results.md'
    assert paths['latest_md'] == tmp_path / 'eval' / 'results.md'
    for key in ('step_json', 'latest_json'):
        data = json.loads(paths[key].read_text())
        assert data['step'] == 1200
        assert set(data) == {'bimodal', 'multimodal', 'bimodal_average', 'multimodal_average',
                             'protocol', 'step'}
        assert data['multimodal']['i2all'] == pytest.approx(5 / 6, abs=1e-12)
    assert 'i2all' in paths['latest_md'].read_text()
    retrieval.save_results(retrieval.evaluate(tiny_features(), exclude_self=True), tmp_path, 1300)
    latest = json.loads((tmp_path / 'eval' / 'results.json').read_text())
    assert latest['step'] == 1300 and latest['multimodal']['i2all'] == pytest.approx(0.5)
    assert json.loads(paths['step_json'].read_text())['step'] == 1200
    leftovers = [p for p in tmp_path.rglob('*') if p.name.endswith('.tmp')]
    assert leftovers == []


def test_float32_near_ties_match_a_stable_sort_reference():
    # Coarse float32 scores: thousands of ties per row, many between relevant and not.
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((48, 3000)), 3).astype(np.float32)
    ql, gl = rng.integers(0, 20, 48), rng.integers(0, 20, 3000)
    order = np.argsort(-scores, axis=1, kind='stable')
    rel = (gl[order] == ql[:, None]).astype(np.float64)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, 3001)
    ref = np.sum(rel * hits / ranks, axis=1) / np.maximum(rel.sum(axis=1), 1)
    np.testing.assert_allclose(retrieval.average_precision(scores, ql, gl), ref,
                               rtol=0, atol=1e-12)
