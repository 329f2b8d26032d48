"""A PyTorch peer of HSLM written from docs/hslm_model.md, for tests/test_hslm_model.py.

Float64, functional: every function takes the flax parameter dicts (numpy) and computes the
formulas directly, looping over (image, caption) pairs with each caption cut to its true
length as the reference does; BatchNorm is torch's (`F.batch_norm`, which updates the
running variance with the unbiased batch variance) and the GRU is a `torch.nn.GRU`. Only the
SAF BatchNorm sees all pairs at once (our statistics choice)."""

import numpy as np
import torch
from torch.nn import functional as F


def t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def l2norm(x, dim=-1):
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + 1e-8)


def linear(x, p):
    return x @ t(p['kernel']) + t(p['bias'])


class BN:
    """torch BatchNorm (functional) holding copies of a flax BN's variables."""

    def __init__(self, params, stats):
        self.weight, self.bias = t(params['scale']), t(params['bias'])
        self.mean, self.var = t(stats['mean']).clone(), t(stats['var']).clone()

    def __call__(self, x, training):     # x: (N, C) or (N, C, L)
        return F.batch_norm(x, self.mean, self.var, self.weight, self.bias, training, 0.1, 1e-5)


def relation_block(x, p, bn, training, heads):
    """mu = FC1(concat_h X Theta_h), nu alike; A = mu nu^T / N; BN((A X W_g) W_r) + X."""
    def multi_head(proj, fc):
        width = p[proj]['kernel'].shape[1] // heads
        parts = [x @ t(p[proj]['kernel'][:, h * width:(h + 1) * width])
                 + t(p[proj]['bias'][h * width:(h + 1) * width]) for h in range(heads)]
        return linear(torch.cat(parts, -1), p[fc])
    mu, nu = multi_head('theta', 'fc_mu'), multi_head('phi', 'fc_nu')
    a = mu @ nu.transpose(1, 2) / x.shape[1]
    y = linear(a @ linear(x, p['w_g']), p['w_r'])
    return bn(y.transpose(1, 2), training).transpose(1, 2) + x


def text_attention(x, p):
    """One caption (n, d), real words only: (K Q^T / n) U + X."""
    k, q, u = (torch.tanh(linear(x, p[name])) for name in ('key', 'query', 'value'))
    return (k @ q.T / x.shape[0]) @ u + x


def torch_gru(p_fwd, p_bwd, in_dim, hidden, seed=0):
    """A torch bidirectional GRU with random weights; writes them into the flax cells' dicts
    (models/gru.py: the six biases kept apart, kernels transposed)."""
    torch.manual_seed(seed)
    gru = torch.nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True).double()
    gru.requires_grad_(False)
    for p, suffix in ((p_fwd, ''), (p_bwd, '_reverse')):
        for side in ('i', 'h'):
            w = getattr(gru, f'weight_{side}h_l0{suffix}').detach().numpy()
            b = getattr(gru, f'bias_{side}h_l0{suffix}').detach().numpy()
            for g, gate in enumerate(('r', 'z', 'n')):
                rows = slice(g * hidden, (g + 1) * hidden)
                p[side + gate] = {'kernel': w[rows].T.astype(np.float32),
                                  'bias': b[rows].astype(np.float32)}
    return gru


def text_encoder(tokens, lengths, p, gru):
    """Per caption, cut to its length: embedding, text blocks, BiGRU (directions averaged), l2norm."""
    out = []
    for tok, n in zip(tokens, lengths):
        x = t(p['embed']['embedding'])[torch.tensor(tok[:n], dtype=torch.long)]
        for i in range(sum(k.startswith('text_attn_') for k in p)):
            x = text_attention(x, p[f'text_attn_{i}'])
        h, _ = gru(x[None])
        e = h.shape[-1] // 2
        out.append(l2norm((h[0, :, :e] + h[0, :, e:]) / 2))
    return out


