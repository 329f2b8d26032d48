"""VGG and ViT backbones against PyTorch references, cut points, weight import, costs.

The references are written here in PyTorch with the reference libraries' module names
(torchvision's `vgg`, timm's `VisionTransformer`): torchvision's and timm's own wheels on
PyPI are built against a CUDA torch and do not import next to the CPU torch of the test
extra. Each reference is the few lines of the library's forward the backbone reproduces;
the position-embedding resampling reference is the exact torch call timm's
`resample_abs_pos_embed` makes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from torch import nn as tnn
from torch.nn import functional as F

from configs import backbones as backbone_configs
from dcinet_jax import pretrained
from dcinet_jax.methods import dcinet as dcinet_method
from dcinet_jax.models import build_model, init_variables
from dcinet_jax.models.backbones.vgg import VGG, VGG_CFGS
from dcinet_jax.models.backbones.vit import ViT

torch.manual_seed(0)
TOL = dict(rtol=2e-4, atol=2e-4)


# ----------------------------------------------------------------------------- references

class TorchVGG(tnn.Module):
    """torchvision.models.VGG (features / avgpool / classifier), widths scaled by width/64."""

    def __init__(self, cfg, batch_norm, width, hidden, num_classes):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == 'M':
                layers.append(tnn.MaxPool2d(2, 2))
                continue
            w = v * width // 64
            layers.append(tnn.Conv2d(c, w, 3, padding=1))
            if batch_norm:
                layers.append(tnn.BatchNorm2d(w))
            layers.append(tnn.ReLU(inplace=True))
            c = w
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(c * 49, hidden), tnn.ReLU(True), tnn.Dropout(),
            tnn.Linear(hidden, hidden), tnn.ReLU(True), tnn.Dropout(),
            tnn.Linear(hidden, num_classes))

        # torchvision's conv init (signal-preserving, so the features matter to the logits),
        # non-zero biases so they are checked too; Linear layers scaled to keep unit signal.
        for m in self.modules():
            if isinstance(m, tnn.Conv2d):
                tnn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
                tnn.init.uniform_(m.bias, -0.1, 0.1)
            elif isinstance(m, tnn.Linear):
                tnn.init.normal_(m.weight, 0, (2.0 / m.in_features) ** 0.5)
                tnn.init.uniform_(m.bias, -0.1, 0.1)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchAttention(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TorchMlp(tnn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = tnn.Linear(dim, hidden), tnn.GELU(), tnn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TorchBlock(tnn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1, self.attn = tnn.LayerNorm(dim, eps=1e-6), TorchAttention(dim, heads)
        self.norm2, self.mlp = tnn.LayerNorm(dim, eps=1e-6), TorchMlp(dim, mlp)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchViT(tnn.Module):
    """timm VisionTransformer's layout; logits from the mean of the patch tokens after `norm`."""

    def __init__(self, img, patch, dim, depth, heads, mlp, num_classes):
        super().__init__()
        self.patch_embed = tnn.Module()
        self.patch_embed.proj = tnn.Conv2d(3, dim, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = tnn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = tnn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = tnn.ModuleList([TorchBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = tnn.LayerNorm(dim, eps=1e-6)
        self.head = tnn.Linear(dim, num_classes)

    def tokens(self, x, stop=None):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks[:stop]:
            x = blk(x)
        return x

    def forward(self, x):
        return self.head(self.norm(self.tokens(x))[:, 1:].mean(1))


def timm_resample_abs_pos_embed(posemb, new_size, num_prefix_tokens=1):
    """What timm.layers.resample_abs_pos_embed does (bicubic, antialias=True)."""
    prefix, posemb = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    old = int(round(posemb.shape[1] ** 0.5))
    dim = posemb.shape[-1]
    posemb = posemb.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    posemb = F.interpolate(posemb, size=new_size, mode='bicubic', antialias=True)
    posemb = posemb.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([prefix, posemb], 1)


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_nhwc(x):
    return np.asarray(x.permute(0, 2, 3, 1))


# ----------------------------------------------------------------------------- VGG

def vgg_pair(arch, batch_norm, size, num_classes=5, width=8, hidden=32, cut='layer4', head='tv'):
    ref = TorchVGG(VGG_CFGS[arch], batch_norm, width, hidden, num_classes)
    randomise_bn(ref)
    ref.eval()
    model = VGG(arch=arch, batch_norm=batch_norm, width=width, hidden=hidden, head_kind=head,
                num_classes=num_classes, cut=cut)
    x = torch.randn(2, 3, size, size)
    v = model.init(jax.random.key(0), to_nhwc(x), train=False)
    return ref, model, x, v


@pytest.mark.parametrize('arch,batch_norm,size', [('vgg16', False, 64), ('vgg19_bn', True, 96)])
def test_vgg_matches_torchvision_layout_reference(arch, batch_norm, size):
    arch = arch.removesuffix('_bn')
    ref, model, x, v = vgg_pair(arch, batch_norm, size)
    conv = pretrained.convert_state_dict(state_dict(ref), v, 'vgg')
    with torch.no_grad():
        want = ref(x).numpy()
    got = model.apply(conv, to_nhwc(x), train=False)
    np.testing.assert_allclose(got, want, **TOL)
    # Every cut point: part2(part1(x)) is the uncut reference forward; map shapes per cut.
    shapes = {}
    for cut in model.cut_points:
        m = model.clone(cut=cut)
        h = m.apply(conv, to_nhwc(x), train=False, method='part1')
        shapes[cut] = h.shape
        assert h.shape[-1] == m.cut_channels
        logits, pooled = m.apply(conv, h, train=False, method='part2')
        np.testing.assert_allclose(logits, want, **TOL)
        assert pooled.shape == (2, 32)
    s = size
    assert shapes == {'layer1': (2, s // 4, s // 4, 16), 'layer2': (2, s // 8, s // 8, 32),
                      'layer3': (2, s // 16, s // 16, 64), 'layer4': (2, s // 32, s // 32, 64)}


def test_vgg_timm_names_and_prefix_convert_the_same():
    ref, model, x, v = vgg_pair('vgg16', False, 64)
    sd = state_dict(ref)
    timm_sd = {}
    for k, a in sd.items():
        if k.startswith('classifier.0.'):
            k, a = 'pre_logits.fc1.' + k.split('.')[-1], (a.reshape(32, 64, 7, 7) if a.ndim == 2 else a)
        elif k.startswith('classifier.3.'):
            k, a = 'pre_logits.fc2.' + k.split('.')[-1], (a.reshape(32, 32, 1, 1) if a.ndim == 2 else a)
        elif k.startswith('classifier.6.'):
            k = 'head.fc.' + k.split('.')[-1]
        timm_sd['module.' + k] = a
    a = pretrained.convert_state_dict(sd, v, 'vgg')
    b = pretrained.convert_state_dict(timm_sd, v, 'vgg')
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_vgg_import_drops_classifier_on_class_mismatch_and_for_gap(caplog):
    ref, model, x, v = vgg_pair('vgg16', False, 64, num_classes=1000)
    sd = state_dict(ref)
    small = VGG(arch='vgg16', width=8, hidden=32, num_classes=7)
    v7 = small.init(jax.random.key(1), to_nhwc(x), train=False)
    with caplog.at_level('INFO', logger='dcinet_jax.pretrained'):
        out = pretrained.convert_state_dict(sd, v7, 'vgg')
    assert 'classifier.6' in caplog.text
    np.testing.assert_array_equal(out['params']['classifier']['6']['kernel'],
                                  v7['params']['classifier']['6']['kernel'])
    np.testing.assert_array_equal(out['params']['classifier']['3']['kernel'], sd['classifier.3.weight'].T)
    gap = VGG(arch='vgg16', width=8, head_kind='gap', num_classes=7)
    vg = gap.init(jax.random.key(1), to_nhwc(x), train=False)
    out = pretrained.convert_state_dict(sd, vg, 'vgg')
    np.testing.assert_array_equal(out['params']['features']['28']['kernel'],
                                  sd['features.28.weight'].transpose(2, 3, 1, 0))
    with torch.no_grad():
        h = ref.features(x).mean((2, 3)).numpy()
    _, pooled = gap.apply(out, gap.apply(out, to_nhwc(x), train=False, method='part1'),
                          train=False, method='part2')
    np.testing.assert_allclose(pooled, h, **TOL)
    with pytest.raises(ValueError, match=r'pretrained VGG state dict does not fit.*\n.*missing keys \(1\): '
                                         r'features\.0\.bias(.|\n)*unexpected keys \(1\): features\.99\.weight'
                                         r'(.|\n)*shape mismatches \(1\):\n +features\.2\.weight'):
        bad = dict(sd)
        bad.pop('features.0.bias')
        bad['features.99.weight'] = sd['features.0.weight']
        bad['features.2.weight'] = sd['features.2.weight'][:, :4]
        pretrained.convert_state_dict(bad, v, 'vgg')


@pytest.mark.parametrize('size', [64, 256])   # pool5 map 2 x 2 (pooled up to 7 x 7) and 8 x 8
def test_vgg_dense_head_matches_timm_semantics(size):
    """timm's VGG: fc6 as a 7x7 valid conv, fc7 as a 1x1 conv, global average, fc8."""
    ref, model, x, v = vgg_pair('vgg16', False, size, head='dense')
    conv = pretrained.convert_state_dict(state_dict(ref), v, 'vgg')
    with torch.no_grad():
        f = ref.features(x)
        if f.shape[-1] < 7:
            f = F.adaptive_avg_pool2d(f, (7, 7))
        c0, c3 = ref.classifier[0], ref.classifier[3]
        y = F.relu(F.conv2d(f, c0.weight.reshape(32, 64, 7, 7), c0.bias))
        y = F.relu(F.conv2d(y, c3.weight[:, :, None, None], c3.bias))
        want = ref.classifier[6](y.mean((2, 3))).numpy()
        tv = ref(x).numpy()
    got = model.apply(conv, to_nhwc(x), train=False)
    np.testing.assert_allclose(got, want, **TOL)
    if size > 64:  # on a map below 7 x 7 both heads are the same function
        assert np.abs(np.asarray(got) - tv).max() > 1e-3


# ----------------------------------------------------------------------------- ViT

VIT = dict(patch=8, dim=32, depth=2, heads=4, mlp=64)


def vit_pair(img, grid=0, num_classes=5, cut='layer4', ref_img=None):
    ref = TorchViT(ref_img or img, VIT['patch'], VIT['dim'], VIT['depth'], VIT['heads'], VIT['mlp'],
                   num_classes).eval()
    model = ViT(width=VIT['dim'], depth=VIT['depth'], heads=VIT['heads'], mlp_dim=VIT['mlp'],
                patch=VIT['patch'], image_size=img, grid=grid, num_classes=num_classes, cut=cut)
    x = torch.randn(2, 3, img, img)
    v = model.init(jax.random.key(0), to_nhwc(x), train=False)
    return ref, model, x, v


@pytest.mark.parametrize('grid', [0, 2])
def test_vit_matches_timm_layout_reference(grid):
    ref, model, x, v = vit_pair(32, grid=grid)   # 4 x 4 tokens; grid 2 = exact 2 x 2 means
    conv = pretrained.convert_state_dict(state_dict(ref), v, 'vit')
    assert 'batch_stats' not in conv
    with torch.no_grad():
        want = ref(x).numpy()
    np.testing.assert_allclose(model.apply(conv, to_nhwc(x), train=False), want, **TOL)
    h = model.apply(conv, to_nhwc(x), train=False, method='part1')
    assert h.shape == (2, grid or 4, grid or 4, 32)
    with torch.no_grad():  # the map: tokens after `norm`, cls dropped, row-major grid, 2x2 means
        tok = ref.norm(ref.tokens(x))[:, 1:].reshape(2, 4, 4, 32)
        if grid:
            tok = F.interpolate(tok.permute(0, 3, 1, 2), size=(grid, grid), mode='bilinear',
                                align_corners=False).permute(0, 2, 3, 1)
    np.testing.assert_allclose(h, tok.numpy(), **TOL)


def test_vit_inner_cut_drops_cls_and_runs_remaining_blocks():
    ref, model, x, v = vit_pair(32, cut='block1')
    conv = pretrained.convert_state_dict(state_dict(ref), v, 'vit')
    h = model.apply(conv, to_nhwc(x), train=False, method='part1')
    assert h.shape == (2, 4, 4, 32) and model.cut_points == ('block1', 'layer4')
    logits, _ = model.apply(conv, h, train=False, method='part2')
    with torch.no_grad():
        t = ref.tokens(x, stop=1)[:, 1:]
        np.testing.assert_allclose(h, t.reshape(2, 4, 4, 32).numpy(), **TOL)
        want = ref.head(ref.norm(ref.blocks[1](t)).mean(1)).numpy()
    np.testing.assert_allclose(logits, want, **TOL)


def test_pos_embed_resampling_hand_computed_and_against_torch_bicubic_antialias():
    # 2 -> 4 on one axis by hand: Keys a = -0.5, half-pixel centres, edge weights renormalised.
    def keys(t, a=-0.5):
        t = abs(t)
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1 if t <= 1 else a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    # Input samples 0 and 1 at centres 0 and 1; both taps lie within the kernel's support.
    hand = [keys(p - 1) / (keys(p) + keys(p - 1)) for p in ((i + 0.5) / 2 - 0.5 for i in range(4))]
    np.testing.assert_allclose(hand, [-0.0703125 / 0.796875, 0.2265625 / 1.09375,
                                      1 - 0.2265625 / 1.09375, 1 + 0.0703125 / 0.796875], rtol=1e-12)
    grid = np.zeros((1, 1 + 4, 1), np.float32)
    grid[0, 1:, 0] = [0, 1, 0, 1]          # columns 0, 1 in both rows: a function of x only
    out = pretrained.resample_pos_embed(grid, 4)[0, 1:, 0].reshape(4, 4)
    np.testing.assert_allclose(out, np.tile(hand, (4, 1)), rtol=1e-6, atol=1e-6)
    # Against the torch call timm makes, up (14 -> 28 as for ViT-B/16 at 448, and 5 -> 7) and down.
    for old, new in ((14, 28), (5, 7), (6, 4)):
        pos = torch.randn(1, 1 + old * old, 8)
        want = timm_resample_abs_pos_embed(pos, (new, new)).numpy()
        got = pretrained.resample_pos_embed(pos.numpy(), new)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[:, 0], pos.numpy()[:, 0])


def test_vit_import_resamples_pos_embed_like_timm():
    ref, model, x, v = vit_pair(48, ref_img=32)        # checkpoint 4 x 4 grid, model 6 x 6
    sd = state_dict(ref)
    conv = pretrained.convert_state_dict({'model.' + k: a for k, a in sd.items()}, v, 'vit')
    with torch.no_grad():
        ref.pos_embed = tnn.Parameter(timm_resample_abs_pos_embed(ref.pos_embed, (6, 6)))
        want = ref(x).numpy()
    np.testing.assert_allclose(model.apply(conv, to_nhwc(x), train=False), want, **TOL)


def test_vit_import_head_and_errors(caplog):
    ref, model, x, v = vit_pair(32, num_classes=1000)
    sd = state_dict(ref)
    sd['pre_logits.fc.weight'] = np.zeros((3, 3), np.float32)   # timm's optional pre-logits: ignored
    small = model.clone(num_classes=7)
    v7 = small.init(jax.random.key(1), to_nhwc(x), train=False)
    with caplog.at_level('INFO', logger='dcinet_jax.pretrained'):
        out = pretrained.convert_state_dict(sd, v7, 'vit')
    assert "head 'head' not loaded" in caplog.text
    np.testing.assert_array_equal(out['params']['head']['kernel'], v7['params']['head']['kernel'])
    np.testing.assert_array_equal(out['params']['blocks']['1']['attn']['qkv']['kernel'],
                                  sd['blocks.1.attn.qkv.weight'].T)
    bad = dict(sd)
    bad.pop('blocks.0.norm1.weight')
    bad['blocks.0.ls1.gamma'] = np.ones(32, np.float32)
    bad['blocks.1.mlp.fc1.weight'] = sd['blocks.1.mlp.fc1.weight'][:10]
    with pytest.raises(ValueError, match=r'pretrained ViT state dict does not fit(.|\n)*missing keys \(1\): '
                                         r'blocks\.0\.norm1\.weight(.|\n)*unexpected keys \(1\): blocks\.0\.ls1\.gamma'
                                         r'(.|\n)*blocks\.1\.mlp\.fc1\.weight: checkpoint \(10, 32\)'):
        pretrained.convert_state_dict(bad, v7, 'vit')


# ----------------------------------------------------------------------------- DCINet

def _dcinet_config(variant, **model):
    c = backbone_configs.get_config(variant)
    for k, val in model.items():
        setattr(c.model, k, val)
    return c


@pytest.mark.parametrize('variant,table,head', [('vit_b16', 86.40e6, 'head'),
                                                ('vgg19', 140.39e6, 'classifier')])
def test_full_size_dcinet_step_traces_with_table_parameter_counts(variant, table, head):
    """448 px, 200 classes: the whole training step (both branches, gradients) traces."""
    c = _dcinet_config(variant)
    c.data.batch_per_modality = 2
    model = dcinet_method.build_model(c)
    abstract = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), c))
    backbone = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(abstract['params']['backbone']))
    assert abs(backbone - table) <= 0.01 * table, (backbone, table)
    assert head in abstract['params']['backbone']
    variables = {k: val for k, val in abstract.items() if k != 'params'}
    batch = jax.eval_shape(lambda: dcinet_method.synthetic_batch(jax.random.key(0), c))
    loss = functools.partial(dcinet_method.loss_fn, model=model, config=c, step=0)
    grads, (_, metrics) = jax.eval_shape(
        jax.grad(loss, has_aux=True), abstract['params'], variables, batch, jax.random.key(1))
    assert jax.tree.structure(grads) == jax.tree.structure(abstract['params'])
    assert metrics['loss'].shape == ()
    out = jax.eval_shape(functools.partial(model.apply, train=False), abstract,
                         jax.eval_shape(lambda: {m: batch[m]['inputs'] for m in c.data.modalities}))
    assert out['features'].shape == (6, 14, 14, 768 if variant.startswith('vit') else 512)


@pytest.mark.parametrize('variant', ['vit_b16@demo', 'vgg16_bn@demo'])
def test_backbone_normalisation_and_bf16(variant):
    c = backbone_configs.get_config(variant)
    c.data.image_size = c.data.text_length = 64
    c.data.modalities = ('image', 'text')
    model = build_model(c)
    v = init_variables(model, jax.random.key(0), c)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    t = rng.integers(0, 20, (2, 64)).astype(np.int32)
    mean, std = ((0.5,) * 3, (0.5,) * 3) if 'vit' in variant else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    pre = ((x / 255.0 - np.array(mean)) / np.array(std)).astype(np.float32)
    apply = jax.jit(functools.partial(model.apply, train=False))
    ref = apply(v, {'image': x, 'text': t})['logits']
    np.testing.assert_allclose(ref, apply(v, {'image': pre, 'text': t})['logits'], rtol=1e-5, atol=1e-5)
    c.model.dtype = 'bfloat16'
    bf = build_model(c)
    out = jax.jit(functools.partial(bf.apply, train=False))(v, {'image': x, 'text': t})
    assert out['logits'].dtype == jnp.float32 and out['features'].dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(out['logits'])).all()
    scale = float(np.abs(np.asarray(ref)).max()) + 1e-3
    assert float(np.abs(np.asarray(out['logits']) - np.asarray(ref)).max()) < 0.1 * scale


