"""FGCrossNet's centre and quadruplet ranking losses (docs/fgcrossnet.md#losses) against
direct numpy loops of the formulas and a PyTorch version written here."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax import losses


def np_centre(x, y, c):
    return sum(float(np.sum((x[k] - c[y[k]]) ** 2)) for k in range(len(y))) / len(y)


def np_ranking(x, y, m1=1.0, m2=0.5, squared=False, two_hinges=False, reduction='mean_positive'):
    x = np.asarray(x, np.float64)
    n = len(y)

    def dist(a, b):
        d2 = float(np.sum((x[a] - x[b]) ** 2))
        return d2 if squared else np.sqrt(d2)

    total, positive = 0.0, 0
    for i, j, k, l in itertools.permutations(range(n), 4):
        if not (y[i] == y[j] and y[k] != y[i] and y[l] != y[i] and y[k] != y[l]):
            continue
        a = dist(i, j) - dist(i, k) + m1
        b = dist(i, j) - dist(k, l) + m2
        t = max(0.0, a) + max(0.0, b) if two_hinges else max(0.0, a + b)
        total += t
        positive += t > 1e-16
    if reduction == 'sum':
        return total
    return total / positive if positive else 0.0


BATCHES = {
    'mixed': np.array([0, 0, 1, 2, 1, 3, 0, 2]),
    'ties': np.array([1, 1, 1, 2, 2, 3, 3, 3]),
    'no_positive_pair': np.array([0, 1, 2, 3, 4, 5]),
    'single_class': np.array([4, 4, 4, 4, 4]),
    'two_classes': np.array([0, 0, 1, 1, 0, 1]),   # no k, l of two different other classes
}


def _features(n, seed=0, dim=5, scale=1.0):
    return (np.random.default_rng(seed).normal(size=(n, dim)) * scale).astype(np.float32)


@pytest.mark.parametrize('name', sorted(BATCHES))
@pytest.mark.parametrize('form', [dict(), dict(squared=True, two_hinges=True, reduction='sum'),
                                  dict(two_hinges=True), dict(squared=True)])
def test_ranking_matches_numpy_loops(name, form):
    y = BATCHES[name]
    x = _features(len(y), scale=0.4)
    want = np_ranking(x, y, **form)
    got = float(losses.quadruplet_ranking_loss(jnp.asarray(x), jnp.asarray(y), **form))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if name in ('no_positive_pair', 'single_class', 'two_classes'):
        assert got == 0.0


def test_ranking_zero_distances_are_finite_with_zero_gradient_there():
    # Two identical same-class items: D_ij = 0 exactly; the sqrt is guarded.
    y = np.array([0, 0, 1, 2, 1])
    x = _features(5, seed=1)
    x[1] = x[0]
    x[4] = x[2]
    f = lambda v: losses.quadruplet_ranking_loss(v, jnp.asarray(y))  # noqa: E731
    val, g = jax.value_and_grad(f)(jnp.asarray(x))
    np.testing.assert_allclose(float(val), np_ranking(x, y), rtol=1e-5)
    assert np.isfinite(np.asarray(g)).all()
    # All-identical features: every distance 0, t = 1.5 on every valid tuple.
    z = jnp.zeros((5, 3))
    val, g = jax.value_and_grad(f)(z)
    assert float(val) == pytest.approx(1.5)
    assert np.all(np.asarray(g) == 0)


def test_ranking_far_apart_classes_give_zero():
    y = np.array([0, 0, 1, 1, 2, 2])
    x = np.repeat(np.eye(3, dtype=np.float32) * 50, 2, axis=0)
    assert float(losses.quadruplet_ranking_loss(jnp.asarray(x), jnp.asarray(y))) == 0.0
    assert np_ranking(x, y) == 0.0


def test_quadruplet_mask_counts():
    y = np.array([0, 0, 1, 2])
    m = np.asarray(losses.quadruplet_mask(jnp.asarray(y)))
    # (0,1,2,3), (0,1,3,2), (1,0,2,3), (1,0,3,2)
    assert m.sum() == 4 and m[0, 1, 2, 3] and m[1, 0, 3, 2] and not m[0, 0, 2, 3]


def test_centre_loss_matches_numpy_and_gradients():
    y = np.array([0, 2, 2, 1, 0, 2])
    x = _features(6, seed=2, dim=4)
    c = _features(3, seed=3, dim=4)
    got = float(losses.fgcrossnet_centre_loss(jnp.asarray(x), jnp.asarray(y), jnp.asarray(c)))
    np.testing.assert_allclose(got, np_centre(x, y, c), rtol=1e-6)
    gx, gc = jax.grad(losses.fgcrossnet_centre_loss, argnums=(0, 2))(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(c))
    np.testing.assert_allclose(np.asarray(gx), 2 * (x - c[y]) / 6, rtol=1e-5, atol=1e-6)
    want_gc = np.zeros_like(c)
    for k in range(6):
        want_gc[y[k]] -= 2 * (x[k] - c[y[k]]) / 6
    np.testing.assert_allclose(np.asarray(gc), want_gc, rtol=1e-5, atol=1e-6)


def test_batch_mean_centres():
    y = np.array([0, 2, 2, 0, 0])
    x = _features(5, seed=4, dim=3)
    c = np.asarray(losses.batch_mean_centres(jnp.asarray(x), jnp.asarray(y), 4))
    np.testing.assert_allclose(c[0], x[[0, 3, 4]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(c[2], x[[1, 2]].mean(0), rtol=1e-6)
    assert np.all(c[1] == 0) and np.all(c[3] == 0)
    # No gradient flows into the batch centres: only the x - c term.
    f = lambda v: losses.fgcrossnet_centre_loss(  # noqa: E731
        v, jnp.asarray(y), losses.batch_mean_centres(v, jnp.asarray(y), 4))
    g = np.asarray(jax.grad(f)(jnp.asarray(x)))
    np.testing.assert_allclose(g, 2 * (x - c[y]) / 5, rtol=1e-5, atol=1e-6)


def test_against_pytorch_reference():
    torch = pytest.importorskip('torch')

    class CentreLoss(torch.nn.Module):
        def __init__(self, centres):
            super().__init__()
            self.centers = torch.nn.Parameter(torch.tensor(centres))

        def forward(self, x, y):
            return ((x - self.centers[y]) ** 2).sum(1).mean()

    def torch_ranking(x, y, m1=1.0, m2=0.5):
        d = torch.cdist(x, x)   # plain L2
        same = y[:, None] == y[None, :]
        eye = torch.eye(len(y), dtype=torch.bool)
        valid = ((same & ~eye)[:, :, None, None] & (~same)[:, None, :, None]
                 & (~same)[:, None, None, :] & (~same)[None, None, :, :])
        t = torch.relu((d[:, :, None, None] - d[:, None, :, None] + m1)
                       + (d[:, :, None, None] - d[None, None, :, :] + m2)) * valid
        n = (t > 1e-16).sum()
        return t.sum() / n if n > 0 else t.sum() * 0

    y = np.array([0, 0, 1, 2, 1, 3, 0, 2, 3, 3, 1, 2])
    x = _features(12, seed=5, dim=6, scale=0.5)
    c = _features(4, seed=6, dim=6)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y)
    centre = CentreLoss(c.astype(np.float64))
    total_t = 0.001 * centre(xt, yt) + 0.1 * torch_ranking(xt, yt)
    total_t.backward()

    def total_j(v, cc):
        return (0.001 * losses.fgcrossnet_centre_loss(v, jnp.asarray(y), cc)
                + 0.1 * losses.quadruplet_ranking_loss(v, jnp.asarray(y)))
    val, (gx, gc) = jax.value_and_grad(total_j, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(c))
    np.testing.assert_allclose(float(val), total_t.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gc), centre.centers.grad.numpy(), rtol=1e-4, atol=1e-7)
