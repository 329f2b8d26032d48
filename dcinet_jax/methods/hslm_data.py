"""HSLM's data access: the vocabulary, the precomp splits and their encoded captions
(cached per process), the checks of every split a run reads, and the data card.

Split from `methods/hslm.py` (the contract module, which re-exports what the contract
names) so each stays readable; docs/hslm_data.md describes the format."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=4)
def _vocab(data_dir: str, vocab_path: str, min_count: int, train_split: str = 'train'):
    """The vocab JSON, or one built from the train captions (deterministic)."""
    from input_pipeline.precomp import captions, reader as precomp
    if vocab_path:
        return captions.Vocab.load(vocab_file(data_dir, vocab_path))
    train = precomp.open_split(data_dir, train_split)
    logging.info('hslm: building the vocabulary from %d train captions (min count %d); '
                 'set data.vocab_path to a vocab JSON to skip this', len(train.captions),
                 min_count)
    return captions.Vocab.build(train.captions, min_count=min_count)


def vocab_file(data_dir: str, vocab_path: str) -> Path:
    """`vocab_path` as given when it exists or is absolute, else inside `data_dir`."""
    path = Path(vocab_path)
    if not path.is_absolute() and not path.exists():
        path = Path(data_dir) / path
    return path


def vocab(config: Any):
    """The run's vocabulary (cached per process)."""
    return _vocab(*_vocab_key(config))


def _vocab_key(config: Any) -> tuple:
    d = config.data
    return (str(config.data_dir), str(d.get('vocab_path', '') or ''),
            int(d.get('min_word_count', 4)), str(d.get('train_split', 'train')))


@functools.lru_cache(maxsize=8)
def _split(data_dir: str, name: str):
    from input_pipeline.precomp import reader as precomp
    return precomp.open_split(data_dir, name)


@functools.lru_cache(maxsize=8)
def _tokens(data_dir: str, name: str, vocab_key: tuple, max_length: int | None):
    from input_pipeline.precomp import reader as precomp
    vocab_obj = _vocab(*vocab_key)
    return precomp.encode_captions(_split(data_dir, name), vocab_obj, max_length=max_length)


def split_tokens(config: Any, name: str):
    """(split, tokens (N_caps, L) int32, lengths) of precomp split `name`, cached."""
    d = config.data
    key = _vocab_key(config)
    max_length = int(d.get('max_length', 0)) or None
    return (_split(str(config.data_dir), name),
            *_tokens(str(config.data_dir), name, key, max_length))


def data_description(config: Any) -> dict:
    """The data card of the precomp folder this config reads (results.json "data")."""
    from input_pipeline.precomp import manifest
    data_dir = str(config.data_dir)
    vocab_path = str(config.data.get('vocab_path', '') or '')
    return manifest.describe(data_dir, vocab_file(data_dir, vocab_path) if vocab_path else None)


def validate_data(config: Any) -> None:
    """Every split the run reads (train, eval.test_split, eval.dev_split) opens (the
    reader checks dtype, rank and the caption count: 5 per image) and has the train
    split's region count and width, before the first step rather than at the final
    evaluation."""
    from input_pipeline.errors import DataError
    from input_pipeline.precomp import reader as precomp
    d, e = config.data, config.eval
    train = _split(str(config.data_dir), str(d.train_split))
    for name in [str(e.test_split)] + ([str(e.dev_split)] if e.get('dev_split', '') else []):
        split = _split(str(config.data_dir), name)
        if split.images.shape[1:] != train.images.shape[1:]:
            raise DataError(str(Path(str(config.data_dir)) / precomp.file_names(name)['images']),
                            f'{split.region_count} regions of width {split.feature_dim}, '
                            f'but the train split has {train.region_count} of width '
                            f'{train.feature_dim}')


@functools.lru_cache(maxsize=4)
def _eval_arrays(data_dir: str, name: str, vocab_key: tuple, max_images: int | None,
                 max_length: int | None):
    from input_pipeline.precomp import reader as precomp
    return precomp.eval_arrays(_split(data_dir, name), _vocab(*vocab_key),
                               max_images=max_images, max_length=max_length)


def eval_arrays(config: Any, name: str, *, num_images: int = 0):
    """The split's distinct images and their captions, encoded (cached per process);
    `num_images` > 0 keeps the first images (the reference validates on 1,000)."""
    d = config.data
    key = _vocab_key(config)
    return _eval_arrays(str(config.data_dir), name, key, num_images or None,
                        int(d.get('max_length', 0)) or None)
