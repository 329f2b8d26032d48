"""PyTorch peer of `dcinet bench`: the same DCINet train step, written the way a careful
PyTorch user would, so the JAX figure has an honest baseline.

Work per step (as in `dcinet_jax.methods.dcinet.loss_fn`): uint8 image-like batches
normalised on the device, the text network (embedding -> Conv1d -> ReLU -> Conv1d ->
reshape -> Conv2d, docs/model.md#text-network), one ResNet (torchvision layout, plain
torch.nn) over the concatenated batch up to the cut, sub-module 2 on those features (original branch),
CMSI (box mask mix with the partner opposite in a shuffled batch, soft targets) and
CMCI (channel-group swap with a same-label partner of each other modality) on the
cut-point features, sub-module 2 again on the interacted features, per-modality CE +
soft-target CE, SGD with momentum and weight decay.

Habits: channels_last on CUDA, bf16 autocast on CUDA (float32 on CPU), cudnn.benchmark, fused
SGD on CUDA, optional torch.compile, random numbers drawn on the device (no host syncs
inside the timed windows; one synchronize at the end of each window).

    python -m dcinet_jax.perf.torch_peer --image_size 448 --batch_per_modality 32 \
        --steps 20 --dtype bfloat16 [--compile]
    python -m dcinet_jax.perf.torch_peer --preset test       # tiny model, runs on a CPU

Only torch is needed (the `[torch]` extra; no torchvision, no JAX): the alphabet sizes
come from `input_pipeline.spec`, which imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from input_pipeline.spec import VOCAB_SIZES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXPANSION = {'basic': 1, 'bottleneck': 4}


# ----------------------------------------------------------------------------- model

class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride sits on the 3x3 conv (torchvision)."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        out_planes = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = None
        if stride != 1 or inplanes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_planes, 1, stride, bias=False),
                nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet layout (conv1/bn1/layerN/fc), cut into two parts."""

    def __init__(self, stage_sizes: Sequence[int], block: str, width: int, num_classes: int,
                 cut: str):
        super().__init__()
        cls = Bottleneck if block == 'bottleneck' else BasicBlock
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        self.stage_names = [f'layer{i + 1}' for i in range(len(stage_sizes))]
        for i, (name, n) in enumerate(zip(self.stage_names, stage_sizes)):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(cls(inplanes, planes, (1 if i == 0 else 2) if j == 0 else 1))
                inplanes = planes * EXPANSION[block]
            setattr(self, name, nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, num_classes)
        if cut not in self.stage_names:
            raise ValueError(f'cut must be one of {self.stage_names}, got {cut!r}')
        self.cut_index = self.stage_names.index(cut) + 1
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def part1(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names[:self.cut_index]:
            x = getattr(self, name)(x)
        return x

    def part2(self, h: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names[self.cut_index:]:
            h = getattr(self, name)(h)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1).float())


class TextNet(nn.Module):
    """ids (B, L) -> (B, 3, L, L): height = Conv1d output channel, width = position."""

    def __init__(self, vocab_size: int, length: int, embed_dim: int = 16, hidden: int = 0):
        super().__init__()
        hidden = hidden or length // 2
        self.length = length
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.conv1 = nn.Conv1d(embed_dim, hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, length, 3, padding=1)
        self.conv3 = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).transpose(1, 2)              # (B, E, L)
        x = self.conv2(F.relu(self.conv1(x)))                 # (B, L_ch, L_pos)
        return self.conv3(x.unsqueeze(1))                     # (B, 3, L, L)


class PeerNet(nn.Module):
    """Image-like modalities first, then text, concatenated along the batch."""

    def __init__(self, *, stage_sizes, block, width, num_classes, cut, text_modality,
                 vocab_size, text_length, text_embed_dim, text_hidden):
        super().__init__()
        self.backbone = ResNet(stage_sizes, block, width, num_classes, cut)
        self.text = (TextNet(vocab_size, text_length, text_embed_dim, text_hidden)
                     if text_modality else None)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def images(self, image_like: Sequence[torch.Tensor], text: torch.Tensor | None
               ) -> torch.Tensor:
        xs = [(x.float() - self.mean) / self.std for x in image_like]   # uint8 NCHW
        if text is not None:
            xs.append(self.text(text))
        return torch.cat(xs)


# ----------------------------------------------------------------------------- interactions

def smooth_one_hot(labels: torch.Tensor, k: int, s: float) -> torch.Tensor:
    off = s / k
    return torch.full((labels.shape[0], k), off, device=labels.device).scatter_(
        1, labels[:, None], 1.0 - s + off)


