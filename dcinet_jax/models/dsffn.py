"""DSFFN: multi-scale nets, two-stage fusion attention and a shared 64-d head for
audio-visual retrieval from precomputed features (docs/dsffn.md#model).

Layer by layer (full size; every width is a field so the CPU test config can shrink it):

1. Encoders, one per modality: Dense Dv -> E and Da -> E (E = 1024), ReLU.
2. `MultiScaleNet`, one per modality: the E-vector as a one-channel sequence; BatchNorm
   over that channel; stem Conv1d 1 -> C0 (kernel 32, stride 8, pad 12), MaxPool 2;
   three branches with kernels 3, 5, 7, each [Conv C0->C0, pool] [Conv C0->C1, pool]
   [Conv C1->C2, pool] (same padding, no activation), then a max over the remaining
   length: three C2-vectors stacked as tokens (B, 3, C2) in kernel order 3, 5, 7.
3. `FusionAttention` (MFA) of visual tokens X and audio tokens Y: biased projections;
   maps softmax(Q K^T) scaled by 1/sqrt(d) *after* the softmax (reference order);
   values are the raw inputs; gates G^v = sigmoid((Phi_va W1 + Phi_v W2) * Phi_v)
   (reference) or sigmoid(Phi_va W1 + Phi_v) * Phi_v (paper); J = sigmoid of the
   d x d x d bilinear form of (G^v, G^a) (one einsum, no bias); M = tau J X + (1 - J) Y,
   tau learned from 1 (or fixed 1).
4. Two-stage fusion with the same MFA weights: M1 = MFA(Fv, Fa), M2 = MFA(M1 Fv, M1 Fa);
   outputs M2 Fv and M2 Fa. `pairing='self'` fuses each modality with itself instead.
5. Shared head: flatten 3 d -> Dense H (512), ReLU, Dropout 0.5, Dense -> O (64).
6. Classifiers, one per modality: Dense O -> 32 (no bias), ReLU, Dropout 0.5,
   Dense -> m (no bias).

Initialisers follow PyTorch's defaults (U(+-1/sqrt(fan_in)) weights and biases, the
bilinear tensor U(+-1/sqrt(d)), BatchNorm 1/0, class centres N(0, 1)), and BatchNorm
updates its running variance with the unbiased batch variance as PyTorch does.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dcinet_jax.models.backbones.resnet import (BatchNorm, torch_default_bias_init,
                                      torch_default_kernel_init)

Array = jax.Array
KERNELS = (3, 5, 7)
GATE_FORMS = ('code', 'paper')
ATTENTION_SCALES = ('after_softmax', 'before_softmax')
PAIRINGS = ('aligned', 'self')


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def torch_dense(features: int, fan_in: int, *, use_bias: bool = True, name: str | None = None,
                dtype: Any = None) -> nn.Dense:
    """nn.Dense initialised like torch.nn.Linear (float32 params; `dtype`: compute dtype)."""
    return nn.Dense(features, use_bias=use_bias, kernel_init=torch_default_kernel_init,
                    bias_init=torch_default_bias_init(fan_in), name=name, dtype=dtype)


def torch_conv(features: int, fan_in: int, kernel: int, stride: int, pad: int, name: str
               ) -> nn.Conv:
    """nn.Conv (NWC) initialised like torch.nn.Conv1d (fan_in = in_channels * kernel)."""
    return nn.Conv(features, (kernel,), strides=(stride,), padding=[(pad, pad)],
                   kernel_init=torch_default_kernel_init,
                   bias_init=torch_default_bias_init(fan_in), name=name)


def _pool2(x: Array) -> Array:
    return nn.max_pool(x, (2,), strides=(2,))


class MultiScaleNet(nn.Module):
    """(B, E) -> (B, 3, channels[-1]) tokens, one per kernel size in `kernels`."""
    channels: Sequence[int] = (64, 128, 256)
    stem_kernel: int = 32
    stem_stride: int = 8
    stem_pad: int = 12
    kernels: Sequence[int] = KERNELS
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c0, c1, c2 = self.channels
        h = x[:, :, None]                                   # (B, L, 1): one channel
        h = BatchNorm(axis_name=self.bn_axis_name, name='bn')(h, train)
        h = torch_conv(c0, self.stem_kernel, self.stem_kernel, self.stem_stride,
                       self.stem_pad, 'stem')(h)
        h = _pool2(h)
        tokens = []
        for k in self.kernels:
            y = h
            for i, (cin, cout) in enumerate(((c0, c0), (c0, c1), (c1, c2))):
                y = _pool2(torch_conv(cout, cin * k, k, 1, (k - 1) // 2, f'k{k}_conv{i}')(y))
            tokens.append(jnp.max(y, axis=1))               # global max over the length
        return jnp.stack(tokens, axis=1)


class FusionAttention(nn.Module):
    """MFA(X, Y) for visual tokens X and audio tokens Y, both (B, T, d) -> (B, T, d)."""
    dim: int = 256
    gate_form: str = 'code'
    attention_scale: str = 'after_softmax'
    learn_tau: bool = True

    def setup(self):
        if self.gate_form not in GATE_FORMS:
            raise ValueError(f'model.gate_form={self.gate_form!r}: expected one of {GATE_FORMS}')
        if self.attention_scale not in ATTENTION_SCALES:
            raise ValueError(f'model.attention_scale={self.attention_scale!r}: expected one '
                             f'of {ATTENTION_SCALES}')
        d = self.dim
        for n in ('q_v', 'k_v', 'q_a', 'k_a', 'w1', 'w3'):
            setattr(self, n, torch_dense(d, d, name=n))
        if self.gate_form == 'code':
            self.w2 = torch_dense(d, d, name='w2')
            self.w4 = torch_dense(d, d, name='w4')
        self.bilinear = self.param('bilinear', _uniform(1.0 / np.sqrt(d)), (d, d, d))
        if self.learn_tau:
            self.tau = self.param('tau', nn.initializers.ones, ())

    def _attend(self, q: Array, k: Array, v: Array) -> Array:
        scale = 1.0 / np.sqrt(self.dim)
        logits = jnp.einsum('btd,bsd->bts', q, k)
        if self.attention_scale == 'after_softmax':
            a = jax.nn.softmax(logits, axis=-1) * scale
        else:
            a = jax.nn.softmax(logits * scale, axis=-1)
        return jnp.einsum('bts,bsd->btd', a, v)

    def __call__(self, x: Array, y: Array) -> Array:
        qx, kx, qy, ky = self.q_v(x), self.k_v(x), self.q_a(y), self.k_a(y)
        phi_va = self._attend(qx, ky, y)
        phi_v = self._attend(qx, kx, x)
        phi_av = self._attend(qy, kx, x)
        phi_a = self._attend(qy, ky, y)
        if self.gate_form == 'code':
            g_v = jax.nn.sigmoid((self.w1(phi_va) + self.w2(phi_v)) * phi_v)
            g_a = jax.nn.sigmoid((self.w3(phi_av) + self.w4(phi_a)) * phi_a)
        else:
            g_v = jax.nn.sigmoid(self.w1(phi_va) + phi_v) * phi_v
            g_a = jax.nn.sigmoid(self.w3(phi_av) + phi_a) * phi_a
        j = jax.nn.sigmoid(jnp.einsum('bti,oij,btj->bto', g_v, self.bilinear, g_a))
        tau = self.tau if self.learn_tau else 1.0
        return tau * j * x + (1.0 - j) * y


class Head(nn.Module):
    """Shared head: (B, 3, d) -> flatten -> Dense hidden, ReLU, Dropout -> Dense out."""
    hidden: int = 512
    out: int = 64
    dropout: float = 0.5

    @nn.compact
    def __call__(self, tokens: Array, train: bool) -> Array:
        h = tokens.reshape(tokens.shape[0], -1)
        h = nn.relu(torch_dense(self.hidden, h.shape[-1], name='fc1')(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return torch_dense(self.out, self.hidden, name='fc2')(h)


class Classifier(nn.Module):
    """Dense O -> hidden (no bias), ReLU, Dropout -> Dense num_classes (no bias)."""
    num_classes: int
    hidden: int = 32
    dropout: float = 0.5

    @nn.compact
    def __call__(self, o: Array, train: bool) -> Array:
        h = nn.relu(torch_dense(self.hidden, o.shape[-1], use_bias=False, name='fc1')(o))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return torch_dense(self.num_classes, self.hidden, use_bias=False, name='fc2')(h)


class DSFFN(nn.Module):
    """(visual (B, Dv), audio (B, Da)) -> {'visual', 'audio'} 64-d features and
    {'logits_visual', 'logits_audio'}. Holds the class centres as params (unused by the
    forward; trained by the centre loss with their own optimizer)."""
    num_classes: int
    visual_dim: int = 1024
    audio_dim: int = 128
    encoder_width: int = 1024
    channels: Sequence[int] = (64, 128, 256)
    stem_kernel: int = 32
    stem_stride: int = 8
    stem_pad: int = 12
    head_hidden: int = 512
    embed_dim: int = 64
    classifier_hidden: int = 32
    dropout: float = 0.5
    use_mfa: bool = True
    gate_form: str = 'code'
    attention_scale: str = 'after_softmax'
    learn_tau: bool = True
    shared_encoder_fc: bool = False
    centers: str = 'shared_normalized'       # or 'per_modality_raw'
    bn_axis_name: str | None = None

    def setup(self):
        e = self.encoder_width
        self.enc_visual = torch_dense(e, self.visual_dim, name='enc_visual')
        self.enc_audio = torch_dense(e, self.audio_dim, name='enc_audio')
        if self.shared_encoder_fc:
            self.enc_shared = torch_dense(e, e, name='enc_shared')
        msn = dict(channels=tuple(self.channels), stem_kernel=self.stem_kernel,
                   stem_stride=self.stem_stride, stem_pad=self.stem_pad,
                   bn_axis_name=self.bn_axis_name)
        self.msn_visual = MultiScaleNet(**msn, name='msn_visual')
        self.msn_audio = MultiScaleNet(**msn, name='msn_audio')
        if self.use_mfa:
            self.mfa = FusionAttention(self.channels[-1], self.gate_form,
                                       self.attention_scale, self.learn_tau, name='mfa')
        self.head = Head(self.head_hidden, self.embed_dim, self.dropout, name='head')
        self.cls_visual = Classifier(self.num_classes, self.classifier_hidden, self.dropout,
                                     name='cls_visual')
        self.cls_audio = Classifier(self.num_classes, self.classifier_hidden, self.dropout,
                                    name='cls_audio')
        shape = (self.num_classes, self.embed_dim)
        if self.centers == 'shared_normalized':
            self.center_table = self.param('centers', nn.initializers.normal(1.0), shape)
        elif self.centers == 'per_modality_raw':
            self.center_table = {
                'visual': self.param('centers_visual', nn.initializers.normal(1.0), shape),
                'audio': self.param('centers_audio', nn.initializers.normal(1.0), shape)}
        else:
            raise ValueError(f"loss.centers={self.centers!r}: expected 'shared_normalized' "
                             "or 'per_modality_raw'")

    def tokens(self, visual: Array, audio: Array, train: bool) -> tuple[Array, Array]:
        fv = nn.relu(self.enc_visual(visual))
        fa = nn.relu(self.enc_audio(audio))
        if self.shared_encoder_fc:
            fv, fa = nn.relu(self.enc_shared(fv)), nn.relu(self.enc_shared(fa))
        return self.msn_visual(fv, train), self.msn_audio(fa, train)

    def fuse(self, fv: Array, fa: Array) -> tuple[Array, Array]:
        """Two-stage fusion with one set of MFA weights: (M2 * Fv, M2 * Fa)."""
        m1 = self.mfa(fv, fa)
        m2 = self.mfa(m1 * fv, m1 * fa)
        return m2 * fv, m2 * fa

    def __call__(self, visual: Array, audio: Array, train: bool,
                 pairing: str = 'aligned') -> dict[str, Array]:
        if pairing not in PAIRINGS:
            raise ValueError(f'pairing={pairing!r}: expected one of {PAIRINGS}')
        fv, fa = self.tokens(visual, audio, train)
        if self.use_mfa:
            if pairing == 'aligned':
                fv, fa = self.fuse(fv, fa)
            else:   # each modality fused with itself: no partner information
                fv, fa = self.fuse(fv, fv)[0], self.fuse(fa, fa)[1]
        ov, oa = self.head(fv, train), self.head(fa, train)
        out = {'visual': ov, 'audio': oa,
               'logits_visual': self.cls_visual(ov, train),
               'logits_audio': self.cls_audio(oa, train)}
        return out


def build(config: Any, *, visual_dim: int, audio_dim: int,
          bn_axis_name: str | None = None) -> DSFFN:
    m = config.model
    return DSFFN(num_classes=int(config.data.num_classes), visual_dim=int(visual_dim),
                 audio_dim=int(audio_dim),
                 encoder_width=int(m.encoder_width), channels=tuple(m.channels),
                 stem_kernel=int(m.stem_kernel), stem_stride=int(m.stem_stride),
                 stem_pad=int(m.stem_pad), head_hidden=int(m.head_hidden),
                 embed_dim=int(m.embed_dim), classifier_hidden=int(m.classifier_hidden),
                 dropout=float(m.dropout), use_mfa=bool(config.loss.use_mfa),
                 gate_form=str(m.gate_form), attention_scale=str(m.attention_scale),
                 learn_tau=bool(m.learn_tau), shared_encoder_fc=bool(m.shared_encoder_fc),
                 centers=str(config.loss.centers), bn_axis_name=bn_axis_name)
