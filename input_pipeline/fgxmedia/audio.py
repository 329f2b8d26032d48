"""Raw audio → spectrogram image, reproducing the reference rendering (`docs/data.md#audio-to-spectrogram`).

Reference: mono at 22,050 Hz, |STFT| (n_fft 2048, hop 512, Hann, centred, linear
frequency), dB relative to the clip maximum limited to 80 dB below it, magma colours,
low frequencies at the bottom, the whole clip stretched to the image width. Instead of
drawing a 700x700 figure per file, the dB array is resized straight to the target size
and mapped through a 256-entry magma lookup table.

Edge cases, each with a defined result:
- silent clip (all zeros): every value is -80 dB (no division by zero, no NaN);
- clip shorter than one FFT frame (n < n_fft): as in the reference, the centred STFT
  runs on the clip as it is (zero padding of n_fft/2 on both sides, librosa's warning
  silenced), giving 1 + n // hop frames that are stretched over the image width like
  any other clip; a 1-sample clip gives one frame, rendered as one colour per row;
- stereo/multi-channel: channels averaged; other sample rates: resampled (soxr, as
  librosa.load does);
- unreadable, truncated (WAV header longer than the file, FLAC sync lost), empty or
  non-finite files: DecodeError naming the file. A truncated OGG cannot be detected
  (the container has no total length) and decodes to the part that is there.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings

import numpy as np
from PIL import Image

from input_pipeline.errors import DecodeError

AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.oga', '.mp3', '.aiff', '.aif', '.au', '.w64')

SAMPLE_RATE = 22050
N_FFT = 2048
HOP_LENGTH = 512
TOP_DB = 80.0


def is_raw_audio(path: str | os.PathLike) -> bool:
    """True for raw audio files, False for (spectrogram) images, by extension."""
    return os.fspath(path).lower().endswith(AUDIO_EXTENSIONS)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `sr` Hz (channels averaged, resampled if needed)."""
    import soundfile as sf  # imported here: only the prepare step needs it

    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise DecodeError(path, 'file is empty (0 bytes)')
    except OSError as e:
        raise DecodeError(path, f'cannot read audio file: {e.strerror or e}') from None
    _check_wav_length(path)
    try:
        data, file_sr = sf.read(path, dtype='float32', always_2d=True)
    except sf.LibsndfileError as e:
        data, file_sr = _fallback_load(path, e)
    except OSError as e:
        raise DecodeError(path, f'cannot read audio file: {e.strerror or e}') from None
    if data.size == 0:
        raise DecodeError(path, 'audio file holds no samples')
    y = data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise DecodeError(path, 'audio holds NaN or infinite samples')
    if file_sr != sr:
        import librosa
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type='soxr_hq')
    return np.ascontiguousarray(y, dtype=np.float32)


def _fallback_load(path: str, sf_error: Exception) -> tuple[np.ndarray, int]:
    """Formats libsndfile lacks (some mp3/m4a): librosa's audioread backend, if any."""
    try:
        import librosa
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            y, file_sr = librosa.load(path, sr=None, mono=False)
    except Exception:  # noqa: BLE001 - any decoder failure is reported as the file's fault
        raise DecodeError(path, f'cannot decode audio: {sf_error}') from None
    y = np.asarray(y, np.float32)
    return (y[:, None] if y.ndim == 1 else y.T), int(file_sr)


def _check_wav_length(path: str) -> None:
    """libsndfile silently reads a truncated WAV; compare its data chunk with the file."""
    if not path.lower().endswith('.wav'):
        return
    try:
        with open(path, 'rb') as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
                return  # not a RIFF WAV: let the decoder say what is wrong
            size = os.fstat(f.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, clen = struct.unpack('<4sI', f.read(8))
                if cid == b'data':
                    have = size - pos - 8
                    if clen != 0xFFFFFFFF and clen > have:
                        raise DecodeError(path, f'truncated WAV: header declares {clen} bytes '
                                                f'of audio, the file holds {have}')
                    return
                pos += 8 + clen + (clen & 1)
    except OSError as e:
        raise DecodeError(path, f'cannot read audio file: {e.strerror or e}') from None


def spectrogram_db(y: np.ndarray, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                   top_db: float = TOP_DB) -> np.ndarray:
    """|STFT| in dB relative to the clip maximum, float32[1 + n_fft // 2, frames].

    Values lie in [-top_db, 0]. Equals `librosa.amplitude_to_db(|S|, ref=np.max,
    top_db=80)` whenever max|S| >= 0.1 (any audible clip); for quieter clips this
    version stays scale invariant where librosa's fixed floor (amin 1e-5) would lift
    the noise floor. Silent input gives -top_db everywhere.
    """
    import librosa

    y = np.asarray(y, np.float32)
    if y.ndim != 1:
        raise ValueError(f'expected mono samples float[n], got shape {y.shape}')
    with warnings.catch_warnings():
        # A clip shorter than n_fft: librosa warns, then does what the reference does.
        warnings.filterwarnings('ignore', message='n_fft=.* is too large')
        mag = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, window='hann',
                                  center=True, pad_mode='constant'))
    peak = float(mag.max())
    if not peak > 0.0 or not np.isfinite(peak):
        return np.full(mag.shape, -top_db, np.float32)
    floor = peak * 10.0 ** (-top_db / 20.0)
    db = 20.0 * np.log10(np.maximum(mag, floor) / peak)
    return np.clip(db, -top_db, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def magma_lut() -> np.ndarray:
    """uint8[256, 3]: matplotlib's magma colour map, sampled at its 256 entries."""
    import matplotlib  # colour tables only; no pyplot, no figure

    cmap = matplotlib.colormaps['magma'].resampled(256)
    rgba = cmap(np.arange(256))
    lut = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f'image size must be positive, got {size}')
    return int(h), int(w)


def db_to_image(db: np.ndarray, size: int | tuple[int, int], *,
                top_db: float = TOP_DB) -> np.ndarray:
    """Colour a [freq, time] dB array as uint8[H, W, 3] (low frequencies at row H-1)."""
    h, w = _size_hw(size)
    flipped = np.ascontiguousarray(db[::-1], dtype=np.float32)
    # Bilinear, antialiased when shrinking (PIL): the whole clip fills the width.
    resized = np.asarray(Image.fromarray(flipped).resize(
        (w, h), Image.Resampling.BILINEAR), np.float32)
    x = (resized + top_db) / top_db          # 0 at -top_db, 1 at 0 dB
    # matplotlib's rule for a 256-entry map: index floor(x * 256), 1.0 -> 255.
    idx = np.clip((x * 256.0).astype(np.int32), 0, 255)
    return magma_lut()[idx]


def spectrogram_image(y: np.ndarray, size: int | tuple[int, int], *, n_fft: int = N_FFT,
                      hop_length: int = HOP_LENGTH, top_db: float = TOP_DB) -> np.ndarray:
    """Samples (mono, 22,050 Hz) → uint8[H, W, 3] magma spectrogram image.

    `size` is an int (square) or (height, width).
    """
    db = spectrogram_db(y, n_fft=n_fft, hop_length=hop_length, top_db=top_db)
    return db_to_image(db, size, top_db=top_db)


def audio_to_image(path: str | os.PathLike, size: int | tuple[int, int],
                   sr: int = SAMPLE_RATE) -> np.ndarray:
    """load_audio + spectrogram_image for one file."""
    return spectrogram_image(load_audio(path, sr=sr), size)
