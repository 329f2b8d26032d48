"""`dcinet prepare` and the fg_xmedia TFDS builder, against the decoding functions and
the list files (independent of the builder's own code paths)."""

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from input_pipeline.fgxmedia import audio, images, lists, text
from input_pipeline.errors import DataError, DecodeError, ListFormatError

# Stored images are JPEG (quality 95, 4:4:4) of the exact resized array. On the demo
# data that measures 37.6-42.6 dB PSNR against the lossless resize; 34 dB is about
# twice that RMSE, while a wrong resize, crop offset or channel order falls below 20 dB.
MIN_PSNR_DB = 34.0


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def _builder(data_dir, data_config):
    from input_pipeline.fgxmedia import encode, builder as fg_xmedia
    return fg_xmedia.FgXMedia(data_dir=os.fspath(data_dir), config=fg_xmedia.make_config(
        encode.StoreSpec.from_data_config(data_config)))


def _examples(builder, split):
    import tensorflow_datasets as tfds
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def test_builder_config_name_is_deterministic(test_config):
    from input_pipeline.fgxmedia import encode
    spec = encode.StoreSpec.from_data_config(test_config.data)
    assert spec.name == 'r72_t64_lower_space_whole'
    assert encode.StoreSpec(512, 448, 'original', 'last_line').name == 'r512_t448_original_last_line'
    assert encode.StoreSpec(512, 448, 'original', 'last_line', True).name == \
        'r512_t448_original_last_line_srcjpeg'


def test_paper_and_custom_variants_share_a_data_dir(tmp_path):
    """The paper's variant is the registered config; others are custom: both resolve to
    their own directory (and may be built twice in one process)."""
    from configs import dcinet_fgxmedia
    from input_pipeline.fgxmedia import prepare
    d = dcinet_fgxmedia.get_config().data
    for resize in (512, 512, 256, 256):
        d.resize_size = resize
        b = _builder(tmp_path, d)
        assert b.builder_config.name == f'r{resize}_t448_lower_space_whole'
        assert Path(b.data_dir) == prepare.prepared_dir(tmp_path, d)


def test_builder_round_trips_demo(demo_raw_dir, demo_prepared_dir, test_config):
    d = test_config.data
    builder = _builder(demo_prepared_dir, d)
    modalities = lists.available_modalities(demo_raw_dir)
    assert set(modalities) == {'image', 'audio', 'text', 'video'}
    for m in modalities:
        for split in lists.SPLITS:
            entries = lists.read_list(demo_raw_dir, m, split, num_classes=d.num_classes)
            exs = _examples(builder, f'{m}_{split}')
            assert len(exs) == len(entries) == builder.info.splits[f'{m}_{split}'].num_examples
            # Stored in list order, each with its list label, position and id.
            assert [int(e['index']) for e in exs] == list(range(len(entries)))
            assert [int(e['label']) for e in exs] == [e.label for e in entries]
            assert all(int(e['modality']) == lists.MODALITIES.index(m) for e in exs)
            assert [e['id'].decode() for e in exs] == [f'{m}/{e.path}' for e in entries]
            if m == 'video':
                vids = [lists.video_id(e) for e in entries]
                assert [e['video_id'].decode() for e in exs] == vids
                # Same video id <=> same video number.
                nums = [int(e['video']) for e in exs]
                assert len(set(zip(vids, nums))) == len(set(vids)) == len(set(nums))
            # Check every 5th item's payload against the decoding helper's functions.
            for ex, entry in list(zip(exs, entries))[::5]:
                path = lists.resolve_path(demo_raw_dir, entry)
                if m == 'text':
                    want = text.encode_text(text.read_text(path, mode=d.text_mode),
                                            alphabet=d.alphabet, length=d.text_length)
                    np.testing.assert_array_equal(ex['text'], want)
                    assert ex['image'] == b''
                    continue
                if m == 'audio' and audio.is_raw_audio(path):
                    want = audio.audio_to_image(path, d.resize_size)
                else:
                    want = images.load_image(path, d.resize_size, d.resize_size)
                got = np.asarray(Image.open(io.BytesIO(ex['image'])))
                assert got.shape == want.shape == (d.resize_size, d.resize_size, 3)
                assert _psnr(got, want) >= MIN_PSNR_DB, (m, entry.path)
                assert not ex['text'].any()


