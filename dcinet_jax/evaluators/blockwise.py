"""Fill an (N_img, N_cap) score matrix block by block with a learned scoring function.

Methods whose similarity is a network (a cross-attention head, not a cosine) cannot score
a whole test set at once: HSLM's head keeps a per-word attended tensor of
bi * bc * L * d floats for a block of bi images and bc captions. `score_matrix` walks the
matrix in tiles of a fixed shape, so the jitted scoring function compiles once: the last
tile of each axis is padded up to the block size by repeating its last row (real data,
so no NaN from all-zero inputs), and the padded part of the result is cropped.

Inputs stay on the host (numpy arrays, np.memmap, or jax arrays); one block of each side
is copied to the device at a time, and the result of one tile is read back while the next
is being computed (JAX dispatches asynchronously).

Memory, with 4-byte scores and `b_i`, `b_c` the block sizes (capped at N_img, N_cap):
  host:   4 * N_img * N_cap (the result: 20 MB for Flickr30K's 1,000 x 5,000, 500 MB for
          COCO 5K's 5,000 x 25,000) + one padded block of each input + two result tiles;
          memory-mapped inputs are paged in as blocks are read.
  device: one image block + one caption block (their bytes per item times b_i or b_c)
          + the scoring function's working set for a (b_i, b_c) tile (for HSLM about
          b_i * b_c * L * d * 4 bytes per live attended tensor) + 2 * 4 * b_i * b_c.
Halving `caption_block` halves the device working set; the result does not depend on
the block sizes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['map_blocks', 'score_matrix']


def _leading_size(tree: Any, what: str) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f'score_matrix: {what} holds no arrays')
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        raise ValueError(f'score_matrix: every array of {what} needs the same leading '
                         f'(item) axis; got shapes {shapes}')
    size = sizes.pop()
    if size == 0:
        raise ValueError(f'score_matrix: {what} has no items')
    return size


def _block(tree: Any, start: int, size: int) -> Any:
    """Items [start, start + size) of every array, the last item repeated past the end."""

    def take(leaf):
        part = leaf[start:start + size]
        short = size - part.shape[0]
        if isinstance(leaf, jax.Array):
            return jnp.concatenate([part, jnp.repeat(part[-1:], short, axis=0)]) if short else part
        part = np.asarray(part)  # a memmap slice is read here
        if short:
            part = np.concatenate([part, np.repeat(part[-1:], short, axis=0)])
        return jax.device_put(part)

    return jax.tree.map(take, tree)


def map_blocks(fn: Callable[[Any], Any], tree: Any, block: int) -> np.ndarray:
    """fn over the items of `tree` (arrays sharing a leading item axis) in blocks of one
    fixed size, the last block padded like a score tile and cropped: the rows of
    fn(block) must depend only on their own items (eval-mode encoders)."""
    n = _leading_size(tree, 'the input')
    b = min(block, n)
    return np.concatenate([np.asarray(fn(_block(tree, start, b)))[:min(b, n - start)]
                           for start in range(0, n, b)])


def score_matrix(score_block: Callable[[Any, Any], Any], images: Any, captions: Any, *,
                 image_block: int = 100, caption_block: int = 500,
                 progress: bool = False) -> np.ndarray:
    """The float32 (N_img, N_cap) matrix of score_block over all image/caption pairs.

    images, captions: pytrees of arrays whose leading axis is the item (e.g. region
    features (N_img, R, D); token ids (N_cap, L) with lengths (N_cap,)).
    score_block(image_tree, caption_tree) -> (b_i, b_c) scores for one tile; pass a
    jitted function (it is called with one shape only, so it compiles once).
    """
    if image_block < 1 or caption_block < 1:
        raise ValueError(f'score_matrix: block sizes must be positive, got image_block='
                         f'{image_block}, caption_block={caption_block}')
    n_img = _leading_size(images, 'images')
    n_cap = _leading_size(captions, 'captions')
    b_img, b_cap = min(image_block, n_img), min(caption_block, n_cap)
    out = np.empty((n_img, n_cap), np.float32)
    tiles = [(i0, c0) for i0 in range(0, n_img, b_img) for c0 in range(0, n_cap, b_cap)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tiles), desc='scores', unit='tile')

    def store(result, i0: int, c0: int) -> None:
        tile = np.asarray(result)
        if tile.shape != (b_img, b_cap):
            raise ValueError(f'score_matrix: score_block returned shape {tile.shape} for a '
                             f'block of {b_img} images and {b_cap} captions; expected '
                             f'({b_img}, {b_cap})')
        ni, nc = min(b_img, n_img - i0), min(b_cap, n_cap - c0)
        out[i0:i0 + ni, c0:c0 + nc] = tile[:ni, :nc]
        if bar is not None:
            bar.update(1)

    pending = None
    image_start, image_tree = -1, None
    for i0, c0 in tiles:
        if i0 != image_start:
            image_start, image_tree = i0, _block(images, i0, b_img)
        result = score_block(image_tree, _block(captions, c0, b_cap))
        if pending is not None:
            store(*pending)  # reads the previous tile while this one runs
        pending = (result, i0, c0)
    store(*pending)
    if bar is not None:
        bar.close()
    return out
