"""Precomp image-text reader, training/eval batches and the demo generator
(input_pipeline/precomp/reader.py, precomp_demo.py)."""

import dataclasses
import math
import os
import resource

import numpy as np
import pytest

from input_pipeline.precomp import captions as C
from input_pipeline.precomp import reader as P
from input_pipeline.demo import precomp as precomp_demo
from input_pipeline.errors import DataError


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('precomp_demo')
    precomp_demo.write_precomp_demo(out, values=6, train_images=150, dev_images=12,
                                    test_images=20, testall_images=15, regions=10,
                                    feature_dim=24, seed=3)
    return out


def _write(folder, split, images, captions, ids=None, raw=None):
    np.save(folder / f'{split}_ims.npy', images)
    path = folder / f'{split}_caps.txt'
    path.write_bytes(raw if raw is not None else ('\n'.join(captions) + '\n').encode())
    if ids is not None:
        (folder / f'{split}_ids.txt').write_text('\n'.join(ids) + '\n')


def _feats(n, r=3, d=4):
    return np.arange(n * r * d, dtype=np.float32).reshape(n, r, d)


# ----------------------------------------------------------------------------- the format

def test_image_index_rule_five_captions_per_row(tmp_path):
    _write(tmp_path, 'test', _feats(3), [f'caption {c}' for c in range(15)], ids=['7', '8', '9'])
    split = P.open_split(tmp_path, 'test')
    assert isinstance(split.images, np.memmap) and split.images.mode == 'r'
    np.testing.assert_array_equal(split.caption_image, np.repeat([0, 1, 2], 5))
    np.testing.assert_array_equal(split.image_rows, [0, 1, 2])
    assert (split.num_images, split.num_captions, split.repeated_rows) == (3, 15, False)
    assert (split.region_count, split.feature_dim, split.ids) == (3, 4, ['7', '8', '9'])


def test_image_index_rule_one_row_per_caption(tmp_path):
    _write(tmp_path, 'dev', _feats(10), [f'caption {c}' for c in range(10)])
    split = P.open_split(tmp_path, 'dev')
    np.testing.assert_array_equal(split.caption_image, np.arange(10))
    np.testing.assert_array_equal(split.image_rows, [0, 5])   # every 5th row, as the reference
    assert (split.num_images, split.repeated_rows, split.ids) == (2, True, None)


def test_caption_lines_are_stripped_utf8(tmp_path):
    raw = '\ufeffA Café, naïve.\r\n  Two  dogs \r\n\n  \nlast line without newline'.encode()
    _write(tmp_path, 'train', _feats(1), None, raw=raw)
    assert P.open_split(tmp_path, 'train').captions == [
        'A Café, naïve.', 'Two  dogs', '', '', 'last line without newline']


@pytest.mark.parametrize('images, caps, message', [
    (_feats(3), 10, (r'train_caps.txt: 10 captions for 3 feature rows in train_ims.npy: '
                     r'expected 15 \(5 per image\) or 3')),
    (_feats(7), 7, 'train_caps.txt: 7 captions with one feature row each'),
    (_feats(2), 0, 'train_caps.txt: no captions'),
    (_feats(2).astype(np.float64), 10, 'train_ims.npy: dtype is float64, expected float32'),
    (_feats(2)[:, 0], 10, r'train_ims.npy: shape is \(2, 4\), expected 3 dimensions'),
    (np.asfortranarray(_feats(2)), 10, 'train_ims.npy: array is stored in Fortran order'),
])
def test_bad_splits_name_the_file_and_field(tmp_path, images, caps, message):
    _write(tmp_path, 'train', images, ['x'] * caps, raw=b'' if caps == 0 else None)
    with pytest.raises(DataError, match=message):
        P.open_split(tmp_path, 'train')


