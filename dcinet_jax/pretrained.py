"""PyTorch state dicts (torchvision or timm key names) -> Flax backbone variables
(docs/model.md#pretrained-weights).

Every backbone family uses its reference's module names (ResNet and VGG: torchvision's;
ViT: timm's), so each torch key is the Flax path joined with '.' and the leaf renamed:

    conv kernel  <- '<path>.weight'        OIHW -> HWIO
    BN / LayerNorm scale, bias <- '<path>.weight/.bias'; BN mean/var <- running_mean/var
    Linear kernel/bias <- '<path>.weight' (transposed) / '<path>.bias'
    ViT cls_token, pos_embed <- the same names

Family-specific steps: timm's VGG names (`pre_logits.fc1/fc2` as convs, `head.fc`) are
renamed to torchvision's; VGG's `classifier.0` is reordered from PyTorch's (C, H, W)
flattening to NHWC's (H, W, C); a ViT position embedding of another grid is resampled
to the model's (`resample_pos_embed`). The classifier (`fc`, `classifier.6`, `head`) is
skipped with a notice when its shape differs. A common prefix such as 'module.'
(DataParallel) or 'backbone.' is detected and stripped. `num_batches_tracked` is
ignored. torch is imported only to read .pth/.pt files; .safetensors needs no torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dcinet_jax.weights import layout
from dcinet_jax.weights.layout import flatten as _flatten, unflatten as _unflatten

logger = logging.getLogger(__name__)

HEAD = 'fc'
_IGNORED_SUFFIXES = ('num_batches_tracked',)
# Per family: printed name, the key that anchors prefix detection.
_FAMILY_NAMES = {'resnet': 'ResNet', 'vgg': 'VGG', 'vit': 'ViT'}
_ANCHORS = {'resnet': 'conv1.weight', 'vgg': 'features.0.weight', 'vit': 'patch_embed.proj.weight'}
# Classifier modules: skipped when their shape differs from the model's.
_HEADS = {'resnet': ('fc',), 'vgg': ('classifier.6', 'fc'), 'vit': ('head',)}


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a .pth/.pt (torch.load, weights_only) or .safetensors file into float32 numpy
    arrays (`dcinet_jax.weights.files.load_torch_file`: nothing in the file is executed).

    A checkpoint that wraps the weights (`{'state_dict': ...}` or `{'model': ...}`) is unwrapped.
    """
    from dcinet_jax.weights.files import load_torch_file
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pretrained weights not found: {path}')
    raw = load_torch_file(path)
    for wrapper in ('state_dict', 'model'):
        if isinstance(raw, Mapping) and wrapper in raw and isinstance(raw[wrapper], Mapping):
            raw = raw[wrapper]
    if not isinstance(raw, Mapping):
        raise ValueError(f'{path}: expected a state dict (mapping of name -> tensor), '
                         f'got {type(raw).__name__}')
    return {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v)
            for k, v in raw.items() if isinstance(v, np.ndarray)}


def _shape(value: Any) -> tuple[int, ...]:
    """Shape of an array or of a `jax.ShapeDtypeStruct` (abstract variables work too)."""
    return tuple(value.shape)


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    """Torch state-dict key of one Flax leaf."""
    module, leaf = '.'.join(path[:-1]), path[-1]
    if collection == 'params' and len(path) == 1:  # a bare parameter: ViT cls_token, pos_embed
        return leaf
    names = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
             ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
             ('batch_stats', 'var'): 'running_var'}
    if (collection, leaf) not in names:
        raise ValueError(f'no torch name for Flax leaf {collection}/{"/".join(path)}')
    return f'{module}.{names[(collection, leaf)]}'


def _to_flax(value: np.ndarray, leaf: str, flax_ndim: int) -> np.ndarray:
    """Torch layout -> Flax layout (conv OIHW -> HWIO, linear (out, in) -> (in, out))."""
    if leaf == 'kernel' and value.ndim == 4:
        return layout.to_flax(value, 'conv2d')
    if leaf == 'kernel' and value.ndim == 2 and flax_ndim == 2:
        return layout.to_flax(value, 'linear')
    return value


def _strip_prefix(keys: list[str], prefix: str | None, anchor: str = 'conv1.weight') -> str:
    """The prefix to strip: the given one, or the one in front of the stem's `anchor`
    ('conv1.weight' for a ResNet)."""
    if prefix is not None:
        return prefix
    if anchor in keys:
        return ''
    stems = [k[:-len(anchor)] for k in keys
             if k.endswith('.' + anchor) and 'layer' not in k]
    return stems[0] if len(stems) == 1 else ''


