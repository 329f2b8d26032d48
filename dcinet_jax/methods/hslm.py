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
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import optax

from dcinet_jax import losses, parallel
from dcinet_jax.methods.hslm_data import (  # noqa: F401 - the contract's data hooks
    _eval_arrays, _split, _vocab, data_description, eval_arrays, split_tokens, validate_data,
    vocab, vocab_file)
from dcinet_jax.methods.hslm_eval import (  # noqa: F401 - the contract's evaluation hook
    SWITCHES, encode_split, eval_outputs, split_scores, tile_scorer)

DEFAULT_EVALUATOR = 'recall'
INIT_LENGTH = 8          # caption length used to create the variables (any length works)


# ----------------------------------------------------------------------------- data

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
    from dcinet_jax import state
    state.refuse_generic_schedule(
        config, "HSLM's rate is the step decay (optim.decay_epoch, optim.decay_factor)")
    o = config.optim
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


def describe(config: Any) -> str:
    m = config.model
    return (f'HSLM: {m.num_relation_blocks} relation + {m.num_text_blocks} text blocks, '
            f'joint {m.embed_dim}-d, words {m.word_dim}-d, similarity {m.sim_dim}-d, '
            f'local={m.use_local} global={m.use_global}')