def test_missing_files_bad_ids_and_bad_bytes_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f'{tmp_path / "test_ims.npy"}: region feature file not'):
        P.open_split(tmp_path, 'test')
    np.save(tmp_path / 'test_ims.npy', _feats(1))
    with pytest.raises(DataError, match=f'{tmp_path / "test_caps.txt"}: file not found'):
        P.open_split(tmp_path, 'test')
    _write(tmp_path, 'test', _feats(1), None, raw=b'ok\nok\n\xff\xfe broken\nok\nok\n')
    with pytest.raises(DataError, match=r'test_caps.txt:3: not UTF-8'):
        P.open_split(tmp_path, 'test')
    _write(tmp_path, 'test', _feats(1), ['x'] * 5, ids=['1', '2'])
    with pytest.raises(DataError, match='test_ids.txt: 2 ids for 1 feature rows'):
        P.open_split(tmp_path, 'test')
    (tmp_path / 'test_ims.npy').write_bytes(b'not an npy file')
    with pytest.raises(DataError, match='test_ims.npy: not a .npy array file'):
        P.open_split(tmp_path, 'test')
    np.save(tmp_path / 'test_ims.npy', np.array([{'a': 1}], dtype=object))
    with pytest.raises(DataError, match='test_ims.npy: not a .npy array file'):
        P.open_split(tmp_path, 'test')


def test_large_feature_file_is_memory_mapped_not_read(tmp_path):
    n, r, d = 2000, 32, 2048                  # 524 MB, written sparse: only 3 rows hold data
    big = np.lib.format.open_memmap(tmp_path / 'train_ims.npy', 'w+', np.float32, (n, r, d))
    for row in (0, 999, 1999):
        big[row] = row + 0.5
    big.flush()
    del big
    (tmp_path / 'train_caps.txt').write_text('a dog\n' * (5 * n))

    def rss_mb():
        try:
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
        except OSError:                         # not Linux: the high-water mark
            scale = 2**20 if os.uname().sysname == 'Darwin' else 2**10
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    before = rss_mb()
    split = P.open_split(tmp_path, 'train')
    assert isinstance(split.images, np.memmap)
    assert os.path.samefile(split.images.filename, tmp_path / 'train_ims.npy')
    tokens = np.zeros((5 * n, 8), np.int32)
    lengths = np.full(5 * n, 3, np.int32)
    batch = next(P.train_batches(split, tokens, lengths, batch_size=4, seed=0, prefetch=1))
    assert batch['images'].shape == (4, r, d)
    block, valid = next(_rows_block(split, [0, 999, 1999]))
    assert valid == 3
    np.testing.assert_array_equal(block[:, 0, 0], [0.5, 999.5, 1999.5])
    assert rss_mb() - before < 100, 'the feature file was read whole'


