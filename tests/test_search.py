"""`dcinet index` / `dcinet search`, the gallery and raw-file preprocessing.

A freshly initialised tiny model (configs/test.py with pooled features) is enough:
an item queried as a raw file gets exactly the gallery's feature of that item, so it
scores 1 and comes first whatever the weights. Two checkpoints (steps 0 and 1, the
second with other weights) let an index of one be refused with the other.
"""

import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(REPO / 'configs' / 'test.py')


@pytest.fixture(scope='module')
def config(test_config, demo_prepared_dir):
    c = test_config.copy_and_resolve_references()
    c.data_dir = str(demo_prepared_dir)
    c.eval.feature = 'pooled'   # softmax of an untrained model is nearly uniform
    return c


@pytest.fixture(scope='module')
def workdir(config, tmp_path_factory):
    """Checkpoints of steps 0 and 1 (other weights) of a fresh tiny model."""
    import jax
    from dcinet_jax import checkpoints
    from dcinet_jax.state import build_trainer
    wd = tmp_path_factory.mktemp('search_run')
    state = build_trainer(config, total_steps=1, check_batch=False).init_state()
    ckpt = checkpoints.Checkpointer(wd / 'checkpoints', best_metric='bimodal_average',
                                    async_save=False)
    meta = {'config': checkpoints.config_record(config)}
    ckpt.save(0, state, meta=meta)
    ckpt.save(1, state.replace(params=jax.tree.map(lambda x: x * 1.5, state.params)),
              meta=meta)
    ckpt.close()
    return wd


def _cli(*args):
    """(exit message or None, stdout) of `dcinet ARGS` with the test config."""
    import contextlib
    import io
    from dcinet_jax import cli
    argv = [args[0], '--config', TEST_CONFIG, *args[1:]]
    out = io.StringIO()
    with mock.patch('sys.argv', ['dcinet', *argv]), contextlib.redirect_stdout(out):
        try:
            cli.main(argv)
        except SystemExit as e:
            return str(e.code), out.getvalue()
    return None, out.getvalue()


def _overrides(config):
    return [f'--config.data_dir={config.data_dir}', '--config.eval.feature=pooled']


def test_gallery_round_trip_lines_up_with_items(config, workdir, tmp_path):
    from dcinet_jax.search import gallery
    from input_pipeline.fgxmedia import items
    g = gallery.compute_gallery(config, workdir, step=0)
    assert g.step == 0 and set(g.modalities) == set(config.data.modalities)
    for m, part in g.modalities.items():
        its = items.read_items(config, 'test', m)
        assert part.ids == [it.id for it in its]
        np.testing.assert_array_equal(part.labels, [it.label for it in its])
        assert part.features.shape[0] == len(its) and np.all(np.isfinite(part.features))
    back = gallery.Gallery.load(g.save(tmp_path / 'g'))
    assert (back.step, back.config_record, back.meta) == (g.step, g.config_record, g.meta)
    for m, part in g.modalities.items():
        np.testing.assert_array_equal(back.modalities[m].features, part.features)
        np.testing.assert_array_equal(back.modalities[m].labels, part.labels)
        assert back.modalities[m].ids == part.ids
    # a features file from another build is refused, not mixed in
    other = gallery.Gallery(g.step, g.config_record, {'image': g.modalities['image']}, g.meta)
    other.save(tmp_path / 'h')
    shutil.copy(tmp_path / 'h' / gallery.FEATURES_FILE, tmp_path / 'g' / gallery.FEATURES_FILE)
    with pytest.raises(ValueError, match='does not belong'):
        gallery.Gallery.load(tmp_path / 'g')


def _eval_rows(config, modality):
    """{list index: model input} of the prepared test split, via the eval iterator."""
    from input_pipeline.fgxmedia import pipeline
    c = config.copy_and_resolve_references()
    c.data.modalities = (modality,)
    rows = {}
    for batch in pipeline.create_eval_iterators(c, 'test')[modality]:
        for x, i, keep in zip(batch['inputs'], batch['index'], batch['mask']):
            if keep:
                rows[int(i)] = x
    return rows


