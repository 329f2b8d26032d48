"""Time the full FG-XMedia retrieval evaluation, numpy (float64) and on-device (float32).

Random softmax-like features at the real test sizes: 5,794 images, 4,000 texts, 6,000
audio clips, 200 classes, so six bi-modal tasks and three X->all tasks over a
15,794-item gallery. The device path runs on whatever JAX's default backend is (the CPU
on a machine without an accelerator). Both paths' mAPs are compared at the end.

    python benchmarks/retrieval.py [--dim 200] [--chunk-size 1024] [--paths numpy,device]
"""

import argparse
import resource
import time

import jax
import numpy as np

from dcinet_jax.evaluators import fgxmedia


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dim', type=int, default=200, help='feature size (200: softmax)')
    parser.add_argument('--chunk-size', type=int, default=1024)
    parser.add_argument('--exclude-self', action='store_true')
    parser.add_argument('--num-workers', type=int, default=1,
                        help='threads over query chunks (numpy path)')
    parser.add_argument('--paths', default='numpy,device',
                        help='comma-separated scoring paths to time: numpy, device')
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    sizes = {'image': 5794, 'text': 4000, 'audio': 6000}
    features = {}
    for name, n in sizes.items():
        logits = rng.normal(size=(n, args.dim)).astype(np.float32)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        features[name] = (probs, rng.integers(0, 200, size=n))

    results = {}
    for path in args.paths.split(','):
        start = time.perf_counter()
        results[path] = fgxmedia.evaluate_features(
            features, exclude_self=args.exclude_self, chunk_size=args.chunk_size,
            num_workers=args.num_workers, scoring=path)
        seconds = time.perf_counter() - start
        where = jax.default_backend() if path == 'device' else 'host'
        print(fgxmedia.format_table(results[path], name=f'random features, {path}'))
        print(f'{path} ({where}, {results[path]["protocol"]["score_dtype"]}): {seconds:.1f} s '
              f'for 6 bi-modal + 3 X->all tasks (dim {args.dim}, chunk {args.chunk_size}, '
              f'{args.num_workers} worker(s)); peak RSS so far '
              f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\n')
    if len(results) == 2:
        a, b = results.values()
        diffs = {k: abs(a[part][k] - b[part][k])
                 for part in ('bimodal', 'multimodal') for k in a[part]}
        worst = max(diffs, key=diffs.get)
        print(f'largest task mAP difference between the paths: {diffs[worst]:.2e} ({worst})')


if __name__ == '__main__':
    main()
