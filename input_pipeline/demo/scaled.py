"""`dcinet demo-data --scale full|F`: synthetic data at the published releases' size.

For measuring what the real data costs (prepare time, disk, memory, open files, input
speed, evaluation time), not for learning: every count is the release's
(`input_pipeline/<format>/manifest.py`) times the scale, and the files have the real
kinds and sizes, but their content is drawn from a small pool of pre-encoded files so
that writing is bound by the disk rather than by drawing. Labels are real (classes
spread evenly), content does not depend on them.

- fgxmedia: JPEG photos of 400-500 x 300-375 px (a few grayscale and CMYK), 700x700 RGBA
  spectrogram PNGs under audio/audioimg/, paragraph texts, video folders of up to 25
  320x240 JPEG frames (most 25; about 450,000 frames at full scale); classes = 200 x F.
- precomp (`--release f30k|coco`): float32 (N, 36, 2048) region features written
  through a memory map in blocks (bounded memory), 5 captions per image; no vocab file
  (HSLM builds one from the train captions when `data.vocab_path` is empty).
- vegas / ave: the h5 layout with 1024- and 128-d features; VEGAS 22,482 / 5,621 pairs
  (the train size is the usual 80/20 figure, unverified), AVE 3,339 / 804 (assumed: AVE's
  official train split, and its validation + test as test; no source gives this file's).

Sizes, time and disk at full scale are in the README ("Data at full size").
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from input_pipeline import check
from input_pipeline.spec import SPLITS

POOL = 24                      # distinct pre-encoded files per kind
MAX_FRAMES = 25
AV_SIZES = {'vegas': (22482, 5621), 'ave': (3339, 804)}
_WORDS = ('the', 'bird', 'has', 'a', 'short', 'beak', 'with', 'brown', 'wings', 'and',
          'white', 'belly', 'its', 'crown', 'is', 'black', 'small', 'long', 'tail', 'feathers',
          'yellow', 'breast', 'grey', 'throat', 'red', 'eye', 'ring', 'striped', 'back', 'of')


def parse_scale(text: str) -> float:
    """'full' -> 1.0; a fraction in (0, 1] otherwise (ValueError naming the flag)."""
    if str(text).lower() == 'full':
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise ValueError(f'--scale must be "full" or a fraction in (0, 1], got {text!r}')
    return value


def scaled_count(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def spread(n: int, classes: int) -> np.ndarray:
    """Labels of n items spread over classes as evenly as possible, in class order."""
    return (np.arange(n) * classes // n).astype(np.int64)


def _jpeg_pool(rng: np.random.Generator, sizes: tuple[tuple[int, int], tuple[int, int]],
               kinds=('RGB',), noise: float = 12.0, quality: int = 90) -> list[bytes]:
    """Smooth colour fields with texture and noise: JPEG sizes like photos' (about 65 KB
    at 500x375 with the defaults; video frames use less noise and quality)."""
    out = []
    for i in range(POOL):
        w, h = int(rng.integers(*sizes[0])), int(rng.integers(*sizes[1]))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, 3)
        img = (base + 40 * np.sin(xx[..., None] / rng.uniform(8, 40) + rng.uniform(0, 6, 3))
               * np.cos(yy[..., None] / rng.uniform(8, 40)) + rng.normal(0, noise, (h, w, 3)))
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert(kinds[i % len(kinds)])
        buf = io.BytesIO()
        pil.save(buf, format='JPEG', quality=quality)
        out.append(buf.getvalue())
    return out


def _spectrogram_pool(rng: np.random.Generator) -> list[bytes]:
    from input_pipeline.demo import fgxmedia as demo
    from input_pipeline.fgxmedia import audio as audio_lib
    out = []
    for i in range(POOL // 4):
        y = demo.synth_chirps(i % 10, 10, rng, audio_lib.SAMPLE_RATE, float(rng.uniform(1, 3)))
        rgb = audio_lib.spectrogram_image(y, demo.SPECTROGRAM_SIZE)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
        buf = io.BytesIO()
        Image.fromarray(rgba).save(buf, format='PNG')
        out.append(buf.getvalue())
    return out


def _paragraph(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(int(rng.integers(4, 10))):
        words = rng.choice(_WORDS, size=int(rng.integers(8, 20)))
        sentences.append(' '.join(words).capitalize() + '.')
    return ' '.join(sentences) + '\n'


def write_fgxmedia(out: Path, scale: float, seed: int = 0) -> dict:
    """The FG-XMedia layout at `scale` of the release; returns {modality: {split: n}}."""
    from input_pipeline.demo.fgxmedia import class_name
    from input_pipeline.fgxmedia import manifest
    rng = np.random.default_rng([seed, 0x5CA1E])
    classes = max(2, int(round(manifest.RELEASE_CLASSES * scale)))
    photos = _jpeg_pool(rng, ((400, 501), (300, 376)), ('RGB',) * 10 + ('L', 'CMYK'))
    frames = _jpeg_pool(rng, ((320, 321), (240, 241)), noise=2.0, quality=75)
    pngs = _spectrogram_pool(rng)
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        tag = 'tr' if split == 'train' else 'te'
        for m in ('image', 'audio', 'text', 'video'):
            n = scaled_count(manifest.RELEASE_COUNTS[m][split], scale)
            counts.setdefault(m, {})[split] = n
            lines = []
            for k, c in enumerate(spread(n, classes)):
                folder = class_name(int(c))
                stem = f'{folder.split(".", 1)[1]}_{tag}{k:05d}'
                if m == 'video':
                    nf = MAX_FRAMES if rng.random() < 0.9 else int(rng.integers(5, MAX_FRAMES))
                    for f in range(nf):
                        rel = f'{folder}/{stem}_{f + 1:02d}.jpg'
                        _write(out / 'video' / rel, frames[int(rng.integers(POOL))])
                        lines.append(f'{rel} {c}')
                    continue
                if m == 'image':
                    rel, data, where = f'{folder}/{stem}.jpg', photos[k % POOL], 'image'
                elif m == 'audio':
                    rel, data, where = f'{folder}/{stem}.png', pngs[k % len(pngs)], 'audio/audioimg'
                else:
                    rel, data, where = f'{folder}/{stem}.txt', _paragraph(rng).encode(), 'text'
                _write(out / where / rel, data)
                lines.append(f'{rel} {c}')
            _write(out / 'list' / m / f'{split}.txt', ('\n'.join(lines) + '\n').encode())
    (out / 'classes.txt').write_text(''.join(f'{c + 1} {class_name(c)}\n' for c in range(classes)))
    check.write_manifest(out, {'format': 'fgxmedia', 'classes': classes, 'counts': counts,
                               'items': None, 'name': f'dcinet demo-data --scale {scale:g} '
                               f'(FG-XMedia counts x {scale:g}, seed {seed})'})
    return counts


def write_precomp(out: Path, scale: float, release: str = 'f30k', seed: int = 0,
                  block: int = 256) -> dict:
    """A precomp folder at `scale` of `release`; returns {split: images}."""
    from input_pipeline.precomp import manifest
    _, splits = manifest.RELEASES[release]
    rng = np.random.default_rng([seed, 0x9C, len(release)])
    sizes = {s: scaled_count(v[0], scale) for s, v in splits.items() if v is not None}
    for split, n in sizes.items():
        names = manifest.file_names(split)
        ims = np.lib.format.open_memmap(out / names['images'], mode='w+', dtype=np.float32,
                                        shape=(n, manifest.REGIONS, manifest.REGION_DIM))
        for start in range(0, n, block):
            rows = min(block, n - start)
            x = rng.standard_normal((rows, manifest.REGIONS, manifest.REGION_DIM), np.float32)
            ims[start:start + rows] = np.maximum(x, 0.0)
        ims.flush()
        del ims
        caps = [' '.join(rng.choice(_WORDS, size=int(rng.integers(8, 16))))
                for _ in range(manifest.CAPTIONS_PER_IMAGE * n)]
        (out / names['captions']).write_text('\n'.join(caps) + '\n', encoding='utf-8')
        (out / names['ids']).write_text(''.join(f'{i}\n' for i in range(n)), encoding='utf-8')
    check.write_manifest(out, manifest.demo_manifest(
        out, name=f'dcinet demo-data --scale {scale:g} ({release} counts x {scale:g})',
        regions=manifest.REGIONS, feature_dim=manifest.REGION_DIM, sizes=sizes)
        | {'files': sorted(n for s in sizes for n in manifest.file_names(s).values())})
    return sizes


def write_av(out: Path, scale: float, fmt: str, seed: int = 0) -> dict:
    """A VEGAS or AVE feature file at `scale` of the sizes above; returns {split: pairs}."""
    import h5py
    from input_pipeline.vegas_ave import manifest
    from input_pipeline.vegas_ave.reader import FILE_NAMES
    _, classes, _ = manifest.RELEASES[fmt]
    rng = np.random.default_rng([seed, 0xAF5, len(fmt)])
    sizes = dict(zip(SPLITS, (scaled_count(n, scale) for n in AV_SIZES[fmt])))
    with h5py.File(out / FILE_NAMES[fmt], 'w') as f:
        for split, n in sizes.items():
            f[f'visual_{split}'] = np.abs(rng.standard_normal((n, manifest.VISUAL_DIM), np.float32))
            f[f'audio_{split}'] = np.abs(rng.standard_normal((n, manifest.AUDIO_DIM), np.float32))
            f[f'lab_{split}'] = spread(n, classes)
    check.write_manifest(out, manifest.demo_manifest(
        name=f'dcinet demo-data --format {fmt} --scale {scale:g}', dataset=fmt,
        file=FILE_NAMES[fmt], classes=classes, visual_dim=manifest.VISUAL_DIM,
        audio_dim=manifest.AUDIO_DIM, sizes=sizes))
    return sizes


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def scaled_main(out: str | os.PathLike, fmt: str, scale: str, seed: int = 0,
                release: str = 'f30k') -> dict:
    """`dcinet demo-data --scale`: write, then print counts, seconds and bytes written."""
    value = parse_scale(scale)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if fmt == 'fgxmedia':
        counts = write_fgxmedia(root, value, seed)
    elif fmt == 'precomp':
        counts = write_precomp(root, value, release, seed)
    else:
        counts = write_av(root, value, fmt, seed)
    size = sum(p.stat().st_size for p in root.rglob('*') if p.is_file())
    print(f'{fmt} at scale {value:g}: {counts}; {size / 2**20:,.1f} MiB in '
          f'{time.perf_counter() - t0:.1f} s, written to {root}')
    return counts
