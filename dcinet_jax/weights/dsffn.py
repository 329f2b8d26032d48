"""DSFFN whole-model weights <-> the public `v_a_model.py` state dict (docs/weights.md#dsffn).

The public code (zhangjiwei-japan/icaiic-2024-code, `train_model.py`) saves
`net.state_dict()` of `CrossModal_NN` (`v_a_model.py`, with `MultiScale_Modal_Net` of
`models/multi_scale_net.py`). Its modules map onto `models/dsffn.py` one to one:

    visual_layer.visual_encoder / audio_layer.audio_encoder   <-> enc_visual / enc_audio  linear
    {visual,audio}_fine_grained_feature.BN                     <-> msn_{visual,audio}/bn   BatchNorm1d(1)
      .conv1                                                   <-> .../stem               conv1d
      .conv{k}_{i}  (k = 3, 5, 7; i = 1, 2, 3)                 <-> .../k{k}_conv{i-1}     conv1d
    MmFA.{q_v, k_v, q_a, k_a}                                  <-> mfa/{q_v, k_v, q_a, k_a} linear
    MmFA.w_{1,2,3,4}                                           <-> mfa/w{1,2,3,4}         linear
    MmFA.joint_attention_map.weight (out, in1, in2)            <-> mfa/bilinear (o, i, j) copy
    MmFA.t_c ()                                                <-> mfa/tau                copy
    out_layer.0 / out_layer.3                                  <-> head/fc1 / head/fc2    linear
    classifier_{visual,audio}.classifier.0 / .3 (no bias)      <-> cls_{visual,audio}/fc1 / fc2

The centre-loss centres are a separate `CenterLoss` module (parameter `center`, m x 64)
that the public code does not save: a `center` key in the file is loaded into
`params/centers` (`loss.centers='shared_normalized'`), otherwise the centres keep their
initial values (evaluation does not use them); export leaves them out so the file loads
into `CrossModal_NN` with a strict `load_state_dict`. Options without a public
counterpart (`model.gate_form='paper'`, `learn_tau=False`, `shared_encoder_fc`) are
refused by the key check.
"""

from __future__ import annotations

from typing import Any

from dcinet_jax.models.dsffn import KERNELS
from dcinet_jax.weights import layout
from dcinet_jax.weights.layout import Entry

FORMAT = 'dsffn-pytorch'
ALLOWED_GLOBALS: tuple = ()
CENTRES_KEY = 'center'     # CenterLoss's parameter name in the public center_loss.py
MODALITIES = (('visual', 'visual_layer.visual_encoder', 'visual_fine_grained_feature'),
              ('audio', 'audio_layer.audio_encoder', 'audio_fine_grained_feature'))
MFA_LINEAR = (('q_v', 'q_v'), ('k_v', 'k_v'), ('q_a', 'q_a'), ('k_a', 'k_a'),
              ('w_1', 'w1'), ('w_2', 'w2'), ('w_3', 'w3'), ('w_4', 'w4'))
# Centres never stored in the public network file; they keep their values on import.
KEPT = ('params/centers', 'params/centers_visual', 'params/centers_audio')


def entries() -> list[Entry]:
    """The key table (module docstring)."""
    out: list[Entry] = []
    for m, encoder, msn in MODALITIES:
        out += layout.dense_entries(encoder, (f'enc_{m}',))
        out += layout.batchnorm_entries(f'{msn}.BN', (f'msn_{m}', 'bn'))
        out += layout.dense_entries(f'{msn}.conv1', (f'msn_{m}', 'stem'), kind='conv1d')
        for k in KERNELS:
            for i in range(3):
                out += layout.dense_entries(f'{msn}.conv{k}_{i + 1}', (f'msn_{m}', f'k{k}_conv{i}'),
                                            kind='conv1d')
    for public, ours in MFA_LINEAR:
        out += layout.dense_entries(f'MmFA.{public}', ('mfa', ours))
    out += [Entry('MmFA.joint_attention_map.weight', 'params', ('mfa', 'bilinear'), 'copy'),
            Entry('MmFA.t_c', 'params', ('mfa', 'tau'), 'copy')]
    out += layout.dense_entries('out_layer.0', ('head', 'fc1'))
    out += layout.dense_entries('out_layer.3', ('head', 'fc2'))
    for m in ('visual', 'audio'):
        out += layout.dense_entries(f'classifier_{m}.classifier.0', (f'cls_{m}', 'fc1'), bias=False)
        out += layout.dense_entries(f'classifier_{m}.classifier.3', (f'cls_{m}', 'fc2'), bias=False)
    return out


def import_state(obj: Any, variables: dict, config: Any, *, source: str = 'weights') -> dict:
    table = entries()
    if isinstance(obj, dict) and CENTRES_KEY in obj:
        table.append(Entry(CENTRES_KEY, 'params', ('centers',), 'copy'))
    return layout.import_entries(obj, table, variables, source=source, keep=KEPT)


def export_state(variables: dict, config: Any) -> dict:
    return layout.export_entries(variables, entries())
