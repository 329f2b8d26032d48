"""input_pipeline/fgxmedia/audio.py: loading, |STFT| in dB, the spectrogram image."""

import matplotlib
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from input_pipeline.fgxmedia import audio
from input_pipeline.errors import DecodeError

SR = 22050


def _tone(freq, seconds=1.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _reference_db(y, n_fft=2048, hop=512, top_db=80.0):
    """|STFT| via scipy (centred, zero padding, periodic Hann), dB re the max, clipped.

    scipy scales by the window sum and librosa does not; the ratio to the max cancels it.
    """
    _, _, z = scipy.signal.stft(y.astype(np.float64), window='hann', nperseg=n_fft,
                                noverlap=n_fft - hop, boundary='zeros', padded=True)
    mag = np.abs(z)[:, :1 + len(y) // hop]      # librosa's centred frame count
    db = 20 * np.log10(np.maximum(mag, 1e-30) / mag.max())
    return np.clip(db, -top_db, 0)


def _centred_stft_db(y, n_fft=2048, hop=512, top_db=80.0):
    """A centred STFT written out in NumPy: n_fft/2 zeros on both sides, frames every
    hop samples (1 + n // hop of them), periodic Hann window; dB re the max, clipped."""
    x = np.pad(y.astype(np.float64), n_fft // 2)
    window = scipy.signal.get_window('hann', n_fft)          # periodic
    frames = np.stack([x[k * hop:k * hop + n_fft] for k in range(1 + len(y) // hop)], 1)
    mag = np.abs(np.fft.rfft(frames * window[:, None], axis=0))
    db = 20 * np.log10(np.maximum(mag, 1e-30) / mag.max())
    return np.clip(db, -top_db, 0)


def test_spectrogram_db_against_scipy():
    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(512 * 40) + _tone(3000, 512 * 40 / SR)).astype(np.float32)
    got = audio.spectrogram_db(y)
    ref = _reference_db(y)
    assert got.shape == ref.shape == (1025, 41)
    assert got.dtype == np.float32
    # float32 STFT vs float64: differences far below 1 dB except where clipping at -80.
    np.testing.assert_allclose(got, ref, atol=0.05)


def test_spectrogram_db_matches_librosa_for_audible_clips():
    import librosa
    y = _tone(440, 0.5) + _tone(5000, 0.5, amp=0.01)
    s = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    ref = librosa.amplitude_to_db(s, ref=np.max, top_db=80.0)
    np.testing.assert_allclose(audio.spectrogram_db(y), ref, atol=1e-3)


def test_db_range_and_scale_invariance():
    y = _tone(1000) + 0.01 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    db = audio.spectrogram_db(y)
    assert db.max() == 0.0 and db.min() >= -80.0 and db.min() == -80.0
    np.testing.assert_allclose(audio.spectrogram_db(y * 1e-4), db, atol=0.05)


def test_silent_clip_is_all_minus_80():
    db = audio.spectrogram_db(np.zeros(5000, np.float32))
    assert np.all(db == -80.0) and not np.isnan(db).any()
    img = audio.spectrogram_image(np.zeros(5000, np.float32), 32)
    np.testing.assert_array_equal(img, np.broadcast_to(audio.magma_lut()[0], img.shape))


@pytest.mark.parametrize('n', [1, 100, 511, 1102, 2047])
def test_sub_frame_clip_is_the_reference_centred_stft(n):
    """A clip shorter than n_fft goes through the centred STFT as it is (as the
    reference's librosa.stft(y) does): 1 + n // hop frames, not a zero-padded clip's 5."""
    import librosa
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    db = audio.spectrogram_db(y)
    assert db.shape == (1025, 1 + n // 512)
    np.testing.assert_allclose(db, _centred_stft_db(y), atol=0.05)
    with pytest.warns(UserWarning, match='too large'):   # what the reference sees
        s_ref = np.abs(librosa.stft(y))
    if s_ref.max() >= 0.1:   # librosa's own dB agrees wherever its amin floor is inactive
        np.testing.assert_allclose(db, librosa.amplitude_to_db(s_ref, ref=np.max, top_db=80.0),
                                   atol=1e-3)
    assert np.isfinite(db).all()
    assert audio.spectrogram_image(y, (16, 24)).shape == (16, 24, 3)


def test_short_clip_renders_its_frames_stretched_over_the_width():
    """A 50 ms chirp: 3 frames stretched over the width (the reference rendering), so
    the picture differs from the old rendering of the clip zero-padded to 2048."""
    n = int(0.05 * SR)
    t = np.arange(n) / SR
    y = np.sin(2 * np.pi * (500 + 40000 * t) * t).astype(np.float32)   # rising pitch
    img = audio.spectrogram_image(y, 64)
    db = audio.spectrogram_db(y)
    assert db.shape[1] == 3
    np.testing.assert_array_equal(img, audio.db_to_image(db, 64))
    old = audio.db_to_image(audio.spectrogram_db(np.pad(y, (0, 2048 - n))), 64)
    assert np.abs(img.astype(int) - old).mean() > 5
    # Silent short clip: the defined blank image (every value at -80 dB).
    blank = audio.spectrogram_image(np.zeros(100, np.float32), 16)
    np.testing.assert_array_equal(blank, np.broadcast_to(audio.magma_lut()[0], blank.shape))


def test_zero_byte_audio_file_is_empty(tmp_path):
    p = tmp_path / 'empty.wav'
    p.write_bytes(b'')
    with pytest.raises(DecodeError, match=r'file is empty \(0 bytes\)') as e:
        audio.load_audio(p)
    assert e.value.path == str(p)


@pytest.mark.parametrize('freq', [500.0, 2000.0, 8000.0])
def test_pure_tone_row_low_frequencies_at_bottom(freq):
    h = 64
    img = audio.spectrogram_image(_tone(freq), (h, 40))
    assert img.shape == (h, 40, 3) and img.dtype == np.uint8
    # Brightest colour = magma's top end; find the row where the tone's energy sits.
    lut = audio.magma_lut().astype(np.int32)
    level = np.argmin(((img[..., None, :].astype(np.int32) - lut) ** 2).sum(-1), -1)
    row = int(np.argmax(level.mean(axis=1)))
    expected = (h - 1) - freq / (SR / 2) * (h - 1)    # 0 Hz at row h-1, Nyquist at row 0
    assert abs(row - expected) <= 1.5, (row, expected)


def test_magma_lut_equals_matplotlib():
    lut = audio.magma_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    cmap = matplotlib.colormaps['magma']
    for i in (0, 1, 64, 128, 200, 255):
        np.testing.assert_allclose(lut[i], np.asarray(cmap(i / 255.0)[:3]) * 255, atol=0.5)


def test_colour_index_follows_matplotlib_rule():
    # A dB array with known levels, rendered at its own size (no resampling effects).
    db = np.array([[-80.0, -40.0, 0.0, -0.1]], np.float32)
    img = audio.db_to_image(db, (1, 4))
    cmap = matplotlib.colormaps['magma']
    norm = (db[0] + 80) / 80
    ref = (np.asarray(cmap(norm))[:, :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img[0], ref)


def test_load_audio_stereo_and_resampling(tmp_path):
    left, right = _tone(1000, 0.5, sr=44100), _tone(3000, 0.5, sr=44100, amp=0.2)
    p = tmp_path / 'st.wav'
    sf.write(p, np.stack([left, right], -1), 44100, subtype='FLOAT')
    y = audio.load_audio(p)
    assert y.dtype == np.float32 and abs(len(y) - SR // 2) <= 1
    import scipy.signal as ss
    ref = ss.resample_poly(((left + right) / 2).astype(np.float64), 1, 2)
    n = min(len(y), len(ref))
    core = slice(500, n - 500)       # edge transients differ between resamplers
    np.testing.assert_allclose(y[core], ref[core], atol=2e-3)


@pytest.mark.parametrize('fmt,subtype', [('FLAC', 'PCM_16'), ('OGG', 'VORBIS')])
def test_load_audio_formats(tmp_path, fmt, subtype):
    y0 = _tone(1500, 0.5, sr=16000)
    p = tmp_path / f'x.{fmt.lower()}'
    sf.write(p, y0, 16000, format=fmt, subtype=subtype)
    y = audio.load_audio(p)
    assert abs(len(y) - int(0.5 * SR)) <= 2
    spec = audio.spectrogram_db(y)
    peak_bin = int(np.argmax(spec.mean(axis=1)))
    assert abs(peak_bin * SR / 2048 - 1500) < 2 * SR / 2048


def test_truncated_and_garbage_files_raise_naming_them(tmp_path):
    p = tmp_path / 'full.wav'
    sf.write(p, _tone(440, 0.5), SR)
    data = p.read_bytes()
    bad = tmp_path / 'trunc.wav'
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(DecodeError, match='truncated') as e:
        audio.load_audio(bad)
    assert e.value.path == str(bad)
    flac = tmp_path / 'x.flac'
    sf.write(flac, np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1, SR)
    tflac = tmp_path / 'trunc.flac'
    tflac.write_bytes(flac.read_bytes()[:flac.stat().st_size // 2])
    for f in (tflac, tmp_path / 'garbage.wav', tmp_path / 'missing.ogg'):
        if f.name == 'garbage.wav':
            f.write_bytes(b'\x00junk' * 50)
        with pytest.raises(DecodeError) as e:
            audio.load_audio(f)
        assert e.value.path == str(f)
        assert str(e.value).startswith(str(f))


def test_empty_wav_raises(tmp_path):
    p = tmp_path / 'empty.wav'
    sf.write(p, np.zeros(0, np.float32), SR)
    with pytest.raises(DecodeError, match='no samples'):
        audio.load_audio(p)


def test_audio_to_image_and_extensions(tmp_path):
    p = tmp_path / 'a.wav'
    sf.write(p, _tone(2000, 0.3), SR, subtype='FLOAT')
    np.testing.assert_array_equal(audio.audio_to_image(p, 48),
                                  audio.spectrogram_image(audio.load_audio(p), 48))
    assert audio.is_raw_audio('x/Y.FLAC') and not audio.is_raw_audio('x/y.png')
    assert '.wav' in audio.AUDIO_EXTENSIONS
