"""`dcinet report`: its numbers against independent references, the page, the browser render.

Numbers: a task's mAP must be the evaluator's (same features, same scorer); the PR
curve and per-class AP are checked against sklearn on tie-free features, the confusion
counts and top-k against a plain loop over numpy's stable argsort (features rounded so
that ties occur). The page: every image it references exists, it parses with balanced
tags, data text is escaped, nothing external is linked. End to end: a 2-step training
on the prepared demo data, `dcinet report` through the CLI, and a headless Chromium
render that must not be blank (compared with the render of an empty page).
"""

import io
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dcinet_jax.evaluators import fgxmedia, ranking
from dcinet_jax.html_report import analysis, browser, page, thumbnails, write_report

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ('image', 'text', 'audio', 'video')


def _features(seed, sizes, num_classes, dim=6, decimals=None):
    """{modality: (features, labels)}: every class in every modality, a class signal plus
    noise; `decimals` rounds the features so that exact score ties occur."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, n in sizes.items():
        labels = rng.permutation(np.arange(n) % num_classes)
        x = 1.5 * np.eye(num_classes, dim)[labels] + rng.normal(size=(n, dim))
        out[m] = (np.round(x, decimals) if decimals is not None else x, labels)
    return out


# --------------------------------------------------------------------------- numbers

@pytest.mark.parametrize('exclude_self', [False, True])
def test_task_maps_are_the_evaluators(exclude_self):
    feats = _features(0, {'image': 23, 'text': 17, 'audio': 19, 'video': 11}, 4, decimals=1)
    results = fgxmedia.evaluate_features(feats, exclude_self=exclude_self, chunk_size=5)
    expected = {**results['bimodal'], **results['multimodal']}
    analyses = analysis.analyse(feats, num_classes=4, exclude_self=exclude_self, chunk_size=7)
    assert [a.spec.key for a in analyses] == list(expected)
    for a in analyses:
        assert a.mean_ap == expected[a.spec.key], a.spec.key   # the same scorer, exactly
    assert analyses[0].mean_ap == ranking.mean_average_precision(
        feats['image'][0], feats['image'][1], feats['text'][0], feats['text'][1])


def _sklearn_curve_and_ap(scores, relevant):
    from sklearn.metrics import average_precision_score, precision_recall_curve
    precision, recall, _ = precision_recall_curve(relevant, scores)
    precision, recall = precision[:-1], recall[:-1]   # drop sklearn's (recall 0, 1) end point
    interpolated = [precision[recall >= t - 1e-12].max() for t in analysis.RECALL_LEVELS]
    return np.array(interpolated), average_precision_score(relevant, scores)


@pytest.mark.parametrize('task', ['t2a', 'a2all'])
def test_pr_curve_and_class_ap_against_sklearn(task):
    num_classes = 3
    feats = _features(1, {'image': 12, 'text': 15, 'audio': 9}, num_classes)  # no ties
    result = {a.spec.key: a for a in analysis.analyse(feats, num_classes=num_classes,
                                                      exclude_self=True)}[task]
    q, ql = feats[result.spec.query]
    g = np.concatenate([feats[m][0] for m in result.spec.gallery])
    gl = np.concatenate([feats[m][1] for m in result.spec.gallery])
    start = dict(result.gallery_origin).get(result.spec.query)
    curves, aps = [], []
    for i in range(len(ql)):
        scores = g @ q[i] / np.linalg.norm(g, axis=1) / np.linalg.norm(q[i])
        keep = np.ones(len(gl), bool)
        if result.spec.exclude_self:
            keep[start + i] = False
        curve, ap = _sklearn_curve_and_ap(scores[keep], gl[keep] == ql[i])
        curves.append(curve)
        aps.append(ap)
    np.testing.assert_allclose(result.ap, aps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.precision, np.mean(curves, axis=0), rtol=0, atol=1e-12)
    per_class = [np.mean(np.array(aps)[ql == c]) for c in range(num_classes)]
    np.testing.assert_allclose(result.class_ap, per_class, rtol=0, atol=1e-12)
    assert result.precision[0] >= result.precision[-1] > 0


def test_pr_curve_hand_case():
    # One query, relevant at ranks 2 and 3 (R = 2): p = 1/2 at recall 1/2, 2/3 at recall 1;
    # interpolated: 2/3 at every level. A second query without relevant items adds 0.
    ranks = ranking.RelevantRanks(np.array([2, 3]), np.array([2, 0]))
    np.testing.assert_allclose(analysis.interpolated_pr_curve(ranks, np.array([0, .5, 1])),
                               [1 / 3, 1 / 3, 1 / 3])
    ranks = ranking.RelevantRanks(np.array([1, 4]), np.array([2]))
    np.testing.assert_allclose(analysis.interpolated_pr_curve(ranks, np.array([0, .5, .51, 1])),
                               [1, 1, .5, .5])


def _loop_top_k(q, g, k, self_indices=None):
    out = []
    for i, row in enumerate(ranking.normalise_rows(q) @ ranking.normalise_rows(g).T):
        order = [j for j in np.argsort(-row, kind='stable')
                 if self_indices is None or j != self_indices[i]]
        out.append(order[:k])
    return np.array(out)


@pytest.mark.parametrize('exclude_self', [False, True])
def test_top_k_and_confusions_against_a_loop(exclude_self):
    num_classes, k = 5, 4
    feats = _features(2, {'image': 20, 'text': 15, 'audio': 25}, num_classes, decimals=0)
    analyses = analysis.analyse(feats, num_classes=num_classes, exclude_self=exclude_self,
                                top_k=k, chunk_size=6)
    for a in analyses:
        q, ql = feats[a.spec.query]
        g = np.concatenate([feats[m][0] for m in a.spec.gallery])
        self_indices = None
        if a.spec.exclude_self:
            self_indices = dict(a.gallery_origin)[a.spec.query] + np.arange(len(ql))
        top = _loop_top_k(q, g, k, self_indices)
        idx, _ = analysis.top_k_retrieved(q, g, k, self_indices=self_indices, chunk_size=6)
        np.testing.assert_array_equal(idx, top)
        expected = np.zeros((num_classes, num_classes), np.int64)
        for i, row in enumerate(top):
            for j in row:
                if a.gallery_labels[j] != ql[i]:
                    expected[ql[i], a.gallery_labels[j]] += 1
        np.testing.assert_array_equal(a.confusion, expected)
        assert a.precision_at_k == pytest.approx(np.mean(a.gallery_labels[top] == ql[:, None]))
        for ex in a.examples:   # examples carry the same top-k
            np.testing.assert_array_equal(ex.retrieved, top[ex.query])


def test_examples_are_best_median_worst():
    assert analysis.example_positions(7, 3) == [('best', 0), ('median', 3), ('worst', 6)]
    assert analysis.example_positions(2, 3) == [('best', 0), ('worst', 1)]
    assert analysis.example_positions(9, 1) == [('median', 4)]
    a = analysis.analyse(_features(3, {'image': 16, 'text': 16}, 4), num_classes=4)[0]
    best, median, worst = a.examples
    assert (best.ap, worst.ap) == (a.ap.max(), a.ap.min())
    assert np.sum(a.ap > median.ap) <= 8 <= np.sum(a.ap >= median.ap)


# --------------------------------------------------------------------------- the page

def _jpeg(colour, size=(40, 30)):
    buf = io.BytesIO()
    Image.new('RGB', size, colour).save(buf, 'JPEG')
    return buf.getvalue()


class _Tags(HTMLParser):
    """Collects img sources, links and scripts, and checks non-void tags nest."""
    VOID = {'meta', 'img', 'br', 'link', 'input', 'hr'}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.links, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'img':
            self.images.append(attrs['src'])
        if tag in ('a', 'link', 'script'):
            self.links.append((tag, attrs.get('href') or attrs.get('src')))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f'unbalanced </{tag}>')


@pytest.fixture(scope='module')
def synthetic_report(tmp_path_factory):
    num_classes = 3
    feats = _features(4, {'image': 9, 'text': 6, 'audio': 6, 'video': 3}, num_classes)
    ids, items = {}, {}
    for m, (_, labels) in feats.items():
        ids[m] = [f'{m}/class_{c}/item<{i}>.x' for i, c in enumerate(labels)]
        colours = [(200, 40, 40), (40, 160, 60), (40, 60, 200)]
        payloads = {'text': lambda c: f'A <b>bird</b> & its "song" {c} ' * 20,
                    'video': lambda c: [_jpeg(colours[c]) for _ in range(5)]}
        make = payloads.get(m, lambda c: _jpeg(colours[c]))
        items[m] = [SimpleNamespace(id=ids[m][i], label=int(c), index=i, payload=make(c))
                    for i, c in enumerate(labels)]
    results = {'step': 3, **fgxmedia.evaluate_features(feats)}
    out = tmp_path_factory.mktemp('report') / 'r'
    index = write_report(out, features=feats, ids=ids, read_items=items.__getitem__,
                         class_names=['<script>x</script>', 'B & C'], num_classes=num_classes,
                         results=results, results_source='test', step=3, top_k=3)
    return index, results


def test_page_parses_and_every_image_exists(synthetic_report):
    index, results = synthetic_report
    text = index.read_text(encoding='utf-8')
    tags = _Tags()
    tags.feed(text)
    tags.close()
    assert not tags.errors and not tags.stack, (tags.errors, tags.stack)
    assert len(tags.images) > 20
    for src in tags.images:
        assert not src.startswith(('/', 'http', 'file:', 'data:')), src
        assert (index.parent / src).is_file(), src
    assert all(tag == 'a' and href.startswith('#') for tag, href in tags.links), tags.links
    # Every data string escaped; the evaluator's numbers and every task present.
    assert '<script>' not in text and '&lt;script&gt;x&lt;/script&gt;' in text
    assert 'B &amp; C' in text and 'class 2' in text and 'item&lt;0&gt;.x' in text
    assert '<b>bird' not in text and '&lt;b&gt;bird&lt;/b&gt;' in text
    for key, value in {**results['bimodal'], **results['multimodal']}.items():
        assert f'id="task-{key}"' in text and f'{value:.3f}' in text
    assert text.count('class="item q"') == 16 * 3


def test_rebuild_replaces_only_the_reports_own_folders(tmp_path):
    feats = _features(5, {'image': 4, 'audio': 4}, 2)
    items = {m: [SimpleNamespace(id=f'{m}/{i}', label=int(c), index=i, payload=_jpeg((9, 9, 9)))
                 for i, c in enumerate(f[1])] for m, f in feats.items()}
    kwargs = dict(features=feats, ids={m: [it.id for it in v] for m, v in items.items()},
                  read_items=items.__getitem__, class_names=['a', 'b'], num_classes=2,
                  results=fgxmedia.evaluate_features(feats), results_source='', step=1,
                  top_k=2, num_queries=1)
    (tmp_path / 'figures').mkdir()
    (tmp_path / 'figures' / 'mine.txt').write_text('kept')   # not a report folder yet
    write_report(tmp_path, **kwargs)
    assert (tmp_path / 'figures' / 'mine.txt').read_text() == 'kept'
    (tmp_path / 'thumbs' / 'stale.jpg').write_bytes(b'old')
    (tmp_path / 'notes.txt').write_text('kept')
    index = write_report(tmp_path, **kwargs)                 # now it is one of ours
    assert not (tmp_path / 'thumbs' / 'stale.jpg').exists()
    assert not (tmp_path / 'figures' / 'mine.txt').exists()
    assert (tmp_path / 'notes.txt').read_text() == 'kept'
    tags = _Tags()
    tags.feed(index.read_text(encoding='utf-8'))
    assert tags.images and all((tmp_path / s).is_file() for s in tags.images)


def test_thumbnails_video_strip_and_text_snippet(tmp_path):
    frames = [_jpeg((i * 40, 0, 0), (160, 120)) for i in range(6)]
    thumb = thumbnails.make_thumbnail('video', frames, tmp_path / 't', 'v', tmp_path)
    with Image.open(tmp_path / thumb.image) as im:
        assert im.height == thumbnails.THUMB_PX * 120 // 160
        assert im.width == 3 * thumbnails.THUMB_PX + 2 * 2   # three frames, 2 px apart
        reds = [im.getpixel((x, 10))[0] for x in (10, thumbnails.THUMB_PX + 12, im.width - 10)]
    np.testing.assert_allclose(reds, [0, 80, 200], atol=12)   # frames 0, 2 (of 0..5), 5
    snippet = thumbnails.make_thumbnail('text', 'word ' * 100, tmp_path, 't', tmp_path).text
    assert len(snippet) == thumbnails.SNIPPET_CHARS and snippet.endswith('…')
    with pytest.raises(ValueError, match='thumbnail bad: cannot decode'):
        thumbnails.make_thumbnail('image', b'not a jpeg', tmp_path, 'bad', tmp_path)


def test_markdown_tables_become_escaped_html():
    html_text = page.markdown_tables_to_html(
        'Step 4\n\n**Title <x>**\n\n| Method | i2t |\n|---|---:|\n| A&B | 0.500 |\n')
    assert '<h3>Title &lt;x&gt;</h3>' in html_text and '<th>i2t</th>' in html_text
    assert '<td>A&amp;B</td><td class="num">0.500</td>' in html_text
    assert '---' not in html_text and '<p>Step 4</p>' in html_text


# --------------------------------------------------------------------------- end to end

def _render_or_skip(index, png):
    if browser.find_browser() is None:
        pytest.skip('Chromium is not installed (apt-get install chromium; .ci/run does)')
    return browser.render_png(index, png)


def _random_checkpoint(config, workdir):
    """A step-1 checkpoint of random weights in the state's exact shapes (the report needs
    weights, not good ones; drawing them in numpy skips compiling the initializer)."""
    import jax
    from dcinet_jax import checkpoints, state
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        name = checkpoints.leaf_path(path)
        # BatchNorm variances stay positive, and its scales stay at 1: 0.1-sized scales
        # shrink the signal block by block until every item's features are one vector,
        # which evaluation rightly refuses as a collapsed model.
        if 'var' in name or name.endswith('scale'):
            return np.ones(leaf.shape, leaf.dtype)
        return (0.1 * rng.normal(size=leaf.shape)).astype(leaf.dtype)

    abstract = state.build_trainer(config, total_steps=1, check_batch=False).abstract_state()
    ckpt = checkpoints.Checkpointer(Path(workdir) / 'checkpoints', async_save=False,
                                    best_metric=config.eval.best_metric)
    ckpt.save(1, jax.tree_util.tree_map_with_path(draw, abstract),
              meta={'total_steps': 1, 'config': checkpoints.config_record(config)})
    ckpt.close()


@pytest.mark.slow
def test_cli_report_on_a_checkpoint_renders(test_config, demo_prepared_dir, tmp_path, capsys):
    from dcinet_jax import cli
    c = test_config.copy_and_resolve_references()
    c.data_dir = str(demo_prepared_dir)
    workdir = tmp_path / 'run'
    _random_checkpoint(c, workdir)
    cli.main(['report', '--config', str(REPO / 'configs/test.py'), '--workdir', str(workdir),
              f'--config.data_dir={demo_prepared_dir}', '--top_k', '3', '--queries', '2'])
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert index == workdir / 'report' / 'index.html'
    text = index.read_text(encoding='utf-8')
    assert 'No results file for this step' in text   # scored by the evaluator instead
    rows = re.findall(r'<td class="num">([0-9]\.[0-9]{4})</td><td class="num">(.*?)</td>'
                      r'<td class="num">[0-9.]+</td></tr>', text)
    assert len(rows) == 9 and all(a == b for a, b in rows), rows   # page = evaluator
    tags = _Tags()
    tags.feed(text)
    assert any(s.startswith('thumbs/image/') for s in tags.images)
    assert any(s.startswith('thumbs/audio/') for s in tags.images)
    assert all((index.parent / s).is_file() for s in tags.images)
    assert '001.' in text   # class names from the prepared ids' folders

    png = _render_or_skip(index, tmp_path / 'page.png')
    stats = browser.non_blank_stats(png)
    assert stats['colours'] > 1000 and stats['non_white'] > 0.03, stats
    with Image.open(png) as im:
        assert im.size == browser.WINDOW
        blank = Image.new('RGB', im.size, 'white')
    blank.paste(Image.new('RGB', (300, 20), 'black'), (10, 10))   # one line of "text"
    blank.save(tmp_path / 'blank.png')
    stats = browser.non_blank_stats(tmp_path / 'blank.png')
    assert stats['colours'] < 1000 or stats['non_white'] < 0.03   # the check can fail


def test_find_results_takes_the_file_of_the_step(tmp_path):
    from dcinet_jax.evaluators import report
    from dcinet_jax.html_report import build
    results = {'bimodal': {'i2t': 0.5}, 'multimodal': {'i2all': 0.25}}
    report.save_results(results, tmp_path, 5)
    found, source = build.find_results(tmp_path, 5)
    assert found['bimodal'] == {'i2t': 0.5} and 'eval/5/results.json' in source
    (tmp_path / 'eval' / '5' / 'results.json').unlink()
    assert build.find_results(tmp_path, 5)[0]['step'] == 5     # the latest file, same step
    assert build.find_results(tmp_path, 6) == (None, '')       # another step: none


def test_report_refuses_a_method_without_fgxmedia_retrieval(tmp_path):
    from dcinet_jax import cli
    with pytest.raises(SystemExit) as e:
        cli.main(['report', '--config', str(REPO / 'configs/dsffn_test.py'),
                  '--workdir', str(tmp_path)])
    assert "scored by the 'audiovisual' evaluator" in str(e.value)
    assert len(str(e.value).splitlines()) == 2   # the error line and the traceback hint
