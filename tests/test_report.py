"""Markdown tables, the paper's reference numbers and the results files."""

import json

import numpy as np
import pytest

from dcinet_jax.evaluators import fgxmedia, report


def tiny_results(exclude_self=False):
    """Results of image i0 [1,0] (0), i1 [0,1] (1); text t0 [.6,.8] (0), t1 [.8,.6] (1)."""
    feats = {'image': (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])),
             'text': (np.array([[0.6, 0.8], [0.8, 0.6]]), np.array([0, 1]))}
    return fgxmedia.evaluate_features(feats, exclude_self=exclude_self)


def test_format_table_lists_every_task_with_three_decimals():
    res = tiny_results()
    text = report.format_table(res)
    for key in ['i2t', 't2i', 'i2all', 't2all', 'Avg']:
        assert f' {key} |' in text
    assert '| This run | 0.500 | 0.500 | 0.500 |' in text
    assert '| This run | 0.833 | 0.750 | 0.792 |' in text
    paper = report.paper_reference_table()
    for value in ['0.242', '0.572', '0.294', '0.585', '0.205', '0.357', '0.535', '0.238',
                  '0.458', '0.411', '0.340', '0.397', '0.366', '0.412']:
        assert value in paper
    assert 'real' in paper and 'paper' in paper
    assert '| Method | i2t | i2a | t2i | t2a | a2i | a2t | Avg |' in paper
    assert '| Method | i2all | t2all | a2all | Avg |' in paper
    side = report.format_table(res, with_paper=True)
    assert '0.357' in side and 'This run' in side
    assert fgxmedia.format_table(res, name='mine').count('| mine |') == 2


def test_format_table_marks_missing_numbers_and_step():
    res = {'bimodal': {'i2t': 0.25, 't2i': float('nan')}, 'multimodal': {'i2all': 0.5},
           'bimodal_average': None, 'multimodal_average': 0.5, 'step': 42}
    text = report.format_table(res, with_paper=True)
    assert text.startswith('Step 42\n')
    assert '| This run | 0.250 | — | — |' in text
    # Paper rows without per-task numbers show dashes for every task column.
    assert '| ResNet50 baseline, no CMSI/CMCI (paper, real FG-XMedia) | — | 0.397 |' in text


def test_save_results_writes_documented_files(tmp_path):
    res = tiny_results()
    paths = report.save_results(res, tmp_path, step=1200)
    assert 'step' not in res  # the caller's dict is left alone
    assert paths['step_json'] == tmp_path / 'eval' / '1200' / 'results.json'
    assert paths['latest_json'] == tmp_path / 'eval' / 'results.json'
    assert paths['step_md'] == tmp_path / 'eval' / '1200' / 'results.md'
    assert paths['latest_md'] == tmp_path / 'eval' / 'results.md'
    for key in ('step_json', 'latest_json'):
        data = json.loads(paths[key].read_text())
        assert data['step'] == 1200
        assert set(data) == {'bimodal', 'multimodal', 'bimodal_average', 'multimodal_average',
                             'protocol', 'step'}
        assert data['multimodal']['i2all'] == pytest.approx(5 / 6, abs=1e-12)
        assert data['protocol']['multimodal_gallery_order'] == ['image', 'text']
    assert 'i2all' in paths['latest_md'].read_text()
    report.save_results(tiny_results(exclude_self=True), tmp_path, 1300)
    latest = json.loads((tmp_path / 'eval' / 'results.json').read_text())
    assert latest['step'] == 1300 and latest['multimodal']['i2all'] == pytest.approx(0.5)
    assert json.loads(paths['step_json'].read_text())['step'] == 1200
    leftovers = [p for p in tmp_path.rglob('*') if p.name.endswith('.tmp')]
    assert leftovers == []


def test_save_results_writes_an_evaluators_own_markdown(tmp_path):
    paths = report.save_results({'accuracy': 0.5}, tmp_path, 3, markdown='| run | 0.500 |')
    assert paths['step_md'].read_text() == '| run | 0.500 |\n'
    assert paths['latest_md'].read_text() == '| run | 0.500 |\n'
    assert json.loads(paths['latest_json'].read_text()) == {'accuracy': 0.5, 'step': 3}


def test_save_results_writes_numpy_values_and_rejects_others(tmp_path):
    res = dict(tiny_results())
    res['extra'] = {'count': np.int64(3), 'curve': np.array([0.5, 0.25])}
    paths = report.save_results(res, tmp_path, step=np.int32(7))
    data = json.loads(paths['latest_json'].read_text())
    assert data['extra'] == {'count': 3, 'curve': [0.5, 0.25]} and data['step'] == 7
    res['extra'] = object()
    with pytest.raises(TypeError, match='cannot write object'):
        report.save_results(res, tmp_path, step=8)
    assert not (tmp_path / 'eval' / '8').exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'sub' / 'results.md'
    report.atomic_write_text(path, 'old\n')
    assert path.read_text() == 'old\n'
    with pytest.raises(TypeError):
        report.atomic_write_text(path, b'bytes are not text')
    assert path.read_text() == 'old\n'
    assert [p.name for p in path.parent.iterdir()] == ['results.md']
