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
  host:   the result, 4 * N_img * N_cap bytes (20 MB for Flickr30K's 1,000 x 5,000,
          500 MB for COCO 5K's 5,000 x 25,000), is a `spill.host_array`: in memory up
          to `eval.spill_mb` (256 MiB), else a memory map of an unlinked file in
          `eval.spill_dir` (file-backed pages, which the kernel writes back and drops
          under memory pressure); besides it, one padded block of each input + two
          result tiles. Memory-mapped inputs are
          paged in as blocks are read; `map_blocks` writes its rows the same way, so an
          encoded gallery does not stay in host memory either.
  device: one image block + one caption block (their bytes per item times b_i or b_c)
          + the scoring function's working set for a (b_i, b_c) tile (for HSLM about
          b_i * b_c * L * d * 4 bytes per live attended tensor) + 2 * 4 * b_i * b_c.
Halving `caption_block` halves the device working set; the result does not depend on
the block sizes or on where it is stored.

`sharded_score_matrix` fills the same matrix with every device of every process: each
process takes a contiguous share of the image blocks, scores them one block per local
device at a time (the same tile shape and contents as on one device, so the same
numbers), and the rows are gathered once (`sharding.gather_rows`); host memory for the
result is then the process's share (spilled like the one-process matrix) plus, after
the gather, the whole matrix in memory: the host bound above holds per process only
with one process.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dcinet_jax.evaluators.spill import Spill, host_array, stack_rows

__all__ = ['map_blocks', 'score_matrix', 'sharded_score_matrix']


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


def _block(tree: Any, start: int, size: int, *, on_host: bool = False) -> Any:
    """Items [start, start + size) of every array, the last item repeated past the end;
    on the default device, or as numpy arrays with `on_host`."""

    def take(leaf):
        part = leaf[start:start + size]
        short = size - part.shape[0]
        if isinstance(leaf, jax.Array) and not on_host:
            return jnp.concatenate([part, jnp.repeat(part[-1:], short, axis=0)]) if short else part
        part = np.asarray(part)  # a memmap slice is read here
        if short:
            part = np.concatenate([part, np.repeat(part[-1:], short, axis=0)])
        return part if on_host else jax.device_put(part)

    return jax.tree.map(take, tree)


def map_blocks(fn: Callable[[Any], Any], tree: Any, block: int, *,
               spill: Spill | None = None, what: str = 'encoded items') -> np.ndarray:
    """fn over the items of `tree` (arrays sharing a leading item axis) in blocks of one
    fixed size, the last block padded like a score tile and cropped: the rows of
    fn(block) must depend only on their own items (eval-mode encoders). The rows are
    written into one `spill.host_array` (on disk when large; `what` names it)."""
    n = _leading_size(tree, 'the input')
    b = min(block, n)
    return stack_rows((np.asarray(fn(_block(tree, start, b)))[:min(b, n - start)]
                       for start in range(0, n, b)), n, what=what, spill=spill)


def _check_blocks(image_block: int, caption_block: int) -> None:
    if image_block < 1 or caption_block < 1:
        raise ValueError(f'score_matrix: block sizes must be positive, got image_block='
                         f'{image_block}, caption_block={caption_block}')


def _fill(call: Callable[[Any, Any], Any], images: Any, captions: Any, *, b_img: int,
          b_cap: int, row_blocks: Sequence[int], group: int, progress: bool,
          on_host: bool = False, spill: Spill | None = None) -> np.ndarray:
    """Scores of the image blocks `row_blocks` (block numbers) against every caption,
    rows stacked in that order: `group` image blocks at a time (the last group filled
    up with copies of its last block) go to call(images, caption_block), which returns
    their (group * b_img, b_cap) tiles stacked; blocks are passed as numpy arrays with
    `on_host` (call places them), else on the default device. The rows go into one
    `spill.host_array` (on disk when large)."""
    n_img, n_cap = _leading_size(images, 'images'), _leading_size(captions, 'captions')
    rows = [min(b_img, n_img - i * b_img) for i in row_blocks]
    out = host_array((sum(rows), n_cap), np.float32, what='score matrix', spill=spill)
    offsets = np.concatenate([[0], np.cumsum(rows)]).astype(int)
    position = {block: at for at, block in enumerate(row_blocks)}
    groups = [list(row_blocks[g:g + group]) for g in range(0, len(row_blocks), group)]
    tiles = [(g, c0) for g in range(len(groups)) for c0 in range(0, n_cap, b_cap)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tiles), desc='scores', unit='tile')

    def store(result, g: int, c0: int) -> None:
        tile = np.asarray(result)
        if tile.shape != (group * b_img, b_cap):
            raise ValueError(f'score_matrix: score_block returned shape {tile.shape} for a '
                             f'block of {group * b_img} images and {b_cap} captions; '
                             f'expected ({group * b_img}, {b_cap})')
        nc = min(b_cap, n_cap - c0)
        for k, block in enumerate(groups[g]):
            at = position[block]
            out[offsets[at]:offsets[at + 1], c0:c0 + nc] = tile[k * b_img:][:rows[at], :nc]
        if bar is not None:
            bar.update(1)

    pending = None
    image_group, image_tree = -1, None
    for g, c0 in tiles:
        if g != image_group:
            members = groups[g] + [groups[g][-1]] * (group - len(groups[g]))
            parts = [_block(images, i * b_img, b_img, on_host=on_host) for i in members]
            image_group = g
            image_tree = parts[0] if group == 1 else jax.tree.map(
                lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)
        result = call(image_tree, _block(captions, c0, b_cap, on_host=on_host))
        if pending is not None:
            store(*pending)  # reads the previous tile while this one runs
        pending = (result, g, c0)
    if pending is not None:
        store(*pending)
    if bar is not None:
        bar.close()
    return out


