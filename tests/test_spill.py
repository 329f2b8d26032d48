"""Host arrays that go to disk when large (dcinet_jax/evaluators/spill.py): the spilled
and in-memory paths give bit-identical embeddings, score matrices, ensembles and recalls
(HSLM's own encoders and head, against numpy references); spill files are unlinked at
once; clear errors for a bad spill dir or a full disk; and numpy's host allocations of
a whole evaluation do not grow with the gallery when spilling."""

import errno
import os
import tracemalloc
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcinet_jax.evaluators import blockwise, recall, sanity, spill
from dcinet_jax.evaluators.spill import Spill, host_array

TINY = 1e-6     # MiB: every non-empty array spills


def _maps_of(directory: Path) -> list[str]:
    return [line for line in Path('/proc/self/maps').read_text().splitlines()
            if str(directory) in line]


def test_small_in_memory_large_on_disk_and_unlinked(tmp_path):
    where = Spill(mb=0.01, directory=str(tmp_path))          # 10,485 bytes
    small = host_array((2, 1000), np.float32, what='small', spill=where)   # 8,000 bytes
    assert type(small) is np.ndarray
    big = host_array((3, 1000), np.float32, what='big', spill=where)       # 12,000 bytes
    assert isinstance(big, np.memmap) and big.shape == (3, 1000) and big.dtype == np.float32
    assert list(tmp_path.iterdir()) == []          # unlinked right after opening
    maps = _maps_of(tmp_path)
    assert maps and all('(deleted)' in line for line in maps)   # yet still mapped
    values = np.arange(3000, dtype=np.float32).reshape(3, 1000)
    big[:] = values
    big[1, 7] = -1.0
    values[1, 7] = -1.0
    np.testing.assert_array_equal(np.asarray(big), values)
    assert float(big.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))
    assert type(host_array((0, 5), np.float32, what='empty', spill=Spill(0.0))) is np.ndarray
    assert isinstance(host_array(4, np.int64, what='x', spill=Spill(0.0, str(tmp_path))),
                      np.memmap)
    assert type(host_array((3, 1000), np.float32, what='never', spill=Spill(-1.0))) is np.ndarray
    del big
    assert _maps_of(tmp_path) == []                # the blocks go with the mapping


def test_from_config_and_errors(tmp_path, monkeypatch):
    assert Spill.from_config(ml_collections.ConfigDict({'eval': {}})) == Spill(spill.SPILL_MB, '')
    from configs import hslm_coco
    c = hslm_coco.get_config()
    assert Spill.from_config(c) == Spill(256.0, '')
    c.eval.spill_mb, c.eval.spill_dir = 0.5, str(tmp_path)
    assert Spill.from_config(c) == Spill(0.5, str(tmp_path))
    with pytest.raises(ValueError, match=r"config.eval.spill_mb='lots': expected a number"):
        Spill.from_config(ml_collections.ConfigDict({'eval': {'spill_mb': 'lots'}}))

    missing = tmp_path / 'nope'
    with pytest.raises(ValueError, match=rf"spill_dir='{missing}' does not exist.*word "
                                         r"embeddings \(4,000 bytes\)"):
        host_array((1000,), np.float32, what='word embeddings', spill=Spill(TINY, str(missing)))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'posix_fallocate', full)
    with pytest.raises(ValueError, match=rf"spill_dir='{tmp_path}' has no room to spill "
                                         r"score matrix \(40,000 bytes\): [\d,]+ bytes free"):
        host_array((100, 100), np.float32, what='score matrix', spill=Spill(TINY, str(tmp_path)))
    assert list(tmp_path.iterdir()) == []          # nothing left behind on failure either


# ------------------------------------------------ HSLM's encoders and head, both paths

DIMS = dict(vocab_size=40, embed_dim=16, word_dim=8, sim_dim=8, relation_heads=2,
            relation_head_dim=8, num_relation_blocks=1, num_text_blocks=1)
N_IMG, R, D_REG, L = 13, 6, 16, 9


def _split(rng):
    from input_pipeline.precomp.reader import EvalArrays
    images = rng.normal(size=(N_IMG, R, D_REG)).astype(np.float32)
    lengths = rng.integers(2, L + 1, size=5 * N_IMG).astype(np.int32)
    tokens = rng.integers(4, DIMS['vocab_size'], size=(5 * N_IMG, L)).astype(np.int32)
    tokens[np.arange(L)[None, :] >= lengths[:, None]] = 0
    return EvalArrays(images=images, image_rows=np.arange(N_IMG), tokens=tokens,
                      lengths=lengths, caption_image=np.arange(5 * N_IMG) // 5)


def test_hslm_scores_and_recalls_identical_spilled_or_not(tmp_path):
    from dcinet_jax.methods import hslm_eval
    from dcinet_jax.models import hslm
    rng = np.random.default_rng(0)
    arrays = _split(rng)
    model = hslm.HSLM(dropout_rate=0.0, **DIMS)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), arrays.images[:2],
                                               arrays.tokens[:3], arrays.lengths[:3],
                                               train=False))

    def draw(path, leaf):      # numpy draws (no init compile); BN variances positive
        if 'var' in jax.tree_util.keystr(path):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        fan = leaf.shape[0] if len(leaf.shape) == 2 else 4
        return (rng.uniform(-1, 1, leaf.shape) / np.sqrt(fan)).astype(np.float32)
    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    results = {}
    for name, where in (('memory', Spill(-1.0)), ('disk', Spill(TINY, str(tmp_path)))):
        regions, words = hslm_eval.encode_split(model, variables, arrays, batch_size=4,
                                                spill=where)
        scores = blockwise.sharded_score_matrix(
            hslm_eval.tile_scorer(model), variables, regions, (words, arrays.lengths),
            image_block=2, caption_block=16, spill=where)
        results[name] = (regions, words, scores)
        assert list(tmp_path.iterdir()) == []
    assert all(type(a) is np.ndarray for a in results['memory'])
    assert all(isinstance(a, np.memmap) for a in results['disk'])
    for a, b in zip(results['memory'], results['disk']):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    regions, words, scores = results['disk']
    # Reference: the same eval-mode functions on the whole arrays at once, no blocks.
    ref_regions = hslm_eval._jitted(model, 'images')(variables, arrays.images)
    ref_words = hslm_eval._jitted(model, 'captions')(variables, arrays.tokens, arrays.lengths)
    ref = jax.jit(hslm_eval.tile_scorer(model))(variables, ref_regions,
                                                (ref_words, arrays.lengths))
    assert np.isfinite(ref).all() and np.ptp(np.asarray(ref)) > 0
    np.testing.assert_allclose(np.asarray(regions), ref_regions, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(words), ref_words, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), ref, rtol=1e-4, atol=1e-5)
    ci = arrays.caption_image
    assert (recall.recall_metrics(scores, ci)
            == recall.recall_metrics(results['memory'][2], ci))


