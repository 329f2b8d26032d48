"""Text-to-image cross-attention and similarity vectors of HSLM (docs/hslm_model.md#head).

For one (image, caption) pair with regions r_i and words t_j (both L2-normalised):

- s_ij = LeakyReLU_0.1(r_i . t_j); each region's row is divided by its L2 norm over the
  caption's *real* words (padding words are zeroed first, so they never enter the norm);
- a_ij = softmax over regions i of (smooth * s_ij), smooth = 9;
- c_j = l2norm(sum_i a_ij r_i): one attended image vector per word (SCAN's t2i form).

A similarity vector compares two vectors through a learned map:
S(a, b) = l2norm(W^T (a - b)^2 + bias).

Everything is a pure function of arrays (the weights are arguments), so the head can run
it inside `jax.lax.map` over caption chunks with `jax.checkpoint`: the attended tensor is
images x captions x words x E floats, the largest activation of the model. Outputs at
padding words are finite and arbitrary; callers mask them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ['l2norm', 't2i_attention', 'similarity_vector', 'pairwise_t2i_attention',
           'local_similarity_vectors', 'L2_EPS', 'LEAKY_SLOPE']

L2_EPS = 1e-8          # l2norm(x) = x / (||x|| + L2_EPS), as in the reference
LEAKY_SLOPE = 0.1


def l2norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """x / (||x||_2 + 1e-8) along `axis` (zero vectors stay zero)."""
    return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True)) + L2_EPS)


def t2i_attention(regions: jax.Array, words: jax.Array, word_mask: jax.Array,
                  smooth: float = 9.0) -> jax.Array:
    """(R, E) regions, (L, E) words, bool (L,) real-word mask -> (L, E) attended image vectors."""
    s = jax.nn.leaky_relu(regions @ words.T, LEAKY_SLOPE)                  # (R, L)
    s = jnp.where(word_mask[None, :], s, 0.0)
    s = l2norm(s, axis=1)                                                  # over the real words
    a = jax.nn.softmax(smooth * s, axis=0)                                 # over regions
    return l2norm(a.T @ regions)


def similarity_vector(a: jax.Array, b: jax.Array, weight: jax.Array, bias: jax.Array
                      ) -> jax.Array:
    """l2norm((a - b)^2 @ weight + bias): (..., E), (..., E), (E, S), (S,) -> (..., S)."""
    return l2norm(jnp.square(a - b) @ weight + bias)


def pairwise_t2i_attention(regions: jax.Array, words: jax.Array, word_mask: jax.Array,
                           smooth: float = 9.0) -> jax.Array:
    """Every image with every caption: (Bi, R, E), (Bc, L, E), (Bc, L) -> (Bi, Bc, L, E)."""
    per_caption = jax.vmap(t2i_attention, in_axes=(None, 0, 0, None))
    return jax.vmap(per_caption, in_axes=(0, None, None, None))(regions, words, word_mask, smooth)


def local_similarity_vectors(regions: jax.Array, words: jax.Array, word_mask: jax.Array,
                             weight: jax.Array, bias: jax.Array, *, smooth: float = 9.0,
                             caption_chunk: int = 0) -> jax.Array:
    """s_j = S(c_j, t_j) for every image, caption and word: -> (Bi, Bc, L, S).

    `caption_chunk` > 0 processes captions in chunks of that size with `jax.lax.map`,
    each chunk rematerialised in the backward pass (`jax.checkpoint`), so only a
    (Bi, chunk, L, E) attended tensor is alive at a time; the captions are zero-padded to
    a multiple of the chunk (padding rows are dropped). The result does not depend on
    the chunk size.
    """
    def chunk_vectors(chunk_words: jax.Array, chunk_mask: jax.Array) -> jax.Array:
        attended = pairwise_t2i_attention(regions, chunk_words, chunk_mask, smooth)
        return similarity_vector(attended, chunk_words[None], weight, bias)

    num_captions = words.shape[0]
    if caption_chunk <= 0 or caption_chunk >= num_captions:
        return chunk_vectors(words, word_mask)
    num_chunks = -(-num_captions // caption_chunk)
    pad = num_chunks * caption_chunk - num_captions
    padded_words = jnp.pad(words, ((0, pad), (0, 0), (0, 0)))
    padded_mask = jnp.pad(word_mask, ((0, pad), (0, 0)))
    chunked = (padded_words.reshape(num_chunks, caption_chunk, *words.shape[1:]),
               padded_mask.reshape(num_chunks, caption_chunk, word_mask.shape[1]))
    out = jax.lax.map(jax.checkpoint(lambda xs: chunk_vectors(*xs)), chunked)  # (n, Bi, chunk, L, S)
    out = jnp.moveaxis(out, 0, 1).reshape(regions.shape[0], num_chunks * caption_chunk,
                                          *out.shape[3:])
    return out[:, :num_captions]
