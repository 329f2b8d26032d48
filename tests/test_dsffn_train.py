"""DSFFN end to end: the demo config trains on synthetic VEGAS-format features through the
generic loop and beats chance on both tasks; `dcinet train` / `dcinet eval` / `dcinet
bench` run it from the command line; the evaluator's protocol and table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import dsffn_demo, dsffn_test
from dcinet_jax import evaluators, methods, train
from dcinet_jax.evaluators import audiovisual
from input_pipeline.demo import vegas_ave as av_demo

REPO = Path(__file__).resolve().parents[1]


def test_method_and_evaluator_are_registered():
    m = methods.get('dsffn')
    assert m.DEFAULT_EVALUATOR == 'audiovisual'
    assert evaluators.get('audiovisual') is audiovisual
    c = dsffn_test.get_config()
    with pytest.raises(ValueError, match='data.batch_per_modality'):
        m.batch_rule(c, 3)


def test_optimizer_uses_sgd_for_the_centres_and_adam_for_the_net():
    import jax
    import jax.numpy as jnp
    c = dsffn_test.get_config()
    tx = methods.get('dsffn').optimizer(c, 10)
    params = {'centers': jnp.ones((3, 2)), 'head': {'w': jnp.ones((2,))}}
    grads = {'centers': jnp.full((3, 2), 2.0), 'head': {'w': jnp.full((2,), 2.0)}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates['centers'], -c.loss.center_lr * 2.0)   # plain SGD
    np.testing.assert_allclose(updates['head']['w'], -c.optim.learning_rate, rtol=1e-3)  # Adam
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_evaluator_on_hand_made_features():
    y = np.array([0, 0, 1, 1])
    perfect = {'visual': (np.array([[1, 0], [1, .1], [0, 1], [.1, 1]]), y),
               'audio': (np.array([[1, .2], [1, 0], [.2, 1], [0, 1]]), y)}
    swapped = {'visual': perfect['visual'], 'audio': (perfect['audio'][0], 1 - y)}
    outputs = {'test': {'aligned': perfect, 'shuffled': swapped},
               'info': {'dataset': 'ave', 'select_on': 'test', 'num_classes': 2}}
    c = dsffn_test.get_config()
    r = audiovisual.evaluate(outputs, config=c)
    assert r['a2v'] == r['v2a'] == r['average'] == 1.0
    # Every relevant item ranked last: AP = (1/3 + 2/4) / 2.
    assert r['shuffled_a2v'] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert r['selection'] == r['average'] and 'TEST SET' in r['protocol']['model_selection']
    assert r['protocol']['chance_a2v'] == pytest.approx(0.5)
    table = audiovisual.format_table(r, with_paper=True)
    assert '| DSFFN (paper) | 0.881 | 0.895 | 0.888 | 0.371 | 0.368 | 0.370 |' in table
    assert '| This run, aligned pairs (reference; partner-informed) |  |  |  | 1.000 |' in table
    bad = {'visual': (np.full((4, 2), np.nan), y), 'audio': perfect['audio']}
    with pytest.raises(ValueError, match='visual features: 4 of 4 items are not finite'):
        audiovisual.evaluate({'test': {'aligned': bad}}, config=c)


@pytest.mark.slow
def test_demo_config_trains_above_chance_on_synthetic_vegas(tmp_path):
    """configs/dsffn_demo.py on a synthetic VEGAS-format file (1024-d / 128-d, 10 classes,
    the last one absent from test): mAP well above chance on a2v and v2a."""
    av_demo.generate_av_features(tmp_path / 'data', 'vegas', per_class=50, seed=0)
    c = dsffn_demo.get_config()
    c.data_dir = str(tmp_path / 'data')
    c.num_epochs = 5
    summary = train.train_and_evaluate(c, tmp_path / 'run', progress=False)
    r = summary['results']
    chance = max(r['protocol']['chance_a2v'], r['protocol']['chance_v2a'])
    print({k: round(v, 3) for k, v in r.items() if isinstance(v, float)}, 'chance', chance)
    assert chance < 0.12
    assert r['a2v'] > 2.5 * chance and r['v2a'] > 2.5 * chance
    assert r['average'] > 3 * chance and r['val_average'] > 2.5 * chance
    assert r['selection'] == r['val_average']
    for key in ('shuffled_a2v', 'shuffled_v2a', 'self_a2v', 'self_v2a'):
        assert 0.0 < r[key] < 1.0
    assert r['protocol']['model_selection'].startswith('validation split')
    text = (tmp_path / 'run' / 'eval' / str(summary['step']) / 'results.md').read_text()
    assert 'shuffled partners (diagnostic)' in text


def _dcinet(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2')
    return subprocess.run([sys.executable, '-m', 'dcinet_jax', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_demo_data_train_and_eval(tmp_path):
    data, run = tmp_path / 'data', tmp_path / 'run'
    p = _dcinet('demo-data', '--format', 'vegas', '--out', str(data), '--per_class', '20')
    assert p.returncode == 0, p.stderr
    assert (data / 'vegas_feature_norm.h5').is_file() and 'synthetic vegas' in p.stdout
    config = ['--config', 'configs/dsffn_test.py', f'--config.data_dir={data}',
              '--config.data.visual_dim=1024', '--config.data.audio_dim=128',
              '--config.data.num_classes=10', '--config.num_train_steps=6']
    p = _dcinet('train', *config, '--workdir', str(run), '--noprogress')
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'shuffled partners (diagnostic)' in p.stdout
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary['step'] == 6
    p = _dcinet('eval', *config, '--workdir', str(run))
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'This run, aligned pairs' in p.stdout
    saved = json.loads((run / 'eval' / '6' / 'results.json').read_text())
    assert {'a2v', 'v2a', 'average', 'shuffled_average', 'self_average', 'val_average'} <= set(saved)
    # The results name their data: 9 classes x 5 test pairs (the demo's last class has none).
    assert saved['data']['format'] == 'vegas_ave'
    assert saved['data']['counts']['pairs']['test'] == 45


def test_cli_missing_feature_file_is_one_line(tmp_path):
    from dcinet_jax import cli
    with pytest.raises(SystemExit) as e:
        cli.main(['train', '--config', str(REPO / 'configs/dsffn_test.py'),
                  f'--config.data_dir={tmp_path / "none"}', '--workdir',
                  str(tmp_path / 'run'), '--noprogress'])
    assert 'no such feature file' in str(e.value) and 'Traceback' not in str(e.value)
    assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_cli_bench_runs_the_dsffn_step(tmp_path):
    from dcinet_jax import cli
    out = tmp_path / 'bench.json'
    cli.main(['bench', '--config', str(REPO / 'configs/dsffn_demo.py'), '--steps', '2',
              '--json_out', str(out)])
    r = json.loads(out.read_text())
    assert r['method'] == 'dsffn' and r['eval'] is None
    assert r['images_per_step'] == 32 and r['step_time_s'] > 0 and np.isfinite(r['final_loss'])


@pytest.mark.parametrize('variant,forms', [
    ('mfa', ('ce', 'shared_normalized')), ('intra', ('label_regression', 'per_modality_raw')),
    ('dis', ('ce', 'shared_normalized')), ('all', ('label_regression', 'per_modality_raw'))])
def test_loss_variants_and_ablations_run(variant, forms):
    import jax
    from configs import dsffn_ablations
    c = dsffn_ablations.get_config(f'{variant}@demo')
    c.data.update(visual_dim=64, audio_dim=16, batch_per_modality=8)
    c.model.update(encoder_width=256, channels=(8, 16, 32), head_hidden=32, embed_dim=8)
    c.loss.dis_loss, c.loss.centers = forms
    m = methods.get('dsffn')
    model = m.build_model(c)
    variables = dict(m.init_variables(model, jax.random.key(0), c))
    params = variables.pop('params')
    batch = m.synthetic_batch(jax.random.key(1), c)
    loss_and_grad = jax.jit(jax.value_and_grad(
        lambda p, v, b, r: m.loss_fn(p, v, b, r, model=model, config=c, step=0), has_aux=True))
    (loss, (new_vars, metrics)), grads = loss_and_grad(params, variables, batch,
                                                       jax.random.key(2))
    assert np.isfinite(float(loss)) and set(new_vars) == {'batch_stats'}
    assert ('center' in metrics) == c.loss.use_intra
    assert ('dis_visual' in metrics) == c.loss.use_dis
    assert ('mfa' in params) == c.loss.use_mfa
    centre_keys = {k for k in params if k.startswith('centers')}
    assert centre_keys == ({'centers'} if forms[1] == 'shared_normalized'
                           else {'centers_visual', 'centers_audio'})
    centre_grad = sum(float(np.abs(grads[k]).sum()) for k in centre_keys)
    assert (centre_grad > 0) == c.loss.use_intra



def test_sliced_loss_gradient_equals_the_global_batch_gradient():
    """Four device slices (vmap with the 'data' axis: synchronised BatchNorm, centre counts
    summed over slices, the sum scaled by the slice count): the averaged gradient is the
    gradient of the loss on the whole batch."""
    import jax
    c = dsffn_test.get_config()
    c.model.dropout = 0.0
    m = methods.get('dsffn')
    model, sliced_model = m.build_model(c), m.build_model(c, axis_name='data')
    variables = dict(m.init_variables(model, jax.random.key(0), c))
    params = variables.pop('params')
    batch = m.synthetic_batch(jax.random.key(1), c)
    batch['label'] = batch['label'].at[:3].set(0)            # unequal class counts per slice
    key = jax.random.key(2)

    def whole(p):
        return m.loss_fn(p, variables, batch, key, model=model, config=c, step=0)[0]

    def sliced(p):
        parts = jax.tree.map(lambda x: x.reshape((4, -1) + x.shape[1:]), batch)
        losses_ = jax.vmap(lambda b: m.loss_fn(p, variables, b, key, model=sliced_model,
                                               config=c, step=0, axis_name='data')[0],
                           axis_name='data')(parts)
        return losses_.mean()

    g_whole, g_sliced = jax.jit(jax.grad(whole))(params), jax.jit(jax.grad(sliced))(params)
    np.testing.assert_allclose(g_sliced['centers'], g_whole['centers'], rtol=1e-4, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g_sliced), jax.tree.leaves(g_whole)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5)
