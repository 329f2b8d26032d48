"""HSLM's hardest-negative triplet loss against a numpy double loop and a PyTorch peer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dcinet_jax.losses import hardest_negative_triplet


def numpy_loop(s: np.ndarray, margin: float, negative_mask: np.ndarray | None) -> np.ndarray:
    """Per-positive loss written as the formula reads: two maxima over allowed negatives."""
    b = s.shape[0]
    out = np.zeros(b)
    for i in range(b):
        best_caption = 0.0
        best_image = 0.0
        for k in range(b):
            if k == i:
                continue
            if negative_mask is None or not negative_mask[i, k]:
                best_caption = max(best_caption, margin - s[i, i] + s[i, k])
            if negative_mask is None or not negative_mask[k, i]:
                best_image = max(best_image, margin - s[i, i] + s[k, i])
        out[i] = best_caption + best_image
    return out


def torch_peer(s: torch.Tensor, margin: float) -> torch.Tensor:
    """The loss as the spec states it, written for PyTorch (no mask)."""
    diagonal = s.diag().view(-1, 1)
    cost_caption = (margin + s - diagonal.expand_as(s)).clamp(min=0)
    cost_image = (margin + s - diagonal.t().expand_as(s)).clamp(min=0)
    eye = torch.eye(s.size(0), dtype=torch.bool)
    cost_caption = cost_caption.masked_fill(eye, 0)
    cost_image = cost_image.masked_fill(eye, 0)
    return cost_caption.max(1)[0].sum() + cost_image.max(0)[0].sum()


@pytest.fixture(scope='module')
def scores() -> np.ndarray:
    rng = np.random.default_rng(0)
    s = 1.0 / (1.0 + np.exp(-rng.normal(size=(7, 7))))
    s[2, 5] = s[2, 2]        # a tie between a negative and the positive
    s[3, 1] = s[3, 4]        # two tied hardest negatives
    return s.astype(np.float32)


def test_matches_numpy_and_torch(scores):
    got = float(hardest_negative_triplet(jnp.asarray(scores), 0.2))
    want = numpy_loop(scores.astype(np.float64), 0.2, None).sum()
    assert got == pytest.approx(want, rel=1e-5)
    assert got == pytest.approx(float(torch_peer(torch.from_numpy(scores), 0.2)), rel=1e-5)
    per = np.asarray(hardest_negative_triplet(jnp.asarray(scores), 0.2, reduction='none'))
    np.testing.assert_allclose(per, numpy_loop(scores.astype(np.float64), 0.2, None), rtol=1e-5)
    mean = float(hardest_negative_triplet(jnp.asarray(scores), 0.2, reduction='mean'))
    assert mean == pytest.approx(want / 7, rel=1e-5)


def test_same_image_mask(scores):
    image_of_caption = np.array([0, 0, 1, 1, 1, 2, 3])
    same = image_of_caption[:, None] == image_of_caption[None, :]
    got = np.asarray(hardest_negative_triplet(jnp.asarray(scores), 0.2,
                                              negative_mask=jnp.asarray(same), reduction='none'))
    want = numpy_loop(scores.astype(np.float64), 0.2, same)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    unmasked = numpy_loop(scores.astype(np.float64), 0.2, None)
    assert not np.allclose(want, unmasked)      # the mask removes some hardest negatives here
    everything = np.ones((7, 7), bool)
    assert float(hardest_negative_triplet(jnp.asarray(scores), 0.2,
                                          negative_mask=jnp.asarray(everything))) == 0.0


def test_gradient_matches_torch():
    import jax
    rng = np.random.default_rng(1)
    s = rng.uniform(size=(6, 6)).astype(np.float32)      # continuous draws: no ties
    grad = np.asarray(jax.grad(lambda x: hardest_negative_triplet(x, 0.2))(jnp.asarray(s)))
    t = torch.from_numpy(s).requires_grad_(True)
    torch_peer(t, 0.2).backward()
    assert np.count_nonzero(grad) > 6
    np.testing.assert_allclose(grad, t.grad.numpy(), atol=1e-6)


def test_bad_shapes():
    with pytest.raises(ValueError, match='square'):
        hardest_negative_triplet(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match='reduction'):
        hardest_negative_triplet(jnp.zeros((3, 3)), reduction='max')
    with pytest.raises(ValueError, match='negative_mask'):
        hardest_negative_triplet(jnp.zeros((3, 3)), negative_mask=jnp.zeros((2, 2), bool))
