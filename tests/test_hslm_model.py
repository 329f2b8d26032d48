"""HSLM's model against a PyTorch peer written from docs/hslm_model.md (tests/hslm_peer.py,
same weights): relation block, text attention (masked and reference forms), the BiGRU on a
padded batch vs each caption alone, text-to-image attention, similarity vectors, SAF with
masked BatchNorm statistics, full scores (train mode with dropout off, and eval mode);
padding invariance; caption chunks; ablation switches; initialisers; the full-size
parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from hslm_peer import (BN, relation_block, sim_vector, t, t2i, text_attention,  # noqa: E402
                       text_encoder, torch_gru, torch_scores)

from dcinet_jax.interaction import scan_attention  # noqa: E402
from dcinet_jax.models import hslm  # noqa: E402

ATOL = 3e-5
DIMS = dict(vocab_size=40, embed_dim=16, word_dim=8, sim_dim=8, relation_heads=2,
            relation_head_dim=8, num_relation_blocks=2, num_text_blocks=2)
NUM_IMAGES, NUM_REGIONS, REGION_DIM, MAX_LEN = 3, 6, 16, 10
LENGTHS = np.array([10, 4, 7, 2], np.int32)


# ----------------------------------------------------------------------------- fixtures

_JITTED = {}


def run(model, variables, *args, train, method=None, mutable=False):
    """model.apply under one jit per (model, train, method, mutable): XLA compiles dominate."""
    key = (model, train, method, mutable)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda v, *a: model.apply(
            v, *a, train=train, method=method, mutable=['batch_stats'] if mutable else False))
    return _JITTED[key](variables, *args)


def with_random_bn_and_gru(model, variables, seed):
    """Random BN affine parameters and running statistics (so no BN is the identity) and the
    GRU weights of a fresh torch GRU; returns (numpy variables, torch GRU)."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda x: np.array(x, np.float32), variables['params'])
    stats = jax.tree_util.tree_map(lambda x: np.asarray(rng.uniform(0.5, 1.5, x.shape), np.float32),
                                   variables['batch_stats'])

    def fill_bn(tree):
        for sub in tree.values():
            if isinstance(sub, dict) and set(sub) == {'scale', 'bias'}:
                sub['scale'] = np.asarray(rng.uniform(0.5, 1.5, sub['scale'].shape), np.float32)
                sub['bias'] = np.asarray(rng.normal(size=sub['bias'].shape) * 0.1, np.float32)
            elif isinstance(sub, dict):
                fill_bn(sub)
    fill_bn(params)
    text = params['text_encoder']
    gru = torch_gru(text['gru_forward'], text['gru_backward'], model.word_dim, model.embed_dim, seed)
    return {'params': params, 'batch_stats': stats}, gru


def random_variables(model, seed, data):
    """Variables of the model's shapes drawn in numpy (no init compile): U(+-1/sqrt(fan_in))."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *data, train=False))
    rng = np.random.default_rng(seed)
    drawn = jax.tree_util.tree_map(lambda x: np.asarray(rng.uniform(
        -1, 1, x.shape) / np.sqrt(x.shape[0] if len(x.shape) == 2 else 4), np.float32), shapes)
    return with_random_bn_and_gru(model, drawn, seed)


@pytest.fixture(scope='module')
def data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(NUM_IMAGES, NUM_REGIONS, REGION_DIM)).astype(np.float32)
    tokens = rng.integers(4, DIMS['vocab_size'], size=(len(LENGTHS), MAX_LEN)).astype(np.int32)
    tokens[np.arange(MAX_LEN)[None, :] >= LENGTHS[:, None]] = 0
    return images, tokens, LENGTHS


@pytest.fixture(scope='module')
def initialised(data):
    """The tiny model's own initial variables (one jitted init)."""
    return jax.jit(lambda: MODEL.init(jax.random.key(3), *data, train=False))()


@pytest.fixture(scope='module')
def full(initialised):
    variables, gru = with_random_bn_and_gru(MODEL, initialised, 0)
    return MODEL, variables, gru


MODEL = hslm.HSLM(dropout_rate=0.0, **DIMS)


# ----------------------------------------------------------------------------- pieces

