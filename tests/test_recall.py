"""The recall evaluator (R@K, medr, meanr, rsum, folds, ensembles, block-wise scores)
against direct Python loops of the definitions in docs/recall.md."""

import itertools
import json
import math
import statistics

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcinet_jax import evaluate as evaluate_lib
from dcinet_jax import evaluators
from dcinet_jax.evaluators import recall


# ---- references: the definitions, written as plain loops ------------------------------

def loop_i2t(s, caption_image):
    ranks = []
    for i in range(len(s)):
        order = sorted(range(len(s[i])), key=lambda c: (-s[i][c], c))  # ties: lower index
        ranks.append(min(order.index(c) for c in range(len(caption_image))
                         if caption_image[c] == i))
    return ranks


def loop_t2i(s, caption_image):
    ranks = []
    for c, image in enumerate(caption_image):
        order = sorted(range(len(s)), key=lambda i: (-s[i][c], i))
        ranks.append(order.index(image))
    return ranks


def loop_metrics(i2t, t2i):
    out = {}
    for name, ranks in (('i2t', i2t), ('t2i', t2i)):
        for k in (1, 5, 10):
            out[f'{name}_r{k}'] = 100.0 * sum(1 for r in ranks if r < k) / len(ranks)
        out[f'{name}_medr'] = math.floor(statistics.median(ranks)) + 1
        out[f'{name}_meanr'] = sum(ranks) / len(ranks) + 1
    out['rsum'] = sum(out[f'{d}_r{k}'] for d in ('i2t', 't2i') for k in (1, 5, 10))
    return out


def assert_metrics_equal(got, want):
    assert set(got) == set(recall.METRIC_KEYS)
    for k in recall.METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


def tied_matrix(seed, n_img, n_cap, levels=3):
    """Scores from a few levels, so most rows and columns hold ties."""
    return np.random.default_rng(seed).integers(0, levels, (n_img, n_cap)).astype(np.float32)


@pytest.fixture(params=['one block', 'many blocks'])
def block_elements(request, monkeypatch):
    if request.param == 'many blocks':
        monkeypatch.setattr(recall, '_BLOCK_ELEMENTS', 7)  # rows/columns one or two at a time
    return request.param


# ---- ranks and metrics ------------------------------------------------------------------

def test_hand_built_ties():
    s = np.array([[1., 2., 2., 0.],
                  [2., 2., 1., 2.]], np.float32)
    caption_image = np.array([0, 1, 0, 1])
    # Row 0 orders captions 1, 2, 0, 3: its captions 0 and 2 sit at 2 and 1 -> rank 1.
    # Row 1 orders 0, 1, 3, 2: its captions 1 and 3 sit at 1 and 2 -> rank 1.
    np.testing.assert_array_equal(recall.i2t_ranks(s, caption_image), [1, 1])
    # Column 1 ties (2, 2): image 0 first, so caption 1 (image 1) has rank 1; column 3
    # (0, 2): image 1 first.
    np.testing.assert_array_equal(recall.t2i_ranks(s, caption_image), [1, 1, 0, 0])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_ranks_and_metrics_match_loops(seed, block_elements):
    n_img, per = 6, 5
    rng = np.random.default_rng(100 + seed)
    caption_image = rng.permutation(np.repeat(np.arange(n_img), per))  # not contiguous
    s = tied_matrix(seed, n_img, n_img * per)
    i2t, t2i = loop_i2t(s.tolist(), caption_image), loop_t2i(s.tolist(), caption_image)
    np.testing.assert_array_equal(recall.i2t_ranks(s, caption_image), i2t)
    np.testing.assert_array_equal(recall.t2i_ranks(s, caption_image), t2i)
    assert_metrics_equal(recall.recall_metrics(s, caption_image), loop_metrics(i2t, t2i))


def test_uneven_caption_counts_and_large_ranks():
    n_img = 14
    caption_image = np.array([0, 0, 1, 2, 2, 2] + list(range(3, 14)) + [13, 5])
    s = np.random.default_rng(3).normal(size=(n_img, caption_image.size)).astype(np.float32)
    s[:, 7] = s[0, 7]  # a column of equal scores
    i2t, t2i = loop_i2t(s.tolist(), caption_image), loop_t2i(s.tolist(), caption_image)
    assert max(t2i) >= 10  # ranks beyond R@10 are exercised
    assert_metrics_equal(recall.recall_metrics(s, caption_image), loop_metrics(i2t, t2i))
    assert recall.t2i_ranks(s, caption_image)[7] == caption_image[7]  # all tied: image order


def test_memmap_scores(tmp_path):
    s = tied_matrix(4, 4, 20)
    np.save(tmp_path / 's.npy', s)
    mm = np.load(tmp_path / 's.npy', mmap_mode='r')
    caption_image = np.arange(20) // 5
    assert recall.recall_metrics(mm, caption_image) == recall.recall_metrics(s, caption_image)


