"""Feature interactions: DCINet's training-time CMSI (spatial) then CMCI (channel); HSLM's
text-to-image attention and similarity vectors (`scan_attention`)."""

from __future__ import annotations

import jax

from dcinet_jax.interaction.cmci import cmci
from dcinet_jax.interaction.cmsi import cmsi
from dcinet_jax.interaction.scan_attention import similarity_vector, t2i_attention
from dcinet_jax.losses import smooth_one_hot

__all__ = ['cmsi', 'cmci', 'interact', 't2i_attention', 'similarity_vector']


def interact(rng: jax.Array, x: jax.Array, labels: jax.Array, modality: jax.Array, *,
             num_classes: int, num_modalities: int, use_cmsi: bool, use_cmci: bool,
             label_smoothing: float = 0.1, minmax: tuple[float, float] = (0.5, 0.6)
             ) -> tuple[jax.Array, jax.Array]:
    """Sub-module-1 features -> (interacted features, float32 soft targets) (docs/model.md#cmsi, #cmci).

    CMSI (if on) then CMCI (if on); CMCI matches on the original hard labels of each
    slot, since CMSI keeps every sample in its slot. With CMSI off the targets are the
    smoothed one-hot labels. ``use_cmsi`` / ``use_cmci`` are static Python flags.
    """
    rng_cmsi, rng_cmci = jax.random.split(rng)
    if use_cmsi:
        mixed, targets = cmsi(rng_cmsi, x, labels, num_classes=num_classes,
                              label_smoothing=label_smoothing, minmax=minmax)
    else:
        mixed, targets = x, smooth_one_hot(labels, num_classes, label_smoothing)
    if use_cmci:
        mixed = cmci(rng_cmci, mixed, labels, modality, num_modalities=num_modalities)
    return mixed, targets
