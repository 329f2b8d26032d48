"""HSLM behind the method contract: image-text matching on precomputed region features.

Everything method-specific is here (docs/hslm.md): the model (`models/hslm.py`), the
hardest-negative triplet loss over the global batch, Adam with clipping and one step
decay, the SCAN-"precomp" data path (`input_pipeline/precomp/reader.py`, `captions.py`) and
the score matrices consumed by the 'recall' evaluator.

What comes from the data rather than the config (`resolve`): the vocabulary size (the
vocab JSON `data.vocab_path`, or, when that is empty, a vocab built from the train
captions with `data.min_word_count`, rebuilt identically at every start) and the region
count and feature width (the header of `train_ims.npy`). The config's
`model.vocab_size`, `data.num_regions` and `data.region_dim` are used only where no
data is present (bench, profile, summary, tracing).

Several devices: each device encodes its slice of images and captions, gathers every
device's caption embeddings and scores its own images against all B captions (its
rows of the B x B matrix); the rows are gathered again and every device evaluates the
same global loss. Differentiating that identical loss per device gives, through the
gathers' transposes, N times the device's share of the gradient, so the step's pmean
yields exactly the global-batch gradient (tests/test_hslm_train.py checks 2 devices
against 1). BatchNorm statistics are synchronised over the mesh axis, so the
running statistics come back identical on every device.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcinet_jax import losses, parallel

DEFAULT_EVALUATOR = 'recall'
SWITCHES = ('use_local', 'use_global', 'num_relation_blocks', 'num_text_blocks',
            'text_attn_padding')
INIT_LENGTH = 8          # caption length used to create the variables (any length works)


# ----------------------------------------------------------------------------- data

@functools.lru_cache(maxsize=4)
def _vocab(data_dir: str, vocab_path: str, min_count: int, train_split: str = 'train'):
    """The vocab JSON, or one built from the train captions (deterministic)."""
    from input_pipeline.precomp import captions, reader as precomp
    if vocab_path:
        return captions.Vocab.load(vocab_file(data_dir, vocab_path))
    train = precomp.open_split(data_dir, train_split)
    logging.info('hslm: building the vocabulary from %d train captions (min count %d); '
                 'set data.vocab_path to a vocab JSON to skip this', len(train.captions),
                 min_count)
    return captions.Vocab.build(train.captions, min_count=min_count)


def vocab_file(data_dir: str, vocab_path: str) -> Path:
    """`vocab_path` as given when it exists or is absolute, else inside `data_dir`."""
    path = Path(vocab_path)
    if not path.is_absolute() and not path.exists():
        path = Path(data_dir) / path
    return path


def vocab(config: Any):
    """The run's vocabulary (cached per process)."""
    return _vocab(*_vocab_key(config))


def _vocab_key(config: Any) -> tuple:
    d = config.data
    return (str(config.data_dir), str(d.get('vocab_path', '') or ''),
            int(d.get('min_word_count', 4)), str(d.get('train_split', 'train')))


@functools.lru_cache(maxsize=8)
def _split(data_dir: str, name: str):
    from input_pipeline.precomp import reader as precomp
    return precomp.open_split(data_dir, name)


@functools.lru_cache(maxsize=8)
def _tokens(data_dir: str, name: str, vocab_key: tuple, max_length: int | None):
    from input_pipeline.precomp import reader as precomp
    vocab_obj = _vocab(*vocab_key)
    return precomp.encode_captions(_split(data_dir, name), vocab_obj, max_length=max_length)


def split_tokens(config: Any, name: str):
    """(split, tokens (N_caps, L) int32, lengths) of precomp split `name`, cached."""
    d = config.data
    key = _vocab_key(config)
    max_length = int(d.get('max_length', 0)) or None
    return (_split(str(config.data_dir), name),
            *_tokens(str(config.data_dir), name, key, max_length))


def data_description(config: Any) -> dict:
    """The data card of the precomp folder this config reads (results.json "data")."""
    from input_pipeline import data_card
    from input_pipeline.precomp import manifest
    data_dir = data_card.data_dir_of(config)
    vocab_path = str(config.data.get('vocab_path', '') or '')
    return manifest.describe(data_dir, vocab_file(data_dir, vocab_path) if vocab_path else None)


