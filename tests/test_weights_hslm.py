"""dcinet_jax/weights/hslm.py: the public HSLM checkpoint in and out.

A PyTorch model with the public code's names (tests/hslm_public_peer.py) is seeded, saved
as the public train.py saves it (`torch.save({'model': [...], 'opt': Namespace, ...})`),
read with `weights.files` and imported; its scores equal ours on the same inputs
(padded batch vs our 'reference' text attention; each caption alone vs our default
'masked' one). Export -> import is bit-exact through .pth and .safetensors and the export
loads strictly into the PyTorch model. Refusals: a pickled nn.Module, another method's
state dict, a missing and a mis-shaped key: one line each, nothing written."""

import argparse
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

import hslm_public_peer as peer  # noqa: E402

from configs import hslm_test  # noqa: E402
from dcinet_jax.models import hslm as hslm_model  # noqa: E402
from dcinet_jax.weights import files, hslm  # noqa: E402

RTOL = 1e-4
LENGTHS = np.array([7, 3, 5, 2], np.int32)


@pytest.fixture(scope='module')
def config():
    c = hslm_test.get_config()
    c.model.dropout_rate = 0.0
    c.model.relation_heads = 4           # the public layout: theta, theta1, theta2, theta3
    c.model.relation_head_dim = 8
    return c


@pytest.fixture(scope='module')
def data(config):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, config.data.num_regions, config.data.region_dim)).astype(np.float32)
    tokens = rng.integers(4, config.model.vocab_size, size=(len(LENGTHS), LENGTHS.max()))
    tokens[np.arange(LENGTHS.max())[None] >= LENGTHS[:, None]] = 0
    return images, tokens.astype(np.int32), LENGTHS


@pytest.fixture(scope='module')
def fresh(config, data):
    model = hslm_model.build(config)
    return jax.jit(lambda: model.init(jax.random.key(1), *data, train=False))()


def public_checkpoint(parts, config):
    opt = argparse.Namespace(data_name='f30k_precomp', vocab_path='./vocab/', img_dim=16,
                             vocab_size=int(config.model.vocab_size), word_dim=16,
                             embed_size=32, sim_dim=16, num_layers=1, bi_gru=True)
    return {'epoch': 3, 'model': [p.state_dict() for p in parts], 'best_rsum': 123.4,
            'opt': opt, 'Eiters': 99}


@pytest.fixture(scope='module')
def imported(config, fresh, tmp_path_factory):
    parts = peer.build(config)
    path = tmp_path_factory.mktemp('hslm') / 'model_best.pth.tar'
    torch.save(public_checkpoint(parts, config), path)
    obj = files.load_torch_file(path, hslm.ALLOWED_GLOBALS)
    return parts, hslm.import_state(obj, fresh, config), obj


def ours(config, variables, images, tokens, lengths, padding='masked'):
    model = hslm_model.build(config).clone(text_attn_padding=padding)
    return np.asarray(jax.jit(lambda v, *a: model.apply(v, *a, train=False))(
        variables, images, tokens, lengths))


def test_imported_public_checkpoint_scores_like_pytorch(config, data, imported):
    parts, variables, _ = imported
    images, tokens, lengths = data
    # padded batch: the public text attention takes every padded position as a key
    want = peer.scores(parts, images, tokens, lengths)
    np.testing.assert_allclose(ours(config, variables, *data, padding='reference'), want, rtol=RTOL)
    # each caption alone (no padding): our default, masked form
    alone = np.concatenate([peer.scores(parts, images, tokens[j:j + 1, :n], lengths[j:j + 1])
                            for j, n in enumerate(lengths)], axis=1)
    got = ours(config, variables, *data)
    np.testing.assert_allclose(got, alone, rtol=RTOL)
    assert not np.allclose(got, want, rtol=RTOL)           # the two forms do differ
    # the GRU's six biases arrive unfolded
    gru = variables['params']['text_encoder']['gru_backward']
    hidden = config.model.embed_dim
    np.testing.assert_array_equal(
        gru['hz']['bias'], parts[1].cap_rnn.bias_hh_l0_reverse[hidden:2 * hidden].numpy())
    np.testing.assert_array_equal(
        variables['batch_stats']['head']['saf_bn']['var'],
        parts[2].cal_sim_base_atten.bn.running_var.numpy())


@pytest.mark.parametrize('fmt,suffix', [('pytorch', '.pth'), ('safetensors', '.safetensors')])
def test_export_import_round_trip_is_bit_exact(config, fresh, imported, tmp_path, fmt, suffix):
    parts, variables, _ = imported
    path = files.save(hslm.export_state(variables, config), tmp_path / f'out{suffix}', fmt)
    obj = files.load_torch_file(path, hslm.ALLOWED_GLOBALS)
    assert isinstance(obj['opt'], argparse.Namespace) and obj['opt'].vocab_size == 40
    again = hslm.import_state(obj, fresh, config)
    flat = jax.tree_util.tree_leaves_with_path(variables)
    other = dict(jax.tree_util.tree_leaves_with_path(again))
    assert len(flat) == len(other)
    for key, value in flat:
        assert np.asarray(other[key]).dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(np.asarray(other[key]), np.asarray(value), err_msg=str(key))
    if fmt == 'pytorch':      # what the public evaluation.py does: strict load_state_dict
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(path, weights_only=True)
        loaded = peer.build(config, seed=5)
        for part, state, original in zip(loaded, saved['model'], parts):
            part.load_state_dict(state, strict=True)
            for name, tensor in original.state_dict().items():
                if not name.endswith('num_batches_tracked'):
                    assert torch.equal(part.state_dict()[name], tensor), name