def test_relation_block_train_and_eval(full):
    model, variables, _ = full
    p = variables['params']['image_encoder']['relation_0']
    s = variables['batch_stats']['image_encoder']['relation_0']
    x = np.random.default_rng(1).normal(size=(3, NUM_REGIONS, 16)).astype(np.float32)
    block = hslm.RelationBlock(16, 2, 8)
    y, new = block.apply({'params': p, 'batch_stats': s}, x, True, mutable=['batch_stats'])
    bn = BN(p['bn'], s['bn'])
    want = relation_block(t(x), p, bn, True, heads=2)
    np.testing.assert_allclose(np.asarray(y), want.numpy(), atol=ATOL)
    # running variance uses the unbiased batch variance, as PyTorch does
    np.testing.assert_allclose(np.asarray(new['batch_stats']['bn']['var']), bn.var.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new['batch_stats']['bn']['mean']), bn.mean.numpy(), atol=1e-6)
    y_eval = block.apply({'params': p, 'batch_stats': s}, x, False)
    np.testing.assert_allclose(np.asarray(y_eval), relation_block(t(x), p, BN(p['bn'], s['bn']),
                                                                  False, 2).numpy(), atol=ATOL)
    # a freshly initialised block is the identity (BN scale = bias = 0)
    fresh = block.init(jax.random.key(0), x, False)
    np.testing.assert_array_equal(np.asarray(block.apply(fresh, x, True, mutable=['batch_stats'])[0]), x)


def test_text_attention_masked_and_reference(full, data):
    _, variables, _ = full
    p = variables['params']['text_encoder']['text_attn_0']
    x = np.random.default_rng(2).normal(size=(len(LENGTHS), MAX_LEN, 8)).astype(np.float32)
    mask = hslm.word_mask(jnp.asarray(LENGTHS), MAX_LEN)
    masked = np.asarray(hslm.TextAttention(8, 'masked').apply({'params': p}, x, mask))
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(masked[b, :n], text_attention(t(x[b, :n]), p).numpy(), atol=ATOL)
    reference = np.asarray(hslm.TextAttention(8, 'reference').apply({'params': p}, x, mask))
    for b in range(len(LENGTHS)):       # every padded position is a key; M = padded length
        np.testing.assert_allclose(reference[b], text_attention(t(x[b]), p).numpy(), atol=ATOL)
    assert not np.allclose(reference[1, :LENGTHS[1]], masked[1, :LENGTHS[1]], atol=1e-3)


def test_text_encoder_padded_batch_equals_each_caption_alone(full, data):
    """Embedding, two text blocks and the BiGRU on a padded batch vs the torch peer run on
    each caption cut to its length (no packing, no sorting)."""
    model, variables, gru = full
    _, tokens, lengths = data
    words = np.asarray(run(model, variables, tokens, lengths, train=False,
                           method=hslm.HSLM.encode_captions))
    want = text_encoder(tokens, lengths, variables['params']['text_encoder'], gru)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(words[b, :n], want[b].numpy(), atol=ATOL)
    assert np.all(np.isfinite(words))


def test_t2i_attention_similarity_vectors_and_chunks():
    rng = np.random.default_rng(3)
    regions = scan_attention.l2norm(jnp.asarray(rng.normal(size=(2, NUM_REGIONS, 16)), jnp.float32))
    words = scan_attention.l2norm(jnp.asarray(rng.normal(size=(4, MAX_LEN, 16)), jnp.float32))
    mask = hslm.word_mask(jnp.asarray(LENGTHS), MAX_LEN)
    kernel = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(8,)), jnp.float32)
    attended = np.asarray(jax.jit(scan_attention.pairwise_t2i_attention)(regions, words, mask))

    def weighted_sum(r, w, k, b, chunk):
        v = scan_attention.local_similarity_vectors(r, w, mask, k, b, caption_chunk=chunk)
        return jnp.sum(v * jnp.sin(jnp.arange(v.size).reshape(v.shape))), v

    grads = {}
    for chunk in (0, 3):      # 3 does not divide the 4 captions: a padded last chunk
        (_, vectors), grads[chunk] = jax.jit(jax.value_and_grad(
            weighted_sum, argnums=(0, 1, 2, 3), has_aux=True), static_argnums=4)(
            regions, words, kernel, bias, chunk)
        for i in range(2):
            for j, n in enumerate(LENGTHS):
                r, w = t(regions[i]), t(words[j, :n])
                c = t2i(r, w)
                np.testing.assert_allclose(attended[i, j, :n], c.numpy(), atol=ATOL)
                np.testing.assert_allclose(np.asarray(vectors[i, j, :n]),
                                           sim_vector(c, w, kernel, bias).numpy(), atol=ATOL)
    for a, b in zip(grads[0], grads[3]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    assert np.all(np.isfinite(attended))


# ----------------------------------------------------------------------------- full scores

def test_scores_train_mode_match_peer_and_update_stats(full, data):
    """Train mode, dropout off: BN batch statistics everywhere (SAF: all pairs x real tokens);
    caption chunks give the same scores and statistics."""
    model, variables, gru = full
    scores, new = run(model, variables, *data, train=True, mutable=True)
    want, bns = torch_scores(variables, *data, gru, training=True)
    np.testing.assert_allclose(np.asarray(scores), want.numpy(), atol=ATOL)
    stats = new['batch_stats']
    np.testing.assert_allclose(np.asarray(stats['head']['saf_bn']['var']), bns['saf'].var.numpy(),
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(stats['head']['saf_bn']['mean']),
                               bns['saf'].mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats['head']['visual_pool']['bn_local']['mean']),
                               bns['bn_local'].mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats['image_encoder']['relation_1']['bn']['var']),
                               bns['relation_1'].var.numpy(), rtol=1e-4)
    chunked = hslm.HSLM(dropout_rate=0.0, caption_chunk=3, **DIMS)
    chunk_scores, chunk_new = run(chunked, variables, *data, train=True, mutable=True)
    np.testing.assert_allclose(np.asarray(chunk_scores), np.asarray(scores), atol=1e-6)
    np.testing.assert_allclose(np.asarray(chunk_new['batch_stats']['head']['saf_bn']['var']),
                               np.asarray(stats['head']['saf_bn']['var']), rtol=1e-5)


