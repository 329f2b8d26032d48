"""HSLM through the method contract: the vocab/region plumbing from the data, the lr
decay, the 2-device step against the 1-device step on the same global batch, tracing of
the full configs, and `dcinet demo-data` / `train` / `eval` end to end on synthetic
precomp data with recall well above chance."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import hslm_coco, hslm_f30k, hslm_test
from dcinet_jax import cli, methods, parallel, state as state_lib
from dcinet_jax.evaluators import recall
from dcinet_jax.train_step import make_sharded_train_step

REPO = Path(__file__).resolve().parents[1]
hslm = methods.get('hslm')


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    """`dcinet demo-data --format precomp` output (read-only for the tests)."""
    out = tmp_path_factory.mktemp('hslm_demo')
    cli.main(['demo-data', '--format', 'precomp', '--out', str(out), '--classes', '6',
              '--per_class', '20'])
    return out


def _config(data_dir, **data):
    c = hslm_test.get_config()
    c.data_dir = str(data_dir)
    c.data.update(data)
    return c


def test_vocab_and_region_shape_come_from_the_data(demo_dir, tmp_path):
    from input_pipeline.precomp import captions, reader as precomp
    train = precomp.open_split(demo_dir, 'train')
    built = captions.Vocab.build(train.captions, min_count=4)
    c = _config(demo_dir)
    r = hslm.resolve(c)
    assert r.model.vocab_size == len(built) != c.model.vocab_size
    assert (r.data.num_regions, r.data.region_dim) == train.images.shape[1:]
    # A vocab JSON wins over building one.
    small = captions.Vocab.build(train.captions, min_count=1000)
    small.save(tmp_path / 'vocab.json')
    assert hslm.resolve(_config(demo_dir, vocab_path=str(tmp_path / 'vocab.json'))
                        ).model.vocab_size == len(small) < len(built)
    # Without data the config's fallbacks size the model (bench, summary).
    none = hslm.resolve(_config(tmp_path / 'absent'))
    assert (none.model.vocab_size, none.data.num_regions, none.data.region_dim) == (40, 6, 16)
    batch = hslm.synthetic_batch(jax.random.key(0), _config(demo_dir))
    assert batch['images'].shape == (8,) + train.images.shape[1:]
    lengths, tokens = np.asarray(batch['lengths']), np.asarray(batch['tokens'])
    assert tokens.max() < len(built) and (tokens[:, 0] == captions.START).all()
    assert all(tokens[i, n - 1] == captions.END and (tokens[i, n:] == 0).all()
               for i, n in enumerate(lengths))


def _triplet_reference(s, margin, excluded, hardest):
    """numpy loops: per positive i, captions k of row i and images j of column i."""
    total = 0.0
    for i in range(len(s)):
        row = [max(0.0, margin - s[i, i] + s[i, k]) for k in range(len(s)) if not excluded[i, k]]
        col = [max(0.0, margin - s[i, i] + s[j, i]) for j in range(len(s)) if not excluded[j, i]]
        reduce = max if hardest else sum
        total += (reduce(row) if row else 0.0) + (reduce(col) if col else 0.0)
    return total


def test_warm_up_sums_every_negative_then_the_hardest_only(demo_dir):
    """losses.all_negatives_triplet against numpy loops, and the method's switch from it
    to the hardest-negative loss after loss.warmup_epochs."""
    from dcinet_jax import losses
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, (6, 6)).astype(np.float32)
    same = np.zeros((6, 6), bool)
    same[0, 1] = same[1, 0] = True
    for mask in (None, same):
        excluded = np.eye(6, dtype=bool) | (same if mask is not None else False)
        every = losses.all_negatives_triplet(jnp.asarray(s), 0.2, negative_mask=mask)
        assert float(every) == pytest.approx(_triplet_reference(s, 0.2, excluded, False), rel=1e-5)
    c = _config(demo_dir)
    c.loss.negatives, c.loss.warmup_epochs = 'hardest', 1.5
    warm = hslm.warmup_steps(c)
    assert warm == round(1.5 * hslm.steps_per_epoch(c, 1))
    excluded = np.eye(6, dtype=bool)
    for step, hardest in ((0, False), (warm - 1, False), (warm, True)):
        got = float(hslm.triplet_loss(jnp.asarray(s), None, c, jnp.int32(step)))
        assert got == pytest.approx(_triplet_reference(s, 0.2, excluded, hardest), rel=1e-5)
    c.loss.negatives = 'all'
    assert float(hslm.triplet_loss(jnp.asarray(s), None, c, jnp.int32(10 * warm))) == \
        pytest.approx(_triplet_reference(s, 0.2, excluded, False), rel=1e-5)


def test_learning_rate_drops_at_the_configured_epoch(demo_dir):
    c = _config(demo_dir)
    c.optim.decay_epoch = 2
    spe = hslm.steps_per_epoch(c, 1)
    from input_pipeline.precomp import reader as precomp
    assert spe == precomp.open_split(demo_dir, 'train').num_captions // 8
    lr = hslm.learning_rate(c, 0)
    assert float(lr(2 * spe - 1)) == pytest.approx(c.optim.learning_rate)
    assert float(lr(2 * spe)) == pytest.approx(0.1 * c.optim.learning_rate)
    # Clipping before Adam: a gradient of norm 1e6 reaches Adam's first moment at norm 2.
    tx = hslm.optimizer(c, 10)
    p = {'w': jnp.ones(3)}
    up, opt = tx.update({'w': jnp.array([1e6, 0.0, 0.0])}, tx.init(p), p)
    np.testing.assert_allclose(opt[1][0].mu['w'], [(1 - c.optim.b1) * c.optim.grad_clip, 0, 0],
                               rtol=1e-5)
    np.testing.assert_allclose(up['w'], [-c.optim.learning_rate, 0, 0], rtol=1e-4)


def test_two_devices_give_the_one_device_update_on_the_global_batch(demo_dir):
    """Same global batch of 8, plain SGD (lr 1) so the update is the gradient itself:
    scores gathered over 2 devices give the 1-device gradient, loss and BN statistics."""
    c = _config(demo_dir)
    c.model.update(dropout_rate=0.0, num_relation_blocks=1, num_text_blocks=0)
    c.loss.negatives, c.loss.mask_same_image = 'hardest', True   # the reference loss
    batch = jax.tree.map(np.asarray, hslm.synthetic_batch(jax.random.key(1), c))
    batch['image_index'] = np.array([0, 0, 1, 2, 3, 3, 4, 5], np.int32)   # shared images
    tx = optax.sgd(1.0)
    results = []
    for n_dev in (1, 2):
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:n_dev]), (parallel.DATA_AXIS,))
        model = hslm.build_model(c, axis_name=parallel.DATA_AXIS)
        variables = hslm.init_variables(hslm.build_model(c), jax.random.key(0), c)
        p0 = jax.tree.map(np.array, variables['params'])
        state = jax.device_put(state_lib.create_train_state(variables, tx),
                               parallel.replicated(mesh))
        step = make_sharded_train_step(method=hslm, model=model, tx=tx, config=c, mesh=mesh)
        new, metrics = step(state, parallel.host_to_global(batch, parallel.batch_sharded(mesh)),
                            jax.random.key(3))
        results.append((jax.tree.map(np.asarray, (new.params, new.collections)),
                        {k: float(v) for k, v in metrics.items()}))
    (one, m1), (two, m2) = results
    assert m1['loss'] > 0 and m2['loss'] == pytest.approx(m1['loss'], rel=1e-5)
    assert m2['grad_norm'] == pytest.approx(m1['grad_norm'], rel=1e-4)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)
    moved = max(float(np.max(np.abs(a - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(p0)))
    assert moved > 1e-3


@pytest.mark.parametrize('config_module', [hslm_f30k, hslm_coco])
def test_full_configs_trace(config_module, tmp_path):
    """init + loss of the paper-sized model, traced only (36 x 2048 regions, batch 128)."""
    c = config_module.get_config()
    c.data_dir = str(tmp_path)          # no data: the config's sizes
    model = hslm.build_model(c)
    variables = jax.eval_shape(lambda: hslm.init_variables(model, jax.random.key(0), c))
    params = variables.pop('params')
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    assert 40e6 < n_params < 50e6, n_params   # docs/hslm.md: 43.8 M (F30K), 44.7 M (COCO)
    batch = jax.eval_shape(lambda: hslm.synthetic_batch(jax.random.key(1), c))
    loss, (new_vars, metrics) = jax.eval_shape(
        lambda p, v, b: hslm.loss_fn(p, v, b, jax.random.key(2), model=model, config=c,
                                     step=0), params, variables, batch)
    assert loss.shape == () and set(new_vars) == set(variables)
    assert jax.tree.structure(new_vars) == jax.tree.structure(variables)


def test_cli_train_and_eval_reach_recall_well_above_chance(demo_dir, tmp_path, capsys):
    run = tmp_path / 'run'
    config = ['--config', str(REPO / 'configs/hslm_test.py'),
              f'--config.data_dir={demo_dir}']
    cli.main(['train', *config, '--workdir', str(run), '--noprogress'])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    cli.main(['eval', *config, '--workdir', str(run)])
    out = capsys.readouterr().out
    assert 'i2t R@1' in out
    r = json.loads((run / 'eval' / str(summary['step']) / 'results.json').read_text())
    n_img = r['protocol']['test_images']
    chance = sum(v for k in (1, 5, 10) for v in recall.chance_recall(n_img, k=k).values())
    print({k: round(v, 1) for k, v in r.items() if isinstance(v, float)}, 'chance', chance)
    assert r['rsum'] > chance + 25 and r['dev_rsum'] > chance + 25
    assert r['selection'] == r['dev_rsum']
    assert r['data']['counts']['images']['test'] == n_img       # the results name their data
    # An ensemble with a second copy of the same run: two identical score matrices whose
    # mean is the single model's, so every number stays and the record says 2.
    # It is filed apart (eval/<step>/ensemble2/) and labelled, never over the run's own.
    cli.main(['eval', *config, '--workdir', str(run), f'--config.eval.ensemble_workdirs={run}'])
    step_dir = run / 'eval' / str(summary['step'])
    assert str(step_dir / 'ensemble2' / 'results.json') in capsys.readouterr().out
    e = json.loads((step_dir / 'ensemble2' / 'results.json').read_text())
    assert '| Ensemble of 2 runs |' in (step_dir / 'ensemble2' / 'results.md').read_text()
    assert json.loads((step_dir / 'results.json').read_text()) == r   # the run's own, intact
    assert e['protocol']['ensemble_size'] == 2 and r['protocol'].get('ensemble_size', 1) == 1
    assert e['rsum'] == pytest.approx(r['rsum']) and e['dev_rsum'] == r['dev_rsum']


def test_table4_ablation_variants():
    from configs import hslm_ablations as ablations
    assert set(ablations.PAPER_RSUM) == set(ablations.VARIANTS)
    assert sorted(ablations.PAPER_RSUM.values()) == sorted(
        row[-1] for row in recall.PAPER_ABLATION.values())
    expect = {'global': (False, True, 0, 0), 'local+self': (True, False, 0, 1),
              'global+local+mgcn': (True, True, 4, 3), 'full': (True, True, 4, 4)}
    for variant, switches in expect.items():
        m = ablations.get_config(variant).model
        assert (m.use_local, m.use_global, m.num_relation_blocks, m.num_text_blocks) == switches
    assert ablations.get_config('full@demo').model.num_relation_blocks == 2
    with pytest.raises(ValueError, match='ablation variant'):
        ablations.get_config('nope')
