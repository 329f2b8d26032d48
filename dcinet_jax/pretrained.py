"""PyTorch ResNet state dict (torchvision or timm key names) -> Flax ResNet variables.

The Flax ResNet (`dcinet_jax.models.resnet`) uses torchvision's module names, so each
torch key is the Flax path joined with '.' and the leaf renamed:

    conv kernel  <- '<path>.weight'        OIHW -> HWIO
    BN scale/bias <- '<path>.weight/.bias'  batch_stats mean/var <- running_mean/var
    fc kernel/bias <- 'fc.weight' (transposed) / 'fc.bias'

timm's ResNet uses the same names. A common prefix such as 'module.' (DataParallel) or
'backbone.' is detected and stripped. `num_batches_tracked` is ignored.
torch is imported only to read .pth/.pt files; .safetensors needs no torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

HEAD = 'fc'
_IGNORED_SUFFIXES = ('num_batches_tracked',)


def _load_failure(error: Exception) -> str:
    """Why torch.load refused a file, in a few words (its own message is a page long)."""
    if 'Weights only load failed' in str(error):
        return 'it pickles Python objects such as a whole module, not only tensors'
    return f'unreadable as a torch file: {type(error).__name__}'


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a .pth/.pt (torch.load, weights_only) or .safetensors file into float32 numpy arrays.

    A checkpoint that wraps the weights (`{'state_dict': ...}` or `{'model': ...}`) is unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pretrained weights not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.numpy import load_file
        raw: Mapping[str, Any] = load_file(path)
    elif path.endswith(('.pth', '.pt', '.bin')):
        try:
            import torch
        except ImportError as e:  # torch is an optional dependency (extra [torch])
            raise ImportError(f'reading {path} needs PyTorch (pip install "dcinet-jax[torch]"); '
                              'or convert the file to .safetensors') from e
        try:
            raw = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several kinds here
            raise ValueError(f'{path}: not a PyTorch state dict ({_load_failure(e)}); save the '
                             'weights with torch.save(model.state_dict(), path)') from None
        for wrapper in ('state_dict', 'model'):
            if isinstance(raw, Mapping) and wrapper in raw and isinstance(raw[wrapper], Mapping):
                raw = raw[wrapper]
        if not isinstance(raw, Mapping):
            raise ValueError(f'{path}: expected a state dict (mapping of name -> tensor), '
                             f'got {type(raw).__name__}')
        raw = {k: (v.float() if v.is_floating_point() else v).numpy()
               for k, v in raw.items() if hasattr(v, 'numpy')}
    else:
        raise ValueError(f'{path}: unknown weight file type (expected .pth, .pt or .safetensors)')
    return {k: np.asarray(v) for k, v in raw.items()}


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _shape(value: Any) -> tuple[int, ...]:
    """Shape of an array or of a `jax.ShapeDtypeStruct` (abstract variables work too)."""
    return tuple(value.shape)


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    """Torch state-dict key of one Flax leaf."""
    module, leaf = '.'.join(path[:-1]), path[-1]
    names = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
             ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
             ('batch_stats', 'var'): 'running_var'}
    if (collection, leaf) not in names:
        raise ValueError(f'no torch name for Flax leaf {collection}/{"/".join(path)}')
    return f'{module}.{names[(collection, leaf)]}'


def _to_flax(value: np.ndarray, leaf: str, flax_ndim: int) -> np.ndarray:
    """Torch layout -> Flax layout (conv OIHW -> HWIO, linear (out, in) -> (in, out))."""
    if leaf == 'kernel' and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == 'kernel' and value.ndim == 2 and flax_ndim == 2:
        return value.T
    return value


def _strip_prefix(keys: list[str], prefix: str | None) -> str:
    """The prefix to strip: the given one, or the one in front of the stem's 'conv1.weight'."""
    if prefix is not None:
        return prefix
    if 'conv1.weight' in keys:
        return ''
    stems = [k[:-len('conv1.weight')] for k in keys
             if k.endswith('.conv1.weight') and 'layer' not in k]
    return stems[0] if len(stems) == 1 else ''


def convert_resnet_state_dict(state_dict: Mapping[str, Any], variables: Mapping[str, Any], *,
                              skip_head_on_mismatch: bool = True,
                              prefix: str | None = None) -> dict[str, Any]:
    """New {'params', 'batch_stats'} for a Flax ResNet/CCRN, filled from a torch state dict.

    `variables` is the ResNet subtree ({'params': ..., 'batch_stats': ...}); it fixes the
    expected keys and shapes. When the torch `fc` does not fit (e.g. the 1000-class
    ImageNet head vs. 200 classes) or is absent, and `skip_head_on_mismatch`, the head
    keeps its current values and a notice is logged. Any other missing key, unexpected
    key or shape mismatch raises one ValueError listing all of them.
    """
    keys = [k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)]
    pre = _strip_prefix(keys, prefix)
    sd = {k[len(pre):]: np.asarray(state_dict[k]) for k in keys if k.startswith(pre)}
    unexpected = sorted(k for k in keys if not k.startswith(pre))

    # Expected torch key -> (collection, flax path, current value).
    expected = {}
    for collection in ('params', 'batch_stats'):
        for path, value in _flatten(variables.get(collection, {})).items():
            expected[_torch_key(collection, path)] = (collection, path, value)

    head_keys = {k for k in expected if k.split('.')[0] == HEAD}
    if skip_head_on_mismatch:
        head_fits = all(k in sd and _to_flax(sd[k], expected[k][1][-1], len(_shape(expected[k][2]))).shape
                        == _shape(expected[k][2]) for k in head_keys)
        if not head_fits:
            found = {k: tuple(sd[k].shape) for k in sorted(head_keys) if k in sd}
            logger.info('pretrained: head %r not loaded (checkpoint %s, model %s); keeping its '
                        'initial values', HEAD, found or 'has no head',
                        {k: _shape(expected[k][2]) for k in sorted(head_keys)})
            for k in head_keys:
                expected.pop(k)
            sd = {k: v for k, v in sd.items() if k.split('.')[0] != HEAD}

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
        lines = ['pretrained ResNet state dict does not fit the model'
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
        flat = _flatten(variables.get(collection, {}))
        flat.update(new[collection])
        out[collection] = _unflatten(flat)
    return out


def load_pretrained_backbone(path: str | os.PathLike, variables: Mapping[str, Any], *,
                             backbone: str = 'backbone') -> dict[str, Any]:
    """Full DCINet variables with the backbone (`params/backbone`, `batch_stats/backbone`)
    replaced by the weights in `path`; everything else (text net, other collections) kept."""
    if backbone not in variables.get('params', {}):
        raise KeyError(f"variables have no params/{backbone}; got {sorted(variables.get('params', {}))}")
    sub = {c: variables[c][backbone] for c in ('params', 'batch_stats') if c in variables}
    try:
        converted = convert_resnet_state_dict(load_state_dict(path), sub)
    except ValueError as e:
        raise ValueError(f'{os.fspath(path)}: {e}') from e
    out = dict(variables)
    for c, tree in converted.items():
        if c in variables:
            out[c] = {**variables[c], backbone: tree}
    return out
