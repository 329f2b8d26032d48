"""models/gru.py's TorchGRUCell against torch.nn.GRU: the forward, the parameter count and
init, and Adam steps: from identical weights and batch, optax.adam moves every parameter as
torch.optim.Adam moves PyTorch's; flax's folded nn.GRUCell does not (checked too, so the
test can fail)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

torch = pytest.importorskip('torch')

from dcinet_jax.models.gru import GATES, TorchGRUCell  # noqa: E402

IN, HIDDEN, BATCH, STEPS = 5, 4, 3, 6
LR, BETAS, EPS = 0.01, (0.9, 0.999), 1e-8


def torch_gru(seed=0):
    torch.manual_seed(seed)
    return torch.nn.GRU(IN, HIDDEN, batch_first=True)


def flax_params(gru, folded=False):
    """The torch GRU's weights as TorchGRUCell params ({'ir': {'kernel', 'bias'}, ...});
    `folded`: as flax's nn.GRUCell holds them (b_hr, b_hz added into b_ir, b_iz)."""
    p = {}
    for side in ('i', 'h'):
        w = getattr(gru, f'weight_{side}h_l0').detach().numpy()
        b = getattr(gru, f'bias_{side}h_l0').detach().numpy()
        for g, gate in enumerate(GATES):
            rows = slice(g * HIDDEN, (g + 1) * HIDDEN)
            p[side + gate] = {'kernel': w[rows].T.copy(), 'bias': b[rows].copy()}
    if folded:
        for gate in ('r', 'z'):
            hidden_side = p.pop('h' + gate)
            p['i' + gate]['bias'] = p['i' + gate]['bias'] + hidden_side['bias']
            p['h' + gate] = {'kernel': hidden_side['kernel']}
    return {'cell': p}


def torch_as_flax(gru):
    """The torch GRU's current weights, in the TorchGRUCell layout."""
    return flax_params(gru)['cell']


def batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, STEPS, IN)).astype(np.float32)
    target = rng.normal(size=(BATCH, STEPS, HIDDEN)).astype(np.float32)
    return x, target


class Net(nn.Module):
    cell: type

    @nn.compact
    def __call__(self, x):
        return nn.RNN(self.cell(HIDDEN, name='cell'))(x)


def train(cell, params, steps):
    """`steps` optax Adam steps on a squared error; returns the params after each."""
    x, target = batch()
    model = Net(cell)
    loss = lambda p: jnp.sum((model.apply({'params': p}, x) - target) ** 2)  # noqa: E731
    opt = optax.adam(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS)
    state = opt.init(params)
    out = []
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append(jax.tree_util.tree_map(np.asarray, params['cell']))
    return out


def torch_train(gru, steps):
    x, target = (torch.tensor(a) for a in batch())
    opt = torch.optim.Adam(gru.parameters(), lr=LR, betas=BETAS, eps=EPS)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        ((gru(x)[0] - target) ** 2).sum().backward()
        opt.step()
        out.append(torch_as_flax(gru))
    return out


def test_forward_init_and_parameter_count():
    gru = torch_gru()
    x, _ = batch()
    ours = Net(TorchGRUCell).apply({'params': flax_params(gru)}, x)
    np.testing.assert_allclose(np.asarray(ours), gru(torch.tensor(x))[0].detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    fresh = Net(TorchGRUCell).init(jax.random.key(0), x)['params']['cell']
    assert sorted(fresh) == ['hn', 'hr', 'hz', 'in', 'ir', 'iz']
    leaves = jax.tree_util.tree_leaves(fresh)
    assert all(sorted(fresh[k]) == ['bias', 'kernel'] for k in fresh)
    assert sum(a.size for a in leaves) == sum(p.numel() for p in gru.parameters())
    bound = 1 / np.sqrt(HIDDEN)
    assert all(np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound for a in leaves)


def test_adam_steps_like_torch_and_the_folded_cell_does_not():
    gru = torch_gru()
    start = flax_params(gru)
    want = torch_train(gru, 2)
    got = train(TorchGRUCell, start, 2)
    for step in range(2):
        for name in want[step]:
            for leaf in ('kernel', 'bias'):
                np.testing.assert_allclose(got[step][name][leaf], want[step][name][leaf],
                                           atol=1e-6, err_msg=f'step {step + 1} {name}.{leaf}')
    # Flax's GRUCell (b_hr, b_hz folded into b_ir, b_iz): same start function, but one Adam
    # step moves the effective gate biases b_i + b_h about half as far as PyTorch's.
    start_torch = torch_as_flax(torch_gru())
    folded = train(nn.GRUCell, flax_params(torch_gru(), folded=True), 1)[0]
    for gate in ('r', 'z'):
        before = start_torch['i' + gate]['bias'] + start_torch['h' + gate]['bias']
        torch_move = want[0]['i' + gate]['bias'] + want[0]['h' + gate]['bias'] - before
        folded_move = folded['i' + gate]['bias'] - before
        assert not np.allclose(folded_move, torch_move, atol=1e-6)
        np.testing.assert_allclose(torch_move / folded_move, 2.0, rtol=1e-3)


def test_a_folded_hslm_checkpoint_is_refused_in_one_line(tmp_path):
    """A checkpoint written before the six-bias cell (no `hr/bias`, `hz/bias`) is refused
    by `dcinet eval` with one line naming the missing bias (docs/hslm_model.md)."""
    from configs import hslm_test
    from dcinet_jax import checkpoints, evaluate_checkpoint
    from dcinet_jax.state import TrainState, build_trainer
    config = hslm_test.get_config()
    config.data_dir = str(tmp_path / 'no_data')
    trainer = build_trainer(config, total_steps=1, check_batch=False)
    variables = trainer.method.init_variables(trainer.eval_model, jax.random.key(0), config)
    params = jax.tree_util.tree_map(np.asarray, variables['params'])
    for direction in ('gru_forward', 'gru_backward'):
        for gate in ('hr', 'hz'):
            del params['text_encoder'][direction][gate]['bias']
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state={'count': jnp.zeros((), jnp.int32)},
                       collections={'batch_stats': variables['batch_stats']})
    ckpt = checkpoints.Checkpointer(tmp_path / 'checkpoints', best_metric='rsum', async_save=False)
    ckpt.save(1, state)
    ckpt.close()
    with pytest.raises(checkpoints.CheckpointMismatchError) as e:
        evaluate_checkpoint.restore_for_eval(config, tmp_path)
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert 'text_encoder/gru_backward/hr/bias is absent in the checkpoint' in message