def test_five_fold_rule_matches_loops(block_elements):
    num_folds, fold_images, per = 3, 4, 5
    n_img = num_folds * fold_images
    s = tied_matrix(7, n_img, n_img * per, levels=4)
    caption_image = np.arange(n_img * per) // per
    got = recall.folds(s, caption_image, num_folds, fold_images)
    per_fold = []
    for f in range(num_folds):  # the reference's slicing: images and captions contiguous
        sub = s[f * fold_images:(f + 1) * fold_images,
                f * fold_images * per:(f + 1) * fold_images * per].tolist()
        ci = [c // per for c in range(fold_images * per)]
        per_fold.append(loop_metrics(loop_i2t(sub, ci), loop_t2i(sub, ci)))
    for f in range(num_folds):
        assert_metrics_equal(got['folds'][f], per_fold[f])
    for k in recall.METRIC_KEYS:
        assert got[k] == pytest.approx(sum(m[k] for m in per_fold) / num_folds, abs=1e-9)
    with pytest.raises(ValueError, match='3 folds of 5 images need 15 images'):
        recall.folds(s, caption_image, 3, 5)


def test_coco_5fold_uses_1000_image_folds():
    with pytest.raises(ValueError, match='5 folds of 1000 images need 5000'):
        recall.coco_5fold(np.zeros((10, 50), np.float32), np.arange(50) // 5)


def test_ensemble_is_the_mean():
    ms = [np.random.default_rng(i).normal(size=(3, 6)).astype(np.float32) for i in range(3)]
    np.testing.assert_allclose(recall.ensemble(ms), np.mean(np.stack(ms), 0), rtol=1e-6)
    assert recall.ensemble(ms[0]) is ms[0]
    np.testing.assert_array_equal(recall.ensemble(jnp.asarray(ms[0])), ms[0])  # not its rows
    np.testing.assert_allclose(recall.ensemble(np.stack(ms)), recall.ensemble(ms), rtol=1e-6)
    with pytest.raises(ValueError, match='score matrix 1 has shape'):
        recall.ensemble([ms[0], ms[1][:2]])


def test_chance_recall_by_enumeration():
    n_img, per = 2, 2  # every ordering of 4 captions for an image's row, equally likely
    caps = list(range(n_img * per))
    for k in (1, 2, 3):
        hits = [min(order.index(c) for c in (0, 1)) < k for order in itertools.permutations(caps)]
        got = recall.chance_recall(n_img, k=k, captions_per_image=per)
        assert got['i2t'] == pytest.approx(100 * sum(hits) / len(hits))
        assert got['t2i'] == pytest.approx(100 * min(k, n_img) / n_img)


def test_bad_inputs_are_named():
    s = np.zeros((2, 10), np.float32)
    with pytest.raises(ValueError, match=r'caption_image has shape \(9,\) but scores has 10'):
        recall.recall_metrics(s, np.arange(9) // 5)
    with pytest.raises(ValueError, match='image indices in'):
        recall.recall_metrics(s, np.arange(10))
    with pytest.raises(ValueError, match='1 images have no caption'):
        recall.i2t_ranks(np.zeros((3, 10), np.float32), np.arange(10) // 5)
    bad = s.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match='1 non-finite'):
        recall.recall_metrics(bad, np.arange(10) // 5)


# ---- block-wise score matrix --------------------------------------------------------------

def toy_scores(img, cap):
    """Max over regions of the mean over a caption's valid words of region . word."""
    words, lengths = cap['words'], cap['lengths']
    dots = jnp.einsum('ire,cle->icrl', img, words)
    valid = jnp.arange(words.shape[1])[None, None, None, :] < lengths[None, :, None, None]
    return (jnp.where(valid, dots, 0).sum(-1) / lengths[None, :, None]).max(-1)


def test_score_matrix_matches_full_and_compiles_once(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(7, 3, 4)).astype(np.float32)
    captions = {'words': rng.normal(size=(13, 5, 4)).astype(np.float32),
                'lengths': rng.integers(1, 6, 13).astype(np.int32)}
    dots = np.einsum('ire,cle->icrl', images.astype(np.float64), captions['words'])
    valid = np.arange(5)[None, None, None, :] < captions['lengths'][None, :, None, None]
    want = (np.where(valid, dots, 0).sum(-1) / captions['lengths'][None, :, None]).max(-1)

    traces = []

    @jax.jit
    def score_block(img, cap):
        traces.append(img.shape)
        return toy_scores(img, cap)

    np.save(tmp_path / 'images.npy', images)
    mm = np.load(tmp_path / 'images.npy', mmap_mode='r')
    for imgs, caps in ((images, captions), (mm, captions),
                       (jnp.asarray(images), jax.tree.map(jnp.asarray, captions))):
        got = recall.score_matrix(score_block, imgs, caps, image_block=3, caption_block=5)
        assert got.shape == (7, 13) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert traces == [(3, 3, 4)]  # one compiled shape: 7 = 3 + 3 + 1 and 13 = 5 + 5 + 3 padded
    with pytest.raises(ValueError, match='same leading'):
        recall.score_matrix(score_block, images, {'words': captions['words'],
                                                  'lengths': captions['lengths'][:4]})


def test_map_blocks_matches_one_pass_and_compiles_once():
    from dcinet_jax.evaluators import blockwise
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(11, 4)).astype(np.float32)
    lengths = rng.integers(1, 5, 11).astype(np.int32)
    traces = []

    @jax.jit
    def encode(tree):
        t, n = tree
        traces.append(t.shape)
        return jnp.cumsum(t, axis=1)[jnp.arange(t.shape[0]), n - 1]

    got = blockwise.map_blocks(encode, (tokens, lengths), 4)
    want = np.cumsum(tokens.astype(np.float64), axis=1)[np.arange(11), lengths - 1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (11,) and traces == [(4, 4)]   # 11 = 4 + 4 + 3 padded to 4
    np.testing.assert_allclose(blockwise.map_blocks(encode, (tokens, lengths), 50), got)


# ---- the evaluator contract ------------------------------------------------------------

def _config(**eval_fields):
    return ml_collections.ConfigDict({'eval': {'best_metric': 'selection', **eval_fields}})


def test_evaluate_coco_protocols_dev_and_ensemble():
    per, num_folds, fold_images = 5, 2, 3
    ci = np.arange(num_folds * fold_images * per) // per
    members = [tied_matrix(s, num_folds * fold_images, ci.size, levels=5) for s in (10, 11)]
    dev = tied_matrix(12, 4, 20)
    dev_ci = np.arange(20) // 5
    config = _config(protocol=('coco_5fold', '5k'), dataset='coco', num_folds=num_folds,
                     fold_images=fold_images)
    outputs = {'test': {'scores': members, 'caption_image': ci},
               'dev': {'scores': dev, 'caption_image': dev_ci},
               'info': {'switches': {'text_attn_padding': 'masked'}}}
    results = evaluators.get('recall').evaluate(outputs, config=config)
    mean = recall.ensemble(members)
    five_fold = recall.folds(mean, ci, num_folds, fold_images)
    whole = recall.recall_metrics(mean, ci)
    for k in recall.METRIC_KEYS:
        assert results[k] == five_fold[k]
        assert results[f'5k_{k}'] == whole[k]
    assert results['folds'] == five_fold['folds']
    assert results['dev_rsum'] == recall.recall_metrics(dev, dev_ci)['rsum']
    assert results['protocol']['ensemble_size'] == 2
    # the generic glue sees the unprefixed test metrics, and ranks checkpoints by dev rsum
    flat = evaluate_lib.scalar_metrics(results)
    assert flat['rsum'] == results['rsum'] and flat['dev_rsum'] == results['dev_rsum']
    assert evaluate_lib.best_metric(config, results) == results['dev_rsum']
    json.dumps(results)
    table = recall.format_table({**results, 'step': 3}, with_paper=True)
    assert 'MS-COCO 1K test (5-fold average)' in table and 'MS-COCO 5K test' in table
    assert '| HSLM (paper Table 2) | 80.3 | 96.5 | 98.7 | 65.0 | 90.9 | 96.0 | 527.3 |' in table
    assert '| HSLM (paper Table 3) | 59.9 |' in table and 'Table 4' not in table
    assert f'| Ensemble of 2 runs | {results["i2t_r1"]:.1f} |' in table  # not 'This run'
    assert 'text_attn_padding=masked' in table and 'step 3' in table


def test_evaluate_f30k_test_only_and_dev_only():
    s, ci = tied_matrix(20, 5, 25), np.arange(25) // 5
    config = _config(protocol='1k')
    results = recall.evaluate({'test': {'scores': jnp.asarray(s), 'caption_image': ci}},
                              config=config)
    assert results['selection'] == results['rsum'] == recall.recall_metrics(s, ci)['rsum']
    assert results['protocol']['ensemble_size'] == 1
    assert 'TEST' in results['protocol']['model_selection']
    table = recall.format_table(results, with_paper=True)
    assert '**Flickr30K 1K test**' in table and '| HSLM (paper Table 1) |' in table
    assert '| 12: full (global + local + self-attn + MGCN) |' in table and '497.8' in table
    assert '| HSLM (paper Table 1) |' not in recall.format_table(results)
    dev_only = recall.evaluate({'dev': {'scores': s, 'caption_image': ci}}, config=config)
    assert dev_only['selection'] == dev_only['dev_rsum'] and 'rsum' not in dev_only
    assert 'Validation (dev)' in recall.format_table(dev_only)
    with pytest.raises(ValueError, match="protocol=\\['10k'\\]"):
        recall.evaluate({'test': {'scores': s, 'caption_image': ci}}, config=_config(protocol='10k'))
    with pytest.raises(ValueError, match='caption_image has shape'):
        recall.evaluate({'test': {'scores': s, 'caption_image': ci[:-1]}}, config=config)
