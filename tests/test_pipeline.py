"""tf.data training/eval pipelines over the prepared demo data.

References are independent of the pipeline: stored JPEGs decoded with PIL and cropped
with NumPy, list files read with lists.read_list, and images.load_image for eval."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from input_pipeline.fgxmedia import images, lists

# TF's decode_and_crop_jpeg (ISLOW IDCT, 4:4:4 so no chroma upsampling) and PIL decode
# the same JPEG to the same pixels; allow 1 level for libjpeg version differences.
DECODE_TOL = 1
MIN_PSNR_DB = 34.0   # stored JPEG vs lossless reference, see test_prepare.py


def _cfg(base, data_dir, **data):
    c = base.copy_and_resolve_references()
    c.data_dir = str(data_dir)
    c.data.class_aligned = False
    c.data.text_shift = False
    c.data.augment = False
    for k, v in data.items():
        setattr(c.data, k, v)
    return c


@pytest.fixture(scope='module')
def cfg(test_config, demo_prepared_dir):
    return _cfg(test_config, demo_prepared_dir)


@pytest.fixture(scope='module')
def stored(test_config, demo_prepared_dir):
    """Per modality: train items as PIL-decoded full images (or text ids) and labels."""
    import tensorflow_datasets as tfds
    from input_pipeline.fgxmedia import encode, builder as fg_xmedia
    b = fg_xmedia.FgXMedia(data_dir=str(demo_prepared_dir), config=fg_xmedia.make_config(
        encode.StoreSpec.from_data_config(test_config.data)))
    out = {}
    for m in ('image', 'audio', 'text'):
        exs = list(tfds.as_numpy(b.as_dataset(split=f'{m}_train', shuffle_files=False)))
        if m == 'text':
            x = np.stack([e['text'] for e in exs])
        else:
            x = np.stack([np.asarray(Image.open(io.BytesIO(e['image'])).convert('RGB'))
                          for e in exs])
        out[m] = (x, np.array([e['label'] for e in exs]))
    return out


def _centre(full, size):
    o = int(round((full.shape[1] - size) / 2.0))
    return full[:, o:o + size, o:o + size]


def _identify(batch, ref):
    """Positions of the stored items the batch rows are (each row must match one)."""
    d = np.abs(batch[:, None].astype(np.int16) - ref[None].astype(np.int16))
    d = d.reshape(d.shape[0], d.shape[1], -1).max(-1)
    idx = d.argmin(1)
    assert (d[np.arange(len(idx)), idx] <= DECODE_TOL).all(), d.min(1)
    return idx


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for m in x:
            np.testing.assert_array_equal(x[m]['inputs'], y[m]['inputs'])
            np.testing.assert_array_equal(x[m]['label'], y[m]['label'])


def test_shapes_dtypes_and_contents(cfg, stored):
    from input_pipeline.fgxmedia import pipeline
    S, L, b = cfg.data.image_size, cfg.data.text_length, cfg.data.batch_per_modality
    it = pipeline.create_train_iterator(cfg, process_index=0, process_count=1)
    for batch in _take(it, 2):
        assert set(batch) == set(cfg.data.modalities)
        for m, v in batch.items():
            assert set(v) == {'inputs', 'label'}
            assert v['label'].dtype == np.int32 and v['label'].shape == (b,)
            ref, labels = stored[m]
            if m == 'text':
                assert v['inputs'].dtype == np.int32 and v['inputs'].shape == (b, L)
                rows = [np.flatnonzero((ref == r).all(1)) for r in v['inputs']]
                assert all(len(r) >= 1 for r in rows)
                assert all(v['label'][i] == labels[r[0]] for i, r in enumerate(rows))
            else:
                assert v['inputs'].dtype == np.uint8 and v['inputs'].shape == (b, S, S, 3)
                idx = _identify(v['inputs'], _centre(ref, S))
                np.testing.assert_array_equal(v['label'], labels[idx])


def test_missing_prepared_data_names_directory(test_config, tmp_path):
    from input_pipeline.fgxmedia import pipeline
    c = _cfg(test_config, tmp_path / 'nothing_here')
    with pytest.raises(FileNotFoundError, match='dcinet prepare') as info:
        pipeline.create_train_iterator(c, process_index=0, process_count=1)
    assert 'r72_t64_lower_space_whole' in str(info.value)


def test_batch_must_split_over_processes(cfg):
    from input_pipeline.fgxmedia import pipeline
    with pytest.raises(ValueError, match='multiple of the process count'):
        pipeline.create_train_iterator(cfg, process_index=0, process_count=3)


@pytest.fixture(scope='module')
def short_text_dir(demo_raw_dir, test_config, tmp_path_factory):
    """The demo with the text train list cut to 17 items (so text is the shortest)."""
    from input_pipeline.fgxmedia import prepare
    raw = tmp_path_factory.mktemp('short_raw')
    for m in ('image', 'audio', 'text'):
        entries = lists.read_list(demo_raw_dir, m, 'train')
        if m == 'text':
            entries = entries[:17]
        lines = []
        for e in entries:
            rel = lists.resolve_path(demo_raw_dir, e).relative_to(demo_raw_dir)
            (raw / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(demo_raw_dir) / rel, raw / rel)
            lines.append(f'{rel.as_posix()} {e.label}')
        (raw / 'list' / m).mkdir(parents=True)
        (raw / 'list' / m / 'train.txt').write_text('\n'.join(lines) + '\n')
    out = tmp_path_factory.mktemp('short_prepared')
    prepare.prepare(raw, out, test_config.data, progress=False)
    return raw, out


def test_epoch_ends_with_shortest_modality(test_config, short_text_dir, stored):
    from input_pipeline.fgxmedia import pipeline
    raw, out = short_text_dir
    c = _cfg(test_config, out)
    b = c.data.batch_per_modality
    sizes = {m: len(lists.read_list(raw, m, 'train')) for m in c.data.modalities}
    assert sizes['text'] == 17
    spe = pipeline.steps_per_epoch(c)
    assert spe == min(sizes.values()) // b == 2
    batches = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), 2 * spe)
    for e in range(2):
        epoch = batches[e * spe:(e + 1) * spe]
        # Without replacement inside an epoch: spe * b distinct images.
        ref = _centre(stored['image'][0], c.data.image_size)
        idx = np.concatenate([_identify(x['image']['inputs'], ref) for x in epoch])
        assert len(set(idx.tolist())) == spe * b
        # 16 distinct texts of the 17 (rows compared as bytes).
        rows = {r.tobytes() for x in epoch for r in x['text']['inputs']}
        assert len(rows) == spe * b
    # The two epochs are differently ordered.
    assert any((x['image']['label'] != y['image']['label']).any()
               or (x['image']['inputs'] != y['image']['inputs']).any()
               for x, y in zip(batches[:spe], batches[spe:]))


@pytest.mark.parametrize('aligned', [False, True])
def test_deterministic_for_a_seed_and_seed_dependent(cfg, aligned):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    c.data.class_aligned = aligned
    c.data.augment = True
    c.data.text_shift = True
    n = pipeline.steps_per_epoch(c) + 1   # across an epoch boundary
    a = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    b = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    _assert_batches_equal(a, b)
    c.seed = c.seed + 1
    d = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    with pytest.raises(AssertionError):
        _assert_batches_equal(a, d)


@pytest.mark.parametrize('aligned', [False, True])
def test_process_shards_are_disjoint_and_cover_the_batch(cfg, stored, aligned):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    c.data.class_aligned = aligned
    c.data.augment = True
    c.data.text_shift = True
    spe = pipeline.steps_per_epoch(c, process_count=2)
    assert spe == pipeline.steps_per_epoch(c)
    one = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), spe)
    p0 = _take(pipeline.create_train_iterator(c, process_index=0, process_count=2), spe)
    p1 = _take(pipeline.create_train_iterator(c, process_index=1, process_count=2), spe)
    half = c.data.batch_per_modality // 2
    for full, a, b in zip(one, p0, p1):
        for m in c.data.modalities:
            assert a[m]['inputs'].shape[0] == b[m]['inputs'].shape[0] == half
            for k in ('inputs', 'label'):
                np.testing.assert_array_equal(np.concatenate([a[m][k], b[m][k]]), full[m][k])
    if not aligned:   # random sampler: no item twice in an epoch, so shards are disjoint
        c.data.augment = False
        p0 = _take(pipeline.create_train_iterator(c, process_index=0, process_count=2), spe)
        p1 = _take(pipeline.create_train_iterator(c, process_index=1, process_count=2), spe)
        ref = _centre(stored['image'][0], c.data.image_size)
        i0 = {int(i) for x in p0 for i in _identify(x['image']['inputs'], ref)}
        i1 = {int(i) for x in p1 for i in _identify(x['image']['inputs'], ref)}
        assert not i0 & i1 and len(i0 | i1) == spe * c.data.batch_per_modality


@pytest.mark.parametrize('aligned', [False, True])
def test_resume_matches_uninterrupted_run(cfg, aligned):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    c.data.class_aligned = aligned
    c.data.augment = True
    c.data.text_shift = True
    spe = pipeline.steps_per_epoch(c)
    full = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), 2 * spe + 1)
    for k in (1, spe, 2 * spe - 1):   # inside epoch 0, at and just before an epoch boundary
        resumed = _take(pipeline.create_train_iterator(c, start_step=k, process_index=0,
                                                       process_count=1), 2)
        _assert_batches_equal(resumed, full[k:k + 2])


def test_class_aligned_batches(cfg):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    c.data.class_aligned = True
    P, b = c.data.classes_per_batch, c.data.batch_per_modality
    spe = pipeline.steps_per_epoch(c)
    seen = set()
    for batch in _take(pipeline.create_train_iterator(c, process_index=0, process_count=1),
                       2 * spe):
        labels = [batch[m]['label'] for m in c.data.modalities]
        for y in labels:
            classes, counts = np.unique(y, return_counts=True)
            assert len(classes) == P and (counts == b // P).all()
            np.testing.assert_array_equal(y, labels[0])   # same class in every slot
        seen.update(np.unique(labels[0]).tolist())
    assert seen == set(range(c.data.num_classes))   # classes cycle evenly


def test_text_shift_range(cfg):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    n = 12
    plain = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    c.data.text_shift = True
    shifted = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    L = c.data.text_length
    ks = []
    for p, s in zip(plain, shifted):
        for x, y in zip(p['text']['inputs'], s['text']['inputs']):
            assert x[0] != 0   # texts start with a character, so the shift is identifiable
            matches = [k for k in range(L) if np.array_equal(
                y, np.concatenate([np.zeros(k, x.dtype), x])[:L])]
            assert len(matches) == 1
            ks.append(matches[0])
    assert set(ks) == {0, 2, 4, 6, 8}


def test_augment_is_a_random_crop_and_flip(cfg, stored):
    from input_pipeline.fgxmedia import pipeline
    c = cfg.copy_and_resolve_references()
    S, R = c.data.image_size, c.data.resize_size
    n = 6
    plain = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    c.data.augment = True
    aug = _take(pipeline.create_train_iterator(c, process_index=0, process_count=1), n)
    windows = {'image': set(), 'audio': set()}
    for p, a in zip(plain, aug):
        for m in windows:
            full = stored[m][0][_identify(p[m]['inputs'], _centre(stored[m][0], S))]
            for img, src in zip(a[m]['inputs'], full):
                found = [(y, x, f) for y in range(R - S + 1) for x in range(R - S + 1)
                         for f in (False, True)
                         if np.abs((src[y:y + S, x:x + S][:, ::-1] if f
                                    else src[y:y + S, x:x + S]).astype(int) - img).max()
                         <= DECODE_TOL]
                assert found, m
                windows[m].add(found[0])
    assert len({w[:2] for w in windows['image']}) > 5            # offsets vary
    assert {w[2] for w in windows['image']} == {False, True}      # images are flipped
    assert {w[2] for w in windows['audio']} == {False}            # spectrograms are not


def test_eval_covers_each_item_once(test_config, demo_prepared_dir, demo_raw_dir):
    from input_pipeline.fgxmedia import pipeline
    c = _cfg(test_config, demo_prepared_dir, modalities=('image', 'audio', 'text', 'video'))
    eb = c.data.eval_batch_size
    its = pipeline.create_eval_iterators(c, 'test')
    for m in c.data.modalities:
        entries = lists.read_list(demo_raw_dir, m, 'test')
        assert pipeline.num_examples(c, m, 'test') == len(entries) == its[m].num_examples
        seen_index, seen_label, seen_video = [], [], []
        batches = list(its[m])
        assert len(batches) == len(its[m]) == -(-len(entries) // eb)
        for batch in batches:
            assert batch['inputs'].shape[0] == eb
            assert batch['mask'].dtype == bool and batch['index'].dtype == np.int32
            mask = batch['mask']
            assert (batch['index'][~mask] == -1).all()
            assert not batch['inputs'][~mask].any()
            seen_index += batch['index'][mask].tolist()
            seen_label += batch['label'][mask].tolist()
            if m == 'video':
                seen_video += batch['video'][mask].tolist()
        assert seen_index == list(range(len(entries)))   # each once, in list order
        assert seen_label == [e.label for e in entries]
        if m == 'video':
            vids = [lists.video_id(e) for e in entries]
            assert len(set(zip(vids, seen_video))) == len(set(vids)) == len(set(seen_video))


def test_eval_inputs_match_reference_preprocessing(test_config, demo_prepared_dir, demo_raw_dir):
    """End to end: stored resize + pipeline centre crop ~ images.load_image."""
    from input_pipeline.fgxmedia import pipeline
    c = _cfg(test_config, demo_prepared_dir, modalities=('image',))
    d = c.data
    entries = lists.read_list(demo_raw_dir, 'image', 'test')
    batch = next(iter(pipeline.create_eval_iterators(c)['image']))
    for row in np.flatnonzero(batch['mask'])[::3]:
        e = entries[batch['index'][row]]
        want = images.load_image(lists.resolve_path(demo_raw_dir, e), d.resize_size, d.image_size)
        mse = np.mean((batch['inputs'][row].astype(float) - want) ** 2)
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= MIN_PSNR_DB


# ----------------------------------------------------------------------------- label check

def test_num_classes_below_the_labels_is_refused(test_config, demo_prepared_dir):
    """Labels 3 with num_classes=3 would become all-zero one-hots: refused when the
    data is first read, naming the split and the label."""
    from input_pipeline.fgxmedia import pipeline
    c = _cfg(test_config, demo_prepared_dir, num_classes=3)
    want = 'image_train holds label 3 but data.num_classes=3 (labels must be < num_classes)'
    with pytest.raises(ValueError) as info:
        pipeline.steps_per_epoch(c)
    assert str(info.value) == want
    with pytest.raises(ValueError, match=want.replace('(', r'\(').replace(')', r'\)')):
        pipeline.create_train_iterator(c, process_index=0, process_count=1)
    with pytest.raises(ValueError, match='image_test holds label 3 but data.num_classes=3'):
        pipeline.create_eval_iterators(c)
    c.data.modalities = ('text',)
    with pytest.raises(ValueError, match='text_test holds label 3'):
        pipeline.create_eval_iterators(c)
    # Enough classes: fine (more classes than labels is allowed).
    pipeline.check_labels(_cfg(test_config, demo_prepared_dir, num_classes=5), 'test')


def test_label_check_uses_the_record_and_reads_labels_without_it(test_config, demo_prepared_dir,
                                                                 tmp_path):
    import json

    from input_pipeline.fgxmedia import fingerprint, pipeline, prepare
    pdir = prepare.prepared_dir(demo_prepared_dir, test_config.data)
    info = json.loads((pdir / fingerprint.INFO_FILE).read_text())
    assert info['num_classes'] == test_config.data.num_classes == 4
    assert info['max_labels'] == {f'{m}_{s}': 3 for m in ('image', 'audio', 'text', 'video')
                                  for s in ('train', 'test')}
    # Prepared before the record existed: the labels themselves are read.
    old = tmp_path / 'old'
    shutil.copytree(demo_prepared_dir, old)
    (prepare.prepared_dir(old, test_config.data) / fingerprint.INFO_FILE).unlink()
    with pytest.raises(ValueError, match='audio_test holds label 3 but data.num_classes=2'):
        pipeline.create_eval_iterators(_cfg(test_config, old, num_classes=2,
                                            modalities=('audio',)))
