"""Weight files read safely and written atomically (docs/weights.md#files).

Why this module: a .pth file is a pickle, and unpickling runs whatever the file names.
A checkpoint downloaded from a paper's page is untrusted input, so it is read only with
`torch.load(weights_only=True)`, which unpickles tensors, containers and plain numbers,
plus the few classes a format needs (`allowed`, e.g. `argparse.Namespace` for the
options HSLM's checkpoints carry), allow-listed through `torch.serialization.safe_globals`.
A file that needs any other class (a whole pickled `nn.Module`, a custom object) is
refused with one line naming the file and the class; nothing in it is executed.
.safetensors files hold only tensors and are read with safetensors.numpy, without torch.

What comes back is the file's object with every tensor turned into a numpy array
(float16/bfloat16 widened to float32; numpy has no bfloat16) and a DataParallel
`module.` prefix stripped from every state dict whose keys all carry it.

Writing (`save`) refuses an existing file unless `force`, and writes a temporary file
beside the target and renames it, so an interrupted export leaves no half file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from input_pipeline import atomic

TORCH_SUFFIXES = ('.pth', '.pt', '.pkl', '.bin', '.tar', '.ckpt')
SAFETENSORS_SUFFIX = '.safetensors'
FORMATS = ('pytorch', 'safetensors')
DATA_PARALLEL_PREFIX = 'module.'
# safetensors metadata key holding the nesting of a checkpoint that is not a flat dict.
_STRUCTURE_KEY = 'dcinet.structure'
_TENSOR = '@tensor'
_NAMESPACE = '@namespace'


def _refusal(path: str, error: Exception) -> str:
    """One line for a refused torch.load: the class the pickle wanted, when it says."""
    text = str(error)
    wanted = re.search(r'GLOBAL ([\w.]+)', text) or re.search(r'Unsupported global: ([\w.]+)', text)
    if wanted:
        why = (f'refused: the pickle needs class {wanted.group(1)} (a whole module or another '
               'Python object; nothing was executed)')
    elif 'Weights only load failed' in text:
        why = 'refused: the pickle holds Python objects, not only tensors (nothing was executed)'
    else:
        why = f'unreadable as a torch file: {type(error).__name__}'
    return (f'{path}: not a PyTorch state dict ({why}); save the weights with '
            'torch.save(model.state_dict(), path)')


def _to_numpy(obj: Any) -> Any:
    """Tensors -> numpy arrays, recursively through dicts, lists and tuples."""
    if hasattr(obj, 'detach') and hasattr(obj, 'numpy'):
        import torch
        t = obj.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return strip_prefix({k: _to_numpy(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def strip_prefix(state: dict, prefix: str = DATA_PARALLEL_PREFIX) -> dict:
    """`state` without `prefix` when every key is a string starting with it (DataParallel)."""
    keys = list(state)
    if keys and all(isinstance(k, str) and k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_torch_file(path: str | os.PathLike, allowed: tuple = ()) -> Any:
    """What the weight file at `path` holds, tensors as numpy arrays (see module docstring).

    `allowed`: classes torch may unpickle besides tensors and containers. Raises
    FileNotFoundError, or ValueError (one line) for a refused or unreadable file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'weights file not found: {path}')
    if path.endswith(SAFETENSORS_SUFFIX):
        return _load_safetensors(path)
    if not path.endswith(TORCH_SUFFIXES):
        raise ValueError(f'{path}: unknown weight file type (expected {", ".join(TORCH_SUFFIXES)} '
                         f'or {SAFETENSORS_SUFFIX})')
    try:
        import torch
    except ImportError as e:  # torch is optional: only .pth files need it
        raise ImportError(f'reading {path} needs PyTorch (pip install "dcinet-jax[torch]"); '
                          'or convert the file to .safetensors') from e
    try:
        with torch.serialization.safe_globals(list(allowed)):
            raw = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds here
        raise ValueError(_refusal(path, e)) from None
    return _to_numpy(raw)


def _load_safetensors(path: str) -> Any:
    from safetensors import safe_open
    from safetensors.numpy import load_file
    try:
        flat = load_file(path)
        with safe_open(path, framework='numpy') as f:
            metadata = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f'{path}: unreadable as safetensors ({type(e).__name__}: {e})') from None
    if _STRUCTURE_KEY in metadata:
        return _unflatten(json.loads(metadata[_STRUCTURE_KEY]), flat, '')
    return strip_prefix(dict(flat))


# ----------------------------------------------------------------------------- nesting

def _flatten(obj: Any, prefix: str, arrays: dict) -> Any:
    """The skeleton of `obj` (arrays replaced by '@tensor', Namespaces by a marked dict)
    and its arrays in `arrays` under '.'-joined keys."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = np.array(obj, order="C")
        return _TENSOR
    if isinstance(obj, argparse.Namespace):
        return {_NAMESPACE: _flatten(vars(obj), prefix, arrays)}
    if isinstance(obj, Mapping):
        return {str(k): _flatten(v, f'{prefix}.{k}' if prefix else str(k), arrays)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f'{prefix}.{i}' if prefix else str(i), arrays)
                for i, v in enumerate(obj)]
    json.dumps(obj)  # plain numbers and strings only; raises TypeError otherwise
    return obj


def _unflatten(skeleton: Any, arrays: Mapping[str, np.ndarray], prefix: str) -> Any:
    if skeleton == _TENSOR:
        return arrays[prefix]
    if isinstance(skeleton, dict) and set(skeleton) == {_NAMESPACE}:
        return argparse.Namespace(**_unflatten(skeleton[_NAMESPACE], arrays, prefix))
    if isinstance(skeleton, dict):
        return {k: _unflatten(v, arrays, f'{prefix}.{k}' if prefix else k)
                for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, arrays, f'{prefix}.{i}' if prefix else str(i))
                for i, v in enumerate(skeleton)]
    return skeleton


def _is_flat(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, np.ndarray) for v in obj.values())


# ----------------------------------------------------------------------------- writing

def save(obj: Any, path: str | os.PathLike, fmt: str = 'pytorch', *, force: bool = False) -> str:
    """Writes `obj` (numpy arrays in dicts/lists, plain options) to `path` atomically.

    'pytorch': `torch.save` of the same structure with tensors (what the public code's
    `torch.load` + `load_state_dict` expects). 'safetensors': a flat state dict as is; a
    nested checkpoint (HSLM's) is flattened with '.'-joined keys and its nesting kept in
    the file's metadata, so `load_torch_file` gives back the same structure."""
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ValueError(f'--format={fmt!r}: expected one of {FORMATS}')
    if os.path.exists(path) and not force:
        raise ValueError(f'{path} exists; pass --force to overwrite it')
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'output directory not found: {directory}')
    if fmt == 'safetensors':
        from safetensors.numpy import save as save_bytes
        arrays: dict[str, np.ndarray] = {}
        skeleton = _flatten(obj, '', arrays)
        metadata = None if _is_flat(obj) else {_STRUCTURE_KEY: json.dumps(skeleton)}
        data = save_bytes(arrays, metadata=metadata)
    else:
        import torch
        buffer = io.BytesIO()
        torch.save(_to_torch(obj), buffer)
        data = buffer.getvalue()
    atomic.atomic_write_bytes(path, data)   # temp file, fsync, rename; mode per umask
    return path


def _to_torch(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        import torch
        return torch.from_numpy(np.array(obj, order="C"))
    if isinstance(obj, Mapping):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_torch(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_torch(v) for v in obj)
    return obj


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (recorded with results: which bytes were evaluated)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()