# ----------------------------------------------------------------------------- bad items

def _small_raw(src: Path, dst: Path, n: int = 3) -> Path:
    """First n train items of image/audio/text of the demo (train split only)."""
    for m in ('image', 'audio', 'text'):
        entries = lists.read_list(src, m, 'train')[:n]
        lines = []
        for e in entries:
            p = lists.resolve_path(src, e)
            rel = p.relative_to(src)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / rel)
            lines.append(f'{rel.as_posix()} {e.label}')
        (dst / 'list' / m).mkdir(parents=True, exist_ok=True)
        (dst / 'list' / m / 'train.txt').write_text('\n'.join(lines) + '\n')
    return dst


def _add_bad(root: Path, kind: str) -> tuple[str, str, str]:
    """Append one bad item; returns (modality, list path, reason fragment)."""
    m, rel, data, why = {
        'corrupt_jpeg': ('image', 'image/bad/corrupt.jpg', b'\xff\xd8\xff\xe0 not a jpeg', 'image'),
        'bad_audio': ('audio', 'audio/bad/noise.wav', b'RIFF\x00\x00garbage', 'audio'),
        'empty_text': ('text', 'text/bad/empty.txt', b'\n  \n', 'empty'),
        'missing': ('image', 'image/bad/missing.jpg', None, 'not found'),
    }[kind]
    if data is not None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with open(root / 'list' / m / 'train.txt', 'a') as f:
        f.write(f'{rel} 1\n')
    return m, rel, why


@pytest.mark.parametrize('kind', ['corrupt_jpeg', 'bad_audio', 'empty_text', 'missing'])
def test_fail_names_the_bad_item(kind, demo_raw_dir, test_config, tmp_path):
    from input_pipeline.fgxmedia import prepare
    raw = _small_raw(Path(demo_raw_dir), tmp_path / 'raw')
    m, rel, why = _add_bad(raw, kind)
    with pytest.raises(DataError) as info:
        prepare.prepare(raw, tmp_path / 'out', test_config.data, on_error='fail', progress=False)
    err = info.value
    assert why in str(err).lower()
    if kind == 'missing':
        assert isinstance(err, ListFormatError)
        assert err.path == str(raw / 'list' / m / 'train.txt') and err.line == 4
    else:
        assert isinstance(err, DecodeError)
        assert Path(err.path) == raw / rel
    # Nothing half-built is left that a later run would take for prepared data.
    assert not (prepare.prepared_dir(tmp_path / 'out', test_config.data) / 'dataset_info.json').exists()