def _has_data(config: Any) -> bool:
    d = config.data
    return (Path(str(config.data_dir)) / f"{d.get('train_split', 'train')}_ims.npy").is_file()


def resolve(config: Any) -> Any:
    """A copy of `config` whose vocab size and region shape are those of the data
    (unchanged where there is no data: bench, tracing)."""
    c = config.copy_and_resolve_references()
    if _has_data(config):
        split = _split(str(config.data_dir), str(config.data.train_split))
        _, regions, dim = split.images.shape
        c.data.num_regions, c.data.region_dim = int(regions), int(dim)
        c.model.vocab_size = len(vocab(config))
    elif config.data.get('vocab_path', '') and vocab_file(
            str(config.data_dir), str(config.data.vocab_path)).is_file():
        c.model.vocab_size = len(vocab(config))
    return c


# ----------------------------------------------------------------------------- model

def build_model(config: Any, *, axis_name: str | None = None):
    from dcinet_jax.models import hslm as hslm_model
    return hslm_model.build(resolve(config), bn_axis_name=axis_name)


def init_variables(model, rng, config) -> dict:
    c = resolve(config)
    images = jnp.zeros((2, int(c.data.num_regions), int(c.data.region_dim)), jnp.float32)
    tokens = jnp.ones((2, INIT_LENGTH), jnp.int32)
    lengths = jnp.full((2,), INIT_LENGTH, jnp.int32)
    return dict(model.init({'params': rng, 'dropout': rng}, images, tokens, lengths,
                           train=False))


def _negative_mask(image_index: jax.Array | None, config: Any) -> jax.Array | None:
    """False where caption k belongs to image i (with loss.mask_same_image)."""
    if image_index is None or not config.loss.get('mask_same_image', False):
        return None
    return image_index[:, None] != image_index[None, :]


def warmup_steps(config: Any) -> int:
    """Steps of the all-negatives warm-up (`loss.warmup_epochs` of the data; 0: none)."""
    epochs = float(config.loss.get('warmup_epochs', 0))
    if epochs <= 0:
        return 0
    return int(round(epochs * steps_per_epoch(config)))


def triplet_loss(scores, negative_mask, config: Any, step) -> jax.Array:
    """`loss.negatives`: 'hardest' (the reference; after `warmup_steps` of the same loss
    summed over every negative) or 'all' (summed over every negative throughout, VSE0);
    summed over the batch."""
    margin = float(config.loss.margin)
    negatives = str(config.loss.get('negatives', 'hardest'))
    if negatives not in ('hardest', 'all'):
        raise ValueError(f"loss.negatives={negatives!r}: expected 'hardest' or 'all'")
    every = functools.partial(losses.all_negatives_triplet, scores, margin=margin,
                              negative_mask=negative_mask, reduction='sum')
    if negatives == 'all':
        return every()
    hardest = losses.hardest_negative_triplet(scores, margin=margin,
                                              negative_mask=negative_mask, reduction='sum')
    warm = warmup_steps(config) if _has_data(config) else 0
    return jnp.where(step < warm, every(), hardest) if warm else hardest


def loss_fn(params, variables, batch, rng, *, model, config, step, axis_name=None):
    """(loss, (collections, metrics)): hardest-negative triplet on the global B x B
    matrix; this device scores its images against every device's captions."""
    from dcinet_jax.models.hslm import HSLM
    k_img, k_txt, k_sim = jax.random.split(rng, 3)
    state = {'params': params, **variables}
    mutable = list(variables)

    def apply(method, *args, key):
        out, mutated = model.apply(state, *args, train=True, method=method, mutable=mutable,
                                   rngs={'dropout': key})
        state.update(mutated)
        return out

    regions = apply(HSLM.encode_images, batch['images'], key=k_img)
    words = apply(HSLM.encode_captions, batch['tokens'], batch['lengths'], key=k_txt)
    lengths = batch['lengths']
    image_index = batch.get('image_index')
    if axis_name is not None:
        words = jax.lax.all_gather(words, axis_name, tiled=True)
        lengths = jax.lax.all_gather(lengths, axis_name, tiled=True)
        if image_index is not None:
            image_index = jax.lax.all_gather(image_index, axis_name, tiled=True)
    rows = apply(HSLM.similarity, regions, words, lengths, key=k_sim)  # (B/N, B)
    scores = rows if axis_name is None else jax.lax.all_gather(rows, axis_name, tiled=True)
    loss = triplet_loss(scores, _negative_mask(image_index, config), config, step)
    diag = jnp.diagonal(scores)
    off = scores - jnp.diag(jnp.full(diag.shape, jnp.inf, scores.dtype))
    metrics = {'loss': loss, 'positive_score': jnp.mean(diag),
               'batch_r1_i2t': jnp.mean(jnp.argmax(scores, axis=1) == jnp.arange(len(diag))),
               'hardest_negative_score': jnp.mean(jnp.max(off, axis=1))}
    collections = {k: state[k] for k in variables}
    return loss, (collections, metrics)


