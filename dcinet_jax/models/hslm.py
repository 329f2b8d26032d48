"""HSLM: hierarchical semantic matching of images (region features) and captions
(docs/hslm_model.md).

- `ImageEncoder`: FC D -> E, `num_relation_blocks` relation blocks, l2norm per region.
- `TextEncoder`: word embedding (learned), dropout, `num_text_blocks` text attention
  blocks, a bidirectional GRU with PyTorch's six biases (`models/gru.py`) run on each
  caption's true length (the two directions averaged), l2norm per word.
- `SimilarityHead`: for every (image, caption) pair, a global similarity vector (the
  two self-attention poolings compared) and one local vector per word (text-to-image
  attention compared with the word), aggregated by SAF (a sigmoid gate per vector whose
  single-channel BatchNorm uses masked statistics over all pairs x vectors), then a
  sigmoid score.
- `HSLM`: `encode_images`, `encode_captions`, `similarity` (every image with every
  caption) and `__call__` = all three, which creates every variable.

`dtype` ('float32' or 'bfloat16', config `model.dtype`) is the compute dtype of the
encoders' projections and of the head's attention and similarity vectors; params,
BatchNorm statistics, softmax weights, the GRU recurrence, the SAF gate and the final
score stay float32, so scores and the loss are float32 (docs/hslm_model.md#bfloat16).

Padding words never change a caption's score in the default 'masked' text attention
(tested). Dropout draws from the 'dropout' rng; BatchNorm statistics live in
'batch_stats' (eval uses the running ones).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dcinet_jax.interaction.scan_attention import (l2norm, local_similarity_vectors,
                                                   similarity_vector)
from dcinet_jax.models.hslm_layers import (TEXT_ATTN_PADDINGS, MaskedBatchNorm, RelationBlock,
                                           TextAttention, TextSelfAttention,
                                           VisualSelfAttention, xavier_dense)
from dcinet_jax.models.gru import TorchGRUCell

__all__ = ['HSLM', 'ImageEncoder', 'TextEncoder', 'SimilarityHead', 'RelationBlock',
           'TextAttention', 'VisualSelfAttention', 'TextSelfAttention', 'MaskedBatchNorm',
           'build', 'word_mask']

Array = jax.Array
EMBED_INIT_BOUND = 0.1      # word embedding U(+-0.1)
L1_EPS = 1e-8               # SAF weights alpha / (sum |alpha| + eps)
COMPUTE_DTYPES = ('float32', 'bfloat16')


def word_mask(lengths: Array, max_len: int) -> Array:
    """bool (B, max_len): position < length."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


class ImageEncoder(nn.Module):
    """(B, R, D) raw region features -> (B, R, E) l2-normalised region embeddings."""

    embed_dim: int = 1024
    num_relation_blocks: int = 4
    relation_heads: int = 4
    relation_head_dim: int = 256
    bn_axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> Array:
        x = xavier_dense(self.embed_dim, name='fc', dtype=self.dtype)(images.astype(jnp.float32))
        for i in range(self.num_relation_blocks):
            x = RelationBlock(self.embed_dim, self.relation_heads, self.relation_head_dim,
                              self.bn_axis_name, self.dtype, name=f'relation_{i}')(x, train)
        return _normalised(x, self.dtype)


class TextEncoder(nn.Module):
    """(B, L) int token ids, (B,) true lengths -> (B, L) l2-normalised word embeddings.

    Positions at or beyond a caption's length hold finite values that nothing reads.
    """

    vocab_size: int
    embed_dim: int = 1024
    word_dim: int = 300
    num_text_blocks: int = 4
    dropout_rate: float = 0.4
    text_attn_padding: str = 'masked'
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens: Array, lengths: Array, *, train: bool) -> Array:
        mask = word_mask(lengths, tokens.shape[1])
        init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
            key, shape, dtype, -EMBED_INIT_BOUND, EMBED_INIT_BOUND)
        x = nn.Embed(self.vocab_size, self.word_dim, embedding_init=init, name='embed')(tokens)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.num_text_blocks):
            x = TextAttention(self.word_dim, self.text_attn_padding, self.dtype,
                              name=f'text_attn_{i}')(x, mask)
        x = x.astype(jnp.float32)      # the recurrence accumulates: float32 always

        # Zero initial states made from the inputs: inside the sharded train step they
        # then carry the inputs' per-device type, which lax.scan requires of its carry.
        h0 = jnp.broadcast_to(jnp.zeros_like(x[:, 0, :1]), (x.shape[0], self.embed_dim))
        forward = nn.RNN(TorchGRUCell(self.embed_dim, name='gru_forward'))(
            x, initial_carry=h0, seq_lengths=lengths)
        backward = nn.RNN(TorchGRUCell(self.embed_dim, name='gru_backward'), reverse=True,
                          keep_order=True)(x, initial_carry=h0, seq_lengths=lengths)
        return _normalised((forward + backward) / 2.0, self.dtype)