@pytest.mark.parametrize('field,value,match', [
    ('backbone', 'vgg11', r'backbone must be one of .*vgg16_bn.*vit_b16'),
    ('cut', 'block3', r"cut must be one of \('layer1', 'layer2', 'layer3', 'layer4'\) for vgg16"),
    ('head', 'conv', r"head must be one of \('tv', 'gap', 'dense'\)"),
])
def test_config_errors_name_the_field(field, value, match):
    c = _dcinet_config('vgg16@demo', **{field: value})
    with pytest.raises(ValueError, match=match):
        build_model(c)


def test_vit_config_cut_points_and_grid():
    c = _dcinet_config('vit_b16', cut='block11')
    assert dict(build_model(c).arch_kwargs)['grid'] == 14
    c.model.cut = 'block12'
    with pytest.raises(ValueError, match=r"cut must be one of \('block1', 'block2', '...', 'block11', 'layer4'\)"):
        build_model(c)
    c = _dcinet_config('vit_b16@demo')
    kw = dict(build_model(c).arch_kwargs)
    assert (kw['width'], kw['depth'], kw['patch'], kw['image_size'], kw['grid']) == (64, 2, 16, 112, 4)
    with pytest.raises(ValueError, match='unknown backbone variant|backbone variant'):
        backbone_configs.get_config('vgg13')


def test_vit_layer_norm_epsilon_and_exact_gelu():
    """Inputs where 1e-6 vs 1e-5 and erf vs tanh GELU differ well beyond float32 noise."""
    from dcinet_jax.models.backbones.vit import Mlp, layer_norm
    x = (torch.randn(3, 16) * 1e-3).numpy()           # variance 1e-6: eps matters
    ln = layer_norm(jnp.float32)
    v = ln.init(jax.random.key(0), x)
    want = tnn.LayerNorm(16, eps=1e-6).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ln.apply(v, x), want, rtol=1e-4, atol=1e-4)
    mlp = Mlp(hidden=8, dim=4)
    y = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    eye = {'fc1': {'kernel': np.eye(4, 8, dtype=np.float32), 'bias': np.zeros(8, np.float32)},
           'fc2': {'kernel': np.eye(8, 4, dtype=np.float32), 'bias': np.zeros(4, np.float32)}}
    got = mlp.apply({'params': eye}, y)
    np.testing.assert_allclose(got, F.gelu(torch.from_numpy(y)).numpy(), rtol=1e-6, atol=1e-6)