def score_matrix(score_block: Callable[[Any, Any], Any], images: Any, captions: Any, *,
                 image_block: int = 100, caption_block: int = 500,
                 progress: bool = False, spill: Spill | None = None) -> np.ndarray:
    """The float32 (N_img, N_cap) matrix of score_block over all image/caption pairs,
    on one device of this process (`sharded_score_matrix` spreads it).

    images, captions: pytrees of arrays whose leading axis is the item (e.g. region
    features (N_img, R, D); token ids (N_cap, L) with lengths (N_cap,)).
    score_block(image_tree, caption_tree) -> (b_i, b_c) scores for one tile; pass a
    jitted function (it is called with one shape only, so it compiles once).
    spill: where the matrix goes when large (`spill.Spill`; default: above 256 MiB, the
    system temp dir).
    """
    _check_blocks(image_block, caption_block)
    n_img = _leading_size(images, 'images')
    n_cap = _leading_size(captions, 'captions')
    b_img, b_cap = min(image_block, n_img), min(caption_block, n_cap)
    return _fill(score_block, images, captions, b_img=b_img, b_cap=b_cap,
                 row_blocks=range(-(-n_img // b_img)), group=1, progress=progress,
                 spill=spill)


@functools.lru_cache(maxsize=8)
def _tiles_fn(score_fn: Callable, mesh) -> Callable:
    """score_fn over one image block per device (jitted once per function and mesh)."""
    from jax.sharding import PartitionSpec as P

    from dcinet_jax.parallel import DATA_AXIS
    return jax.jit(jax.shard_map(score_fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                                 out_specs=P(DATA_AXIS), check_vma=False))


def sharded_score_matrix(score_fn: Callable[[Any, Any, Any], Any], params: Any,
                         images: Any, captions: Any, *, image_block: int = 100,
                         caption_block: int = 500, progress: bool = False,
                         spill: Spill | None = None) -> np.ndarray:
    """`score_matrix` of score_fn(params, image_tile, caption_tile) over every local
    device and every process, equal to the one-device matrix.

    The rows of image blocks are split over processes (`sharding.process_share`, whole
    blocks); each process scores its blocks `local_device_count` at a time, one
    (image_block, caption_block) tile per device (`jax.shard_map`, params and the caption
    block replicated), so each device runs exactly the one-device program on exactly the
    one-device tile; the processes' rows are gathered once. score_fn must be pure and
    traceable (it is jitted here, once); `spill` as in `score_matrix`."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from dcinet_jax.evaluators import sharding
    from dcinet_jax.parallel import DATA_AXIS
    _check_blocks(image_block, caption_block)
    n_img = _leading_size(images, 'images')
    n_cap = _leading_size(captions, 'captions')
    b_img, b_cap = min(image_block, n_img), min(caption_block, n_cap)
    num_blocks = -(-n_img // b_img)
    mesh = sharding.local_mesh()
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    params = jax.device_put(params, rep)
    tiles = _tiles_fn(score_fn, mesh)

    def call(image_tree, caption_tree):
        return tiles(params, jax.device_put(image_tree, split),
                     jax.device_put(caption_tree, rep))

    mine = list(sharding.process_share(num_blocks))
    part = _fill(call, images, captions, b_img=b_img, b_cap=b_cap, row_blocks=mine,
                 group=mesh.devices.size, progress=progress, on_host=True, spill=spill)
    return sharding.gather_rows(part) if sharding.shares_work(num_blocks) else part