def _rows_block(split, rows):
    ev = P.EvalArrays(split.images, np.asarray(rows), np.zeros((15, 8), np.int32),
                      np.ones(15, np.int32), np.arange(15) // 5)
    return ev.image_blocks(len(rows))


class _CountingRows:
    """Stands in for a memmap and records which rows are read."""

    def __init__(self, array):
        self.array, self.shape, self.read = array, array.shape, []

    def __getitem__(self, rows):
        self.read.append(np.asarray(rows).tolist())
        return self.array[rows]


def test_a_batch_reads_only_its_rows_each_once():
    images = _CountingRows(_feats(20))
    out = P.gather_rows(images, np.array([7, 3, 7, 12]))
    assert images.read == [[3, 7, 12]]
    np.testing.assert_array_equal(out, images.array[[7, 3, 7, 12]])


# ----------------------------------------------------------------------------- batches

def test_steps_per_epoch_drops_the_last_partial_batch():
    assert P.num_train_steps_per_epoch(145_000, 128) == 1132
    assert P.num_train_steps_per_epoch(256, 128) == 2
    with pytest.raises(ValueError, match='exceeds the 100 training captions'):
        P.num_train_steps_per_epoch(100, 128)


@pytest.fixture(scope='module')
def train_data(demo_dir):
    split = P.open_split(demo_dir, 'train')
    vocab = C.Vocab.load(demo_dir / 'vocab.json')
    tokens, lengths = P.encode_captions(split, vocab)
    return split, vocab, tokens, lengths


def test_encode_captions_pads_to_a_bucketed_length(train_data):
    split, vocab, tokens, lengths = train_data
    ids = [vocab.encode(c) for c in split.captions]
    assert tokens.shape == (750, C.bucket_length(max(map(len, ids))))
    assert tokens.shape[1] % 8 == 0 and tokens.dtype == np.int32
    for c in (0, 17, 749):
        np.testing.assert_array_equal(tokens[c, :lengths[c]], ids[c])
        assert not tokens[c, lengths[c]:].any()
    with pytest.raises(ValueError, match='more than the padded length 4'):
        P.encode_captions(split, vocab, max_length=4)


def test_token_cache_is_reused_and_keyed_by_its_inputs(tmp_path, monkeypatch, train_data):
    split, vocab, tokens, lengths = train_data
    small = dataclasses.replace(split, captions=split.captions[:20],
                                  caption_image=split.caption_image[:20])
    first = P.encode_captions(small, vocab, cache_dir=tmp_path)
    np.testing.assert_array_equal(first[0], tokens[:20, :first[0].shape[1]])
    np.testing.assert_array_equal(first[1], lengths[:20])
    [cached] = tmp_path.iterdir()
    assert cached.name.startswith('train_tokens_') and cached.suffix == '.npz'
    with monkeypatch.context() as m:                 # a hit never tokenizes
        m.setattr(C.Vocab, 'encode', lambda *a: pytest.fail('tokenized despite the cache'))
        again = P.encode_captions(small, vocab, cache_dir=tmp_path)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    P.encode_captions(small, vocab, cache_dir=tmp_path, max_length=24)
    P.encode_captions(small, C.Vocab(vocab.idx2word[:-1]), cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_train_batches_follow_the_epoch_order_and_resume(train_data):
    split, _, tokens, lengths = train_data
    B, spe = 64, 750 // 64
    batches = P.train_batches(split, tokens, lengths, batch_size=B, seed=5)
    got = [next(batches) for _ in range(spe + 2)]
    for step in (0, 3, spe - 1, spe, spe + 1):       # the documented rule, recomputed
        epoch, t = divmod(step, spe)
        idx = P.caption_order(750, 5, epoch)[t * B:(t + 1) * B]
        b = got[step]
        assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {
            'images': ((B, 10, 24), 'float32'), 'tokens': ((B, tokens.shape[1]), 'int32'),
            'lengths': ((B,), 'int32'), 'image_index': ((B,), 'int32')}
        np.testing.assert_array_equal(b['images'], split.images[idx // 5])
        np.testing.assert_array_equal(b['tokens'], tokens[idx])
        np.testing.assert_array_equal(b['lengths'], lengths[idx])
        np.testing.assert_array_equal(b['image_index'], idx // 5)
    epoch0 = np.concatenate([P.caption_order(750, 5, 0)[t * B:(t + 1) * B] for t in range(spe)])
    assert len(set(epoch0.tolist())) == spe * B                 # no caption twice in an epoch
    assert not np.array_equal(P.caption_order(750, 5, 0), P.caption_order(750, 5, 1))
    assert not np.array_equal(P.caption_order(750, 5, 0), P.caption_order(750, 6, 0))
    resumed = next(P.train_batches(split, tokens, lengths, batch_size=B, seed=5,
                                   start_step=spe + 1))
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], got[spe + 1][k])
    halves = [next(P.train_batches(split, tokens, lengths, batch_size=B, seed=5, start_step=3,
                                   process_index=p, process_count=2)) for p in (0, 1)]
    for k in resumed:
        np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), got[3][k])
    with pytest.raises(ValueError, match='do not match the 750 captions'):
        P.train_batches(split, tokens[:10], lengths, batch_size=B, seed=0)


def test_eval_arrays_distinct_images_and_padded_blocks(demo_dir, train_data):
    vocab = train_data[1]
    dev = P.open_split(demo_dir, 'dev')                          # one row per caption
    ev = P.eval_arrays(dev, vocab, max_images=10, max_length=32)
    assert (ev.num_images, ev.num_captions, ev.tokens.shape) == (10, 50, (50, 32))
    np.testing.assert_array_equal(ev.image_rows, np.arange(0, 50, 5))
    np.testing.assert_array_equal(ev.caption_image, np.repeat(np.arange(10), 5))
    blocks = list(ev.image_blocks(4))
    assert [(b.shape, n) for b, n in blocks] == [((4, 10, 24), 4)] * 2 + [((4, 10, 24), 2)]
    np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks])[:10],
                                  dev.images[np.arange(0, 50, 5)])
    assert not blocks[-1][0][2:].any()
    assert P.eval_arrays(dev, vocab).num_images == 12


