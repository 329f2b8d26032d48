"""Every results.json names its data: the data card of each format, its fingerprint, and
the results files, sweep tables and report lines that carry it."""

import json
import os
import shutil
import types
from pathlib import Path

import ml_collections
import numpy as np

from dcinet_jax import evaluate, evaluators
from dcinet_jax.sweep import aggregate
from input_pipeline import data_card


def test_prepared_fgxmedia_card(demo_prepared_dir, test_config, tmp_path):
    from dcinet_jax.methods import dcinet
    config = test_config.copy_and_resolve_references()
    config.data_dir = str(demo_prepared_dir)
    card = dcinet.data_description(config)
    # conftest's demo: 4 classes x 6 items per modality and split; video 2 clips x 3 frames
    assert card['counts'] == {m: {'train': 24, 'test': 24}
                              for m in ('image', 'audio', 'text', 'video')}
    assert card['skipped'] == 0 and len(card['fingerprint']) == 16
    assert dcinet.data_description(config)['fingerprint'] == card['fingerprint']
    # Another source table (a changed file) gives another fingerprint.
    copy = tmp_path / 'prepared'
    shutil.copytree(demo_prepared_dir, copy)
    info_path = next(copy.glob('fg_xmedia/*/*/prepare_info.json'))
    info = json.loads(info_path.read_text())
    info['sources_digest'] = '0' * 64
    info_path.write_text(json.dumps(info))
    config.data_dir = str(copy)
    other = dcinet.data_description(config)
    assert other['counts'] == card['counts'] and other['fingerprint'] != card['fingerprint']
    config.data_dir = str(tmp_path / 'not_prepared')
    assert dcinet.data_description(config) is None


def test_precomp_and_vegas_cards_follow_size_and_mtime(tmp_path):
    from input_pipeline.demo import precomp, vegas_ave
    from dcinet_jax.methods import dsffn, hslm
    precomp.write_precomp_demo(tmp_path / 'pc', values=3, train_images=20, dev_images=4,
                               test_images=6, testall_images=7, feature_dim=8)
    c = ml_collections.ConfigDict({'data_dir': str(tmp_path / 'pc'),
                                   'data': {'vocab_path': 'vocab.json'}})
    card = hslm.data_description(c)
    assert card['counts'] == {'images': {'train': 20, 'dev': 4, 'test': 6, 'testall': 7},
                              'captions': {'train': 100, 'dev': 20, 'test': 30, 'testall': 35}}
    caps = tmp_path / 'pc' / 'test_caps.txt'
    st = caps.stat()
    os.utime(caps, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hslm.data_description(c)['fingerprint'] != card['fingerprint']

    info = vegas_ave.generate_av_features(tmp_path / 'av', 'ave', per_class=4)
    c = ml_collections.ConfigDict({'data_dir': str(tmp_path / 'av'),
                                   'data': {'name': 'ave', 'file': ''}})
    card = dsffn.data_description(c)
    assert card['counts'] == {'pairs': {'train': info['train'], 'test': info['test']}}
    assert data_card.one_line(card).startswith(f'data: vegas_ave {card["fingerprint"]}: pairs '
                                               f'{info["train"]}/{info["test"]} (train/test)')


class _Eval:
    @staticmethod
    def evaluate(outputs, config):
        return {'accuracy': float(outputs)}

    @staticmethod
    def format_table(results, name='This run', with_paper=False):
        return f'| accuracy |\n|---|\n| {results["accuracy"]} |'


def test_results_files_name_their_data(tmp_path):
    evaluators.register('card_eval', _Eval)
    card = data_card.card('precomp', '/x', {'images': {'test': 3}}, fingerprint='abc',
                          fingerprint_of='t')
    method = types.SimpleNamespace(eval_outputs=lambda m, v, c: 0.5, DEFAULT_EVALUATOR='card_eval',
                                   data_description=lambda c: card)
    config = ml_collections.ConfigDict({'eval': {'metrics': 'card_eval'}})
    results = evaluate.evaluate_variables(config, method, None, {}, step=7, workdir=tmp_path)
    saved = json.loads((tmp_path / 'eval/7/results.json').read_text())
    assert saved['data'] == card == results['data']
    assert (tmp_path / 'eval/results.md').read_text().strip().endswith(
        'data: precomp abc: images 3 (test)')
    assert evaluate.scalar_metrics(saved) == {'accuracy': 0.5}       # the card is no metric


def _finished_run(root: Path, workdir: str, accuracy: float, card) -> None:
    d = root / workdir
    (d / 'eval').mkdir(parents=True)
    (d / 'eval' / 'results.json').write_text(json.dumps(
        {'step': 1, 'accuracy': accuracy, 'data': card}))
    (d / 'status.json').write_text(json.dumps({'status': 'finished', 'exit_code': 0}))


def test_sweep_tables_carry_the_data_and_warn_when_it_differs(tmp_path, monkeypatch):
    card = data_card.card('fgxmedia', '/p', {'image': {'train': 5, 'test': 5}},
                          fingerprint='f1', fingerprint_of='t')
    other = dict(card, fingerprint='f2')
    plan = {'config': 'c.py', 'seeds': [0, 1], 'overrides': [], 'runs': [
        {'variant': 'a', 'seed': 0, 'workdir': 'a/s0'}, {'variant': 'a', 'seed': 1,
                                                         'workdir': 'a/s1'}]}
    _finished_run(tmp_path, 'a/s0', 0.5, card)
    _finished_run(tmp_path, 'a/s1', 0.7, card)
    monkeypatch.setattr(aggregate, 'is_finished', lambda w: True)
    agg = aggregate.aggregate(tmp_path, plan)
    assert set(agg['variants']['a']['metrics']) == {'accuracy'}      # counts are no metric
    assert np.isclose(agg['variants']['a']['metrics']['accuracy']['mean'], 0.6)
    md = aggregate.format_markdown(agg)
    assert 'Every run: data: fgxmedia f1: image 5/5 (train/test)' in md
    assert '| f1 |' in md
    shutil.rmtree(tmp_path / 'a/s1')
    _finished_run(tmp_path, 'a/s1', 0.7, other)
    md = aggregate.format_markdown(aggregate.aggregate(tmp_path, plan))
    assert 'WARNING: its runs used different data' in md and '| f2 |' in md


def test_a_card_that_cannot_be_built_never_loses_the_evaluation(tmp_path):
    evaluators.register('card_eval', _Eval)

    def broken(config):
        raise FileNotFoundError('/gone/vegas_feature_norm.h5: no such feature file')

    method = types.SimpleNamespace(eval_outputs=lambda m, v, c: 0.25,
                                   DEFAULT_EVALUATOR='card_eval', data_description=broken)
    config = ml_collections.ConfigDict({'eval': {'metrics': 'card_eval'}})
    evaluate.evaluate_variables(config, method, None, {}, step=3, workdir=tmp_path)
    saved = json.loads((tmp_path / 'eval/3/results.json').read_text())
    assert saved['accuracy'] == 0.25 and 'no such feature file' in saved['data']['error']
    assert (tmp_path / 'eval/results.md').read_text().strip().endswith(
        'data: data card not built: /gone/vegas_feature_norm.h5: no such feature file')
