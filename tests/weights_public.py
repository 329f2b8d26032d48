"""PyTorch modules with the public code's module names and shapes, written for the
weight-import tests (our own code; the layouts were read from the public repositories).

- `PublicFGCrossNet`: FGCrossNet's `model.py` ResNet: `embed` (70 x 16, padding 0),
  `conv01` Conv1d 16 -> L/2 (k3 p1), `conv02` Conv1d L/2 -> L, `conv0` Conv2d 1 -> 3,
  then torchvision's ResNet names (`conv1`, `bn1`, `layer1..4`, `fc`). `forward_share`
  (images) and `forward_txt` (char ids) as in the public code. Sizes are parameters so
  the tests stay small; the public AvgPool2d(14) at 448 px is a global average, written
  here as AdaptiveAvgPool2d(1).
- `PublicCrossModal`: DSFFN's `v_a_model.CrossModal_NN` with `MultiScale_Modal_Net`:
  `visual_layer.visual_encoder`, `audio_layer.audio_encoder`, `MmFA` (q_v, q_a, k_v, k_a,
  w_1..w_4, joint_attention_map, t_c), `{visual,audio}_fine_grained_feature` (conv1,
  BN, conv{3,5,7}_{1,2,3}), `out_layer` (Sequential 0 / 3), `classifier_{audio,visual}
  .classifier` (0 / 3, no bias). The public final MaxPool1d(8, stride 1) on a length-8
  map is a global max, written as `amax` so small widths work.
"""

from __future__ import annotations

import math

import torch
import torch.nn as tnn
import torch.nn.functional as F

from test_resnet import TORCH_BLOCKS, TorchResNet, randomize_bn