# ----------------------------------------------------------------------------- demo data

def test_demo_folder_has_the_format_and_its_quirks(demo_dir):
    splits = {s: P.open_split(demo_dir, s) for s in P.SPLITS}
    assert {s: (sp.num_images, sp.images.shape[0]) for s, sp in splits.items()} == {
        'train': (150, 150), 'dev': (12, 60), 'test': (20, 20), 'testall': (15, 15)}
    dev = splits['dev']
    assert dev.repeated_rows and dev.ids[:6] == [dev.ids[0]] * 5 + [dev.ids[5]]
    np.testing.assert_array_equal(dev.images[5:10], np.repeat(dev.images[5:6], 5, axis=0))
    assert len(set(splits['train'].ids)) == 150
    vocab = C.Vocab.load(demo_dir / 'vocab.json')
    assert vocab == C.Vocab.build(splits['train'].captions + dev.captions, min_count=4)
    text = '\n'.join(c for sp in splits.values() for c in sp.captions)
    for quirk in ('café', 'naïve', ',', '"', '--', '!', "it's"):
        assert quirk in text.lower(), quirk
    assert any(c != c.lower() for c in text.split())
    assert {'café', 'naïve', "'s", '``'} <= set(vocab.word2idx)
    seen = C.Vocab.build(splits['train'].captions + dev.captions, min_count=1).word2idx
    for w in precomp_demo.RARE_WORDS:                    # 1-3 uses: in the text, not the vocab
        assert w in seen and w not in vocab.word2idx
    test_words = set(C.Vocab.build(splits['test'].captions + splits['testall'].captions,
                                   min_count=1).word2idx)
    assert set(precomp_demo.TEST_ONLY_WORDS) <= test_words - set(seen)


def test_demo_is_deterministic_in_the_seed(tmp_path, demo_dir):
    kw = dict(values=6, train_images=150, dev_images=12, test_images=20, testall_images=15,
              regions=10, feature_dim=24)
    precomp_demo.write_precomp_demo(tmp_path / 'a', seed=3, **kw)
    for name in ('test_caps.txt', 'vocab.json', 'dev_ims.npy', 'train_ids.txt'):
        assert (tmp_path / 'a' / name).read_bytes() == (demo_dir / name).read_bytes()
    precomp_demo.write_precomp_demo(tmp_path / 'b', seed=4, **kw)
    assert (tmp_path / 'b' / 'test_caps.txt').read_bytes() != (demo_dir / 'test_caps.txt'
                                                               ).read_bytes()
    with pytest.raises(ValueError, match='distinct attribute combinations'):
        precomp_demo.write_precomp_demo(tmp_path / 'c', values=2, test_images=17)


def _recalls(scores, caption_image):
    """Reference loops: i2t best rank of an image's captions, t2i rank of the image."""
    n_img, n_cap = scores.shape
    i2t = [min(int(np.sum(scores[i] > scores[i, c])) for c in np.where(caption_image == i)[0])
           for i in range(n_img)]
    t2i = [int(np.sum(scores[:, c] > scores[caption_image[c], c])) for c in range(n_cap)]
    return [100 * np.mean(np.array(r) < k) for r in (i2t, t2i) for k in (1, 5, 10)]