# ----------------------------------------------------------------------------- optimisation

def steps_per_epoch(config: Any, process_count: int = 1) -> int:
    from input_pipeline.precomp import reader as precomp
    split, _, _ = split_tokens(config, str(config.data.train_split))
    return precomp.num_train_steps_per_epoch(len(split.caption_image),
                                             int(config.data.batch_per_modality))


def decay_step(config: Any) -> int | None:
    """The step where the learning rate drops (`optim.decay_epoch` epochs of the data;
    `optim.decay_steps` > 0 overrides, for data-free runs); None: no decay."""
    o = config.optim
    if int(o.get('decay_steps', 0)) > 0:
        return int(o.decay_steps)
    if int(o.get('decay_epoch', 0)) <= 0 or not _has_data(config):
        return None
    return int(o.decay_epoch) * steps_per_epoch(config)


def learning_rate(config: Any, total_steps: int) -> optax.Schedule:
    """`optim.learning_rate`, x `optim.decay_factor` from `decay_step` on: the contract's
    schedule hook, so the loop logs the decayed rate; the optimizer below uses it too.

    The generic `optim.schedule` / `optim.warmup_steps` do not apply (the step decay is
    the schedule); a value other than constant / 0 is refused rather than ignored."""
    del total_steps
    o = config.optim
    if str(o.get('schedule', 'constant')) != 'constant' or int(o.get('warmup_steps', 0)):
        raise ValueError(f"optim.schedule={o.get('schedule')!r}, optim.warmup_steps="
                         f"{o.get('warmup_steps')}: HSLM's rate is the step decay "
                         "(optim.decay_epoch, optim.decay_factor); use 'constant' and 0")
    at = decay_step(config)
    if at is None:
        return optax.constant_schedule(float(o.learning_rate))
    return optax.piecewise_constant_schedule(float(o.learning_rate),
                                             {at: float(o.decay_factor)})


def optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (optim.grad_clip), then Adam (no weight decay) at the rate
    `learning_rate` (the one the loop logs)."""
    o = config.optim
    return optax.chain(optax.clip_by_global_norm(float(o.grad_clip)),
                       optax.adam(learning_rate(config, total_steps), b1=float(o.b1), b2=float(o.b2),
                                  eps=float(o.get('eps', 1e-8))))


def batch_rule(config: Any, num_devices: int) -> None:
    parallel.check_divisible(int(config.data.batch_per_modality), num_devices,
                             'data.batch_per_modality')


def examples_per_step(config: Any) -> int:
    """(image, caption) pairs per global batch."""
    return int(config.data.batch_per_modality)


def train_batches(config: Any, *, start_step: int) -> Iterator[dict]:
    from input_pipeline.precomp import reader as precomp
    split, tokens, lengths = split_tokens(config, str(config.data.train_split))
    return precomp.train_batches(
        split, tokens, lengths, batch_size=int(config.data.batch_per_modality),
        seed=int(config.seed), start_step=start_step, process_index=jax.process_index(),
        process_count=jax.process_count())


def synthetic_batch(rng: jax.Array, config: Any) -> dict:
    """Random pairs with the data's shapes: non-negative region features, token ids in
    the vocabulary, lengths in [3, L] (start, a word, end at least)."""
    c = resolve(config)
    b, length = int(c.data.batch_per_modality), int(c.data.synthetic_length)
    ki, kt, kl = jax.random.split(rng, 3)
    images = jax.random.uniform(ki, (b, int(c.data.num_regions), int(c.data.region_dim)),
                                jnp.float32, 0, 2)
    lengths = jax.random.randint(kl, (b,), 3, length + 1, jnp.int32)
    tokens = jax.random.randint(kt, (b, length), 4, int(c.model.vocab_size), jnp.int32)
    pos = jnp.arange(length)[None, :]
    tokens = jnp.where(pos == 0, 1, tokens)
    tokens = jnp.where(pos == lengths[:, None] - 1, 2, tokens)
    tokens = jnp.where(pos >= lengths[:, None], 0, tokens)
    return {'images': images, 'tokens': tokens, 'lengths': lengths,
            'image_index': jnp.arange(b, dtype=jnp.int32)}


# ----------------------------------------------------------------------------- evaluation

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


def validate_data(config: Any) -> None:
    """Every split the run reads (train, eval.test_split, eval.dev_split) opens (the
    reader checks dtype, rank and the caption count: 5 per image) and has the train
    split's region count and width, before the first step rather than at the final
    evaluation."""
    from input_pipeline.errors import DataError
    from input_pipeline.precomp import reader as precomp
    d, e = config.data, config.eval
    train = _split(str(config.data_dir), str(d.train_split))
    for name in [str(e.test_split)] + ([str(e.dev_split)] if e.get('dev_split', '') else []):
        split = _split(str(config.data_dir), name)
        if split.images.shape[1:] != train.images.shape[1:]:
            raise DataError(str(Path(str(config.data_dir)) / precomp.file_names(name)['images']),
                            f'{split.region_count} regions of width {split.feature_dim}, '
                            f'but the train split has {train.region_count} of width '
                            f'{train.feature_dim}')


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


def encode_split(model, variables, arrays, *, batch_size: int, source: str = 'region features'):
    """Eval-mode region embeddings (N_img, R, d) and word embeddings (N_cap, L, d) of an
    `EvalArrays` (distinct images read block by block from the memmap, checked finite)."""
    from dcinet_jax.evaluators import blockwise
    enc_img, enc_cap = _jitted(model, 'images'), _jitted(model, 'captions')
    b = min(batch_size, arrays.num_images)
    regions = np.concatenate([
        np.asarray(enc_img(variables, _finite_block(block, n, i * b, arrays, source)))[:n]
        for i, (block, n) in enumerate(arrays.image_blocks(b))])
    words = blockwise.map_blocks(lambda tl: enc_cap(variables, *tl),
                                 (arrays.tokens, arrays.lengths), batch_size)
    return regions, words


@functools.lru_cache(maxsize=4)
def _eval_arrays(data_dir: str, name: str, vocab_key: tuple, max_images: int | None,
                 max_length: int | None):
    from input_pipeline.precomp import reader as precomp
    return precomp.eval_arrays(_split(data_dir, name), _vocab(*vocab_key),
                               max_images=max_images, max_length=max_length)


def eval_arrays(config: Any, name: str, *, num_images: int = 0):
    """The split's distinct images and their captions, encoded (cached per process);
    `num_images` > 0 keeps the first images (the reference validates on 1,000)."""
    d = config.data
    key = _vocab_key(config)
    return _eval_arrays(str(config.data_dir), name, key, num_images or None,
                        int(d.get('max_length', 0)) or None)


def split_scores(model, variables, config, name: str, *, num_images: int = 0) -> dict:
    """{'scores': (N_img, N_cap), 'caption_image': (N_cap,)} of precomp split `name`,
    scored block by block by the learned head (eval mode), the tiles spread over every
    local device and every process (`blockwise.sharded_score_matrix`)."""
    from dcinet_jax.evaluators import blockwise
    e = config.eval
    arrays = eval_arrays(config, name, num_images=num_images)
    from input_pipeline.precomp import reader as precomp
    source = str(Path(str(config.data_dir)) / precomp.file_names(name)['images'])
    regions, words = encode_split(model, variables, arrays, batch_size=int(e.batch_size),
                                  source=source)
    scores = blockwise.sharded_score_matrix(
        tile_scorer(model), variables, regions, (words, arrays.lengths),
        image_block=int(e.image_block), caption_block=int(e.caption_block))
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


def describe(config: Any) -> str:
    m = config.model
    return (f'HSLM: {m.num_relation_blocks} relation + {m.num_text_blocks} text blocks, '
            f'joint {m.embed_dim}-d, words {m.word_dim}-d, similarity {m.sim_dim}-d, '
            f'local={m.use_local} global={m.use_global}')
