"""DCINet / CCRN: the two-part contract, input handling, config errors, full-size tracing, bf16."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dcinet_fgxmedia
from dcinet_jax.models import CCRN, CUT_POINTS, build_model, dummy_inputs, init_variables

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def random_variables(abstract, seed=0):
    """Concrete variables for an abstract (eval_shape) tree, drawn in numpy.

    Why not `model.init`: compiling flax init costs seconds per model on a busy CPU, and
    these tests need only sensible values: fan-in scaled kernels, BN scales near 1 and
    non-trivial running statistics (so eval-mode BN is not the identity).
    """
    rng = np.random.default_rng(seed)

    def draw(path, a):
        leaf = path[-1].key
        if leaf == 'kernel' or leaf == 'embedding':
            return (rng.standard_normal(a.shape) / np.sqrt(max(np.prod(a.shape[:-1]), 1))).astype(np.float32)
        if leaf in ('scale', 'var'):
            return (0.5 + rng.random(a.shape)).astype(np.float32)
        return (0.1 * rng.standard_normal(a.shape)).astype(np.float32)  # bias, mean

    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture(scope='module')
def tiny(test_config):
    """(config, model, variables) of configs/test.py: bottleneck (1,1,1,1), width 4, 64 px."""
    model = build_model(test_config)
    abstract = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), test_config))
    return test_config, model, random_variables(abstract)


def batch(config, b=2, seed=0):
    rng = np.random.default_rng(seed)
    s, L = config.data.image_size, config.data.text_length
    return {'image': rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
            'audio': rng.integers(0, 256, (b + 1, s, s, 3), dtype=np.uint8),
            'text': rng.integers(0, 70, (b, L)).astype(np.int32)}


def test_ccrn_part2_of_part1_is_full_forward_for_every_cut():
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    kw = dict(stage_sizes=(1, 2, 1, 1), block='basic', num_filters=4, num_classes=3)
    init = functools.partial(CCRN(**kw, cut='layer1').init, train=False)
    v = random_variables(jax.eval_shape(init, jax.random.key(0), x))
    full = jax.jit(functools.partial(CCRN(**kw).apply, train=False))(v, x)
    maps = {}
    for cut in CUT_POINTS:
        m = CCRN(**kw, cut=cut)  # one variables tree serves every cut point

        @jax.jit
        def two_parts(v, x):
            h = m.apply(v, x, train=False, method='part1')
            return h, *m.apply(v, h, train=False, method='part2')

        h, logits, pooled = two_parts(v, x)
        np.testing.assert_allclose(logits, full, rtol=1e-5, atol=1e-5)
        assert logits.dtype == pooled.dtype == jnp.float32 and pooled.shape == (2, 32)
        maps[cut] = h.shape
    # 64 px: stem /4 -> 16; layer2..4 each /2; channels 4, 8, 16, 32 (basic block).
    assert maps == {'layer1': (2, 16, 16, 4), 'layer2': (2, 8, 8, 8),
                    'layer3': (2, 4, 4, 16), 'layer4': (2, 2, 2, 32)}
    with pytest.raises(ValueError, match="CCRN.cut must be one of"):
        CCRN(**kw, cut='layer5').apply(v, x, train=False, method='part1')


def test_outputs_order_and_modality_ids(tiny):
    config, model, v = tiny
    inputs = batch(config)
    apply = jax.jit(functools.partial(model.apply, train=False))
    out = apply(v, inputs)
    assert set(out) == {'logits', 'features', 'pooled', 'modality'}
    assert out['logits'].shape == (7, 4) and out['logits'].dtype == jnp.float32
    assert out['features'].shape == (7, 2, 2, 128) and out['pooled'].shape == (7, 128)
    assert out['pooled'].dtype == jnp.float32
    np.testing.assert_array_equal(out['modality'], [0, 0, 1, 1, 1, 2, 2])
    assert out['modality'].dtype == jnp.int32
    # Config order, whatever the dict order; eval mode is per-sample, so each modality
    # alone gives the same rows.
    rows = {'image': slice(0, 2), 'audio': slice(2, 5), 'text': slice(5, 7)}
    for m in ('audio',):  # the middle slot; the reordered call below covers the others
        sl = rows[m]
        alone = apply(v, {m: inputs[m]})
        np.testing.assert_allclose(alone['logits'], out['logits'][sl], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(alone['modality'], out['modality'][sl])
    reordered = apply(v, {'text': inputs['text'], 'image': inputs['image']})
    np.testing.assert_array_equal(reordered['modality'], [0, 0, 2, 2])
    np.testing.assert_allclose(reordered['logits'], out['logits'][np.r_[0:2, 5:7]], rtol=1e-5, atol=1e-5)
    # head on the un-interacted features reproduces the original-branch logits.
    head = jax.jit(functools.partial(model.apply, train=False, method='head'))(v, out['features'])
    np.testing.assert_allclose(head, out['logits'], rtol=1e-5, atol=1e-5)


def test_uint8_normalisation_equals_prenormalised_float(tiny):
    config, model, v = tiny
    x = batch(config)['image']
    apply = jax.jit(functools.partial(model.apply, train=False))
    pre = ((x / 255.0 - MEAN) / STD).astype(np.float32)
    np.testing.assert_allclose(apply(v, {'image': x})['logits'], apply(v, {'image': pre})['logits'],
                               rtol=1e-5, atol=1e-5)
    # and the raw 0..255 floats are *not* normalised (taken as already normalised)
    raw = apply(v, {'image': x.astype(np.float32)})['logits']
    assert np.abs(np.asarray(raw) - np.asarray(apply(v, {'image': x})['logits'])).max() > 1e-3


def test_train_mode_updates_stats_and_head_method(tiny):
    config, model, v = tiny
    out, upd = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(v, batch(config))
    assert jax.tree.structure(upd['batch_stats']) == jax.tree.structure(v['batch_stats'])
    before = np.asarray(v['batch_stats']['backbone']['bn1']['mean'])
    assert np.abs(np.asarray(upd['batch_stats']['backbone']['bn1']['mean']) - before).max() > 1e-4
    logits, upd2 = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats'],
                                             method='head'))(v, out['features'])
    assert logits.shape == (7, 4) and logits.dtype == jnp.float32
    # In train mode the head's BNs see the same batch, so logits equal the original branch.
    np.testing.assert_allclose(logits, out['logits'], rtol=1e-5, atol=1e-5)


def test_no_python_loop_over_batch(tiny):
    """The traced program does not grow with the batch size."""
    config, model, v = tiny
    sizes = [len(jax.make_jaxpr(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
        v, batch(config, b)).jaxpr.eqns) for b in (1, 4)]
    assert sizes[0] == sizes[1]


def test_bad_inputs_are_clear_errors(tiny):
    config, model, v = tiny
    with pytest.raises(ValueError, match=r"inputs \['video'\] not among modalities"):
        model.apply(v, {'video': batch(config)['image']}, train=False)
    with pytest.raises(ValueError, match='differ in image shape'):
        model.apply(v, {'image': np.zeros((1, 32, 32, 3), np.uint8),
                        'text': np.zeros((1, 64), np.int32)}, train=False)


@pytest.mark.parametrize('field,value,match', [
    ('data.text_length', 60, r'text_length \(60\) must equal config.data.image_size \(64\)'),
    ('model.backbone', 'resnet51', "backbone must be one of"),
    ('model.cut', 'layer0', "cut must be one of"),
    ('model.dtype', 'float16', "dtype must be one of"),
    ('model.block', 'wide', "'basic' or 'bottleneck'"),
    ('model.stage_sizes', (), "stage_sizes must hold 1-4 positive ints"),
    ('data.alphabet', 'greek', "alphabet must be one of"),
])
def test_build_model_config_errors(test_config, field, value, match):
    c = test_config.copy_and_resolve_references()
    section, name = field.split('.')
    setattr(getattr(c, section), name, value)
    with pytest.raises(ValueError, match=match):
        build_model(c)


def test_text_length_may_differ_without_text(test_config):
    c = test_config.copy_and_resolve_references()
    c.data.modalities, c.data.text_length = ('image', 'audio'), 60
    assert build_model(c).modalities == ('image', 'audio')


def test_full_size_resnet50_traces_forward_and_backward():
    """Paper config (ResNet50, 448 px, 3 x 8 batch) under eval_shape: shapes only, no memory."""
    config = dcinet_fgxmedia.get_config()
    model = build_model(config)
    abstract = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), config))
    assert abstract['params']['backbone']['layer4']['2']['conv3']['kernel'].shape == (1, 1, 512, 2048)
    inputs = dummy_inputs(model, config, batch_per_modality=8)

    def loss(params, stats):
        v = {'params': params, 'batch_stats': stats}
        out, upd = model.apply(v, inputs, train=True, mutable=['batch_stats'])
        logits2, upd = model.apply({'params': params, **upd}, out['features'], train=True,
                                   mutable=['batch_stats'], method='head')
        return jnp.mean(out['logits']) + jnp.mean(logits2), (out, upd)

    grads, (out, upd) = jax.eval_shape(jax.grad(loss, has_aux=True), abstract['params'], abstract['batch_stats'])
    assert out['logits'].shape == (24, 200) and out['features'].shape == (24, 14, 14, 2048)
    assert out['pooled'].shape == (24, 2048)
    assert jax.tree.structure(grads) == jax.tree.structure(abstract['params'])
    assert jax.tree.structure(upd['batch_stats']) == jax.tree.structure(abstract['batch_stats'])


def test_bfloat16_compute(test_config, tiny):
    """Same float32 params; bf16 compute; float32 logits close to the float32 forward.

    Tolerance: bf16 keeps 8 significant bits, so each rounding is off by up to 2^-9 =
    0.2% relative; ~12 conv/BN layers, each renormalised by BN, accumulate a few percent
    of the activation scale (measured: ~2% here). We allow 10% of the logit scale and
    require a correlation above 0.99; a wrong layer or a dropped normalisation breaks both.
    """
    _, model32, v = tiny
    c = test_config.copy_and_resolve_references()
    c.model.dtype = 'bfloat16'
    model16 = build_model(c)
    v16 = jax.eval_shape(lambda: init_variables(model16, jax.random.key(0), c))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v16))
    assert jax.tree.structure(v16) == jax.tree.structure(v)
    inputs = batch(test_config, b=4)
    (ref, _), (got, upd) = [jax.jit(functools.partial(m.apply, train=True, mutable=['batch_stats']))(v, inputs)
                            for m in (model32, model16)]
    assert got['logits'].dtype == jnp.float32 and got['pooled'].dtype == jnp.float32
    assert got['features'].dtype == jnp.bfloat16
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(upd))
    r, o = np.asarray(ref['logits']), np.asarray(got['logits'])
    scale = np.abs(r).max()
    assert np.abs(o - r).max() <= 0.1 * scale, (np.abs(o - r).max(), scale)
    assert np.corrcoef(o.ravel(), r.ravel())[0, 1] > 0.99


def test_text_norm_batch_standardises_the_text_image(test_config):
    """model.text_norm='batch': the text image is standardised per channel over the text
    batch in train mode (numpy reference on the same text net), and the running
    statistics move from their init by (1 - momentum) x the batch statistics."""
    c = test_config.copy_and_resolve_references()
    c.data.modalities = ('text',)
    plain = build_model(c)
    c.model.text_norm = 'batch'
    normed = build_model(c)
    ids = batch(c, b=3)['text']
    v = init_variables(normed, jax.random.key(1), c)
    to_image = lambda m, x, train: m._to_image('text', x, train)  # noqa: E731
    raw = np.asarray(plain.apply({'params': {'text_net': v['params']['text_net']}}, ids, False,
                                 method=to_image), np.float64)
    out, mutated = normed.apply(v, ids, True, method=to_image, mutable=['batch_stats'])
    mean, var = raw.mean(axis=(0, 1, 2)), raw.var(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(out), (raw - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    stats = mutated['batch_stats']['text_bn']
    np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * var, rtol=1e-4)
    # Eval mode uses the running statistics (here the initial ones: mean 0, var 1).
    np.testing.assert_allclose(np.asarray(normed.apply(v, ids, False, method=to_image)),
                               raw / np.sqrt(1 + 1e-5), atol=1e-5)
    c.model.text_norm = 'layer'
    with pytest.raises(ValueError, match='text_norm'):
        init_variables(build_model(c), jax.random.key(0), c)
