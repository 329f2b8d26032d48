"""Generated stand-ins for the VEGAS and AVE feature files, in their exact h5 layout.

The FG-XMedia demo dataset lives in `demo.py`; this module writes the audio-visual
feature files DSFFN reads (`av_features.py`), with the format quirks of the real ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from input_pipeline.check import write_manifest
from input_pipeline.vegas_ave import manifest as av_manifest
from input_pipeline.vegas_ave.reader import FILE_NAMES


# name: (classes, visual width, audio width) of the real files
AV_FORMATS = {'vegas': (10, 1024, 128), 'ave': (15, 1024, 128)}


def generate_av_features(out_dir: str | os.PathLike, fmt: str = 'vegas', *,
                         num_classes: int | None = None, per_class: int = 80,
                         test_per_class: int | None = None, visual_dim: int | None = None,
                         audio_dim: int | None = None, seed: int = 0) -> dict:
    """Write a synthetic VEGAS- or AVE-format feature file (docs/dsffn.md#data).

    Class-conditional Gaussians: visual = mu_c + noise, audio = mu'_c + noise (the audio
    means are closer together, so audio is the harder modality), non-negative after a
    shift like pooled CNN / VGGish features. Rows are in class order, as a file sorted by
    class would be. The format quirks of the real files are exercised:
    - 'vegas': lab_train is (N, 1) int64, lab_test (N,) float64 holding integers;
    - 'ave': lab_train is (N,) float64, lab_test (N, 1) int32, visual stored as float64;
    - the last class has no test item (a class absent from the test split);
    - per-class train counts vary (per_class - 1 .. per_class + 2), so N is not a
      multiple of common batch sizes.
    The folder gets its own manifest (`dcinet_manifest.json`) for `dcinet data check`.
    Returns {'path', 'train', 'test', 'classes'}.
    """
    if fmt not in AV_FORMATS:
        raise ValueError(f'format must be one of {sorted(AV_FORMATS)}, got {fmt!r}')
    import h5py

    default_classes, dv, da = AV_FORMATS[fmt]
    file_name = FILE_NAMES[fmt]
    m = int(num_classes or default_classes)
    dv, da = int(visual_dim or dv), int(audio_dim or da)
    if m < 2:
        raise ValueError(f'num_classes must be >= 2, got {m}')
    if per_class < 3:
        raise ValueError(f'per_class must be >= 3, got {per_class}')
    test_per_class = max(per_class // 4, 2) if test_per_class is None else int(test_per_class)
    rng = np.random.default_rng([seed, 0xAF, len(fmt)])
    mu_v = rng.normal(0.0, 1.0, (m, dv))
    mu_a = rng.normal(0.0, 0.6, (m, da))

    def draw(counts):
        labels = np.repeat(np.arange(m), counts)
        v = mu_v[labels] + rng.normal(0.0, 1.6, (labels.size, dv)) + 4.0
        a = mu_a[labels] + rng.normal(0.0, 1.3, (labels.size, da)) + 4.0
        return np.maximum(v, 0.0), np.maximum(a, 0.0), labels

    train_counts = per_class + (np.arange(m) % 4) - 1
    test_counts = np.full(m, test_per_class)
    test_counts[-1] = 0
    v_tr, a_tr, y_tr = draw(train_counts)
    v_te, a_te, y_te = draw(test_counts)
    if fmt == 'vegas':
        lab_tr, lab_te = y_tr.astype(np.int64)[:, None], y_te.astype(np.float64)
        v_tr, v_te = v_tr.astype(np.float32), v_te.astype(np.float32)
    else:
        lab_tr, lab_te = y_tr.astype(np.float64), y_te.astype(np.int32)[:, None]
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / file_name
    with h5py.File(path, 'w') as f:
        f.create_dataset('visual_train', data=v_tr)
        f.create_dataset('audio_train', data=a_tr.astype(np.float32))
        f.create_dataset('lab_train', data=lab_tr)
        f.create_dataset('visual_test', data=v_te)
        f.create_dataset('audio_test', data=a_te.astype(np.float32))
        f.create_dataset('lab_test', data=lab_te)
    write_manifest(root, av_manifest.demo_manifest(
        name=f'dcinet demo-data --format {fmt} (classes {m}, per_class {per_class}, seed {seed})',
        dataset=fmt, file=file_name, classes=m, visual_dim=dv, audio_dim=da,
        sizes={'train': int(y_tr.size), 'test': int(y_te.size)}))
    return {'path': str(path), 'train': int(y_tr.size), 'test': int(y_te.size), 'classes': m}


def av_demo_main(out: str | os.PathLike, fmt: str, classes: int | None = None,
                 per_class: int | None = None, seed: int = 0) -> dict:
    """`dcinet demo-data --format vegas|ave`: write the file and print a summary."""
    info = generate_av_features(out, fmt, num_classes=classes, per_class=per_class or 80,
                                seed=seed)
    print(f'synthetic {fmt} features: {info["classes"]} classes, {info["train"]} train / '
          f'{info["test"]} test pairs, seed {seed}, written to {info["path"]}')
    return info
