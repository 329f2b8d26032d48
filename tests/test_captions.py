"""Caption tokenizer, SCAN-schema vocabulary and padding (input_pipeline/precomp/captions.py)."""

import json
import sys

import numpy as np
import pytest

from input_pipeline.precomp import captions as C


@pytest.mark.parametrize('caption, tokens', [
    # capitals are lower-cased, punctuation split off, Treebank quotes and contractions
    ('A Dog, running on the BEACH!', ['a', 'dog', ',', 'running', 'on', 'the', 'beach', '!']),
    ('Two men "playing" chess; it\'s late.',
     ['two', 'men', '``', 'playing', "''", 'chess', ';', 'it', "'s", 'late', '.']),
    ('A man -- in a CAFÉ -- looks naïve', ['a', 'man', '--', 'in', 'a', 'café', '--', 'looks',
                                          'naïve']),
    ('  a hot-dog stand (red)  ', ['a', 'hot-dog', 'stand', '(', 'red', ')']),
    # the offline rule: no sentence splitting, so an inner full stop stays on its word
    ('A dog. A cat.', ['a', 'dog.', 'a', 'cat', '.']),
    ('', []),
])
def test_tokenize_follows_treebank_rules(caption, tokens):
    assert C.tokenize(caption) == tokens


def test_tokenize_needs_no_downloaded_nltk_data(tmp_path, monkeypatch):
    import nltk

    def no_data(*args, **kwargs):
        raise LookupError('NLTK data requested')
    monkeypatch.setenv('NLTK_DATA', str(tmp_path))
    monkeypatch.setattr(nltk.data, 'path', [str(tmp_path)])
    monkeypatch.setattr(nltk.data, 'load', no_data)
    monkeypatch.setattr(nltk.data, 'find', no_data)
    C._word_tokenize.cache_clear()
    try:
        assert C.tokenize('The Café is open, isn\'t it?') == [
            'the', 'café', 'is', 'open', ',', 'is', "n't", 'it', '?']
    finally:
        C._word_tokenize.cache_clear()


def test_missing_nltk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'nltk', None)
    monkeypatch.setitem(sys.modules, 'nltk.tokenize', None)
    C._word_tokenize.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"dcinet-jax\[text\]"):
            C.tokenize('a dog')
    finally:
        C._word_tokenize.cache_clear()


CAPTIONS = ['A red dog.', 'a RED cat', 'The red dog runs!', 'red dog, zebra', 'Dog dog dog?']
# counts: red 4, dog 6, a 2, cat 1, the 1, runs 1, zebra 1, '.' 1, '!' 1, ',' 1, '?' 1


def test_build_keeps_words_seen_at_least_min_count_in_sorted_order():
    vocab = C.Vocab.build(CAPTIONS)
    assert vocab.idx2word == ['<pad>', '<start>', '<end>', '<unk>', 'dog', 'red']
    assert vocab.word2idx == {w: i for i, w in enumerate(vocab.idx2word)}
    assert C.Vocab.build(CAPTIONS, min_count=2).idx2word[4:] == ['a', 'dog', 'red']
    assert C.Vocab.build(reversed(CAPTIONS)) == vocab       # independent of caption order


def test_encode_decode_markers_and_unknown_words():
    vocab = C.Vocab.build(CAPTIONS)
    ids = vocab.encode('A red DOG, Zebra!')
    assert ids == [C.START, C.UNK, 5, 4, C.UNK, C.UNK, C.UNK, C.END]
    assert vocab.decode(ids + [C.PAD, C.PAD]) == '<unk> red dog <unk> <unk> <unk>'
    assert (C.PAD, C.START, C.END, C.UNK) == (0, 1, 2, 3)


def test_save_writes_the_scan_schema_and_load_round_trips(tmp_path):
    vocab = C.Vocab.build(CAPTIONS + ['naïve café'] * 4)
    path = tmp_path / 'vocab.json'
    vocab.save(path)
    data = json.loads(path.read_text(encoding='utf-8'))
    assert set(data) == {'word2idx', 'idx2word', 'idx'}
    assert data['idx'] == len(vocab) == 8
    assert data['idx2word'] == {str(i): w for i, w in enumerate(vocab.idx2word)}
    assert data['word2idx']['café'] == vocab.idx2word.index('café')
    assert C.Vocab.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ['vocab.json']   # no temporary left


def test_load_reads_a_reference_style_file(tmp_path):
    # as the reference writes it: word2idx in Counter order, idx2word keys are strings
    words = ['<pad>', '<start>', '<end>', '<unk>', 'zoo', 'apple', 'café']
    path = tmp_path / 'f30k_precomp_vocab.json'
    path.write_text(json.dumps({'word2idx': {w: i for i, w in enumerate(words)},
                                'idx2word': {str(i): w for i, w in enumerate(words)},
                                'idx': 7}))
    vocab = C.Vocab.load(path)
    assert vocab.idx2word == words and len(vocab) == 7
    assert vocab.encode('Apple zoo pear') == [1, 5, 4, 3, 2]


def _scan(words):
    return {'word2idx': {w: i for i, w in enumerate(words)},
            'idx2word': {str(i): w for i, w in enumerate(words)}, 'idx': len(words)}


GOOD = ['<pad>', '<start>', '<end>', '<unk>', 'dog']


@pytest.mark.parametrize('content, message', [
    (None, 'vocabulary file not found'),
    ('{"word2idx": ', 'not a JSON file'),
    ('[1, 2]', 'expected a JSON object'),
    (json.dumps({k: v for k, v in _scan(GOOD).items() if k != 'idx'}), "missing field 'idx'"),
    (json.dumps({**_scan(GOOD), 'idx': 9}), "'idx' must be the number of words 5"),
    (json.dumps({**_scan(GOOD), 'word2idx': {**_scan(GOOD)['word2idx'], 'dog': 7}}),
     r"'word2idx'\['dog'\] = 7 is not an id"),
    (json.dumps({**_scan(GOOD), 'word2idx': {**_scan(GOOD)['word2idx'], 'dog': 2}}),
     "'word2idx' gives id 2 to both"),
    (json.dumps({**_scan(GOOD), 'idx2word': {**_scan(GOOD)['idx2word'], '4': 'cat'}}),
     r"'idx2word'\['4'\] = 'cat' disagrees"),
    (json.dumps(_scan(['<pad>', '<unk>', '<start>', '<end>', 'dog'])),
     "'word2idx': id 1 must be '<start>'"),
])
def test_bad_vocab_files_name_the_file_and_field(tmp_path, content, message):
    path = tmp_path / 'vocab.json'
    if content is not None:
        path.write_text(content)
    with pytest.raises(C.VocabError, match=message) as err:
        C.Vocab.load(path)
    assert str(err.value).startswith(f'{path}: ')


def test_bucket_length_and_padding():
    assert [C.bucket_length(n) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 24]
    assert C.bucket_length(5, multiple=4) == 8
    tokens, lengths = C.pad_tokens([[1, 7, 2], [1, 2], [1, 5, 6, 7, 2]], 8)
    assert tokens.dtype == np.int32 and lengths.dtype == np.int32
    np.testing.assert_array_equal(lengths, [3, 2, 5])
    np.testing.assert_array_equal(tokens[2], [1, 5, 6, 7, 2, 0, 0, 0])
    with pytest.raises(ValueError, match='caption 1 has 5 tokens'):
        C.pad_tokens([[1, 2], [1, 4, 4, 4, 2]], 4)
