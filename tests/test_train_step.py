"""The data-parallel train step against single-device references (4 CPU devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dcinet_jax import parallel, state as state_lib
from dcinet_jax.methods import dcinet as method
from dcinet_jax.train_step import make_sharded_train_step, train_step
from synthetic import host_batch

N_DEV = 4


def _config(test_config, *, cmsi, cmci, bn_sync=True):
    c = test_config.copy_and_resolve_references()
    c.interaction.cmsi, c.interaction.cmci = cmsi, cmci
    c.model.bn_sync = bn_sync
    c.optim.schedule, c.optim.warmup_steps = 'constant', 0
    c.optim.learning_rate = 0.1
    return c


def _local(batch, d, n):
    """Device d's slice of every modality, as the batch sharding gives it."""
    def cut(x):
        per = x.shape[0] // n
        return x[d * per:(d + 1) * per]
    return jax.tree.map(cut, batch)


def _setup(c):
    assert jax.device_count() == N_DEV, 'conftest sets 4 CPU devices'
    trainer = state_lib.build_trainer(c, 10)
    state = trainer.init_state()
    host_state = jax.tree.map(np.asarray, state)
    return trainer.mesh, trainer.model, trainer.tx, state, host_state


def _assert_tree_close(a, b, rtol, atol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_replicas_identical(tree):
    for leaf in jax.tree.leaves(tree):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == N_DEV
        for s in shards[1:]:
            np.testing.assert_array_equal(s, shards[0])


def test_sharded_step_equals_single_device_step_without_interactions(test_config):
    c = _config(test_config, cmsi=False, cmci=False)
    mesh, model, tx, state, host_state = _setup(c)
    batch = host_batch(c)
    step = make_sharded_train_step(method=method, model=model, tx=tx, config=c, mesh=mesh)
    new_state, metrics = step(state, parallel.host_to_global(batch, parallel.batch_sharded(mesh)),
                              jax.random.key(3))

    single_model = method.build_model(c)  # no axis name: plain BN over the whole global batch
    single = jax.jit(functools.partial(train_step, method=method, model=single_model, tx=tx,
                                       config=c, axis_name=None))
    ref_state, ref_metrics = single(host_state, batch, jax.random.key(3))

    np.testing.assert_allclose(float(metrics['loss']), float(ref_metrics['loss']), rtol=1e-5)
    _assert_tree_close(new_state.params, ref_state.params, rtol=2e-4, atol=2e-6)
    _assert_tree_close(new_state.collections, ref_state.collections, rtol=2e-4, atol=2e-6)
    assert float(metrics['state_finite']) == 1.0
    _assert_replicas_identical(new_state.params)
    # The step must have moved the parameters (the comparison above is not vacuous).
    moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in
                zip(jax.tree.leaves(new_state.params), jax.tree.leaves(host_state.params)))
    assert moved > 1e-4


def test_interactions_act_on_each_device_local_batch(test_config):
    """Sharded step == mean over devices of per-device losses on local batches.

    With per-device BatchNorm (bn_sync off) each device's forward is exactly the
    single-device forward on its local slice, with the rng folded by its index; the
    sharded step must average those gradients. A CMSI that mixed across devices (or a
    shared rng) would break the equality.
    """
    c = _config(test_config, cmsi=True, cmci=True, bn_sync=False)
    c.data.class_aligned = True
    mesh, model, tx, state, host_state = _setup(c)
    batch = host_batch(c, seed=1)
    rng = jax.random.key(7)
    step = make_sharded_train_step(method=method, model=model, tx=tx, config=c, mesh=mesh)
    new_state, metrics = step(state, parallel.host_to_global(batch, parallel.batch_sharded(mesh)),
                              rng)

    grad_fn = jax.jit(jax.grad(functools.partial(method.loss_fn, model=model, config=c, step=0),
                               has_aux=True))
    grads, losses, stats = [], [], []
    for d in range(N_DEV):
        g, (bs, m) = grad_fn(host_state.params, host_state.collections,
                             _local(batch, d, N_DEV), jax.random.fold_in(rng, d))
        grads.append(g)
        losses.append(float(m['loss']))
        stats.append(bs)
    mean = lambda trees: jax.tree.map(lambda *x: sum(x) / len(x), *trees)  # noqa: E731
    updates, _ = tx.update(mean(grads), host_state.opt_state, host_state.params)
    ref_params = optax.apply_updates(host_state.params, updates)

    np.testing.assert_allclose(float(metrics['loss']), np.mean(losses), rtol=1e-5)
    _assert_tree_close(new_state.params, ref_params, rtol=2e-4, atol=2e-6)
    _assert_tree_close(new_state.collections, mean(stats), rtol=2e-4, atol=2e-6)
    _assert_replicas_identical(new_state.params)

    # Folding the same rng on every device would give a different result.
    g_same, _ = grad_fn(host_state.params, host_state.collections, _local(batch, 1, N_DEV),
                        jax.random.fold_in(rng, 0))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(g_same), jax.tree.leaves(grads[1])))
    assert diff > 1e-6


def test_odd_per_device_batch_is_a_clear_error(test_config):
    c = test_config.copy_and_resolve_references()
    c.data.batch_per_modality = 4
    with pytest.raises(ValueError, match='even'):
        method.batch_rule(c, 4)   # 1 per modality per device -> 3 samples
    c.data.batch_per_modality = 6
    with pytest.raises(ValueError, match='data.batch_per_modality=6 is not divisible'):
        method.batch_rule(c, 4)


def test_config_pretrained_initialises_the_backbone(test_config, tmp_path):
    """`model.pretrained` loads a torchvision-layout checkpoint into the train state."""
    import torch
    from test_resnet import TORCH_BLOCKS, TorchResNet, randomize_bn

    c = _config(test_config, cmsi=True, cmci=True)
    torch.manual_seed(0)
    tm = randomize_bn(TorchResNet(TORCH_BLOCKS['bottleneck'], [1, 1, 1, 1], num_classes=1000,
                                  width=c.model.num_filters))
    path = tmp_path / 'imagenet_like.pth'
    torch.save(tm.state_dict(), path)
    c.model.pretrained = str(path)
    state = state_lib.build_trainer(c, 10).init_state()

    backbone = state.params['backbone']
    np.testing.assert_array_equal(np.asarray(backbone['conv1']['kernel']),
                                  tm.conv1.weight.detach().permute(2, 3, 1, 0).numpy())
    np.testing.assert_array_equal(
        np.asarray(backbone['layer3']['0']['conv2']['kernel']),
        tm.layer3[0].conv2.weight.detach().permute(2, 3, 1, 0).numpy())
    np.testing.assert_array_equal(np.asarray(state.collections['batch_stats']['backbone']['bn1']['var']),
                                  tm.bn1.running_var.numpy())
    # The 1000-class ImageNet head does not fit 4 classes: it keeps its fresh init.
    assert backbone['fc']['kernel'].shape[-1] == c.data.num_classes
    # Optimizer state starts from the loaded params (momentum buffers are zeros).
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state.opt_state)
               if hasattr(x, 'dtype') and x.dtype == jnp.float32)
