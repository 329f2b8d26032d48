"""CMCI: cross-modal channel interaction (docs/model.md#cmci).

Channels are cut into ``num_modalities`` contiguous groups with boundaries
floor(k * C / num_modalities); modality m owns group m. A sample of modality m takes,
for every other modality n, the channels of group n from a same-label sample of
modality n in the batch (one picked uniformly at random, independently per (sample, n)),
and keeps them when no such sample exists. Group m always stays its own.

All reads come from the input (no order dependence). Partners are found with a
label-equality matrix, random scores and a masked argmax, so shapes are static and the
function traces once for any batch; the copy is a gather, so gradients reach exactly
the elements that were read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ['cmci', 'cmci_sources', 'channel_bounds']


def channel_bounds(num_channels: int, num_modalities: int) -> list[int]:
    """Group boundaries [0, floor(C/n), floor(2C/n), ..., C]."""
    if num_modalities < 1:
        raise ValueError(f'cmci: num_modalities must be >= 1, got {num_modalities}')
    if num_channels < num_modalities:
        raise ValueError(f'cmci: {num_channels} channels cannot be cut into '
                         f'{num_modalities} non-empty groups')
    return [k * num_channels // num_modalities for k in range(num_modalities + 1)]


def cmci_sources(rng: jax.Array, labels: jax.Array, modality: jax.Array, *,
                 num_modalities: int = 3) -> jax.Array:
    """(B, num_modalities) int32: the sample whose group-n channels sample i ends with.

    ``src[i, n] = i`` when n is i's own modality or no same-label sample of modality n
    exists; otherwise a uniformly random such sample.
    """
    batch = labels.shape[0]
    if labels.shape != (batch,) or modality.shape != (batch,):
        raise ValueError(f'cmci: labels {labels.shape} and modality {modality.shape} '
                         'must both be (B,)')
    same_label = labels[:, None] == labels[None, :]                        # (B, B)
    groups = jnp.arange(num_modalities, dtype=modality.dtype)
    of_group = modality[None, :] == groups[:, None]                        # (N, B): j in group n
    candidate = same_label[:, None, :] & of_group[None, :, :]             # (B, N, B)
    other_group = modality[:, None] != groups[None, :]                     # (B, N)
    candidate = candidate & other_group[:, :, None]

    scores = jax.random.uniform(rng, candidate.shape)
    pick = jnp.argmax(jnp.where(candidate, scores, -1.0), axis=-1)         # (B, N)
    found = jnp.any(candidate, axis=-1)
    self_index = jnp.arange(batch)[:, None]
    return jnp.where(found, pick, self_index).astype(jnp.int32)


def cmci(rng: jax.Array, x: jax.Array, labels: jax.Array, modality: jax.Array, *,
         num_modalities: int = 3) -> jax.Array:
    """Cross-modal channel interaction of x (B, ..., C); modality ids in [0, num_modalities).

    Returns an array like x. Ids outside that range are never partners and keep all
    their channels (they cannot be checked under jit).
    """
    if x.ndim < 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f'cmci: x must be (B, ..., C) with B = {labels.shape[0]}, got {x.shape}')
    bounds = channel_bounds(x.shape[-1], num_modalities)
    src = cmci_sources(rng, labels, modality, num_modalities=num_modalities)
    # Slice first, then gather: each gather moves only its own group's channels.
    pieces = [x[..., bounds[n]:bounds[n + 1]][src[:, n]] for n in range(num_modalities)]
    return jnp.concatenate(pieces, axis=-1)
