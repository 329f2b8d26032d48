"""A GRU cell with PyTorch's parameters: six biases, gate order (r, z, n), U(+-1/sqrt(H)).

Flax's `nn.GRUCell` has no hidden-side reset and update biases (`b_hr`, `b_hz`): they
would only add to `b_ir`, `b_iz`, so the forward function is the same with them folded
in. Training is not: an optimizer steps each parameter separately, and under Adam every
parameter moves by about the learning rate per step, so PyTorch's effective gate bias
`b_ir + b_hr` moves up to twice as far per step as a single folded bias does. Keeping the
six biases makes one optimizer step here move the same parameters as one step of
`torch.nn.GRU` with the same optimizer (tested against `torch.optim.Adam`), and makes the
parameter count PyTorch's: 3 * H * (in + H) + 6 * H per direction.

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Parameters: `ir`, `iz`, `in` (kernel (in, H), bias (H,)) and `hr`, `hz`, `hn` (kernel
(H, H), bias (H,)): flax's `GRUCell` names plus the two biases it lacks, so a kernel
transposed is PyTorch's row block of `weight_ih_l0` / `weight_hh_l0` (rows r, z, n).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

__all__ = ['TorchGRUCell', 'GATES', 'torch_gru_uniform']

Array = jax.Array
GATES = ('r', 'z', 'n')      # PyTorch's row order inside weight_ih / weight_hh / biases


def torch_gru_uniform(hidden: int):
    """PyTorch's GRU init U(+-1/sqrt(hidden)) for every kernel and bias."""
    bound = 1.0 / np.sqrt(hidden)

    def init(key: Array, shape, dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchGRUCell(nn.RNNCellBase):
    """One GRU step (carry h (..., H), input x (..., in)) -> (h', h'); see the module doc."""

    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        h = carry
        init = torch_gru_uniform(self.features)

        def dense(name: str) -> nn.Dense:
            return nn.Dense(self.features, kernel_init=init, bias_init=init,
                            param_dtype=self.param_dtype, name=name)

        r = jax.nn.sigmoid(dense('ir')(inputs) + dense('hr')(h))
        z = jax.nn.sigmoid(dense('iz')(inputs) + dense('hz')(h))
        n = jnp.tanh(dense('in')(inputs) + r * dense('hn')(h))
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Array:
        """Zeros of shape batch dims + (features,), as PyTorch's default h0."""
        del rng
        return jnp.zeros((*input_shape[:-1], self.features), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1