def _normalised(x: Array, dtype: Any) -> Array:
    """l2norm in float32, then the compute dtype (the norm of a bf16 vector in bf16
    would lose the unit length the cosine-like head relies on)."""
    return l2norm(x.astype(jnp.float32)).astype(dtype or jnp.float32)


class SimilarityHead(nn.Module):
    """(Bi, R, E) regions, (Bc, L, E) words, (Bc,) lengths -> (Bi, Bc) scores in (0, 1)."""

    embed_dim: int = 1024
    sim_dim: int = 256
    dropout_rate: float = 0.4
    smooth: float = 9.0
    use_local: bool = True
    use_global: bool = True
    caption_chunk: int = 0
    bn_axis_name: str | None = None
    dtype: Any = None

    def similarity_weights(self, name: str) -> tuple[Array, Array]:
        kernel = self.param(f'{name}_kernel', nn.initializers.xavier_uniform(),
                            (self.embed_dim, self.sim_dim))
        bias = self.param(f'{name}_bias', nn.initializers.zeros, (self.sim_dim,))
        dt = self.dtype or jnp.float32
        return kernel.astype(dt), bias.astype(dt)

    @nn.compact
    def __call__(self, regions: Array, words: Array, lengths: Array, *, train: bool) -> Array:
        if not (self.use_local or self.use_global):
            raise ValueError('SimilarityHead: use_local and use_global cannot both be False')
        num_images, num_captions = regions.shape[0], words.shape[0]
        dt = self.dtype or jnp.float32
        regions, words = regions.astype(dt), words.astype(dt)
        mask = word_mask(lengths, words.shape[1])
        vectors, vector_mask = [], []
        if self.use_global:
            image_global = VisualSelfAttention(self.embed_dim, self.dropout_rate,
                                               self.bn_axis_name, self.dtype,
                                               name='visual_pool')(regions, train)
            text_global = TextSelfAttention(self.embed_dim, self.dropout_rate, self.dtype,
                                            name='text_pool')(words, mask, train)
            s0 = similarity_vector(image_global[:, None], text_global[None],
                                   *self.similarity_weights('global_sim'))
            vectors.append(s0[:, :, None])
            vector_mask.append(jnp.ones((num_images, num_captions, 1), jnp.bool_))
        if self.use_local:
            vectors.append(local_similarity_vectors(
                regions, words, mask, *self.similarity_weights('local_sim'),
                smooth=self.smooth, caption_chunk=self.caption_chunk))
            vector_mask.append(jnp.broadcast_to(mask[None], (num_images, *mask.shape)))
        vectors = jnp.concatenate(vectors, axis=2).astype(jnp.float32)   # (Bi, Bc, T, S)
        vector_mask = jnp.concatenate(vector_mask, axis=2)                # (Bi, Bc, T)
        gate = xavier_dense(1, name='saf_gate')(vectors)
        gate = MaskedBatchNorm(axis_name=self.bn_axis_name, name='saf_bn')(
            gate, vector_mask, train)[..., 0]
        alpha = jax.nn.sigmoid(gate) * vector_mask
        alpha = alpha / (jnp.sum(jnp.abs(alpha), axis=-1, keepdims=True) + L1_EPS)
        pooled = l2norm(jnp.einsum('ijt,ijts->ijs', alpha, vectors))
        return jax.nn.sigmoid(xavier_dense(1, name='score')(pooled)[..., 0])


