"""input_pipeline/demo/fgxmedia.py: layout, determinism, and per-modality learnability."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid

from input_pipeline.fgxmedia import audio, images, lists, text
from input_pipeline.demo import fgxmedia as demo

K, PER_CLASS = 4, 6    # tests/conftest.py's demo_raw_dir


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_layout_matches_fg_xmedia(demo_raw_dir):
    root = Path(demo_raw_dir)
    for d in ('image', 'text', 'audio', 'audio/audioimg', 'video', 'list'):
        assert (root / d).is_dir(), d
    assert lists.available_modalities(root) == lists.MODALITIES
    classes = (root / 'classes.txt').read_text().splitlines()
    assert len(classes) == K
    assert [ln.split()[0] for ln in classes] == [str(i + 1) for i in range(K)]
    names = [ln.split()[1] for ln in classes]
    assert sorted(p.name for p in (root / 'image').iterdir()) == names
    # At least one folder is spelled differently from classes.txt (labels come from lists).
    audio_dirs = {p.name for p in (root / 'audio').iterdir() if p.name != 'audioimg'}
    assert audio_dirs - set(names)
    # Shipped spectrograms are 700x700 RGBA PNGs.
    pngs = sorted((root / 'audio/audioimg').rglob('*.png'))
    assert pngs
    with Image.open(pngs[0]) as im:
        assert im.size == (700, 700) and im.mode == 'RGBA'
    # Raw audio: several formats, rates, lengths, at least one stereo file.
    raw = [p for p in (root / 'audio').rglob('*') if p.is_file() and audio.is_raw_audio(p)]
    infos = [sf.info(p) for p in raw]
    assert {p.suffix for p in raw} == {'.wav', '.flac', '.ogg'}
    assert {i.samplerate for i in infos} == {16000, 22050, 44100}
    assert max(i.channels for i in infos) == 2
    durations = [i.duration for i in infos]
    assert 0.5 <= min(durations) and max(durations) <= 3.0 and max(durations) - min(durations) > 1
    # Images: some grayscale, one CMYK JPEG, one PNG with alpha.
    modes = {}
    for p in (q for q in (root / 'image').rglob('*') if q.is_file()):
        with Image.open(p) as im:
            modes.setdefault((im.format, im.mode), []).append(p)
    assert ('JPEG', 'L') in modes and len(modes[('JPEG', 'CMYK')]) == 1
    assert len(modes[('PNG', 'RGBA')]) == 1
    # Texts: multi-line, upper case, non-ASCII.
    texts = [p.read_text(encoding='utf-8') for p in (root / 'text').rglob('*.txt')]
    assert all(t.count('\n') >= 3 for t in texts)
    assert any(any(ch.isupper() for ch in t) for t in texts)
    assert any(any(ord(ch) > 127 for ch in t) for t in texts)


def test_lists_parse_and_match_counts(demo_raw_dir):
    root = Path(demo_raw_dir)
    for split in demo.SPLITS:
        for m in ('image', 'audio', 'text'):
            entries = lists.read_list(root, m, split, num_classes=K)
            assert len(entries) == K * PER_CLASS
            assert np.bincount([e.label for e in entries]).tolist() == [PER_CLASS] * K
            # The label is the class of the folder's number, whatever its spelling.
            assert all(int(e.path.split('.')[0]) == e.label + 1 for e in entries)
        frames = lists.read_list(root, 'video', split, num_classes=K)
        vids = {}
        for e in frames:
            vids.setdefault(lists.video_id(e), set()).add(e.label)
        assert len(frames) == K * demo.VIDEOS_PER_CLASS * demo.FRAMES_PER_VIDEO
        assert len(vids) == K * demo.VIDEOS_PER_CLASS
        assert all(len(v) == 1 for v in vids.values())
    audio_test = lists.read_list(root, 'audio', 'test', num_classes=K)
    resolved = [lists.resolve_path(root, e) for e in audio_test]
    assert any('audioimg' in p.parts for p in resolved)
    assert any(audio.is_raw_audio(p) for p in resolved)
    assert (root / 'list/text/testlabel.txt').is_file()


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(num_classes=4, per_class=1, test_per_class=1)
    c1 = demo.generate_demo_dataset(tmp_path / 'a', seed=3, **kw)
    demo.generate_demo_dataset(tmp_path / 'b', seed=3, **kw)
    demo.generate_demo_dataset(tmp_path / 'c', seed=4, **kw)
    ha, hb, hc = (_hashes(tmp_path / d) for d in 'abc')
    assert ha == hb
    assert set(ha) == set(hc) and ha != hc
    differing = {k for k in ha if ha[k] != hc[k]}
    assert any(k.startswith('image/') for k in differing)
    assert any(k.startswith('audio/') for k in differing)
    assert c1 == {'image': {'train': 4, 'test': 4}, 'audio': {'train': 4, 'test': 4},
                  'text': {'train': 4, 'test': 4}, 'video': {'train': 24, 'test': 24}}


def test_ogg_serial_pinning_keeps_file_valid(tmp_path):
    data, ext = demo._audio_file(0, 4, 'test', 2, 0, as_image=False)
    assert ext == '.ogg'
    y, sr = sf.read(io.BytesIO(data))
    assert sr in demo.AUDIO_SR and len(y) > 0.4 * sr
    assert data == demo._audio_file(0, 4, 'test', 2, 0, as_image=False)[0]


def test_demo_main_prints_summary(tmp_path, capsys):
    counts = demo.demo_main(tmp_path / 'd', classes=2, per_class=1, seed=0)
    out = capsys.readouterr().out
    assert 'demo data set: 2 classes' in out and 'audio' in out
    assert counts['text'] == {'train': 2, 'test': 2}
    with pytest.raises(ValueError):
        demo.generate_demo_dataset(tmp_path / 'e', num_classes=0)


def _features(root, modality, split, px=64):
    xs, ys = [], []
    for e in lists.read_list(root, modality, split, num_classes=K):
        p = lists.resolve_path(root, e)
        if modality == 'text':
            ids = text.load_text(p, length=px)             # the test config's text length
            xs.append(np.bincount(ids, minlength=text.vocab_size())[1:].astype(float))
        else:
            if modality == 'audio' and audio.is_raw_audio(p):
                img = images.resize_center_crop(audio.audio_to_image(p, 72), 72, px)
            else:
                img = images.load_image(p, 72, px)         # the test config's 72 -> 64
            xs.append(img[::4, ::4].astype(float).ravel() / 255.0)
        ys.append(e.label)
    return np.asarray(xs), np.asarray(ys)


@pytest.mark.filterwarnings('ignore:.*zero standard deviation:UserWarning')
@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('modality', ['image', 'audio', 'text', 'video'])
def test_classes_separable_by_trivial_classifier(demo_raw_dir, modality):
    """Evidence that training can work: a nearest-class-mean (or linear) classifier on
    raw 16x16 pixels / bag of characters beats chance (0.25) by a wide margin on the
    held-out test split."""
    xtr, ytr = _features(demo_raw_dir, modality, 'train')
    xte, yte = _features(demo_raw_dir, modality, 'test')
    nc = (NearestCentroid().fit(xtr, ytr).predict(xte) == yte).mean()
    lr = (LogisticRegression(max_iter=2000, C=0.1).fit(xtr, ytr).predict(xte) == yte).mean()
    print(f'{modality}: nearest mean {nc:.2f}, logistic {lr:.2f}')
    assert max(nc, lr) >= 0.6, (nc, lr)


def test_ogg_serial_pinning_keeps_the_file_valid():
    """Pinned Ogg files decode to the same samples (libogg checks every page CRC), and
    the same audio written twice is byte-identical once pinned."""
    import io

    import soundfile as sf

    from input_pipeline.demo import ogg

    y = np.sin(np.linspace(0, 200, 16000)).astype(np.float32) * 0.3

    def write():
        buf = io.BytesIO()
        sf.write(buf, y, 16000, format='OGG', subtype='VORBIS')
        return buf.getvalue()

    a, b = ogg.pin_serial(write(), 1234), ogg.pin_serial(write(), 1234)
    assert a == b
    c = ogg.pin_serial(write(), 99)
    assert c != a
    ya, _ = sf.read(io.BytesIO(a), dtype='float32')
    yc, _ = sf.read(io.BytesIO(c), dtype='float32')
    np.testing.assert_array_equal(ya, yc)
    assert np.abs(ya - y[:len(ya)]).max() < 0.05
    assert len(ya) == len(y)   # no page dropped: libogg skips pages whose CRC is wrong


@pytest.mark.parametrize('fmt,existing', [
    ('vegas', ['vegas_feature_norm.h5']),
    ('precomp', ['train_ims.npy', 'train_caps.txt', 'vocab.json']),
    ('fgxmedia', ['list/image/train.txt', 'list/text/testlabel.txt']),
])
def test_demo_data_refuses_a_folder_holding_data(tmp_path, fmt, existing):
    """Issue 22.3: `dcinet demo-data` replaced real data files of the same names, rc 0."""
    from dcinet_jax import cli
    out = tmp_path / 'real'
    for rel in existing:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b'real data ' + rel.encode())
    with pytest.raises(SystemExit, match=r'dcinet demo-data: error: --out .*real: folder is '
                       r'not empty .*pass --force') as e:
        cli.main(['demo-data', '--out', str(out), '--format', fmt, '--classes', '2',
                  '--per_class', '2'])
    assert '\n' in str(e.value.code) and len(str(e.value.code).splitlines()) == 2
    for rel in existing:   # untouched, and nothing added
        assert (out / rel).read_bytes() == b'real data ' + rel.encode()
    assert sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()) == \
        sorted(existing)


def test_demo_data_force_and_empty_folder(tmp_path):
    from dcinet_jax import cli
    empty = tmp_path / 'empty'
    empty.mkdir()
    cli.main(['demo-data', '--out', str(empty), '--format', 'vegas', '--per_class', '4'])
    assert (empty / 'vegas_feature_norm.h5').stat().st_size > 0
    (empty / 'vegas_feature_norm.h5').write_bytes(b'old')
    cli.main(['demo-data', '--out', str(empty), '--format', 'vegas', '--per_class', '4',
              '--force'])
    assert (empty / 'vegas_feature_norm.h5').read_bytes() != b'old'
    afile = tmp_path / 'file'
    afile.write_text('x')
    with pytest.raises(SystemExit, match='exists and is not a folder'):
        cli.main(['demo-data', '--out', str(afile), '--format', 'vegas'])