@pytest.mark.parametrize('modality,picks', [
    ('image', (0, 7)),     # a JPEG and, in the demo data, other image kinds
    ('audio', (0, 1, 2, 18)),  # wav / flac / ogg and a shipped spectrogram PNG (class 3)
    ('text', (0, 5)),
    ('video', (0,)),       # a frame, preprocessed as every image-like item
])
def test_raw_file_preprocessing_equals_prepared_path(config, demo_raw_dir, modality, picks):
    from input_pipeline.fgxmedia import lists, raw_query
    entries = lists.read_list(demo_raw_dir, modality, 'test', num_classes=4)
    rows = _eval_rows(config, modality)
    for i in picks:
        path = lists.resolve_path(demo_raw_dir, entries[i])
        got_modality, x = raw_query.model_input(path, config, modality)
        assert got_modality == modality
        want = rows[entries[i].index]
        assert x.dtype == want.dtype and x.shape == want.shape, path
        np.testing.assert_array_equal(x, want, err_msg=str(path))
    assert raw_query.modality_of('a/b.FLAC') == 'audio'
    assert raw_query.modality_of('a/b.jpeg') == 'image'
    with pytest.raises(ValueError, match='unknown file type'):
        raw_query.modality_of('a/b.mp4')


def test_search_builds_default_index_and_finds_the_query_first(config, workdir, demo_raw_dir,
                                                               capsys):
    from dcinet_jax.search import gallery
    from input_pipeline.fgxmedia import items, lists
    entries = {m: lists.read_list(demo_raw_dir, m, 'test', num_classes=4)[k]
               for m, k in (('image', 9), ('audio', 14), ('text', 20))}
    queries = {m: lists.resolve_path(demo_raw_dir, e) for m, e in entries.items()}
    names = items.class_names(config)
    err, out = _cli('search', '--workdir', str(workdir), '--step', '0', '--top_k', '3',
                    '--json', *_overrides(config),
                    *[a for q in queries.values() for a in ('--query', str(q))])
    assert err is None, err
    assert 'no index yet' in capsys.readouterr().err
    found = json.loads(out)
    assert found['step'] == 0 and len(found['queries']) == 3
    for (m, path), q in zip(queries.items(), found['queries']):
        top = q['results'][0]
        assert q['modality'] == m and top['modality'] == m
        assert top['path'] == str(path) and top['score'] == pytest.approx(1.0, abs=1e-5)
        assert top['label'] == entries[m].label and top['class'] == names[top['label']]
        assert [r['rank'] for r in q['results']] == [1, 2, 3]
        # independent ranking: the query's feature is its gallery row; cosine by the
        # formula over the stacked gallery, descending, ties by gallery position
        g = gallery.Gallery.load(Path(workdir) / 'index' / 'test')
        ids = [i for p in g.modalities.values() for i in p.ids]
        feats = np.concatenate([p.features for p in g.modalities.values()]).astype(np.float64)
        me = feats[ids.index(top['id'])]
        ref = feats @ me / (np.linalg.norm(feats, axis=1) * np.linalg.norm(me))
        order = np.argsort(-ref, kind='stable')[:3]
        assert [r['id'] for r in q['results']] == [ids[j] for j in order]
        np.testing.assert_allclose([r['score'] for r in q['results']], ref[order], atol=1e-6)
    # the table form, against the index now on disk, restricted to one modality
    err, out = _cli('search', '--workdir', str(workdir), '--step', '0', '--top_k', '2',
                    '--modality', 'text', '--query', str(queries['text']), *_overrides(config))
    assert err is None, err
    lines = out.strip().splitlines()
    assert lines[1].split() == ['rank', 'score', 'class', 'modality', 'path']
    assert lines[2].split()[0] == '1' and lines[2].endswith(str(queries['text']))
    assert len(lines) == 4 and 'no index yet' not in capsys.readouterr().err


