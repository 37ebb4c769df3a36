"""Transformer pieces the baseline fusions share (models/mult.py, mbt.py, misa.py).

Unlike layers.dot_product_attention (a key mask [B, Tk]), the attention here takes a full mask
[B, Tq, Tk], which MulT's future mask needs, and drops attention weights, which MulT, MBT and
MISA's fusion layer all do. Shapes: B batch, T tokens, d width, h heads. Softmax in float32.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import layers

def token_rank(mask: jax.Array) -> jax.Array:
  """0-based position of each token among the valid tokens of its row: bool[B, T] -> int[B, T].

  Positions counted this way do not depend on where or how much padding a row has."""
  return jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1


def last_valid(x: jax.Array, mask: jax.Array) -> jax.Array:
  """State of the last valid token per row: x [B, T, d], mask [B, T] -> [B, d] (0 if none)."""
  index = jnp.max(jnp.where(mask, jnp.arange(mask.shape[-1]), -1), axis=-1)
  picked = jnp.take_along_axis(x, jnp.maximum(index, 0)[:, None, None], axis=1)[:, 0]
  return jnp.where((index >= 0)[:, None], picked, 0).astype(x.dtype)


def sinusoidal_positions(positions: jax.Array, width: int) -> jax.Array:
  """fairseq-style sinusoidal table at integer positions [B, T] -> [B, T, width] (MulT).

  Half the channels are sines, half cosines, with frequencies exp(-i log(10^4) / (half - 1));
  an odd width gets a zero last channel."""
  half = width // 2
  freq = np.exp(np.arange(half) * -(np.log(10000.0) / max(half - 1, 1)))
  angle = positions.astype(jnp.float32)[..., None] * jnp.asarray(freq, jnp.float32)
  table = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)
  if width % 2:
    table = jnp.pad(table, [(0, 0)] * (table.ndim - 1) + [(0, 1)])
  return table


class MaskedAttention(layers.MultiHeadAttention):
  """Multi-head attention: queries [B, Tq, d_q], keys/values [B, Tk, d_kv], mask bool[B, Tq, Tk]
  -> [B, Tq, features], with dropout on the attention weights (layers.MultiHeadAttention's
  projections; always the explicit einsum core). A query with no allowed key gets zero."""
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, queries, keys_values, mask, *, train: bool):  # pylint: disable=W0221
    q, k, v = self.project(queries, keys_values)
    head_dim = q.shape[-1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(head_dim)
    logits = jnp.where(mask[:, None], logits, -1e30)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(mask[:, None], weights, 0.0)  # rows with no allowed key: all zero
    weights = dropout_lib.Dropout(self.attention_dropout, deterministic=not train)(weights)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    return self.output(out)


def pair_mask(query_mask: jax.Array, key_mask: jax.Array) -> jax.Array:
  """bool[B, Tq, Tk]: valid query x valid key."""
  return query_mask[:, :, None] & key_mask[:, None, :]
