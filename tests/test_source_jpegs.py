"""`data.store_source_jpegs`: small RGB JPEG photos and frames are stored as their own
bytes and resized by the input pipeline instead of by PIL at prepare time.

References are independent of the code under test: PIL opens each source to say what
it is, `encode_jpeg(images.load_image(...))` is what prepare stored before the flag,
and `images.load_image` (PIL resize, then centre crop) is the reference input."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from input_pipeline.errors import DecodeError
from input_pipeline.fgxmedia import encode, images, lists

RESIZE, CROP = 160, 144   # the demo's photos (120-200 px) straddle 160; frames are 96x80
# Kept source vs the PIL reference: both decoders are libjpeg-turbo's exact integer
# IDCT (same pixels), and TF's float bilinear upscale differs from PIL's fixed-point
# one only in rounding, so a pixel may be off by one level and few are (measured here:
# mean 0.1-0.2). Half a pixel of misalignment (align-corners, a wrong crop offset) or a
# swapped channel moves the mean by several levels.
MAX_MEAN_DIFF = 0.5
MAX_DIFF = 2


def _subset(src: Path, dst: Path) -> Path:
    """The demo's image and video media (both splits) as a root of their own."""
    for part in ('image', 'video', 'list/image', 'list/video'):
        shutil.copytree(src / part, dst / part)
    return dst


def _data(test_config, keep: bool):
    d = test_config.data.copy_and_resolve_references()
    d.resize_size, d.image_size, d.store_source_jpegs = RESIZE, CROP, keep
    return d


def _is_small_rgb_jpeg(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == 'JPEG' and im.mode == 'RGB' and max(im.size) <= RESIZE


@pytest.fixture(scope='module')
def root(demo_raw_dir, tmp_path_factory):
    return _subset(Path(demo_raw_dir), tmp_path_factory.mktemp('src_root'))


@pytest.fixture(scope='module')
def prepared(root, tmp_path_factory, test_config):
    """{keep: (data_dir, data config)}: the subset prepared with and without the flag."""
    from input_pipeline.fgxmedia import prepare
    out = {}
    for keep in (False, True):
        data_dir = tmp_path_factory.mktemp(f'prepared_{keep}')
        prepare.prepare(root, data_dir, _data(test_config, keep), progress=False)
        out[keep] = (data_dir, _data(test_config, keep))
    return out


def _stored(data_dir, data_config, split):
    import tensorflow_datasets as tfds
    from input_pipeline.fgxmedia import builder as fg_xmedia
    b = fg_xmedia.open_builder(data_dir, encode.StoreSpec.from_data_config(data_config))
    return list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)))


# ----------------------------------------------------------------------------- (a) prepare

def test_small_rgb_jpegs_are_stored_as_their_bytes_and_the_rest_as_before(root, prepared):
    kinds = {'kept': 0, 'large': 0, 'other': 0}
    for m in ('image', 'video'):
        for split in lists.SPLITS:
            entries = lists.read_list(root, m, split)
            new = _stored(*prepared[True], f'{m}_{split}')
            old = _stored(*prepared[False], f'{m}_{split}')
            assert len(new) == len(old) == len(entries)
            for e, a, b in zip(entries, new, old):
                path = lists.resolve_path(root, e)
                want_old = encode.encode_jpeg(images.load_image(path, RESIZE, RESIZE))
                assert b['image'] == want_old   # the flag-off variant: exactly as before
                if _is_small_rgb_jpeg(path):
                    assert a['image'] == path.read_bytes(), e.path
                    kinds['kept'] += 1
                else:
                    assert a['image'] == want_old, e.path
                    with Image.open(path) as im:
                        kinds['large' if im.format == 'JPEG' and im.mode == 'RGB'
                              else 'other'] += 1
    # Every case occurs: kept frames/photos, photos over 160 px, grey/CMYK/PNG files.
    assert all(n > 0 for n in kinds.values()), kinds


def test_a_damaged_jpeg_fails_exactly_as_without_the_flag(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=90)
    (tmp_path / 'video').mkdir()
    (tmp_path / 'video' / 'cut.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    entry = lists.ListEntry(modality='video', split='train', path='video/cut.jpg', label=0,
                            list_file='list/video/train.txt', line=1, index=0)
    results = [encode.try_encode((str(tmp_path), entry,
                                  encode.StoreSpec(RESIZE, 64, store_source_jpegs=keep),
                                  'strict')) for keep in (False, True)]
    assert [ok for ok, _ in results] == [False, False]
    assert all(isinstance(err, DecodeError) for _, err in results)
    assert str(results[0][1]) == str(results[1][1]) and 'cut.jpg' in str(results[1][1])


def test_a_source_tensorflow_cannot_decode_is_stored_resized(root, tmp_path, monkeypatch):
    """The builder's safety net: a kept source that TF's decoder refuses (PIL and
    TF's libjpeg tolerate different faults) is stored the flag-off way instead."""
    import tensorflow as tf
    from input_pipeline.fgxmedia import builder as fg_xmedia
    spec = encode.StoreSpec(RESIZE, 64, store_source_jpegs=True)
    entry = lists.read_list(root, 'video', 'train')[0]
    ok, value = encode.try_encode((str(root), entry, spec, 'strict'))
    assert ok and value.get('source')
    b = fg_xmedia.open_builder(tmp_path, spec)
    assert b._tf_checked(str(root), entry, value) == (True, value)

    def refuse(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, 'Invalid JPEG data')
    monkeypatch.setattr(tf.io, 'decode_jpeg', refuse)
    ok, plain = b._tf_checked(str(root), entry, value)
    path = lists.resolve_path(root, entry)
    assert ok and plain == {'image': encode.encode_jpeg(images.load_image(path, RESIZE, RESIZE))}


