"""DSFFN modules and losses against a PyTorch implementation written here from
docs/dsffn.md (same weights; train mode with dropout off, and eval mode), and the
parameter count of the full-size model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from torch import nn as tnn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from configs import dsffn_test, dsffn_vegas  # noqa: E402
from dcinet_jax import losses  # noqa: E402
from dcinet_jax.methods import dsffn as method  # noqa: E402
from dcinet_jax.models import dsffn  # noqa: E402

ATOL = 2e-5


# ----------------------------------------------------------------------------- torch peer

class TorchMSN(tnn.Module):
    def __init__(self, channels, stem=(32, 8, 12)):
        super().__init__()
        c0, c1, c2 = channels
        self.bn = tnn.BatchNorm1d(1)
        self.stem = tnn.Conv1d(1, c0, stem[0], stem[1], stem[2])
        self.branches = tnn.ModuleList()
        for k in (3, 5, 7):
            self.branches.append(tnn.ModuleList([
                tnn.Conv1d(c0, c0, k, padding=(k - 1) // 2),
                tnn.Conv1d(c0, c1, k, padding=(k - 1) // 2),
                tnn.Conv1d(c1, c2, k, padding=(k - 1) // 2)]))

    def forward(self, x):
        h = F.max_pool1d(self.stem(self.bn(x[:, None, :])), 2, 2)
        tokens = []
        for convs in self.branches:
            y = h
            for conv in convs:
                y = F.max_pool1d(conv(y), 2, 2)
            tokens.append(y.amax(dim=2))
        return torch.stack(tokens, 1)


class TorchMFA(tnn.Module):
    def __init__(self, d, gate_form='code', scale_after=True, learn_tau=True):
        super().__init__()
        self.d, self.gate_form, self.scale_after = d, gate_form, scale_after
        for n in ('q_v', 'k_v', 'q_a', 'k_a', 'w1', 'w2', 'w3', 'w4'):
            setattr(self, n, tnn.Linear(d, d))
        self.bilinear = tnn.Bilinear(d, d, d, bias=False)
        self.tau = tnn.Parameter(torch.ones(())) if learn_tau else None

    def att(self, q, k, v):
        s = q @ k.transpose(1, 2)
        if self.scale_after:
            a = torch.softmax(s, -1) / self.d ** 0.5
        else:
            a = torch.softmax(s / self.d ** 0.5, -1)
        return a @ v

    def forward(self, x, y):
        qx, kx, qy, ky = self.q_v(x), self.k_v(x), self.q_a(y), self.k_a(y)
        pva, pv, pav, pa = self.att(qx, ky, y), self.att(qx, kx, x), self.att(qy, kx, x), \
            self.att(qy, ky, y)
        if self.gate_form == 'code':
            gv = torch.sigmoid((self.w1(pva) + self.w2(pv)) * pv)
            ga = torch.sigmoid((self.w3(pav) + self.w4(pa)) * pa)
        else:
            gv = torch.sigmoid(self.w1(pva) + pv) * pv
            ga = torch.sigmoid(self.w3(pav) + pa) * pa
        j = torch.sigmoid(self.bilinear(gv, ga))
        tau = self.tau if self.tau is not None else 1.0
        return tau * j * x + (1 - j) * y


class TorchDSFFN(tnn.Module):
    def __init__(self, dv, da, e, channels, hidden, out, m, gate_form='code'):
        super().__init__()
        d = channels[-1]
        self.enc_visual, self.enc_audio = tnn.Linear(dv, e), tnn.Linear(da, e)
        self.msn_visual, self.msn_audio = TorchMSN(channels), TorchMSN(channels)
        self.mfa = TorchMFA(d, gate_form)
        self.head = tnn.Sequential(tnn.Flatten(), tnn.Linear(3 * d, hidden), tnn.ReLU(),
                                   tnn.Dropout(0.0), tnn.Linear(hidden, out))
        self.cls = tnn.ModuleList([tnn.Sequential(
            tnn.Linear(out, 32, bias=False), tnn.ReLU(), tnn.Dropout(0.0),
            tnn.Linear(32, m, bias=False)) for _ in range(2)])

    def forward(self, v, a):
        fv = self.msn_visual(torch.relu(self.enc_visual(v)))
        fa = self.msn_audio(torch.relu(self.enc_audio(a)))
        m1 = self.mfa(fv, fa)
        m2 = self.mfa(m1 * fv, m1 * fa)
        ov, oa = self.head(m2 * fv), self.head(m2 * fa)
        return ov, oa, self.cls[0](ov), self.cls[1](oa)


# ----------------------------------------------------------------------------- weight copy

def _t(x):
    return x.detach().numpy().astype(np.float32)


def _dense(lin):
    p = {'kernel': _t(lin.weight).T}
    if lin.bias is not None:
        p['bias'] = _t(lin.bias)
    return p


def _conv(conv):
    return {'kernel': _t(conv.weight).transpose(2, 1, 0), 'bias': _t(conv.bias)}


def msn_vars(t: TorchMSN):
    params = {'bn': {'scale': _t(t.bn.weight), 'bias': _t(t.bn.bias)}, 'stem': _conv(t.stem)}
    for k, convs in zip((3, 5, 7), t.branches):
        for i, conv in enumerate(convs):
            params[f'k{k}_conv{i}'] = _conv(conv)
    stats = {'bn': {'mean': _t(t.bn.running_mean), 'var': _t(t.bn.running_var)}}
    return params, stats


def mfa_params(t: TorchMFA, gate_form='code'):
    names = ('q_v', 'k_v', 'q_a', 'k_a', 'w1', 'w3') + (('w2', 'w4') if gate_form == 'code' else ())
    p = {n: _dense(getattr(t, n)) for n in names}
    p['bilinear'] = _t(t.bilinear.weight)
    if t.tau is not None:
        p['tau'] = _t(t.tau)
    return p


def model_vars(t: TorchDSFFN, m):
    pv, sv = msn_vars(t.msn_visual)
    pa, sa = msn_vars(t.msn_audio)
    params = {'enc_visual': _dense(t.enc_visual), 'enc_audio': _dense(t.enc_audio),
              'msn_visual': pv, 'msn_audio': pa, 'mfa': mfa_params(t.mfa),
              'head': {'fc1': _dense(t.head[1]), 'fc2': _dense(t.head[4])},
              'cls_visual': {'fc1': _dense(t.cls[0][0]), 'fc2': _dense(t.cls[0][3])},
              'cls_audio': {'fc1': _dense(t.cls[1][0]), 'fc2': _dense(t.cls[1][3])},
              'centers': np.zeros((m, t.head[4].out_features), np.float32)}
    return {'params': params, 'batch_stats': {'msn_visual': sv, 'msn_audio': sa}}


def _close(a, b, atol=ATOL, rtol=1e-4):
    np.testing.assert_allclose(np.asarray(a), _t(b) if isinstance(b, torch.Tensor) else b,
                               atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize('train', [True, False])
def test_multi_scale_net_matches_torch(train):
    torch.manual_seed(0)
    t = TorchMSN((8, 16, 32))
    with torch.no_grad():   # non-trivial BN state
        t.bn.weight.fill_(1.3), t.bn.bias.fill_(-0.2)
        t.bn.running_mean.fill_(0.4), t.bn.running_var.fill_(2.0)
    params, stats = msn_vars(t)
    x = np.random.default_rng(0).normal(size=(6, 256)).astype(np.float32) * 2 + 1
    t.train(train)
    ref = t(torch.from_numpy(x))
    net = dsffn.MultiScaleNet(channels=(8, 16, 32))
    out, mutated = net.apply({'params': params, 'batch_stats': stats}, x, train,
                             mutable=['batch_stats'])
    assert out.shape == (6, 3, 32)
    _close(out, ref)
    # Running statistics follow PyTorch's update (unbiased variance) in train mode.
    _close(mutated['batch_stats']['bn']['mean'], t.bn.running_mean)
    _close(mutated['batch_stats']['bn']['var'], t.bn.running_var)


def test_multi_scale_net_full_size_shapes():
    net = dsffn.MultiScaleNet()
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, 1024)), False))
    out = jax.eval_shape(lambda v: net.apply(v, jnp.zeros((2, 1024)), False), shapes)
    assert out.shape == (2, 3, 256)


@pytest.mark.parametrize('gate_form,scale_after,learn_tau', [
    ('code', True, True), ('paper', True, True), ('code', False, False)])
def test_fusion_attention_matches_torch(gate_form, scale_after, learn_tau):
    torch.manual_seed(1)
    d = 32
    t = TorchMFA(d, gate_form, scale_after, learn_tau)
    if learn_tau:
        with torch.no_grad():
            t.tau.fill_(0.7)
    rng = np.random.default_rng(1)
    x, y = (rng.normal(size=(5, 3, d)).astype(np.float32) for _ in range(2))
    ref = t(torch.from_numpy(x), torch.from_numpy(y))
    mfa = dsffn.FusionAttention(d, gate_form=gate_form, learn_tau=learn_tau,
                                attention_scale='after_softmax' if scale_after else 'before_softmax')
    out = mfa.apply({'params': mfa_params(t, gate_form)}, x, y)
    _close(out, ref)


def test_fusion_attention_options_change_the_output():
    rng = np.random.default_rng(2)
    x, y = (jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32) for _ in range(2))
    base = dsffn.FusionAttention(16)
    v = base.init(jax.random.key(0), x, y)
    out = base.apply(v, x, y)
    scaled = dsffn.FusionAttention(16, attention_scale='before_softmax').apply(v, x, y)
    assert not np.allclose(out, scaled)
    with pytest.raises(ValueError, match='gate_form'):
        dsffn.FusionAttention(16, gate_form='nope').init(jax.random.key(0), x, y)


@pytest.mark.parametrize('train', [True, False])
def test_head_and_classifiers_match_torch(train):
    torch.manual_seed(2)
    t = TorchDSFFN(64, 16, 256, (8, 16, 32), 32, 8, 3)
    t.train(train)
    h = np.random.default_rng(3).normal(size=(4, 3, 32)).astype(np.float32)
    ref_o = t.head(torch.from_numpy(h))
    ref_l = t.cls[0](ref_o)
    v = model_vars(t, 3)['params']
    rngs = {'dropout': jax.random.key(0)}
    head = dsffn.Head(32, 8, dropout=0.0)
    o = head.apply({'params': v['head']}, h, train, rngs=rngs)
    _close(o, ref_o)
    cls = dsffn.Classifier(3, 32, dropout=0.0)
    _close(cls.apply({'params': v['cls_visual']}, np.asarray(o), train, rngs=rngs), ref_l)
    # With dropout on, train mode differs from eval mode (the layer is there).
    drop = dsffn.Head(32, 8, dropout=0.5)
    a = drop.apply({'params': v['head']}, h, True, rngs=rngs)
    b = drop.apply({'params': v['head']}, h, False)
    assert not np.allclose(a, b)


@pytest.mark.parametrize('train', [True, False])
def test_whole_model_matches_torch(train):
    torch.manual_seed(3)
    t = TorchDSFFN(64, 16, 256, (8, 16, 32), 32, 8, 3)
    t.train(train)
    variables = model_vars(t, 3)
    rng = np.random.default_rng(4)
    v = rng.normal(size=(6, 64)).astype(np.float32) + 1
    a = rng.normal(size=(6, 16)).astype(np.float32) - 1
    refs = t(torch.from_numpy(v), torch.from_numpy(a))
    c = dsffn_test.get_config()
    c.model.dropout = 0.0
    model = method.build_model(c)
    out, mutated = model.apply(variables, v, a, train, mutable=['batch_stats'],
                               rngs={'dropout': jax.random.key(0)})
    for key, ref in zip(('visual', 'audio', 'logits_visual', 'logits_audio'), refs):
        _close(out[key], ref, atol=1e-4)
    _close(mutated['batch_stats']['msn_audio']['bn']['var'], t.msn_audio.bn.running_var)


def test_self_pairing_ignores_the_partner_and_aligned_does_not():
    c = dsffn_test.get_config()
    model = method.build_model(c)
    rng = np.random.default_rng(5)
    v = rng.normal(size=(4, 64)).astype(np.float32)
    a = rng.normal(size=(4, 16)).astype(np.float32)
    a2 = rng.normal(size=(4, 16)).astype(np.float32)
    variables = method.init_variables(model, jax.random.key(0), c)

    fns = {p: jax.jit(lambda var, x, y, p=p: model.apply(var, x, y, False, pairing=p)['visual'])
           for p in ('self', 'aligned')}

    def run(aud, pairing):
        return fns[pairing](variables, v, aud)
    np.testing.assert_allclose(run(a, 'self'), run(a2, 'self'), rtol=1e-6)
    assert not np.allclose(run(a, 'aligned'), run(a2, 'aligned'))


def test_parameter_count_matches_the_spec_table():
    """20.28 M at m = 10 (encoders 1.18 M, MSNs 2 x 0.68 M, MFA 17.30 M, head 0.43 M,
    classifiers 2 x 2.4 k) plus 640 centres."""
    c = dsffn_vegas.get_config()
    model = method.build_model(c)
    shapes = jax.eval_shape(lambda k: method.init_variables(model, k, c), jax.random.key(0))
    p = shapes['params']

    def count(tree):
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    assert count(p['centers']) == 640
    net = count(p) - 640
    assert count(p['enc_visual']) + count(p['enc_audio']) == 1_181_696
    assert count(p['msn_visual']) == count(p['msn_audio']) == 679_298
    assert count(p['mfa']) == 17_303_553 and p['mfa']['bilinear'].shape == (256, 256, 256)
    assert count(p['head']) == 426_560
    assert count(p['cls_visual']) == 2_368
    assert net == 20_275_141 and round(net / 1e6, 2) == 20.28


def test_torch_default_initialisers():
    c = dsffn_test.get_config()
    model = method.build_model(c)
    p = method.init_variables(model, jax.random.key(0), c)['params']
    k = np.asarray(p['enc_visual']['kernel'])
    b = np.asarray(p['enc_visual']['bias'])
    bound = 1 / np.sqrt(64)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound   # not zero bias
    conv = np.asarray(p['msn_visual']['k7_conv2']['kernel'])   # fan_in 16 * 7
    assert np.abs(conv).max() <= 1 / np.sqrt(16 * 7)
    bil = np.asarray(p['mfa']['bilinear'])
    assert np.abs(bil).max() <= 1 / np.sqrt(32) and np.abs(bil).max() > 0.9 / np.sqrt(32)
    assert float(p['mfa']['tau']) == 1.0
    assert abs(np.asarray(p['centers']).std() - 1.0) < 0.35


# ----------------------------------------------------------------------------- losses

def _torch_losses(ov, oa, lv, la, y, centers):
    ov, oa, lv, la, centers = (torch.tensor(x, requires_grad=True) for x in (ov, oa, lv, la, centers))
    yt = torch.from_numpy(y).long()
    ce = F.cross_entropy(lv, yt) + F.cross_entropy(la, yt)
    dist = (ov - oa).norm(dim=1).mean()
    counts = torch.bincount(yt, minlength=centers.shape[0]).float()

    def ncl(o):
        on = o / o.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 0.5 * (((on - centers[yt]) ** 2).sum(1) / counts[yt]).sum()
    raw = 0.5 * ((ov - centers[yt]) ** 2).sum(1).mean()
    reg = (lv - F.one_hot(yt, lv.shape[1]).float()).norm() / lv.shape[0]
    return ce, dist, ncl(ov) + ncl(oa), raw, reg, (ov, oa, centers)


def test_losses_match_torch_values_and_gradients():
    rng = np.random.default_rng(6)
    ov, oa = rng.normal(size=(2, 12, 8)).astype(np.float32)
    lv, la = rng.normal(size=(2, 12, 5)).astype(np.float32)
    y = rng.integers(0, 5, 12).astype(np.int32)
    centers = rng.normal(size=(5, 8)).astype(np.float32)
    ce, dist, cen, raw, reg, leaves = _torch_losses(ov, oa, lv, la, y, centers)
    _close(losses.cross_entropy(lv, y) + losses.cross_entropy(la, y), ce)
    _close(losses.paired_distance(ov, oa), dist)
    _close(losses.normalized_center_loss(ov, y, centers)
           + losses.normalized_center_loss(oa, y, centers), cen)
    _close(losses.center_loss(ov, y, centers), raw)
    _close(losses.label_regression_loss(lv, y), reg)

    total = dist + 0.5 * cen
    total.backward()

    def jtotal(ov, oa, centers):
        return losses.paired_distance(ov, oa) + 0.5 * (
            losses.normalized_center_loss(ov, y, centers)
            + losses.normalized_center_loss(oa, y, centers))
    grads = jax.grad(jtotal, argnums=(0, 1, 2))(ov, oa, centers)
    for g, leaf in zip(grads, leaves):
        _close(g, leaf.grad)


def test_paired_distance_of_identical_pairs_has_a_zero_gradient():
    x = jnp.ones((3, 4))
    g = jax.grad(lambda a: losses.paired_distance(a, x))(x)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0)


def test_class_counts_over_a_larger_batch():
    """Counts summed over devices: two halves with global counts add up to the whole."""
    rng = np.random.default_rng(7)
    o = rng.normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 2, 0, 1, 2, 2], np.int32)
    c = rng.normal(size=(3, 4)).astype(np.float32)
    counts = jnp.asarray(np.bincount(y, minlength=3), jnp.float32)
    halves = sum(losses.normalized_center_loss(o[s], y[s], c, class_counts=counts)
                 for s in (slice(0, 4), slice(4, 8)))
    _close(halves, np.asarray(losses.normalized_center_loss(o, y, c)))
