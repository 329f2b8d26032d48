"""One raw file (a JPEG, a WAV/FLAC/OGG, a text file) → the model input evaluation feeds.

Exactly the path of a prepared item, with no step of its own: `encode.encode_entry`
(what `dcinet prepare` stores: the square-resized JPEG, the spectrogram image, the
character ids) followed by the evaluation decode function of `pipeline` (centre crop
from the stored JPEG, text ids as int32, no shift). So a file queried raw and the same
file read from the prepared split give identical arrays (`tests/test_search.py`).

Modality by extension (`modality_of`): images.IMAGE_EXTENSIONS → image,
audio.AUDIO_EXTENSIONS → audio, `.txt` → text. A spectrogram image or a video frame is
an image file; say `audio` / `video` explicitly to treat it as one (it then goes into
the same decode as that modality's prepared items, which for images is the same).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from input_pipeline.fgxmedia import audio, images, lists
from input_pipeline.fgxmedia.encode import StoreSpec, encode_entry
from input_pipeline.errors import DataError

TEXT_EXTENSIONS = ('.txt',)
QUERY_MODALITIES = ('image', 'audio', 'text', 'video')


def modality_of(path: str | os.PathLike) -> str:
    """'image', 'audio' or 'text' from the file extension; ValueError otherwise."""
    name = os.fspath(path).lower()
    if name.endswith(images.IMAGE_EXTENSIONS):
        return 'image'
    if audio.is_raw_audio(name):
        return 'audio'
    if name.endswith(TEXT_EXTENSIONS):
        return 'text'
    raise ValueError(f'{path}: unknown file type (expected an image '
                     f'{images.IMAGE_EXTENSIONS}, audio {audio.AUDIO_EXTENSIONS} or text '
                     f'{TEXT_EXTENSIONS} file)')


def encode_file(path: str | os.PathLike, modality: str, config: Any) -> dict:
    """What `dcinet prepare` would store for this file under `config.data`."""
    if modality not in QUERY_MODALITIES:
        raise ValueError(f'modality {modality!r}: expected one of {QUERY_MODALITIES}')
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file')
    entry = lists.ListEntry(modality=modality, split='query', path=path.name, label=-1,
                            list_file=str(path), line=0, index=0)
    try:
        return encode_entry(str(path.parent), entry, StoreSpec.from_data_config(config.data),
                            text_errors=str(config.data.get('text_errors', 'strict')))
    except DataError as e:
        raise ValueError(str(e)) from None


def decode_for_eval(encoded: dict, modality: str, config: Any) -> np.ndarray:
    """The eval iterator's decode of stored bytes: uint8[S, S, 3] or int32[L]."""
    import tensorflow as tf

    from input_pipeline.fgxmedia import pipeline
    decode = pipeline._decode_fn(config, modality, train=False)  # noqa: SLF001 - same package
    value = encoded['text'] if modality == 'text' else encoded['image']
    return np.asarray(decode(tf.constant(value), None))


def model_input(path: str | os.PathLike, config: Any, modality: str | None = None
                ) -> tuple[str, np.ndarray]:
    """(modality, the model input evaluation would feed for this file)."""
    modality = modality or modality_of(path)
    return modality, decode_for_eval(encode_file(path, modality, config), modality, config)