def image_encoder(images, p, bns, training, heads):
    x = linear(t(images), p['fc'])
    for i in range(sum(k.startswith('relation_') for k in p)):
        x = relation_block(x, p[f'relation_{i}'], bns[f'relation_{i}'], training, heads)
    return l2norm(x)


def visual_pool(x, p, bn_local, bn_global, training):
    local = torch.tanh(bn_local(linear(x, p['local']), training))     # (B, R, E): R channels
    glob = torch.tanh(bn_global(linear(x.mean(1), p['global']), training))
    w = torch.softmax(linear(local * glob[:, None], p['common'])[..., 0], dim=1)
    return l2norm((w[..., None] * x).sum(1))


def text_pool(x, p):
    local = torch.tanh(linear(x, p['local']))
    glob = torch.tanh(linear(x.mean(0), p['global']))
    w = torch.softmax(linear(local * glob, p['common'])[..., 0], dim=0)
    return l2norm((w[:, None] * x).sum(0))


def t2i(regions, words, smooth=9.0):
    """SCAN t2i for one pair: regions (R, E), words (n, E) -> (n, E)."""
    s = F.leaky_relu(regions @ words.T, 0.1)
    s = l2norm(s, dim=1)
    a = torch.softmax(smooth * s.T, dim=1)          # (n, R), over regions
    return l2norm(a @ regions)


def sim_vector(a, b, kernel, bias):
    return l2norm((a - b).pow(2) @ t(kernel) + t(bias))


def head(regions, captions, p, bns, training, use_local=True, use_global=True):
    """Scores (Bi, Bc); captions: a list of (n, E) tensors."""
    if use_global:
        image_global = visual_pool(regions, p['visual_pool'], bns['bn_local'],
                                   bns['bn_global'], training)
    vectors = {}
    for j, words in enumerate(captions):
        text_global = text_pool(words, p['text_pool']) if use_global else None
        for i in range(regions.shape[0]):
            parts = []
            if use_global:
                parts.append(sim_vector(image_global[i], text_global, p['global_sim_kernel'],
                                        p['global_sim_bias'])[None])
            if use_local:
                parts.append(sim_vector(t2i(regions[i], words), words, p['local_sim_kernel'],
                                        p['local_sim_bias']))
            vectors[i, j] = torch.cat(parts, 0)
    keys = list(vectors)
    gates = torch.cat([linear(vectors[k], p['saf_gate']) for k in keys], 0)   # (sum T, 1)
    gates = bns['saf'](gates, training)
    scores = torch.zeros(regions.shape[0], len(captions), dtype=torch.float64)
    start = 0
    for k in keys:
        n = vectors[k].shape[0]
        alpha = torch.sigmoid(gates[start:start + n, 0])
        start += n
        alpha = alpha / (alpha.abs().sum() + 1e-8)
        pooled = l2norm(alpha @ vectors[k])
        scores[k] = torch.sigmoid(linear(pooled, p['score']))[0]
    return scores


def torch_bns(variables):
    """BN peers for every flax BN of an HSLM's variables."""
    p, s = variables['params'], variables['batch_stats']
    bns = {k: BN(p['image_encoder'][k]['bn'], s['image_encoder'][k]['bn'])
           for k in p['image_encoder'] if k.startswith('relation_')}
    bns['saf'] = BN(p['head']['saf_bn'], s['head']['saf_bn'])
    if 'visual_pool' in p['head']:
        for name in ('bn_local', 'bn_global'):
            bns[name] = BN(p['head']['visual_pool'][name], s['head']['visual_pool'][name])
    return bns


def torch_scores(variables, images, tokens, lengths, gru, training, heads=2, **switches):
    p = variables['params']
    bns = torch_bns(variables)
    regions = image_encoder(images, p['image_encoder'], bns, training, heads)
    captions = text_encoder(tokens, lengths, p['text_encoder'], gru)
    return head(regions, captions, p['head'], bns, training, **switches), bns
