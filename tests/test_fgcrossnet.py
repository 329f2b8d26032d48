"""FGCrossNet as a method (docs/fgcrossnet.md): the optimizer's x1000 centre-gradient
rule on a real step, label pairing over devices, sequential sampler, stages
(`init_from`), and the demo training through both stages on all 16 tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fgcrossnet_fgxmedia, fgcrossnet_test
from dcinet_jax import methods, parallel, state
from dcinet_jax.evaluators import fgxmedia
from dcinet_jax.methods import fgcrossnet
from input_pipeline import samplers


def _config(variant='stage2', **loss):
    c = fgcrossnet_test.get_config(variant)
    c.data_dir = ''
    c.data.image_size = c.data.text_length = 32   # unit tests: smallest maps, fast compiles
    for k, v in loss.items():
        c.loss[k] = v
    return c


def test_method_is_builtin_and_configs_build():
    assert methods.get('fgcrossnet') is fgcrossnet
    for v in fgcrossnet_fgxmedia.VARIANTS:
        c = fgcrossnet_fgxmedia.get_config(v)
        assert c.method == 'fgcrossnet'
    c = fgcrossnet_fgxmedia.get_config('stage2')
    assert tuple(c.data.modalities) == ('image', 'video', 'audio', 'text')
    assert (c.data.alphabet, c.data.text_mode, c.data.batch_per_modality) == ('original', 'last_line', 4)
    assert (c.loss.centre_weight, c.loss.ranking_weight, c.optim.weight_decay) == (0.001, 0.1, 0.0)
    assert fgcrossnet_fgxmedia.get_config('stage0').data.modalities == ('image',)
    with pytest.raises(ValueError, match='variant'):
        fgcrossnet_fgxmedia.get_config('nope')


def _init(config):
    model = fgcrossnet.build_model(config)
    variables = fgcrossnet.init_variables(model, jax.random.key(0), config)
    return model, variables


def test_model_tree_and_centres():
    c = _config()
    model, variables = _init(c)
    assert set(variables['params']) == {'net', 'centres'}
    assert variables['params']['centres'].shape == (4, 4)
    assert 'text_net' in variables['params']['net']
    batch = fgcrossnet.synthetic_batch(jax.random.key(1), c)
    out = model.apply(variables, {m: batch[m]['inputs'] for m in c.data.modalities}, train=False)
    assert out['logits'].shape == (16, 4)
    # concatenation order of the reference: image, video, audio, text
    assert np.asarray(out['modality']).tolist() == sum([[i] * 4 for i in range(4)], [])


def test_centre_gradient_scaled_by_1000_on_a_real_step():
    c = _config(centre_weight=0.001, ranking_weight=0.1, centre_grad_scale=1000.0)
    c.optim.learning_rate = 0.01
    assert fgcrossnet_fgxmedia.get_config().loss.centre_grad_scale == 1000.0
    model, variables = _init(c)
    batch = fgcrossnet.synthetic_batch(jax.random.key(2), c)
    params = variables['params']
    grads, _ = jax.grad(fgcrossnet.loss_fn, has_aux=True)(
        params, {'batch_stats': variables['batch_stats']}, batch, jax.random.key(3),
        model=model, config=c, step=jnp.int32(0))
    gc = np.asarray(grads['centres'])
    assert np.abs(gc).max() > 0
    tx = fgcrossnet.optimizer(c, 10)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    # First SGD-momentum step: update = -lr * grad; the centres' gradient x1000.
    np.testing.assert_allclose(np.asarray(updates['centres']), -0.01 * 1000 * gc, rtol=1e-5)
    # The centres' unscaled gradient is 0.001 * d(centre)/dC: x1000 gives d(centre)/dC itself.
    labels = fgcrossnet.dcinet_method.concat_labels(batch, c.data.modalities)
    logits = model.apply(variables, {m: batch[m]['inputs'] for m in c.data.modalities},
                         train=True, mutable=['batch_stats'])[0]['logits']
    want = np.zeros_like(gc)
    for k, y in enumerate(np.asarray(labels)):
        want[y] -= 2 * (np.asarray(logits[k]) - np.asarray(params['centres'][y])) / len(labels)
    np.testing.assert_allclose(1000 * gc, want, rtol=2e-3, atol=1e-5)
    leaf = lambda t: t['net']['backbone']['fc']['kernel']  # noqa: E731
    np.testing.assert_allclose(np.asarray(leaf(updates)), -0.01 * np.asarray(leaf(grads)),
                               rtol=1e-5, atol=1e-9)


def test_learning_rate_halves_every_three_epochs():
    c = fgcrossnet_fgxmedia.get_config('stage1')
    c.optim.steps_per_epoch = 10
    sched = fgcrossnet.learning_rate(c, 0)
    got = [float(sched(s)) for s in (0, 29, 30, 59, 60, 90)]
    np.testing.assert_allclose(got, [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4], rtol=1e-6)


def _one_step(config, devices, batch):
    mesh = jax.sharding.Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
    trainer = state.build_trainer(config, 10, mesh=mesh)
    st = trainer.init_state()
    batch = jax.device_put(batch, parallel.batch_sharded(mesh))
    new, metrics = trainer.sharded_step()(st, batch, jax.random.key(0))
    return jax.tree.map(np.asarray, new.params), {k: float(v) for k, v in metrics.items()}


@pytest.mark.slow
def test_two_devices_pair_every_logit_with_its_own_label():
    """The reference's 4-GPU run labels 12 of 16 rows wrongly; a sharded step here must
    give the single-device loss and update (BatchNorm synchronised)."""
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip('needs 2 host devices')
    c = _config(centre_weight=0.001, ranking_weight=0.1)
    c.optim.learning_rate = 0.01
    # Labels of every medium differ in order, so any mix-up of rows changes the CE.
    batch = jax.tree.map(np.asarray, fgcrossnet.synthetic_batch(jax.random.key(5), c))
    for i, m in enumerate(c.data.modalities):
        batch[m]['label'] = np.roll(np.arange(4, dtype=np.int32), i)
    p1, m1 = _one_step(c, devices[:1], batch)
    p2, m2 = _one_step(c, devices[:2], batch)
    for k in ('loss', 'loss_image', 'loss_video', 'loss_audio', 'loss_text', 'loss_centre',
              'loss_ranking'):
        assert m2[k] == pytest.approx(m1[k], rel=2e-4, abs=1e-5), k
    np.testing.assert_allclose(p2['centres'], p1['centres'], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p2['net']['backbone']['fc']['kernel'],
                               p1['net']['backbone']['fc']['kernel'], rtol=1e-3, atol=1e-6)


def test_sequential_sampler():
    s = samplers.sequential_schedule(10, 2, 4)
    assert s.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError):
        samplers.sequential_schedule(5, 2, 4)


def test_overlay_takes_matching_paths_and_can_skip_centres():
    fresh = {'params': {'net': {'a': jnp.zeros(2), 'b': jnp.zeros(3)}, 'centres': jnp.zeros((2, 2))}}
    saved = {'params': {'net': {'a': np.ones(2), 'b': np.ones(4)}, 'centres': np.ones((2, 2))}}
    out, taken, kept = fgcrossnet.overlay(fresh, saved)
    assert sorted(taken) == ['params/centres', 'params/net/a'] and kept == ['params/net/b']
    assert float(out['params']['net']['a'].sum()) == 2
    out, taken, _ = fgcrossnet.overlay(fresh, saved, skip=('params/centres',))
    assert taken == ['params/net/a'] and float(out['params']['centres'].sum()) == 0


def _chance(counts, num_classes, seed=0):
    """Every task's mAP with random features over balanced labels of the same counts,
    averaged over a few draws."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(8):
        rand = {m: (rng.normal(size=(n, num_classes)), np.arange(n) % num_classes)
                for m, n in counts.items()}
        r = fgxmedia.evaluate_features(rand)
        runs.append({**r['bimodal'], **r['multimodal']})
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


