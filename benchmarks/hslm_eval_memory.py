"""Peak host memory of HSLM's evaluation at a given gallery size: anonymous vs file-backed.

Synthetic precomp data (region features in a memory-mapped .npy file, like real data;
random caption tokens) at the config's widths, then what `dcinet eval` runs for one
split: `hslm_eval.encode_split`, `blockwise.sharded_score_matrix` and the recall
evaluator. After each phase it prints RssAnon and RssFile (now and the peak, sampled
every 50 ms from /proc/self/status) and VmHWM, so a run at two gallery sizes shows
whether anonymous memory grows with the gallery (docs/recall.md#spill). Linux only.
Run it as a module from the repository root (as a script, benchmarks/input_pipeline.py
would shadow the package of that name).

    python -m benchmarks.hslm_eval_memory --images 1000 [--config configs/hslm_test.py]
        [--captions_per_image 5] [--length 40] [--spill_mb 256] [--spill_dir DIR]
        [--ensemble 1]

Full widths (`--config configs/hslm_f30k.py`) cost about 10 s per 100 x 100 tile on a
CPU; the default small config scores 1,000 x 5,000 in about a minute.
"""

import argparse
import importlib
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np

from dcinet_jax.evaluators import blockwise, recall
from dcinet_jax.evaluators.spill import Spill
from dcinet_jax.methods import hslm, hslm_eval
from input_pipeline.precomp.reader import EvalArrays

_FIELDS = ('RssAnon', 'RssFile', 'RssShmem', 'VmHWM')


def _status() -> dict:
    """The _FIELDS of /proc/self/status, in bytes."""
    out = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        name, _, value = line.partition(':')
        if name in _FIELDS:
            out[name] = int(value.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Peaks of every _FIELDS entry, sampled in the background."""

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, _status(), threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            for k, v in _status().items():
                self.peak[k] = max(self.peak.get(k, 0), v)


def _row(phase: str, seconds: float, sampler: _Sampler) -> str:
    now = _status()
    for k, v in now.items():
        sampler.peak[k] = max(sampler.peak.get(k, 0), v)
    mb = lambda b: f'{b / 1e6:8.1f}'  # noqa: E731
    return (f'| {phase:<9} | {seconds:7.1f} | {mb(now["RssAnon"])} | {mb(sampler.peak["RssAnon"])} '
            f'| {mb(now["RssFile"])} | {mb(sampler.peak["RssFile"])} '
            f'| {mb(now.get("RssShmem", 0))} | {mb(now["VmHWM"])} |')


def _synthetic(c, n_img: int, per_image: int, length: int, folder: str) -> EvalArrays:
    rng = np.random.default_rng(0)
    shape = (n_img, int(c.data.num_regions), int(c.data.region_dim))
    path = Path(folder) / 'test_ims.npy'
    images = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32, shape=shape)
    for lo in range(0, n_img, 256):
        hi = min(lo + 256, n_img)
        images[lo:hi] = rng.random((hi - lo,) + shape[1:], dtype=np.float32)
    images.flush()
    del images
    n_cap = n_img * per_image
    lengths = rng.integers(3, length + 1, n_cap).astype(np.int32)
    tokens = rng.integers(4, int(c.model.vocab_size), (n_cap, length)).astype(np.int32)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return EvalArrays(images=np.load(path, mmap_mode='r'), image_rows=np.arange(n_img),
                      tokens=tokens, lengths=lengths,
                      caption_image=np.arange(n_cap) // per_image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/hslm_test.py')
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--captions_per_image', type=int, default=5)
    parser.add_argument('--length', type=int, default=40, help='padded caption length L')
    parser.add_argument('--spill_mb', type=float, default=None,
                        help="eval.spill_mb (default: the config's; -1: never spill)")
    parser.add_argument('--spill_dir', default=None, help="eval.spill_dir ('': temp dir)")
    parser.add_argument('--ensemble', type=int, default=1,
                        help='rank the mean of this many copies of the matrix')
    args = parser.parse_args()

    module = importlib.import_module(Path(args.config).with_suffix('').as_posix()
                                     .replace('/', '.'))
    c = module.get_config()
    c.data_dir = str(Path(tempfile.gettempdir()) / 'no-hslm-data')   # no data: config widths
    if args.spill_mb is not None:
        c.eval.spill_mb = args.spill_mb
    if args.spill_dir is not None:
        c.eval.spill_dir = args.spill_dir
    spill = Spill.from_config(c)
    model = hslm.build_model(c)
    variables = jax.tree.map(np.asarray, hslm.init_variables(model, jax.random.key(0), c))
    sampler = _Sampler()
    sampler.start()
    print(f'HSLM eval, {args.config}: {args.images:,} images x '
          f'{args.images * args.captions_per_image:,} captions, L = {args.length}, '
          f'spill_mb {spill.mb:g}, spill_dir {spill.directory or tempfile.gettempdir()!r}, '
          f'{jax.local_device_count()} device(s)')
    print('| phase     |  wall s | RssAnon MB | peak | RssFile MB | peak | RssShmem MB '
          '| VmHWM MB |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        arrays = _synthetic(c, args.images, args.captions_per_image, args.length, folder)
        print(_row('data', time.perf_counter() - start, sampler), flush=True)
        start = time.perf_counter()
        regions, words = hslm_eval.encode_split(model, variables, arrays,
                                                batch_size=int(c.eval.batch_size), spill=spill)
        print(_row('encode', time.perf_counter() - start, sampler), flush=True)
        start = time.perf_counter()
        scores = blockwise.sharded_score_matrix(
            hslm_eval.tile_scorer(model), variables, regions, (words, arrays.lengths),
            image_block=int(c.eval.image_block), caption_block=int(c.eval.caption_block),
            spill=spill)
        spilled = [name for name, a in (('regions', regions), ('words', words),
                                        ('scores', scores)) if isinstance(a, np.memmap)]
        del regions, words
        print(_row('score', time.perf_counter() - start, sampler), flush=True)
        start = time.perf_counter()
        test = {'scores': [scores] * args.ensemble if args.ensemble > 1 else scores,
                'caption_image': arrays.caption_image}
        c.eval.protocol = ('1k',)
        results = recall.evaluate({'test': test}, config=c)
        print(_row('rank', time.perf_counter() - start, sampler), flush=True)
    sampler.done.set()
    print(f'rsum {results["rsum"]:.1f} (random weights); on disk: '
          f'{", ".join(spilled) or "nothing"}')


if __name__ == '__main__':
    main()
