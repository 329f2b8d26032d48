"""Time the full retrieval evaluation at the real FG-XMedia test sizes.

Random softmax-like features: 5,794 images, 4,000 texts, 6,000 audio clips, 200 classes,
so six bi-modal tasks and three X->all tasks over a 15,794-item gallery.

    python benchmarks/retrieval.py [--dim 200] [--chunk-size 1024]
"""

import argparse
import time

import numpy as np

from dcinet_jax import retrieval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dim', type=int, default=200, help='feature size (200: softmax)')
    parser.add_argument('--chunk-size', type=int, default=1024)
    parser.add_argument('--exclude-self', action='store_true')
    parser.add_argument('--num-workers', type=int, default=1, help='threads over query chunks')
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    sizes = {'image': 5794, 'text': 4000, 'audio': 6000}
    features = {}
    for name, n in sizes.items():
        logits = rng.normal(size=(n, args.dim)).astype(np.float32)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        features[name] = (probs, rng.integers(0, 200, size=n))

    start = time.perf_counter()
    results = retrieval.evaluate(features, exclude_self=args.exclude_self,
                                 chunk_size=args.chunk_size,
                                 num_workers=args.num_workers)
    seconds = time.perf_counter() - start
    print(retrieval.format_table(results, name='random features'))
    print(f'evaluate(): {seconds:.1f} s for 6 bi-modal + 3 X->all tasks '
          f'(dim {args.dim}, chunk {args.chunk_size}, {args.num_workers} worker(s))')


if __name__ == '__main__':
    main()