def cmsi_mix(h: torch.Tensor, labels: torch.Tensor, num_classes: int, smoothing: float,
         minmax=(0.5, 0.6)) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix of each sample with the one opposite it in a shuffled batch (docs/model.md#cmsi);
    box sizes and corner are device tensors, so nothing waits for the host."""
    b, _, hh, ww = h.shape
    dev = h.device
    perm = torch.randperm(b, device=dev)
    inv = torch.argsort(perm)
    partner = perm[b - 1 - inv]

    def side(n):
        lo, hi = int(n * minmax[0]), int(n * minmax[1])
        hi = max(hi, lo + 1)
        cut = torch.randint(lo, hi, (), device=dev)
        # timm: randint(0, n - cut), upper bound exclusive (kept non-empty).
        start = (torch.rand((), device=dev) * (n - cut).clamp(min=1)).floor()
        return cut, start

    ch, yl = side(hh)
    cw, xl = side(ww)
    ys = torch.arange(hh, device=dev).view(hh, 1)
    xs = torch.arange(ww, device=dev).view(1, ww)
    box = ((ys >= yl) & (ys < yl + ch) & (xs >= xl) & (xs < xl + cw)).to(h.dtype)
    mixed = h * (1 - box) + h[partner] * box
    lam = 1.0 - (ch * cw).float() / (hh * ww)
    targets = (lam * smooth_one_hot(labels, num_classes, smoothing)
               + (1 - lam) * smooth_one_hot(labels[partner], num_classes, smoothing))
    return mixed, targets


def cmci_swap(h: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
         num_modalities: int) -> torch.Tensor:
    """Channel group n of each sample comes from a random same-label sample of
    modality n, where one exists (docs/model.md#cmci); reads from the input only."""
    c = h.shape[1]
    bounds = [k * c // num_modalities for k in range(num_modalities + 1)]
    same = labels[:, None] == labels[None, :]
    noise = torch.rand(same.shape, device=h.device)
    out = h
    for n in range(num_modalities):
        cand = same & (modality[None, :] == n) & (modality[:, None] != n)
        score = torch.where(cand, noise, torch.full_like(noise, -1.0))
        partner = score.argmax(1)
        has = cand.any(1).view(-1, 1, 1, 1)
        group = h[:, bounds[n]:bounds[n + 1]]
        swapped = torch.where(has, group[partner], group)
        out = torch.cat([out[:, :bounds[n]], swapped, out[:, bounds[n + 1]:]], 1)
    return out


def dcinet_loss(logits, dual_logits, labels, modality, targets, num_modalities):
    logp = F.log_softmax(logits.float(), -1)
    ce = -logp.gather(1, labels[:, None])[:, 0]
    loss = sum(ce[modality == m].mean() for m in range(num_modalities))
    if dual_logits is not None:
        loss = loss + (-(targets * F.log_softmax(dual_logits.float(), -1)).sum(-1)).mean()
    return loss


# ----------------------------------------------------------------------------- run

def run_torch_peer(*, image_size: int, text_length: int, batch_per_modality: int,
                   num_classes: int, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                   block: str = 'bottleneck', width: int = 64, cut: str = 'layer4',
                   steps: int = 20, warmup_steps: int = 2, dtype: str = 'bfloat16',
                   compile: bool = False, num_modalities: int = 3,
                   text_modality: bool = True, vocab_size: int = VOCAB_SIZES['lower_space'],
                   text_embed_dim: int = 16, text_hidden: int = 0,
                   label_smoothing: float = 0.1, use_cmsi: bool = True, use_cmci: bool = True,
                   learning_rate: float = 1e-3, momentum: float = 0.9,
                   weight_decay: float = 1e-4, seed: int = 0, device: str | None = None,
                   channels_last: bool | None = None, max_windows: int = 5
                   ) -> dict[str, Any]:
    """Times `steps` DCINet train steps in PyTorch; returns images/s, step time, ...

    `dtype` 'bfloat16' means bf16 autocast on CUDA; a CPU run stays float32 (reported).
    `channels_last` (None: on CUDA only): NHWC memory format, which tensor cores want;
    on CPU, oneDNN's NHWC BatchNorm is slower by an order of magnitude at small widths.
    Every modality sample counts as one image, as in `dcinet bench`.
    """
    torch.manual_seed(seed)
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    cuda = dev.type == 'cuda'
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = cuda and dtype == 'bfloat16'
    if channels_last is None:
        channels_last = cuda
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    n_img = num_modalities - (1 if text_modality else 0)
    b = batch_per_modality
    total = b * num_modalities
    if use_cmsi and total % 2:
        raise ValueError(f'CMSI needs an even batch, got {total}')

    net = PeerNet(stage_sizes=stage_sizes, block=block, width=width,
                  num_classes=num_classes, cut=cut, text_modality=text_modality,
                  vocab_size=vocab_size, text_length=text_length,
                  text_embed_dim=text_embed_dim, text_hidden=text_hidden)
    net = net.to(dev).to(memory_format=fmt).train()
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate, momentum=momentum,
                          weight_decay=weight_decay, **({'fused': True} if cuda else {}))
    modality = torch.arange(num_modalities, device=dev).repeat_interleave(b)

    def forward_loss(image_like, text, labels):
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            x = net.images(image_like, text).contiguous(memory_format=fmt)
            h = net.backbone.part1(x)
            logits = net.backbone.part2(h)
            dual, targets = None, None
            if use_cmsi or use_cmci:
                mixed, targets = h, smooth_one_hot(labels, num_classes, label_smoothing)
                if use_cmsi:
                    mixed, targets = cmsi_mix(h, labels, num_classes, label_smoothing)
                if use_cmci:
                    mixed = cmci_swap(mixed, labels, modality, num_modalities)
                dual = net.backbone.part2(mixed.contiguous(memory_format=fmt))
            return dcinet_loss(logits, dual, labels, modality, targets, num_modalities)

    fwd = torch.compile(forward_loss) if compile else forward_loss
    g = torch.Generator(device=dev).manual_seed(seed + 1)
    image_like = [torch.randint(0, 256, (b, 3, image_size, image_size), device=dev,
                                dtype=torch.uint8, generator=g) for _ in range(n_img)]
    text = (torch.randint(1, vocab_size, (b, text_length), device=dev, generator=g)
            if text_modality else None)
    labels = torch.randint(0, num_classes, (total,), device=dev, generator=g)

    def step():
        loss = fwd(image_like, text, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    loss = step()
    sync()
    first_step_s = time.perf_counter() - t0
    for _ in range(1, warmup_steps):
        loss = step()
    sync()
    n_win = min(steps, max_windows)
    sizes = [steps // n_win + (1 if i < steps % n_win else 0) for i in range(n_win)]
    per_step = []
    for w in sizes:
        t0 = time.perf_counter()
        for _ in range(w):
            loss = step()
        sync()
        per_step.append((time.perf_counter() - t0) / w)
    step_s = statistics.median(per_step)
    return {
        'framework': 'pytorch', 'torch_version': torch.__version__,
        'device': torch.cuda.get_device_name(dev) if cuda else f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)',
        'dtype': 'bfloat16 autocast' if amp else 'float32',
        'compile': bool(compile), 'channels_last': bool(channels_last),
        'batch_per_modality': b, 'images_per_step': total,
        'first_step_s': first_step_s, 'step_times_s': per_step, 'step_time_s': step_s,
        'images_per_sec': total / step_s, 'final_loss': float(loss.detach()),
        'peak_memory_bytes': int(torch.cuda.max_memory_allocated(dev)) if cuda else None,
    }


PRESETS = {
    # The paper's model at 448 px.
    'resnet50': dict(image_size=448, text_length=448, batch_per_modality=8, num_classes=200,
                     stage_sizes=(3, 4, 6, 3), block='bottleneck', width=64),
    # configs/test.py sizes: runs in seconds on a CPU.
    'test': dict(image_size=64, text_length=64, batch_per_modality=8, num_classes=4,
                 stage_sizes=(1, 1, 1, 1), block='bottleneck', width=4),
    # configs/demo.py sizes.
    'demo': dict(image_size=112, text_length=112, batch_per_modality=8, num_classes=10,
                 stage_sizes=(1, 1, 1, 1), block='bottleneck', width=8),
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', choices=sorted(PRESETS), default='resnet50')
    p.add_argument('--image_size', type=int)
    p.add_argument('--batch_per_modality', type=int)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup_steps', type=int, default=2)
    p.add_argument('--dtype', choices=['float32', 'bfloat16'], default='bfloat16')
    p.add_argument('--compile', action='store_true', help='torch.compile the forward+loss')
    p.add_argument('--args_json', help='every run_torch_peer argument as JSON (overrides)')
    p.add_argument('--json_out', help='write the figures here')
    a = p.parse_args(argv)
    kwargs: dict[str, Any] = dict(PRESETS[a.preset])
    if a.image_size:
        kwargs.update(image_size=a.image_size, text_length=a.image_size)
    if a.batch_per_modality:
        kwargs['batch_per_modality'] = a.batch_per_modality
    kwargs.update(steps=a.steps, warmup_steps=a.warmup_steps, dtype=a.dtype,
                  compile=a.compile)
    if a.args_json:
        kwargs.update(json.loads(a.args_json))
    result = run_torch_peer(**kwargs)
    result['arguments'] = kwargs
    text = json.dumps(result, indent=2, default=str)
    if a.json_out:
        with open(a.json_out, 'w') as f:
            f.write(text)
    print(f"torch peer: {result['images_per_sec']:.1f} images/s, median step "
          f"{result['step_time_s'] * 1e3:.2f} ms on {result['device']} ({result['dtype']})")
    return result


if __name__ == '__main__':
    main()