def test_chance_rsum():
    # 2 images, 10 captions: i2t R@1 = 5/10, R@5 = 1 - 1/C(10,5), R@10 = 1; t2i 50, 100, 100
    assert precomp_demo.chance_rsum(2) == pytest.approx(50 + 100 * (1 - 1 / 252) + 100 + 250)
    rng = np.random.default_rng(0)
    ci = np.repeat(np.arange(20), 5)
    mc = np.mean([sum(_recalls(rng.random((20, 100)), ci)) for _ in range(300)])
    assert mc == pytest.approx(precomp_demo.chance_rsum(20), abs=4.0)
    assert precomp_demo.chance_rsum(100) == pytest.approx(
        16 + 100 * sum(1 - math.comb(495, k) / math.comb(500, k) for k in (1, 5, 10)))


def test_demo_is_learnable_per_image(demo_dir, train_data):
    """A linear bag-of-words → mean-region map fit on train (ridge) retrieves the test
    images far above chance: the captions carry instance-level information."""
    vocab = train_data[1]

    def arrays(split_name):
        split = P.open_split(demo_dir, split_name)
        ev = P.eval_arrays(split, vocab)
        bow = np.zeros((ev.num_captions, len(vocab)))
        for c in range(ev.num_captions):
            np.add.at(bow[c], ev.tokens[c, :ev.lengths[c]], 1.0)
        return np.asarray(split.images[ev.image_rows]).mean(1), bow, ev.caption_image

    img, bow, ci = arrays('train')
    mean = img.mean(0)
    w = np.linalg.solve(bow.T @ bow + np.eye(len(vocab)), bow.T @ (img[ci] - mean))
    img, bow, ci = arrays('test')
    a = (img - mean) / np.linalg.norm(img - mean, axis=1, keepdims=True)
    t = bow @ w
    rsum = sum(_recalls(a @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T, ci))
    chance = precomp_demo.chance_rsum(20)
    assert rsum > chance + 0.5 * (600 - chance)            # past halfway from chance to perfect


def test_captions_without_a_vocabulary_word_are_warned_about(tmp_path, caplog):
    """Issue 22 weak spot: test captions that were all empty or unknown words gave rsum 20
    (every score tied) without a word said."""
    import logging as logging_
    from input_pipeline.precomp import captions as caps
    from input_pipeline.precomp import reader as precomp_reader
    vocab = caps.Vocab.build(['a bird sings'] * 5, min_count=1)
    rng = np.random.default_rng(0)
    np.save(tmp_path / 'test_ims.npy', rng.normal(size=(2, 3, 4)).astype(np.float32))
    lines = {'unknown': ['zzz qqq'] * 10, 'empty': [''] * 10,
             'some': ['a bird'] * 4 + ['zzz'] * 6, 'fine': ['a bird sings'] * 10}
    for kind, caption_lines in lines.items():
        (tmp_path / 'test_caps.txt').write_text('\n'.join(caption_lines) + '\n')
        split = precomp_reader.open_split(tmp_path, 'test')
        caplog.clear()
        with caplog.at_level(logging_.WARNING):
            arrays = precomp_reader.eval_arrays(split, vocab)
        share = float((~(arrays.tokens > caps.UNK).any(axis=1)).mean())   # the loop below
        blank = [all(t in (caps.PAD, caps.START, caps.END, caps.UNK) for t in row)
                 for row in arrays.tokens.tolist()]
        assert share == sum(blank) / len(blank)
        text = caplog.text
        if kind in ('unknown', 'empty'):
            assert f'{tmp_path}/test_caps.txt: none of the 10 evaluated captions has a word ' \
                   'of the vocabulary' in text, text
        elif kind == 'some':
            assert 'test_caps.txt: 6 of 10 evaluated captions (60%) have no word' in text
        else:
            assert text == ''