def _old_ensemble(matrices):
    """recall.ensemble before spilling: the whole float64 sum, then the float32 mean."""
    total = np.array(matrices[0], dtype=np.float64)
    for m in matrices[1:]:
        total += np.asarray(m, dtype=np.float64)
    return (total / len(matrices)).astype(np.float32)


def test_ensemble_of_memmaps_equals_the_whole_float64_mean(tmp_path, monkeypatch):
    monkeypatch.setattr(recall, '_BLOCK_ELEMENTS', 64)     # many row blocks, one partial
    rng = np.random.default_rng(3)
    where = Spill(TINY, str(tmp_path))
    members = []
    for seed in range(3):
        m = host_array((23, 10), np.float32, what='member', spill=where)
        m[:] = rng.normal(size=(23, 10)).astype(np.float32) * (seed + 1)
        members.append(m)
    mean = recall.ensemble(members, spill=where)
    assert isinstance(mean, np.memmap) and mean.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(mean), _old_ensemble(members))
    np.testing.assert_array_equal(recall.ensemble(members, spill=Spill(-1.0)), mean)
    np.testing.assert_allclose(mean, np.mean(np.stack(members), 0, dtype=np.float64),
                               rtol=1e-6)


# ------------------------------------------------------------ the host-memory bound

def _embed(table, tokens, lengths):
    return table[tokens] * (jnp.arange(tokens.shape[1]) < lengths[:, None])[..., None]


def _score(table, regions, captions):
    words, lengths = captions
    return jnp.einsum('ird,cld->ic', regions, words) / lengths[None, :]


def _peak_numpy_bytes(n_img: int, where: Spill) -> tuple[int, dict]:
    """Peak traced host allocations of encoding, scoring, ensembling and ranking a
    gallery of n_img images and 5 n_img captions (inputs made before tracing)."""
    rng = np.random.default_rng(n_img)
    table = jnp.asarray(rng.normal(size=(20, 8)).astype(np.float32))
    tokens = rng.integers(0, 20, size=(5 * n_img, 6)).astype(np.int32)
    lengths = rng.integers(1, 7, size=5 * n_img).astype(np.int32)
    regions = rng.normal(size=(n_img, 3, 8)).astype(np.float32)
    config = ml_collections.ConfigDict({'eval': {'protocol': '5k', 'spill_mb': where.mb,
                                                 'spill_dir': where.directory}})
    tracemalloc.start()
    try:
        words = blockwise.map_blocks(jax.jit(lambda tl: _embed(table, *tl)),
                                     (tokens, lengths), 500, spill=where)
        scores = blockwise.sharded_score_matrix(_score, table, regions, (words, lengths),
                                                image_block=50, caption_block=500,
                                                spill=where)
        results = recall.evaluate({'test': {'scores': [scores, scores],
                                            'caption_image': np.arange(5 * n_img) // 5}},
                                  config=config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, results


def test_host_allocations_do_not_grow_with_the_gallery(tmp_path, monkeypatch):
    monkeypatch.setattr(recall, '_BLOCK_ELEMENTS', 1 << 15)
    monkeypatch.setattr(sanity, '_BLOCK_ENTRIES', 1 << 15)
    disk = Spill(TINY, str(tmp_path))
    _peak_numpy_bytes(200, disk)                   # compiles (the tiles have one shape)
    small, res_small = _peak_numpy_bytes(400, disk)      # 400 x 2,000
    large, res_large = _peak_numpy_bytes(1600, disk)     # 1,600 x 8,000
    # What grows with N here is O(N) bookkeeping (ranks, caption_image: ~40 bytes per
    # caption); whole matrices would add 4 * (1600 * 8000 - 400 * 2000) = 48 MB.
    assert large - small < 1_000_000, (small, large)
    memory = Spill(-1.0)
    small_mem, res_mem = _peak_numpy_bytes(400, memory)
    large_mem, _ = _peak_numpy_bytes(1600, memory)
    assert large_mem - small_mem > 40_000_000, (small_mem, large_mem)   # the test can fail
    assert res_small == res_mem                    # and the recalls do not depend on it
    assert res_large['protocol']['ensemble_size'] == 2
