"""Training input pipeline throughput at the paper's sizes (448 crop from 512 JPEGs).

Generates (or reuses) a demo dataset, prepares it with `dcinet prepare`'s code, then
times `pipeline.create_train_iterator` over a few hundred batches after a warm-up and
prints examples/s (every modality's sample counts), per core, and the core count.
The peer, measured in the same run, is the reference code's way of loading images:
one file at a time with PIL (open, RGB, resize 512, centre crop 448) in one process.
Target: 150 examples/s per core at 448.

    python benchmarks/input_pipeline.py [--steps 300] [--work_dir DIR] [--store_source_jpegs 0|1]
    python benchmarks/input_pipeline.py --data_dir PREPARED [--modalities image,audio,text]
        [--num_classes 200] [--store_source_jpegs 0|1]

`--store_source_jpegs` (default: the paper config's, off) picks the prepared variant:
on, the demo's small RGB JPEG photos are stored as they are and upscaled to 512 per
read (docs/data.md#source-jpegs); off, every item is a 512 px JPEG and only the crop
window is decoded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

TARGET_PER_CORE = 150.0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_config(data_dir: Path, batch: int, modalities: tuple[str, ...],
                source_jpegs: bool | None = None, num_classes: int = 10):
    from configs import dcinet_fgxmedia
    c = dcinet_fgxmedia.get_config()   # 448 crop, 512 resize, 448-char texts
    if source_jpegs is not None:
        c.data.store_source_jpegs = source_jpegs
    c.data_dir = str(data_dir)
    c.data.num_classes = num_classes
    c.data.batch_per_modality = batch
    c.data.modalities = modalities
    return c


def time_pipeline(config, steps: int, warmup: int) -> float:
    """Examples/s of the training iterator (all modalities counted)."""
    from input_pipeline.fgxmedia import pipeline
    it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
    dt = time.perf_counter() - t0
    n = sum(v['label'].shape[0] for v in batch.values())
    return steps * n / dt


def time_pil_peer(raw_dir: Path, n: int) -> float:
    """Images/s of a naive per-file PIL loader (reference transform, one process)."""
    import numpy as np
    from PIL import Image

    from input_pipeline.fgxmedia import lists
    entries = lists.read_list(raw_dir, 'image', 'train', num_classes=10)
    paths = [lists.resolve_path(raw_dir, e) for e in entries]
    t0 = time.perf_counter()
    for i in range(n):
        img = Image.open(paths[i % len(paths)]).convert('RGB').resize((512, 512), Image.BILINEAR)
        np.asarray(img)[32:480, 32:480]
    return n / (time.perf_counter() - t0)


def time_prepared(data: Path, args, keep: bool | None) -> None:
    """Examples/s of the training input over an existing prepared data dir: the
    modalities together, then each alone (no PIL peer: no raw files here)."""
    modalities = tuple(m for m in args.modalities.split(',') if m)
    n_cores = cores()
    groups = [modalities] + ([(m,) for m in modalities] if len(modalities) > 1 else [])
    for group in groups:
        cfg = make_config(data, args.batch, group, keep, args.num_classes)
        rate = time_pipeline(cfg, args.steps, args.warmup)
        print(f'train pipeline, {"+".join(group):<16} {rate:8.1f} examples/s  '
              f'{rate / n_cores:7.1f} /s/core  (cores {n_cores}, crop {cfg.data.image_size} '
              f'from {cfg.data.resize_size}, store_source_jpegs={cfg.data.store_source_jpegs})')


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work_dir', default=os.path.join(tempfile.gettempdir(), 'dcinet_bench_input'))
    p.add_argument('--num_classes', type=int, default=10)
    p.add_argument('--per_class', type=int, default=20)
    p.add_argument('--batch', type=int, default=8, help='per modality (paper: 8)')
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--warmup', type=int, default=20)
    p.add_argument('--peer_images', type=int, default=100)
    p.add_argument('--data_dir', default='',
                   help='time this already prepared data dir (e.g. `dcinet demo-data --scale` '
                        'output prepared with the paper config) instead of generating one')
    p.add_argument('--modalities', default='image,audio,text',
                   help='with --data_dir: the modalities timed together, then each alone')
    p.add_argument('--store_source_jpegs', type=int, choices=(0, 1), default=None,
                   help='prepared variant: 1 keeps small source JPEGs (default: the paper config)')
    args = p.parse_args(argv)
    keep = None if args.store_source_jpegs is None else bool(args.store_source_jpegs)

    if args.data_dir:
        time_prepared(Path(args.data_dir), args, keep)
        return
    from input_pipeline.demo import fgxmedia as demo
    from input_pipeline.fgxmedia import prepare
    work = Path(args.work_dir)
    raw, data = work / f'raw_{args.num_classes}x{args.per_class}', work / 'prepared'
    if not (raw / 'list').is_dir():
        t0 = time.perf_counter()
        demo.generate_demo_dataset(raw, num_classes=args.num_classes, per_class=args.per_class,
                                   seed=0)
        print(f'generated demo data {args.num_classes} classes x {args.per_class} in '
              f'{time.perf_counter() - t0:.1f}s: {raw}')
    cfg = make_config(data, args.batch, ('image', 'audio', 'text'), keep)
    t0 = time.perf_counter()
    prepare.prepare(raw, data, cfg.data, progress=False)
    print(f'prepare (or reuse): {time.perf_counter() - t0:.1f}s')

    n_cores = cores()
    print(f'cores: {n_cores}; crop {cfg.data.image_size} from {cfg.data.resize_size}; '
          f'store_source_jpegs={cfg.data.store_source_jpegs}; '
          f'batch {args.batch} per modality; {args.steps} steps after {args.warmup} warm-up')
    rate = time_pipeline(cfg, args.steps, args.warmup)
    print(f'train pipeline, image+audio+text: {rate:8.1f} examples/s  '
          f'{rate / n_cores:7.1f} /s/core  (target {TARGET_PER_CORE:.0f} /s/core: '
          f'{"met" if rate / n_cores >= TARGET_PER_CORE else "NOT met"})')
    img_rate = time_pipeline(make_config(data, args.batch, ('image',), keep), args.steps,
                             args.warmup)
    print(f'train pipeline, image only:       {img_rate:8.1f} examples/s  '
          f'{img_rate / n_cores:7.1f} /s/core')
    peer = time_pil_peer(raw, args.peer_images)
    print(f'peer: PIL per file, 1 process:    {peer:8.1f} images/s  '
          f'(image pipeline / peer = {img_rate / peer:.1f}x)')


if __name__ == '__main__':
    main()
