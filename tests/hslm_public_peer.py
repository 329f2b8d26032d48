"""A PyTorch HSLM with the public code's module names and shapes (its `EncoderImage`,
`EncoderText`, `EncoderSimilarity` and their state-dict keys), written for
tests/test_weights_hslm.py from the formulas in docs/hslm_model.md; float32, eval mode.

Sizes are parameters (the public code fixes 4 heads of embed/4, 4 + 4 blocks, 36 regions);
everything else (names, nesting, Conv1d k=1 projections on (B, E, N), the packed BiGRU, the
per-caption similarity loop) is as the public layout has it."""

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def l2norm(x, dim=-1):
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + 1e-8)


class IMGCN(nn.Module):
    """Relation block on (B, E, N): per-head k=1 convolutions theta, theta1.., phi, phi1..,
    fc1 / fc2 over their concatenation, A = mu nu^T / N, BN(W(A g(v))) + v."""

    def __init__(self, e, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.g = nn.Conv1d(e, e, 1)
        self.W = nn.Sequential(nn.Conv1d(e, e, 1), nn.BatchNorm1d(e))
        for h in range(heads):
            suffix = '' if h == 0 else str(h)
            setattr(self, 'theta' + suffix, nn.Conv1d(e, head_dim, 1))
            setattr(self, 'phi' + suffix, nn.Conv1d(e, head_dim, 1))
        self.fc1 = nn.Linear(heads * head_dim, e)
        self.fc2 = nn.Linear(heads * head_dim, e)

    def forward(self, v):
        def heads(base):
            return torch.cat([getattr(self, base + ('' if h == 0 else str(h)))(v)
                              for h in range(self.heads)], 1).permute(0, 2, 1)
        a = self.fc1(heads('theta'))                   # (B, N, E)
        b = self.fc2(heads('phi')).permute(0, 2, 1)    # (B, E, N)
        r = a @ b / v.shape[-1]
        y = (r @ self.g(v).permute(0, 2, 1)).permute(0, 2, 1)
        return self.W(y) + v


class EncoderImage(nn.Module):
    def __init__(self, img_dim, e, blocks, heads, head_dim):
        super().__init__()
        self.fc = nn.Linear(img_dim, e)
        self.blocks = blocks
        for i in range(blocks):
            setattr(self, f'IM_GCN_{i + 1}', IMGCN(e, heads, head_dim))

    def forward(self, images):
        x = self.fc(images).permute(0, 2, 1)
        for i in range(self.blocks):
            x = getattr(self, f'IM_GCN_{i + 1}')(x)
        return l2norm(x.permute(0, 2, 1))


def mlp(d_in, d_out, *extra):
    return nn.Sequential(nn.Linear(d_in, d_out), *extra, nn.Tanh(), nn.Dropout(0.0))


class TextAttn(nn.Module):
    """(K Q^T / L) U + X with every (padded) position a key, L the padded length."""

    def __init__(self, d):
        super().__init__()
        self.embedding_local, self.embedding_global, self.embedding_v = mlp(d, d), mlp(d, d), mlp(d, d)

    def forward(self, x):
        k, q, u = self.embedding_local(x), self.embedding_global(x), self.embedding_v(x)
        return (k @ q.permute(0, 2, 1)) / x.shape[1] @ u + x


class EncoderText(nn.Module):
    def __init__(self, vocab, word_dim, e, blocks):
        super().__init__()
        self.e, self.blocks = e, blocks
        self.embed = nn.Embedding(vocab, word_dim)
        for i in range(blocks):
            setattr(self, f'W_att{i + 1}', TextAttn(word_dim))
        self.cap_rnn = nn.GRU(word_dim, e, 1, batch_first=True, bidirectional=True)

    def forward(self, tokens, lengths):
        x = self.embed(tokens)
        for i in range(self.blocks):
            x = getattr(self, f'W_att{i + 1}')(x)
        packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, _ = pad_packed_sequence(self.cap_rnn(packed)[0], batch_first=True,
                                     total_length=tokens.shape[1])
        return l2norm((out[..., :self.e] + out[..., self.e:]) / 2)


class VisualSA(nn.Module):
    def __init__(self, e, regions):
        super().__init__()
        self.embedding_local = mlp(e, e, nn.BatchNorm1d(regions))
        self.embedding_global = mlp(e, e, nn.BatchNorm1d(e))
        self.embedding_common = nn.Sequential(nn.Linear(e, 1))

    def forward(self, local, mean):
        w = self.embedding_common(self.embedding_local(local)
                                  * self.embedding_global(mean)[:, None]).squeeze(2)
        return l2norm((torch.softmax(w, 1)[..., None] * local).sum(1))


class TextSA(nn.Module):
    def __init__(self, e):
        super().__init__()
        self.embedding_local, self.embedding_global = mlp(e, e), mlp(e, e)
        self.embedding_common = nn.Sequential(nn.Linear(e, 1))

    def forward(self, local, mean):
        w = self.embedding_common(self.embedding_local(local)
                                  * self.embedding_global(mean)[:, None]).squeeze(2)
        return l2norm((torch.softmax(w, 1)[..., None] * local).sum(1))


class SimilarityCalculation(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.attn_sim_w = nn.Linear(s, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, v):                              # (n_img, T, S)
        a = torch.sigmoid(self.bn(self.attn_sim_w(v).permute(0, 2, 1)))
        a = a / (a.abs().sum(-1, keepdim=True) + 1e-8)
        return l2norm((a @ v).squeeze(1))


def scan_t2i(words, regions, smooth=9.0):
    """words (n_img, n, E), regions (n_img, R, E) -> attended (n_img, n, E)."""
    attn = l2norm(torch.nn.functional.leaky_relu(regions @ words.transpose(1, 2), 0.1), 2)
    attn = torch.softmax(attn.transpose(1, 2) * smooth, dim=2)
    return l2norm(attn @ regions)


class EncoderSimilarity(nn.Module):
    def __init__(self, e, s, regions):
        super().__init__()
        self.v_global_w, self.t_global_w = VisualSA(e, regions), TextSA(e)
        self.sim_tranloc_w, self.sim_tranglo_w = nn.Linear(e, s), nn.Linear(e, s)
        self.sim_eval_w = nn.Linear(s, 1)
        self.cal_sim_base_atten = SimilarityCalculation(s)

    def forward(self, img, cap, lengths):
        img_glo = self.v_global_w(img, img.mean(1))
        scores = []
        for i, n in enumerate(lengths):
            c = cap[i:i + 1, :n]
            c_glo = self.t_global_w(c, c.mean(1))
            ce = c.repeat(img.shape[0], 1, 1)
            loc = l2norm(self.sim_tranloc_w((scan_t2i(ce, img) - ce) ** 2))
            glo = l2norm(self.sim_tranglo_w((img_glo - c_glo) ** 2))
            v = self.cal_sim_base_atten(torch.cat([glo[:, None], loc], 1))
            scores.append(torch.sigmoid(self.sim_eval_w(v)))
        return torch.cat(scores, 1)


def build(config, seed=0):
    """The three encoders for an HSLM config, seeded, every BN randomised (running stats
    and affine), eval mode."""
    m, d = config.model, config.data
    torch.manual_seed(seed)
    parts = [EncoderImage(int(d.region_dim), m.embed_dim, m.num_relation_blocks, m.relation_heads,
                          m.relation_head_dim),
             EncoderText(m.vocab_size, m.word_dim, m.embed_dim, m.num_text_blocks),
             EncoderSimilarity(m.embed_dim, m.sim_dim, int(d.num_regions))]
    rng = np.random.default_rng(seed)
    for part in parts:
        for mod in part.modules():
            if isinstance(mod, nn.BatchNorm1d):
                c = mod.num_features
                for name, lo, hi in (('weight', 0.5, 1.5), ('bias', -0.2, 0.2),
                                     ('running_mean', -0.2, 0.2), ('running_var', 0.5, 1.5)):
                    getattr(mod, name).data = torch.tensor(rng.uniform(lo, hi, c), dtype=torch.float32)
                mod.num_batches_tracked.fill_(7)
        part.eval().requires_grad_(False)
    return parts


def scores(parts, images, tokens, lengths):
    img, txt, sim = parts
    with torch.no_grad():
        return sim(img(torch.tensor(images)), txt(torch.tensor(tokens, dtype=torch.long), lengths),
                   [int(n) for n in lengths]).numpy()
