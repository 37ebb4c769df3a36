"""Transformer pieces shared across models.

`GatedCrossAttentionBlock` is the cross-modal block of IntraCED's exchange (intra_ced.py) and of
the flat-attention baseline (baselines.py). The rest serve the baseline fusions (mult.py, mbt.py,
misa.py): unlike layers.dot_product_attention (a key mask [B, Tk]), `MaskedAttention` takes a
full mask [B, Tq, Tk], which MulT's future mask needs, and drops attention weights, which MulT,
MBT and MISA's fusion layer all do. Shapes: B batch, T tokens, d width, h heads. Softmax in
float32.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import layers

Dtype = Any


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


class GatedCrossAttentionBlock(nn.Module):
  """Cross-attention of one modality's tokens over a pool of other tokens, gated per query token.

  h = norm(query + Dropout(gate * MHA(query, pool))), then a position-wise FFN with its own
  residual and norm ('post': LN(x + f(x)); 'pre': x + f(LN(x))). A token with gate 0 receives
  nothing from the pool. IntraCED's exchange gates by the budget weights alpha, among shared
  tokens; the flat-attention baseline gates by the token mask, over the full deep level.

  Call: query [B, T, d], gate [B, T] (float), pool [B, T_pool, d], pool_mask bool[B, T_pool],
  optional pool_gate [B, T_pool] (float) -> [B, T, d]. With pool_gate, a pool token is a key
  only where its gate is > 0 and its value is scaled by its gate, so the pool holds just the
  tokens a budget admits, weighted as it admits them.
  """
  num_heads: int
  dropout: float = 0.1
  ffn_mult: int = 2
  attention: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # 'post': LN(x + sublayer(x)) (DEFAULT, docs/model.md, Exchange); 'pre': x + sublayer(LN(x)),
  # so the stream passes through the block on an identity residual and only the sublayers'
  # outputs are added to it.
  norm: str = "post"
  # 'default': lecun-normal output projections; 'zero': the attention's and the FFN's output
  # projections start at zero, so at initialisation the sublayers add nothing to the stream.
  output_init: str = "default"

  @nn.compact
  def __call__(self, query, gate, pool, pool_mask, pool_gate=None, *, train: bool):
    if self.norm not in ("post", "pre"):
      raise ValueError(f"config.model.exchange_norm must be 'post' or 'pre', found {self.norm!r}")
    if self.output_init not in ("default", "zero"):
      raise ValueError("config.model.exchange_init must be 'default' or 'zero', found "
                       f"{self.output_init!r}")
    norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    kw = dict(norm_kw, **({"out_kernel_init": nn.initializers.zeros}
                          if self.output_init == "zero" else {}))
    width = query.shape[-1]
    pre = self.norm == "pre"
    norm1, norm2 = nn.LayerNorm(name="norm1", **norm_kw), nn.LayerNorm(name="norm2", **norm_kw)
    if pool_gate is not None:
      pool_mask = pool_mask & (pool_gate > 0)
    msg = layers.MultiHeadAttention(self.num_heads, width, self.attention, name="attention",
                                    **kw)(norm1(query) if pre else query, pool, pool_mask,
                                          pool_gate)
    msg = dropout_lib.Dropout(self.dropout, deterministic=not train)(
        gate[..., None].astype(msg.dtype) * msg)
    h = query + msg if pre else norm1(query + msg)
    ffn = layers.MLP(self.ffn_mult * width, width, self.dropout, name="ffn", **kw)(
        norm2(h) if pre else h, train=train)
    ffn = dropout_lib.Dropout(self.dropout, deterministic=not train)(ffn)
    return h + ffn if pre else norm2(h + ffn)
