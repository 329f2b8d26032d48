"""Whole-model weights in and out: the authors' PyTorch checkpoints of every method, and
ours exported in the same layout (docs/weights.md).

Why a package of its own: `dcinet eval --weights FILE` evaluates a released checkpoint
without training, and `dcinet export` hands a model trained here to PyTorch code. Both
need the same explicit, per-method key mapping, which lives here and nowhere else.

Modules:

- `files`: safe reading and writing. `load_torch_file(path, allowed=())` reads a
  .pth/.pt/.pkl/.bin with `torch.load(weights_only=True)`, only the classes named in
  `allowed` unpickled (via `torch.serialization.safe_globals`), or a .safetensors with
  safetensors.numpy (no torch). A pickle that needs anything else is refused with one
  `ValueError` line naming the file and the class; it is never executed. A leading
  `module.` (DataParallel) is stripped. Writing is atomic and never overwrites unless
  asked.
- `layout`: the explicit conversions (Linear (out, in) <-> Dense (in, out); Conv1d
  (out, in, k) <-> Flax (k, in, out); Conv2d OIHW <-> HWIO; BatchNorm weight / bias /
  running_mean / running_var <-> scale / bias / mean / var) and the checker that reports
  unknown, missing and mis-shaped keys, one line each, naming the first few.
- One module per method, each with the same surface:

      FORMAT: str                 # short name recorded in results.json
      ALLOWED_GLOBALS: tuple      # classes torch may unpickle for this format
      import_state(obj, variables, config) -> variables
      export_state(variables, config) -> obj

  `obj` is what the file held: a flat {name: np.ndarray} state dict, or for HSLM the
  checkpoint dict {'model': [img_enc, txt_enc, sim_enc state dicts], 'opt': Namespace,
  'epoch': ...}. `variables` are freshly initialised Flax variables (they fix the keys
  and shapes; arrays or ShapeDtypeStructs); `import_state` returns new variables of the
  same structure, `export_state` is its inverse (numpy arrays, the layout the public
  code saves), so import(export(v)) == v bit for bit.
  `fgcrossnet` (torchvision ResNet50 + char-CNN text net, 200-way `fc`), `dsffn` (the
  public `v_a_model.py` CrossModal_NN), `dcinet` (no public code: our own whole-model
  layout, torchvision names for the backbone), `hslm` (SCAN/SGRAF-style checkpoint).

`commands` runs `dcinet eval --weights` and `dcinet export` on these.
`for_method(name)` returns the module for `config.method`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# config.method -> module name in this package.
_MODULES = {'dcinet': 'dcinet', 'fgcrossnet': 'fgcrossnet', 'dsffn': 'dsffn', 'hslm': 'hslm'}


def for_method(name: str) -> ModuleType:
    """The weights module of method `name` (FORMAT, ALLOWED_GLOBALS, import_state,
    export_state)."""
    if name not in _MODULES:
        raise ValueError(f'no weight import/export for method {name!r}; known: '
                         f'{", ".join(sorted(_MODULES))}')
    return importlib.import_module(f'{__name__}.{_MODULES[name]}')