class PublicFGCrossNet(TorchResNet):
    def __init__(self, layers=(1, 1, 1, 1), num_classes=4, width=4, length=64, vocab=70):
        super().__init__(TORCH_BLOCKS['bottleneck'], layers, num_classes, width)
        self.length = length
        self.embed = tnn.Embedding(vocab, 16, padding_idx=0)
        self.conv01 = tnn.Conv1d(16, length // 2, kernel_size=3, padding=1)
        self.conv02 = tnn.Conv1d(length // 2, length, kernel_size=3, padding=1)
        self.conv0 = tnn.Conv2d(1, 3, kernel_size=3, stride=1, padding=1)

    def process_txt(self, ids):
        x = self.embed(ids).transpose(2, 1)
        x = self.conv02(self.relu(self.conv01(x)))
        return self.conv0(x.view(-1, 1, self.length, self.length))

    def forward_share(self, x):
        return TorchResNet.forward(self, x)

    def forward_txt(self, ids):
        return self.forward_share(self.process_txt(ids))


def fgcrossnet_torch(num_classes=4, width=4, length=64, vocab=70, seed=0) -> PublicFGCrossNet:
    torch.manual_seed(seed)
    return randomize_bn(PublicFGCrossNet(num_classes=num_classes, width=width, length=length,
                                         vocab=vocab), seed).eval()


class MultiScaleModalNet(tnn.Module):
    def __init__(self, channels=(64, 128, 256)):
        super().__init__()
        c0, c1, c2 = channels
        self.conv1 = tnn.Conv1d(1, c0, kernel_size=32, stride=8, padding=12)
        self.pool1 = tnn.MaxPool1d(2, 2)
        self.BN = tnn.BatchNorm1d(1)
        for k in (3, 5, 7):
            for i, (cin, cout) in enumerate(((c0, c0), (c0, c1), (c1, c2))):
                setattr(self, f'conv{k}_{i + 1}', tnn.Conv1d(cin, cout, k, 1, (k - 1) // 2))
                setattr(self, f'pool{k}_{i + 1}', tnn.MaxPool1d(2, 2))

    def forward(self, x):
        x = self.pool1(self.conv1(self.BN(x.view(x.size(0), 1, x.size(1)))))
        tokens = []
        for k in (3, 5, 7):
            y = x
            for i in range(1, 4):
                y = getattr(self, f'pool{k}_{i}')(getattr(self, f'conv{k}_{i}')(y))
            tokens.append(y.amax(dim=2, keepdim=True).permute(0, 2, 1))
        return torch.cat(tokens, dim=1)


class FusionAttention(tnn.Module):
    def __init__(self, d):
        super().__init__()
        for n in ('q_v', 'q_a', 'k_v', 'k_a', 'w_1', 'w_2', 'w_3', 'w_4'):
            setattr(self, n, tnn.Linear(d, d))
        self.joint_attention_map = tnn.Bilinear(d, d, d, bias=False)
        self.norm = 1 / math.sqrt(d)
        self.t_c = tnn.Parameter(torch.ones([]))

    def forward(self, img, audio):
        qv, qa, ka, kv = self.q_v(img), self.q_a(audio), self.k_a(audio), self.k_v(img)

        def att(q, k):
            return torch.softmax(torch.bmm(q, k.permute(0, 2, 1)), dim=-1) * self.norm
        a_va, a_v = torch.bmm(att(qv, ka), audio), torch.bmm(att(qv, kv), img)
        a_av, a_a = torch.bmm(att(qa, kv), img), torch.bmm(att(qa, ka), audio)
        g_v = torch.sigmoid((self.w_1(a_va) + self.w_2(a_v)) * a_v)
        g_a = torch.sigmoid((self.w_3(a_av) + self.w_4(a_a)) * a_a)
        j = torch.sigmoid(self.joint_attention_map(g_v, g_a))
        return self.t_c * j * img + (1 - j) * audio


class Encoder(tnn.Module):
    def __init__(self, name, din, dout):
        super().__init__()
        setattr(self, name, tnn.Linear(din, dout))
        self.name = name

    def forward(self, x):
        return F.relu(getattr(self, self.name)(x))


class Classifier(tnn.Module):
    def __init__(self, latent, classes, hidden=32):
        super().__init__()
        self.classifier = tnn.Sequential(tnn.Linear(latent, hidden, bias=False), tnn.ReLU(),
                                         tnn.Dropout(0.5), tnn.Linear(hidden, classes, bias=False))

    def forward(self, x):
        return self.classifier(x)


class PublicCrossModal(tnn.Module):
    def __init__(self, dv=1024, da=128, width=1024, channels=(64, 128, 256), hidden=512,
                 out=64, classes=10):
        super().__init__()
        self.visual_layer = Encoder('visual_encoder', dv, width)
        self.audio_layer = Encoder('audio_encoder', da, width)
        self.MmFA = FusionAttention(channels[-1])
        self.visual_fine_grained_feature = MultiScaleModalNet(channels)
        self.audio_fine_grained_feature = MultiScaleModalNet(channels)
        self.out_layer = tnn.Sequential(tnn.Linear(3 * channels[-1], hidden), tnn.ReLU(),
                                        tnn.Dropout(0.5), tnn.Linear(hidden, out))
        self.classifier_audio = Classifier(out, classes)
        self.classifier_visual = Classifier(out, classes)

    def forward(self, img, audio):
        v = self.visual_fine_grained_feature(self.visual_layer(img))
        a = self.audio_fine_grained_feature(self.audio_layer(audio))
        m1 = self.MmFA(v, a)
        m2 = self.MmFA(m1 * v, m1 * a)
        ov = self.out_layer((m2 * v).reshape(v.size(0), -1))
        oa = self.out_layer((m2 * a).reshape(a.size(0), -1))
        return ov, oa, self.classifier_visual(ov), self.classifier_audio(oa)


def dsffn_torch(config, seed=0) -> PublicCrossModal:
    """The public network at `config`'s sizes, seeded, with non-trivial BN statistics."""
    torch.manual_seed(seed)
    d, m = config.data, config.model
    net = PublicCrossModal(int(d.visual_dim), int(d.audio_dim), int(m.encoder_width),
                           tuple(m.channels), int(m.head_hidden), int(m.embed_dim),
                           int(d.num_classes))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (net.visual_fine_grained_feature.BN, net.audio_fine_grained_feature.BN):
            bn.weight.fill_(0.5 + float(torch.rand(1, generator=g)))
            bn.bias.fill_(0.1)
            bn.running_mean.fill_(0.05)
            bn.running_var.fill_(0.7)
        net.MmFA.t_c.fill_(1.3)
    return net.eval()