class HSLM(nn.Module):
    """The full model; see the module docstring. `text_attn_padding`: 'masked' or 'reference'."""

    vocab_size: int
    embed_dim: int = 1024
    word_dim: int = 300
    sim_dim: int = 256
    num_relation_blocks: int = 4
    num_text_blocks: int = 4
    relation_heads: int = 4
    relation_head_dim: int = 256
    dropout_rate: float = 0.4
    smooth: float = 9.0
    text_attn_padding: str = 'masked'
    use_local: bool = True
    use_global: bool = True
    caption_chunk: int = 0
    bn_axis_name: str | None = None
    dtype: Any = None

    def setup(self) -> None:
        if self.text_attn_padding not in TEXT_ATTN_PADDINGS:
            raise ValueError(f'HSLM.text_attn_padding must be one of {TEXT_ATTN_PADDINGS}, '
                             f'got {self.text_attn_padding!r}')
        if not (self.use_local or self.use_global):
            raise ValueError('HSLM: use_local and use_global cannot both be False')
        if min(self.num_relation_blocks, self.num_text_blocks, self.caption_chunk) < 0:
            raise ValueError('HSLM: num_relation_blocks, num_text_blocks and caption_chunk '
                             'must be >= 0')
        self.image_encoder = ImageEncoder(self.embed_dim, self.num_relation_blocks,
                                          self.relation_heads, self.relation_head_dim,
                                          self.bn_axis_name, self.dtype)
        self.text_encoder = TextEncoder(self.vocab_size, self.embed_dim, self.word_dim,
                                        self.num_text_blocks, self.dropout_rate,
                                        self.text_attn_padding, self.dtype)
        self.head = SimilarityHead(self.embed_dim, self.sim_dim, self.dropout_rate, self.smooth,
                                   self.use_local, self.use_global, self.caption_chunk,
                                   self.bn_axis_name, self.dtype)

    def encode_images(self, images: Array, *, train: bool) -> Array:
        """(B, R, D) -> (B, R, E) l2-normalised regions."""
        return self.image_encoder(images, train=train)

    def encode_captions(self, tokens: Array, lengths: Array, *, train: bool) -> Array:
        """(B, L) int32 ids, (B,) int32 lengths -> (B, L, E) l2-normalised words."""
        return self.text_encoder(tokens, lengths, train=train)

    def similarity(self, regions: Array, words: Array, lengths: Array, *, train: bool) -> Array:
        """Scores of every image with every caption: -> (Bi, Bc) in (0, 1)."""
        return self.head(regions, words, lengths, train=train)

    def __call__(self, images: Array, tokens: Array, lengths: Array, *, train: bool) -> Array:
        return self.similarity(self.encode_images(images, train=train),
                               self.encode_captions(tokens, lengths, train=train),
                               lengths, train=train)


def build(config: Any, *, bn_axis_name: str | None = None) -> HSLM:
    """HSLM from `config.model` (vocab_size, widths, block counts, switches)."""
    m = config.model
    return HSLM(vocab_size=int(m.vocab_size), embed_dim=int(m.embed_dim),
                word_dim=int(m.word_dim), sim_dim=int(m.sim_dim),
                num_relation_blocks=int(m.num_relation_blocks),
                num_text_blocks=int(m.num_text_blocks), relation_heads=int(m.relation_heads),
                relation_head_dim=int(m.relation_head_dim), dropout_rate=float(m.dropout_rate),
                smooth=float(m.smooth), text_attn_padding=str(m.text_attn_padding),
                use_local=bool(m.use_local), use_global=bool(m.use_global),
                caption_chunk=int(m.caption_chunk), bn_axis_name=bn_axis_name,
                dtype=compute_dtype(m))


def compute_dtype(model_config: Any) -> Any:
    """`model.dtype` as a jnp dtype; None (float32, the default) for 'float32'."""
    name = str(model_config.get('dtype', 'float32'))
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.dtype={name!r}: HSLM computes in one of {COMPUTE_DTYPES}")
    return None if name == 'float32' else jnp.dtype(name)