# ----------------------------------------------------------------------------- (b) pipeline

def test_eval_input_of_kept_sources_matches_the_pil_reference(root, prepared, test_config):
    from input_pipeline.fgxmedia import pipeline
    c = test_config.copy_and_resolve_references()
    c.data = prepared[True][1]
    c.data_dir = str(prepared[True][0])
    c.data.modalities = ('image', 'video')
    its = pipeline.create_eval_iterators(c, 'test')
    checked = 0
    for m in c.data.modalities:
        entries = lists.read_list(root, m, 'test')
        for batch in its[m]:
            for row in np.flatnonzero(batch['mask']):
                path = lists.resolve_path(root, entries[batch['index'][row]])
                if not _is_small_rgb_jpeg(path):
                    continue
                got = batch['inputs'][row].astype(np.int64)
                want = images.load_image(path, RESIZE, CROP).astype(np.int64)
                diff = np.abs(got - want)
                assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_DIFF, (path, diff.mean())
                # The tolerance can fail: the same crop one pixel off does.
                shifted = images.resize_center_crop(images.decode_image(
                    path.read_bytes(), source=str(path)), RESIZE, RESIZE)[9:9 + CROP, 9:9 + CROP]
                assert np.abs(got - shifted.astype(np.int64)).mean() > 2 * MAX_MEAN_DIFF
                checked += 1
    assert checked >= 20


def test_resize_to_full_size_matches_pil(root):
    """The resize alone (the whole r x r window) against PIL's bilinear resize of the
    same decoded source."""
    import tensorflow as tf
    from input_pipeline.fgxmedia import pipeline
    for e in lists.read_list(root, 'video', 'train')[:6]:
        path = lists.resolve_path(root, e)
        data = path.read_bytes()
        got = pipeline._resized_crop(tf.constant(data), RESIZE, tf.constant([0, 0]),
                                     RESIZE).numpy().astype(np.int64)
        want = images.resize_center_crop(images.decode_image(data, source=str(path)),
                                          RESIZE, RESIZE).astype(np.int64)
        assert got.shape == want.shape == (RESIZE, RESIZE, 3)
        diff = np.abs(got - want)
        assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_DIFF


def test_full_size_items_give_the_fused_paths_pixels_and_random_stream(prepared):
    """A stored resize_size JPEG (a re-encoded photo, a spectrogram) decodes through
    the flag's path to exactly the fused decode_and_crop_jpeg's crop, with the same
    random offsets and flips."""
    import tensorflow as tf
    from input_pipeline.fgxmedia import pipeline
    exs = [x for x in _stored(*prepared[True], 'image_train')
           if Image.open(io.BytesIO(x['image'])).size == (RESIZE, RESIZE)]
    assert len(exs) >= 4
    for augment in (False, True):
        fns = [pipeline._image_fn(RESIZE, CROP, augment=augment, flip=True, source_jpegs=k)
               for k in (False, True)]
        for i, x in enumerate(exs):
            seed = tf.constant([7, i], tf.int64)
            a, b = (fn(tf.constant(x['image']), seed).numpy() for fn in fns)
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- (c) naming

def test_the_flag_names_another_variant_and_another_fingerprint(test_config, tmp_path):
    from configs import dcinet_fgxmedia, demo
    from dcinet_jax.search import gallery
    from input_pipeline.fgxmedia import prepare
    off, on = _data(test_config, False), _data(test_config, True)
    assert encode.StoreSpec.from_data_config(off).name == 'r160_t64_lower_space_whole'
    assert encode.StoreSpec.from_data_config(on).name == 'r160_t64_lower_space_whole_srcjpeg'
    assert prepare.prepared_dir(tmp_path, off) != prepare.prepared_dir(tmp_path, on)
    paper = dcinet_fgxmedia.get_config()
    assert not paper.data.store_source_jpegs   # off by default: input speed first
    assert not encode.StoreSpec.from_data_config(paper.data).name.endswith('_srcjpeg')
    paper.data.store_source_jpegs = True
    assert encode.StoreSpec.from_data_config(demo.get_config().data).name == \
        'r128_t112_lower_space_whole'   # the demo's variant (and checksum) unchanged
    # Search indexes: another fingerprint with the flag; a record written before the
    # field existed reads as False, so it still matches a flag-off config.
    c_on, c_off = paper.copy_and_resolve_references(), paper.copy_and_resolve_references()
    c_off.data.store_source_jpegs = False
    assert gallery.config_fingerprint(c_on) != gallery.config_fingerprint(c_off)
    from dcinet_jax import checkpoints
    old_record = checkpoints.config_record(c_off)
    del old_record['data']['store_source_jpegs']
    assert gallery.config_fingerprint(old_record) == gallery.config_fingerprint(c_off)
    assert gallery.changed_fields(old_record, gallery.fingerprint_fields(c_on)) == {
        'data.store_source_jpegs': (False, True)}


# ----------------------------------------------------------------------------- (d) disk

def test_the_flag_stores_less(prepared):
    def size(keep):
        data_dir = prepared[keep][0]
        return sum(p.stat().st_size for p in Path(data_dir).rglob('*.tfrecord*'))
    on, off = size(True), size(False)
    assert 0 < on < 0.8 * off, (on, off)