def test_shape_only_variables_import(config, data, imported):
    """The variables given may be ShapeDtypeStructs (jax.eval_shape): same result."""
    _, variables, obj = imported
    model = hslm_model.build(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), *data, train=False))
    again = hslm.import_state(obj, shapes, config)
    for (k, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(variables),
                              jax.tree_util.tree_leaves_with_path(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(k))


def test_refusals_are_one_line_each_and_write_nothing(config, fresh, imported, tmp_path):
    parts, _, obj = imported
    before = sorted(os.listdir(tmp_path))
    module_file = tmp_path / 'whole.pth'
    torch.save(parts[0], module_file)
    with pytest.raises(ValueError) as e:
        files.load_torch_file(module_file, hslm.ALLOWED_GLOBALS)
    assert 'refused' in str(e.value) and len(str(e.value).splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(before + ['whole.pth'])

    other_method = {'conv1.weight': np.zeros((64, 3, 7, 7), np.float32),
                    'fc.weight': np.zeros((200, 2048), np.float32)}
    with pytest.raises(ValueError) as e:
        hslm.import_state(other_method, fresh, config, source='resnet.pth')
    message = str(e.value)
    assert message.startswith('resnet.pth: not an HSLM checkpoint') and 'conv1.weight' in message
    assert len(message.splitlines()) == 1

    missing = {**obj, 'model': [dict(obj['model'][0]), *obj['model'][1:]]}
    del missing['model'][0]['IM_GCN_2.theta1.weight']
    with pytest.raises(ValueError) as e:
        hslm.import_state(missing, fresh, config, source='m.pth')
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[1].strip() == (
        '1 missing key(s): img_enc.IM_GCN_2.theta1.weight')

    shaped = {**obj, 'model': [obj['model'][0], dict(obj['model'][1]), obj['model'][2]]}
    shaped['model'][1]['cap_rnn.weight_hh_l0'] = np.zeros((96, 31), np.float32)
    with pytest.raises(ValueError) as e:
        hslm.import_state(shaped, fresh, config, source='m.pth')
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and 'mis-shaped' in lines[1]
    assert 'txt_enc.cap_rnn.weight_hh_l0 (96, 31)' in lines[1]

    other_vocab = {**obj, 'opt': argparse.Namespace(**{**vars(obj['opt']), 'vocab_size': 50}),
                   'model': [obj['model'][0], dict(obj['model'][1]), obj['model'][2]]}
    other_vocab['model'][1]['embed.weight'] = np.zeros((50, 16), np.float32)
    with pytest.raises(ValueError) as e:
        hslm.import_state(other_vocab, fresh, config, source='m.pth')
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and 'txt_enc.embed.weight' in lines[1]
    assert 'opt.vocab_size=50 vs 40 here' in lines[2]

    built_vocab = config.copy_and_resolve_references()
    built_vocab.data.vocab_path = ''        # a vocabulary built from captions: other ids
    with pytest.raises(ValueError) as e:
        hslm.import_state(obj, fresh, built_vocab, source='m.pth')
    assert 'data.vocab_path' in str(e.value) and len(str(e.value).splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(before + ['whole.pth'])


def test_eval_weights_on_demo_data_equals_recall_of_the_pytorch_scores(tmp_path):
    """`dcinet eval --weights` (commands.evaluate_weights, as the CLI calls it) on a demo
    precomp folder: results.json's recalls are those of the PyTorch model's own score
    matrix (each caption alone) on the test split, and it records what was evaluated."""
    import json

    from dcinet_jax.evaluators import recall
    from dcinet_jax.methods import hslm as hslm_method
    from dcinet_jax.weights import commands
    from input_pipeline.demo import precomp as precomp_demo
    data_dir = tmp_path / 'data'
    precomp_demo.write_precomp_demo(data_dir, values=4, train_images=12, dev_images=8,
                                    test_images=12, testall_images=4, regions=8,
                                    feature_dim=16, seed=2)
    config = hslm_test.get_config()
    config.data_dir = str(data_dir)
    config.eval.dev_split = ''
    resolved = hslm_method.resolve(config)
    parts = peer.build(resolved, seed=3)
    path = tmp_path / 'model_best.pth.tar'
    torch.save(public_checkpoint(parts, resolved), path)
    results = commands.evaluate_weights(config, path, tmp_path / 'workdir')

    _, tokens, lengths = hslm_method.split_tokens(resolved, 'test')
    arrays = hslm_method.eval_arrays(resolved, 'test')
    images = np.load(data_dir / 'test_ims.npy')
    scores = np.concatenate([peer.scores(parts, images, tokens[j:j + 1, :n], lengths[j:j + 1])
                             for j, n in enumerate(lengths)], axis=1)
    want = recall.recall_metrics(scores, arrays.caption_image)
    saved = json.loads((tmp_path / 'workdir' / 'eval' / '0' / 'results.json').read_text())
    for key, value in want.items():
        assert saved[key] == pytest.approx(value, abs=1e-9), key
        assert results[key] == pytest.approx(value, abs=1e-9), key
    assert saved['weights']['format'] == hslm.FORMAT
    assert saved['weights']['sha256'] == files.sha256(path)