def test_scores_eval_mode_and_api(full, data):
    model, variables, gru = full
    images, tokens, lengths = data
    scores = np.asarray(run(model, variables, *data, train=False))
    want, _ = torch_scores(variables, *data, gru, training=False)
    np.testing.assert_allclose(scores, want.numpy(), atol=ATOL)
    assert scores.shape == (NUM_IMAGES, len(LENGTHS)) and np.all((scores > 0) & (scores < 1))
    regions = run(model, variables, images, train=False, method=hslm.HSLM.encode_images)
    words = run(model, variables, tokens, lengths, train=False, method=hslm.HSLM.encode_captions)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(regions), axis=-1), 1.0, atol=1e-5)
    split = run(model, variables, regions, words, lengths, train=False, method=hslm.HSLM.similarity)
    np.testing.assert_allclose(np.asarray(split), scores, atol=1e-6)


def test_padding_never_changes_a_score(full, data):
    """Eval mode: more padding, other ids in the padding and different batch-mates leave a
    caption's score as it is; the reference form's scores do move."""
    model, variables, _ = full
    images, tokens, lengths = data
    base = np.asarray(run(model, variables, *data, train=False))
    garbage = np.where(np.arange(MAX_LEN)[None] < lengths[:, None], tokens, 9).astype(np.int32)
    longer = np.full((len(lengths), MAX_LEN + 5), 7, np.int32)
    longer[:, :MAX_LEN] = garbage
    padded = np.asarray(run(model, variables, images, longer, lengths, train=False))
    np.testing.assert_allclose(padded, base, atol=1e-6)
    others = np.asarray(run(model, variables, images, garbage[::-1].copy(), lengths[::-1].copy(),
                            train=False))
    np.testing.assert_allclose(others[:, ::-1], base, atol=1e-6)
    reference = hslm.HSLM(dropout_rate=0.0, text_attn_padding='reference', **DIMS)
    ref_base = np.asarray(run(reference, variables, *data, train=False))
    ref_garbage = np.asarray(run(reference, variables, images, garbage, lengths, train=False))
    assert not np.allclose(ref_garbage[:, :3], ref_base[:, :3], atol=1e-5)
    np.testing.assert_allclose(ref_garbage[:, 0], ref_base[:, 0], atol=1e-6)   # no padding there


@pytest.mark.parametrize('switches', [
    dict(num_relation_blocks=0, num_text_blocks=0, use_global=False),
    dict(use_local=False)], ids=['no-blocks-local-only', 'global-only'])
def test_ablation_switches_match_peer(data, switches):
    dims = {**DIMS, **switches}
    model = hslm.HSLM(dropout_rate=0.0, **dims)
    variables, gru = random_variables(model, 5, data)
    scores = np.asarray(run(model, variables, *data, train=False))
    want, _ = torch_scores(variables, *data, gru, training=False,
                           use_local=dims.get('use_local', True),
                           use_global=dims.get('use_global', True))
    np.testing.assert_allclose(scores, want.numpy(), atol=ATOL)