def test_index_of_another_checkpoint_is_refused(config, workdir, demo_raw_dir):
    from dcinet_jax.search import gallery
    from input_pipeline.fgxmedia import lists
    query = lists.resolve_path(demo_raw_dir, lists.read_list(demo_raw_dir, 'text', 'test')[0])
    err, _ = _cli('index', '--workdir', str(workdir), '--step', '0', *_overrides(config))
    assert err is None, err
    # latest is step 1: other step, other weights
    err, _ = _cli('search', '--workdir', str(workdir), '--query', str(query),
                  *_overrides(config))
    assert err is not None and "index 'test' does not match the checkpoint" in err
    assert 'built from step 0, the checkpoint used is step 1' in err and 'dcinet index' in err
    g = gallery.Gallery.load(Path(workdir) / 'index' / 'test')
    with pytest.raises(ValueError, match='weights differ'):
        g.check_source(step=0, fingerprint=g.meta['fingerprint'], weights='0' * 16)
    c = config.copy_and_resolve_references()
    c.data.image_size = 56
    with pytest.raises(ValueError, match='config fields'):
        g.check_source(step=0, fingerprint=gallery.config_fingerprint(c),
                       weights=g.meta['weights'])


def test_folder_index_by_layout(config, workdir, demo_raw_dir, tmp_path):
    """A folder of raw files: modality by extension, spectrogram images under audio/,
    video frames grouped per video under video/; labels from the class folders."""
    from input_pipeline.fgxmedia import lists
    folder = tmp_path / 'mine'
    picks = {'image': (0, 13), 'audio': (2, 18), 'text': (7,), 'video': (0, 1, 2, 9)}
    copied = {}
    for m, ks in picks.items():
        entries = lists.read_list(demo_raw_dir, m, 'test', num_classes=4)
        for k in ks:
            src = lists.resolve_path(demo_raw_dir, entries[k])
            top = m if m in ('audio', 'video') else 'misc'
            dst = folder / top / Path(entries[k].path)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            copied.setdefault(m, []).append((dst, entries[k].label))
    (folder / 'list').mkdir()
    (folder / 'list' / 'ignored.txt').write_text('not an item')
    err, out = _cli('index', '--workdir', str(workdir), '--step', '0', '--folder', str(folder),
                    *_overrides(config))
    assert err is None, err
    assert 'index folder-mine' in out
    # video: frames 0,1,2 are one clip, frame 9 another; text and the PNG spectrogram count
    assert 'image 2, audio 2, text 1, video 2 items' in out
    image, image_label = copied['image'][1]
    err, out = _cli('search', '--workdir', str(workdir), '--step', '0', '--index',
                    'folder-mine', '--json', '--query', str(image), *_overrides(config))
    assert err is None, err
    top = json.loads(out)['queries'][0]['results'][0]
    assert top['path'] == str(image) and top['label'] == image_label
    assert top['score'] == pytest.approx(1.0, abs=1e-5)


def test_a_stale_index_names_the_field_and_the_rebuild_keeps_the_overrides(
        config, workdir, demo_raw_dir):
    """Issue 22: an index built with another eval.feature was refused without naming the
    field, and the suggested rebuild command dropped the --config overrides."""
    import shlex
    from dcinet_jax.search import gallery
    from input_pipeline.fgxmedia import lists
    query = lists.resolve_path(demo_raw_dir, lists.read_list(demo_raw_dir, 'text', 'test')[0])
    err, _ = _cli('index', '--workdir', str(workdir), '--step', '1', '--name', 'feat',
                  *_overrides(config))
    assert err is None, err
    now = [f'--config.data_dir={config.data_dir}', '--config.eval.feature=softmax']
    err, _ = _cli('search', '--workdir', str(workdir), '--query', str(query), '--index',
                  'feat', *now)
    line = err.splitlines()[0]
    assert "the config fields that shape features differ (config.eval.feature: 'pooled' in " \
           "the index, 'softmax' now)" in line, line
    rebuild = line.split('rebuild it: ')[1]
    assert shlex.split(rebuild) == ['dcinet', 'index', '--config', TEST_CONFIG, *now,
                                    '--workdir', str(workdir), '--split', 'test', '--name',
                                    'feat', '--step', '1']
    g = gallery.Gallery.load(Path(workdir) / 'index' / 'feat')
    c = config.copy_and_resolve_references()
    c.model.num_filters = 3
    assert gallery.changed_fields(g.config_record, gallery.fingerprint_fields(c)) == {
        'model.num_filters': (config.model.num_filters, 3)}