@pytest.mark.slow
def test_demo_trains_both_stages_above_chance_on_16_tasks(demo_prepared_dir, tmp_path):
    from dcinet_jax import train

    c1 = fgcrossnet_test.get_config('stage1')
    c1.data_dir = str(demo_prepared_dir)
    c1.num_epochs = 30
    s1 = train.train_and_evaluate(c1, tmp_path / 'stage1')
    assert s1['step'] == s1['total_steps']
    c2 = fgcrossnet_test.get_config('stage2')
    c2.data_dir = str(demo_prepared_dir)
    c2.num_epochs = 20
    c2.init_from = str(tmp_path / 'stage1')
    s2 = train.train_and_evaluate(c2, tmp_path / 'stage2')
    r = s2['results']
    tasks = {**r['bimodal'], **r['multimodal']}
    assert len(tasks) == 16 and r['protocol']['counts']['video'] == 8   # 4 classes x 2 videos
    chance = _chance(r['protocol']['counts'], c2.data.num_classes)
    low = {k: (round(v, 3), round(chance[k], 3)) for k, v in tasks.items() if v < chance[k] + 0.08}
    print({k: round(v, 3) for k, v in tasks.items()}, chance)
    assert not low, low
    # Stage 2 started from stage 1: its loss begins well below a fresh start's.
    assert s2['last_metrics']['loss_image'] < 1.2