def test_skip_reports_and_excludes_bad_items_and_rerun_is_fast(demo_raw_dir, test_config,
                                                             tmp_path, monkeypatch):
    from input_pipeline.fgxmedia import encode, prepare
    raw = _small_raw(Path(demo_raw_dir), tmp_path / 'raw')
    bad = [_add_bad(raw, k) for k in ('corrupt_jpeg', 'bad_audio', 'empty_text', 'missing')]
    out = tmp_path / 'out'
    counts = prepare.prepare(raw, out, test_config.data, on_error='skip', progress=False)
    assert counts == {'image': {'train': 3}, 'audio': {'train': 3}, 'text': {'train': 3}}

    pdir = prepare.prepared_dir(out, test_config.data)
    rows = prepare.read_skipped_report(pdir / prepare.SKIPPED_REPORT)
    assert sorted((r['modality'], r['path']) for r in rows) == sorted((m, rel) for m, rel, _ in bad)
    for r in rows:
        why = next(w for m, rel, w in bad if rel == r['path'])
        assert why in r['reason'].lower()
        assert r['split'] == 'train' and r['line'] in ('4', '5')
    # The stored items are exactly the good ones (bad ones were appended last).
    builder = _builder(out, test_config.data)
    for m in ('image', 'audio', 'text'):
        exs = _examples(builder, f'{m}_train')
        assert [int(e['index']) for e in exs] == [0, 1, 2]

    # Re-running reuses the prepared data: no decoding (it would raise) and quick.
    info_file = pdir / 'dataset_info.json'
    mtime = info_file.stat().st_mtime_ns

    def no_decode(*args, **kwargs):
        raise AssertionError('re-run decoded an item')
    monkeypatch.setattr(encode, 'try_encode', no_decode)
    monkeypatch.setattr(encode, 'encode_entry', no_decode)
    t0 = time.perf_counter()
    again = prepare.prepare(raw, out, test_config.data, on_error='skip', progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert again == counts
    assert info_file.stat().st_mtime_ns == mtime
    assert len(prepare.read_skipped_report(pdir / prepare.SKIPPED_REPORT)) == 4


def test_process_pool_gives_the_same_bytes(demo_raw_dir, test_config, tmp_path):
    """The spawned-process pool (used for real data sets) stores what threads store."""
    from input_pipeline.fgxmedia import prepare
    raw = _small_raw(Path(demo_raw_dir), tmp_path / 'raw', n=2)
    shutil.rmtree(raw / 'list' / 'audio')  # keep the test short: image and text only
    outs = {}
    for pool in ('thread', 'process'):
        prepare.prepare(raw, tmp_path / pool, test_config.data, progress=False,
                        pool=pool, num_workers=2)
        b = _builder(tmp_path / pool, test_config.data)
        outs[pool] = [(e['image'], e['text'].tobytes()) for s in ('image_train', 'text_train')
                      for e in _examples(b, s)]
    assert outs['thread'] == outs['process'] and len(outs['thread']) == 4


def test_ordered_keys_keep_list_order_and_spread_over_tfds_buckets():
    """TFDS's shuffler sends key k to bucket floor(k * 1000 / 2**128) and reads a bucket
    whole into memory: bare list positions would all land in bucket 0 (a whole split in
    memory, found on the full-size video). Checked with TFDS's own bucket function."""
    from tensorflow_datasets.core import shuffle

    from input_pipeline.fgxmedia import builder
    per = builder.ITEMS_PER_BUCKET
    positions = list(range(0, 3 * per + 5)) + [999 * per - 1, 999 * per, 999 * per + 1,
                                               5_000_000]
    keys = [builder.ordered_key(i) for i in positions]
    assert all(a < b for a, b in zip(keys, keys[1:]))          # the list order is kept
    assert max(keys) < 2 ** shuffle.HKEY_SIZE                   # TFDS stores 16 bytes
    buckets = [shuffle.get_bucket_number(k, shuffle.BUCKETS_NUMBER) for k in keys]
    assert buckets == [min(i // per, shuffle.BUCKETS_NUMBER - 1) for i in positions]
    assert shuffle.get_bucket_number(3 * per, shuffle.BUCKETS_NUMBER) == 0  # a bare position


def test_a_split_past_the_memory_buffer_is_stored_in_list_order(demo_raw_dir, test_config,
                                                                tmp_path, monkeypatch):
    """With TFDS's in-memory buffer shrunk to nothing and 2 items per bucket, every split
    goes through the on-disk buckets: no bucket holds more than 2 items, and the stored
    examples are still the list's, in its order."""
    from tensorflow_datasets.core import shuffle

    from input_pipeline.fgxmedia import builder, prepare
    monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 0)
    monkeypatch.setattr(builder, 'ITEMS_PER_BUCKET', 2)
    read_sizes = []
    original = shuffle._Bucket.read_values

    def counted(bucket):
        values = list(original(bucket))
        read_sizes.append(len(values))
        return iter(values)

    monkeypatch.setattr(shuffle._Bucket, 'read_values', counted)
    raw = _small_raw(Path(demo_raw_dir), tmp_path / 'raw', n=5)
    shutil.rmtree(raw / 'list' / 'audio')
    prepare.prepare(raw, tmp_path / 'out', test_config.data, progress=False)
    assert read_sizes and max(read_sizes) <= 2, read_sizes
    b = _builder(tmp_path / 'out', test_config.data)
    for split in ('image_train', 'text_train'):
        modality, part = split.split('_')
        entries = lists.read_list(raw, modality, part)
        stored = _examples(b, split)
        assert [int(e['index']) for e in stored] == [e.index for e in entries]
        assert [e['id'].decode() for e in stored] == [f'{modality}/{e.path}' for e in entries]