def resample_pos_embed(pos: np.ndarray, grid: int, num_prefix: int = 1) -> np.ndarray:
    """ViT position embedding (1, P + g*g, D) -> (1, P + grid*grid, D), prefix entries kept.

    The g x g grid is resized bicubically the way timm's `resample_abs_pos_embed` does it
    (torch bicubic with antialias: Keys kernel a = -0.5, half-pixel centres, weights
    renormalised at the edges), in float32, once, at import."""
    import jax
    import jax.numpy as jnp
    pos = np.asarray(pos, np.float32)
    prefix, tokens = pos[:, :num_prefix], pos[:, num_prefix:]
    g = int(round(np.sqrt(tokens.shape[1])))
    if g * g != tokens.shape[1]:
        raise ValueError(f'pos_embed holds {tokens.shape[1]} grid entries after {num_prefix} '
                         'prefix token(s), not a square grid')
    if g == grid:
        return pos
    d = tokens.shape[-1]
    out = jax.image.resize(jnp.asarray(tokens.reshape(1, g, g, d)), (1, grid, grid, d),
                           'cubic', antialias=True)
    return np.concatenate([prefix, np.asarray(out).reshape(1, grid * grid, d)], axis=1)


def _vgg_rename(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm VGG names -> torchvision's (fc6/fc7 stored as 7x7 / 1x1 convs become Linear)."""
    out = {}
    for k, v in sd.items():
        if k.startswith('pre_logits.fc1.'):
            k = 'classifier.0.' + k.rsplit('.', 1)[1]
        elif k.startswith('pre_logits.fc2.'):
            k = 'classifier.3.' + k.rsplit('.', 1)[1]
        elif k.startswith('head.fc.'):
            k = 'classifier.6.' + k.rsplit('.', 1)[1]
        if k.startswith('classifier.') and k.endswith('.weight') and v.ndim == 4:
            v = v.reshape(v.shape[0], -1)  # (O, C, kh, kw) -> (O, C*kh*kw): PyTorch's flatten
        out[k] = v
    return out


def _family_fixups(family: str, sd: dict[str, np.ndarray], expected: Mapping[str, Any]
                   ) -> dict[str, np.ndarray]:
    """Family-specific renames and re-layouts, into the model's torch-named shapes."""
    if family == 'vgg':
        sd = _vgg_rename(sd)
        key = 'classifier.0.weight'
        if key in sd and key in expected:
            cells = _shape(expected[key][2])[0]  # Flax kernel (7*7*C, hidden)
            w = sd[key]
            if w.ndim == 2 and w.shape[1] == cells and cells % 49 == 0:
                c = cells // 49  # (O, C*7*7) in (C, H, W) order -> (O, H*W*C) in NHWC's order
                sd[key] = w.reshape(w.shape[0], c, 7, 7).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        if 'fc.kernel' not in {'.'.join(p[1][-2:]) for p in expected.values()}:
            return sd
        # `gap` head: torchvision's classifier has no counterpart.
        dropped = sorted(k for k in sd if k.startswith('classifier.'))
        if dropped:
            logger.info('pretrained: VGG head is gap; checkpoint classifier not loaded (%s)',
                        ', '.join(dropped))
        return {k: v for k, v in sd.items() if not k.startswith('classifier.')}
    if family == 'vit':
        dropped = sorted(k for k in sd if k.startswith(('pre_logits.', 'fc_norm.', 'head_drop.')))
        if dropped:
            logger.info('pretrained: ViT %s not used', ', '.join(dropped))
        sd = {k: v for k, v in sd.items() if k not in dropped}
        if 'pos_embed' in sd and 'pos_embed' in expected:
            want = _shape(expected['pos_embed'][2])
            have = sd['pos_embed'].shape
            if have != want and len(have) == 3 and have[2] == want[2]:
                grid = int(round(np.sqrt(want[1] - 1)))
                sd['pos_embed'] = resample_pos_embed(sd['pos_embed'], grid)
                logger.info('pretrained: pos_embed resampled %s -> %s', have, want)
    return sd


def convert_resnet_state_dict(state_dict: Mapping[str, Any], variables: Mapping[str, Any], *,
                              skip_head_on_mismatch: bool = True,
                              prefix: str | None = None) -> dict[str, Any]:
    """New {'params', 'batch_stats'} for a Flax ResNet/CCRN, filled from a torch state dict
    (`convert_state_dict` with family 'resnet')."""
    return convert_state_dict(state_dict, variables, 'resnet',
                              skip_head_on_mismatch=skip_head_on_mismatch, prefix=prefix)


def convert_state_dict(state_dict: Mapping[str, Any], variables: Mapping[str, Any],
                       family: str = 'resnet', *, skip_head_on_mismatch: bool = True,
                       prefix: str | None = None) -> dict[str, Any]:
    """New backbone variables ({'params'[, 'batch_stats']}) filled from a torch state dict.

    `family`: 'resnet', 'vgg' or 'vit' (`dcinet_jax.models.backbones.registry.family`).
    `variables` is the backbone subtree; it fixes the expected keys and shapes. When the
    torch classifier does not fit (e.g. the 1000-class ImageNet head vs. 200 classes) or
    is absent, and `skip_head_on_mismatch`, the head keeps its current values and a
    notice is logged. Any other missing key, unexpected key or shape mismatch raises one
    ValueError listing all of them.
    """
    if family not in _FAMILY_NAMES:
        raise ValueError(f'unknown backbone family {family!r}; expected one of {sorted(_FAMILY_NAMES)}')
    keys = [k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)]
    pre = _strip_prefix(keys, prefix, _ANCHORS[family])
    sd = {k[len(pre):]: np.asarray(state_dict[k]) for k in keys if k.startswith(pre)}
    unexpected = sorted(k for k in keys if not k.startswith(pre))

    # Expected torch key -> (collection, flax path, current value).
    expected = {}
    for collection in ('params', 'batch_stats'):
        for path, value in _flatten(variables.get(collection, {})).items():
            expected[_torch_key(collection, path)] = (collection, path, value)
    sd = _family_fixups(family, sd, expected)

    heads = _HEADS[family]
    head_keys = {k for k in expected if any(k.startswith(h + '.') for h in heads)}
    if skip_head_on_mismatch:
        head_fits = all(k in sd and _to_flax(sd[k], expected[k][1][-1], len(_shape(expected[k][2]))).shape
                        == _shape(expected[k][2]) for k in head_keys)
        if not head_fits:
            found = {k: tuple(sd[k].shape) for k in sorted(head_keys) if k in sd}
            logger.info('pretrained: head %r not loaded (checkpoint %s, model %s); keeping its '
                        'initial values', ', '.join(sorted({k.rsplit('.', 1)[0] for k in head_keys})),
                        found or 'has no head', {k: _shape(expected[k][2]) for k in sorted(head_keys)})
            for k in head_keys:
                expected.pop(k)
            sd = {k: v for k, v in sd.items() if not any(k.startswith(h + '.') for h in heads)}

    missing = sorted(k for k in expected if k not in sd)
    unexpected += sorted((pre + k) for k in sd if k not in expected)
    mismatched, new = [], {'params': {}, 'batch_stats': {}}
    for key, (collection, path, value) in expected.items():
        if key not in sd:
            continue
        converted = _to_flax(sd[key], path[-1], len(_shape(value)))
        if converted.shape != _shape(value):
            mismatched.append(f'{pre}{key}: checkpoint {tuple(sd[key].shape)} '
                              f'(as Flax {converted.shape}) vs model {_shape(value)} '
                              f'at {collection}/{"/".join(path)}')
            continue
        new[collection][path] = converted.astype(np.float32)
    if missing or unexpected or mismatched:
        lines = [f'pretrained {_FAMILY_NAMES[family]} state dict does not fit the model'
                 + (f' (stripped prefix {pre!r})' if pre else '') + ':']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): ' + ', '.join(pre + k for k in missing))
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): ' + ', '.join(unexpected))
        if mismatched:
            lines.append(f'  shape mismatches ({len(mismatched)}):')
            lines += [f'    {m}' for m in mismatched]
        raise ValueError('\n'.join(lines))

    out = {}
    for collection in ('params', 'batch_stats'):
        if collection not in variables:
            continue
        flat = _flatten(variables.get(collection, {}))
        flat.update(new[collection])
        out[collection] = _unflatten(flat)
    return out


def load_pretrained_backbone(path: str | os.PathLike, variables: Mapping[str, Any], *,
                             backbone: str = 'backbone', family: str = 'resnet') -> dict[str, Any]:
    """Full DCINet variables with the backbone (`params/backbone`, `batch_stats/backbone`)
    replaced by the weights in `path`; everything else (text net, other collections) kept.
    `family`: the backbone's family ('resnet', 'vgg', 'vit')."""
    if backbone not in variables.get('params', {}):
        raise KeyError(f"variables have no params/{backbone}; got {sorted(variables.get('params', {}))}")
    sub = {c: variables[c][backbone] for c in ('params', 'batch_stats') if c in variables}
    try:
        converted = convert_state_dict(load_state_dict(path), sub, family)
    except ValueError as e:
        raise ValueError(f'{os.fspath(path)}: {e}') from e
    out = dict(variables)
    for c, tree in converted.items():
        if c in variables:
            out[c] = {**variables[c], backbone: tree}
    return out
