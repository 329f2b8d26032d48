"""HSLM's evaluation outputs: eval-mode encoders, the learned score matrix of a split
filled tile by tile over every device and process, ensembles (docs/recall.md).

Split from `methods/hslm.py` (the contract module re-exports `eval_outputs`)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dcinet_jax.methods.hslm_data import eval_arrays

SWITCHES = ('use_local', 'use_global', 'num_relation_blocks', 'num_text_blocks',
            'text_attn_padding')

_JITTED: dict = {}


def _jitted(model, name: str):
    """The eval-mode encoders of `model`, jitted once per model; 'tile': the scorer of
    one tile (`_score_tile`), one function per model, so blockwise compiles it once."""
    key = (model, name)      # equal modules (same fields) share the compiled functions
    if key not in _JITTED:
        from dcinet_jax.models.hslm import HSLM
        if len(_JITTED) > 12:
            _JITTED.clear()
        fns = {
            'images': lambda v, x: model.apply(v, x, train=False, method=HSLM.encode_images),
            'captions': lambda v, t, n: model.apply(v, t, n, train=False,
                                                    method=HSLM.encode_captions),
        }
        _JITTED[key] = (functools.partial(_score_tile, model) if name == 'tile'
                        else jax.jit(fns[name]))
    return _JITTED[key]


def _finite_block(block: np.ndarray, n: int, start: int, arrays, source: str) -> np.ndarray:
    """The block, after checking the region features the model reads are finite: NaN
    input is the data's fault, and would otherwise be blamed on the checkpoint."""
    bad = ~np.isfinite(block[:n]).reshape(n, -1).all(axis=1)
    if bad.any():
        row = int(arrays.image_rows[start + int(np.argmax(bad))])
        raise ValueError(f'{source}: region features of row {row} (and {int(bad.sum()) - 1} '
                         f'more of these {n} images) hold NaN/Inf; the data is at fault, not '
                         'the checkpoint: fix or re-extract the features')
    return block


def tile_scorer(model):
    """f(variables, regions, (words, lengths)) -> float32 scores of one tile (eval mode),
    one function per model (`blockwise.sharded_score_matrix` compiles it once)."""
    return _jitted(model, 'tile')


def _score_tile(model, variables, regions, captions):
    """Eval-mode scores of one (images, captions) tile, float32 whatever the compute
    dtype (the evaluator ranks them)."""
    from dcinet_jax.models.hslm import HSLM
    scores = model.apply(variables, regions, *captions, train=False, method=HSLM.similarity)
    return scores.astype(jnp.float32)


def encode_split(model, variables, arrays, *, batch_size: int, source: str = 'region features',
                 spill=None):
    """Eval-mode region embeddings (N_img, R, d) and word embeddings (N_cap, L, d) of an
    `EvalArrays` (distinct images read block by block from the memmap, checked finite),
    each written block by block into a `spill.host_array` (on disk when large)."""
    from dcinet_jax.evaluators import blockwise
    from dcinet_jax.evaluators.spill import stack_rows
    enc_img, enc_cap = _jitted(model, 'images'), _jitted(model, 'captions')
    b = min(batch_size, arrays.num_images)
    regions = stack_rows(
        (np.asarray(enc_img(variables, _finite_block(block, n, i * b, arrays, source)))[:n]
         for i, (block, n) in enumerate(arrays.image_blocks(b))),
        arrays.num_images, what='region embeddings', spill=spill)
    words = blockwise.map_blocks(lambda tl: enc_cap(variables, *tl),
                                 (arrays.tokens, arrays.lengths), batch_size, spill=spill,
                                 what='word embeddings')
    return regions, words


def split_scores(model, variables, config, name: str, *, num_images: int = 0) -> dict:
    """{'scores': (N_img, N_cap), 'caption_image': (N_cap,)} of precomp split `name`,
    scored block by block by the learned head (eval mode), the tiles spread over every
    local device and every process (`blockwise.sharded_score_matrix`). Embeddings and
    scores above `eval.spill_mb` MiB live in `eval.spill_dir` (`evaluators/spill.py`)."""
    from dcinet_jax.evaluators import blockwise
    from dcinet_jax.evaluators.spill import Spill
    e = config.eval
    spill = Spill.from_config(config)
    arrays = eval_arrays(config, name, num_images=num_images)
    from input_pipeline.precomp import reader as precomp
    source = str(Path(str(config.data_dir)) / precomp.file_names(name)['images'])
    regions, words = encode_split(model, variables, arrays, batch_size=int(e.batch_size),
                                  source=source, spill=spill)
    scores = blockwise.sharded_score_matrix(
        tile_scorer(model), variables, regions, (words, arrays.lengths),
        image_block=int(e.image_block), caption_block=int(e.caption_block), spill=spill)
    return {'scores': scores, 'caption_image': arrays.caption_image}


def eval_outputs(model, variables, config) -> dict:
    """Score matrices of the test split (`eval.test_split`) and, for model selection,
    of the first `eval.dev_images` images of `eval.dev_split` ('' skips it).

    `eval.ensemble_workdirs` (comma-separated workdirs of runs with the same config)
    adds the test score matrix of each one's latest checkpoint: the evaluator averages
    the list, an ensemble (docs/recall.md#ensembles). Dev, and so model selection,
    stays the single model's."""
    e = config.eval
    test = split_scores(model, variables, config, str(e.test_split))
    members = [w.strip() for w in str(e.get('ensemble_workdirs', '')).split(',') if w.strip()]
    if members:
        from dcinet_jax import evaluate_checkpoint   # restores checkpoints, as `dcinet eval`
        scores = [test['scores']]
        for workdir in members:
            _, member, step = evaluate_checkpoint.restore_for_eval(config, workdir)
            logging.info('ensemble: %s step %d', workdir, step)
            scores.append(split_scores(model, member, config, str(e.test_split))['scores'])
        test = dict(test, scores=scores)
    outputs = {'test': test}
    if e.get('dev_split', ''):
        outputs['dev'] = split_scores(model, variables, config, str(e.dev_split),
                                      num_images=int(e.get('dev_images', 0)))
    outputs['info'] = {'switches': {k: config.model[k] for k in SWITCHES}}
    return outputs