def test_fgcrossnet_table_has_16_tasks_and_paper_rows():
    from dcinet_jax.evaluators import report
    rng = np.random.default_rng(0)
    feats = {m: (rng.normal(size=(n, 3)), np.arange(n) % 3)
             for m, n in (('image', 6), ('text', 6), ('audio', 6), ('video', 3))}
    r = fgxmedia.evaluate_features(feats)
    text = report.fgcrossnet_table({'run': r})
    header = text.splitlines()[2]
    assert header.startswith('| Method | i2t | i2a | i2v | t2i | t2a | t2v | a2i | a2t | a2v | v2i | v2t | v2a | Avg')
    assert '| I' not in header and '0.606' in text and '0.412' in text and '+Center' in text
    assert f'{r["bimodal"]["v2a"]:.3f}' in text


def test_stage0_uses_the_classification_evaluator():
    from dcinet_jax import evaluators
    c = fgcrossnet_fgxmedia.get_config('stage0')
    assert (c.eval.metrics, c.eval.best_metric) == ('classification', 'accuracy')
    assert fgcrossnet_fgxmedia.get_config('stage1').eval.metrics == 'fgxmedia'
    ev = evaluators.get('classification')
    r = ev.evaluate({'image': (np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]), np.array([0, 1, 1]))},
                    config=c)
    assert r['accuracy'] == pytest.approx(2 / 3)
    assert 'top-1 accuracy 0.667' in ev.format_table(r)


def test_quadruplet_sampler_gives_paper_batches():
    rng = np.random.default_rng(0)
    media = ('image', 'video', 'audio', 'text')
    labels = {m: rng.integers(0, 5, 40) for m in media}
    classes = samplers.quadruplet_classes(labels, 0, 0, 6, 4)
    for t in range(6):
        for j in range(4):
            c = classes[t, j]
            assert len(set(c.tolist())) == 3                     # three classes
            assert sorted(np.unique(c, return_counts=True)[1].tolist()) == [1, 1, 2]
    items = {m: samplers.quadruplet_schedule(labels, m, 0, 0, 6, 4) for m in media}
    for i, m in enumerate(media):
        np.testing.assert_array_equal(labels[m][items[m]], classes[:, :, i])
    again = samplers.quadruplet_schedule(labels, 'audio', 0, 0, 6, 4)
    np.testing.assert_array_equal(again, items['audio'])          # a function of (seed, epoch)
    assert not np.array_equal(samplers.quadruplet_schedule(labels, 'audio', 0, 1, 6, 4), again)