def test_bad_switches_and_full_size_parameter_count():
    images, tokens, lengths = jnp.zeros((2, 36, 2048)), jnp.zeros((2, 12), jnp.int32), jnp.array([12, 5])
    for bad in (dict(use_local=False, use_global=False), dict(text_attn_padding='unmasked')):
        with pytest.raises(ValueError):
            jax.eval_shape(lambda: hslm.HSLM(vocab_size=40, **bad).init(
                jax.random.key(0), images[:, :2, :4], tokens, lengths, train=False))

    def count(vocab):
        shapes = jax.eval_shape(lambda: hslm.HSLM(vocab_size=vocab).init(
            jax.random.key(0), images, tokens, lengths, train=False))
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes['params']))
    # spec: 43.8 M (F30K vocab 8,481) / 44.7 M (COCO 11,353); the reference's PyTorch
    # count at F30K is 43,799,498 (the GRU with its six biases per direction)
    assert count(8481) == 43_799_498
    assert count(11353) == 44_661_098


def test_initialisers(initialised):
    p = initialised['params']
    emb = np.asarray(p['text_encoder']['embed']['embedding'])
    assert np.abs(emb).max() <= 0.1 and np.abs(emb).max() > 0.05
    gru = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p['text_encoder']['gru_forward'])])
    assert np.abs(gru).max() <= 1 / np.sqrt(16) + 1e-7 and np.abs(gru).max() > 0.2
    assert np.all(np.asarray(p['image_encoder']['fc']['bias']) == 0)
    assert np.all(np.asarray(p['text_encoder']['text_attn_0']['key']['bias']) == 0)
    assert np.all(np.asarray(p['image_encoder']['relation_0']['bn']['scale']) == 0)
    theta_bias = np.asarray(p['image_encoder']['relation_0']['theta']['bias'])
    assert np.abs(theta_bias).max() <= 1 / 4 + 1e-7 and np.any(theta_bias != 0)
    xavier = np.sqrt(6 / (16 + 8))
    local = np.asarray(p['head']['local_sim_kernel'])
    assert np.abs(local).max() <= xavier and np.abs(local).max() > 0.5 * xavier


def test_masked_batchnorm_sums_statistics_over_devices():
    """With `axis_name`, two 'devices' (a named vmap axis) normalise and update running
    statistics exactly as one device holding both halves (masked entries excluded)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 5, 1)).astype(np.float32) * 2 + 1
    mask = rng.uniform(size=(2, 3, 5)) < 0.6
    x[~mask] = 1e3                                  # masked entries must not move anything
    variables = {'params': {'scale': np.array([1.3], np.float32), 'bias': np.array([0.2], np.float32)},
                 'batch_stats': {'mean': np.zeros(1, np.float32), 'var': np.ones(1, np.float32)}}
    single, single_stats = hslm.MaskedBatchNorm().apply(
        variables, x.reshape(6, 5, 1), mask.reshape(6, 5), True, mutable=['batch_stats'])
    sharded, sharded_stats = jax.vmap(
        lambda xs, ms: hslm.MaskedBatchNorm(axis_name='d').apply(
            variables, xs, ms, True, mutable=['batch_stats']), axis_name='d')(x, mask)
    np.testing.assert_allclose(np.asarray(sharded).reshape(6, 5, 1)[mask.reshape(6, 5)],
                               np.asarray(single)[mask.reshape(6, 5)], atol=1e-5)
    bn = BN(variables['params'], variables['batch_stats'])
    want = bn(t(x[mask]), True)                     # torch over the selected entries only
    np.testing.assert_allclose(np.asarray(single)[mask.reshape(6, 5)], want.numpy(), atol=1e-5)
    for key in ('mean', 'var'):
        np.testing.assert_allclose(np.asarray(sharded_stats['batch_stats'][key][0]),
                                   getattr(bn, key).numpy(), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(single_stats['batch_stats'][key]),
                                   getattr(bn, key).numpy(), rtol=1e-5)


def test_build_reads_the_config():
    from configs import hslm_test
    config = hslm_test.get_config()
    m = config.model
    m.vocab_size, m.embed_dim, m.word_dim, m.sim_dim = 41, 24, 12, 10
    m.relation_heads, m.relation_head_dim = 3, 8
    m.caption_chunk = 4
    m.text_attn_padding = 'reference'
    model = hslm.build(config, bn_axis_name='batch')
    assert (model.vocab_size, model.embed_dim, model.word_dim, model.sim_dim) == (41, 24, 12, 10)
    assert (model.relation_heads, model.relation_head_dim, model.caption_chunk) == (3, 8, 4)
    assert model.text_attn_padding == 'reference' and model.bn_axis_name == 'batch'
    assert model.dropout_rate == float(config.model.dropout_rate)
