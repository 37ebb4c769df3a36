"""Small building blocks shared by the CLCR modules: masked pooling, attention, MLP, positions.

Shapes use B = batch, T = tokens, d = width, h = heads. Masks are bool with True = real token.
Softmaxes run in float32 whatever the activation dtype.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import blockwise_attention
from clcr_jax.models import dropout as dropout_lib

ATTENTION_IMPLEMENTATIONS = ("auto", "blockwise", "einsum", "xla", "cudnn", "cudnn_or_xla")

Dtype = Any


def masked_mean(x: jax.Array, mask: jax.Array, axis: int = -2) -> jax.Array:
  """Mean of x [..., T, d] over the tokens where mask [..., T] is True; 0 for fully masked rows."""
  w = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(x.astype(jnp.float32) * w, axis=axis)
  count = jnp.maximum(jnp.sum(w, axis=axis), 1.0)
  return (total / count).astype(x.dtype)


def segment_pooling_matrix(num_tokens: int, num_segments: int) -> np.ndarray:
  """float32[T, S] one-hot assignment of token t to segment floor(t * S / T).

  Tokens are time-major (frames x space for clips), so this maps tokens to equal time spans.
  """
  seg = (np.arange(num_tokens) * num_segments) // num_tokens
  return np.eye(num_segments, dtype=np.float32)[seg]


def masked_segment_mean(x: jax.Array, mask: jax.Array, num_segments: int,
                        assign: jax.Array | None = None) -> jax.Array:
  """Per-segment masked mean: x [B, T, d], mask [B, T] -> [B, S, d] (0 for empty segments).

  `assign` [T, S] maps tokens to segments; None: `segment_pooling_matrix(T, S)`, right when the
  T tokens are one time-major sequence.
  """
  if assign is None:
    assign = segment_pooling_matrix(x.shape[-2], num_segments)
  w = mask.astype(jnp.float32)[..., None] * jnp.asarray(assign, jnp.float32)  # [B, T, S]
  total = jnp.einsum("bts,btd->bsd", w, x.astype(jnp.float32))
  count = jnp.maximum(jnp.sum(w, axis=1), 1.0)[..., None]
  return (total / count).astype(x.dtype)


def adaptive_pool_matrix(size: int, bins: int) -> np.ndarray:
  """float32[bins, size] averaging matrix of PyTorch-style adaptive average pooling."""
  out = np.zeros((bins, size), np.float32)
  for i in range(bins):
    lo, hi = (i * size) // bins, -(-((i + 1) * size) // bins)
    out[i, lo:hi] = 1.0 / (hi - lo)
  return out


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                          implementation: str = "auto") -> jax.Array:
  """Multi-head attention core.

  Args:
    q: [B, Tq, h, dh]; k, v: [B, Tk, h, dh]; key_mask: bool [B, Tk].
    implementation: 'auto' ('blockwise' on CPU; elsewhere cuDNN's fused kernel where it
      applies, else XLA's); 'blockwise' (batch blocks with a
      recomputing backward, blockwise_attention.py: the fastest on XLA:CPU); 'einsum'
      (explicit float32 softmax); 'xla' / 'cudnn' (`jax.nn.dot_product_attention`).
  Returns:
    [B, Tq, h, dh]. A query whose keys are all masked gets exactly zero (not a uniform average),
    so an absent modality contributes nothing.
  """
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"model.attention must be one of {ATTENTION_IMPLEMENTATIONS}, "
                     f"found {implementation!r}")
  if implementation == "auto":
    implementation = "blockwise" if jax.default_backend() == "cpu" else "cudnn_or_xla"
  has_key = jnp.any(key_mask, axis=-1)[:, None, None, None]
  if implementation == "einsum":
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e30)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  elif implementation == "blockwise":
    out = blockwise_attention.blockwise_attention(q, k, v, key_mask)
  else:
    mask = jnp.broadcast_to(key_mask[:, None, None, :],
                            (q.shape[0], 1, q.shape[1], k.shape[1]))
    attend = functools.partial(jax.nn.dot_product_attention, q, k, v, mask=mask)
    if implementation == "cudnn_or_xla":
      # jax.nn's own default (None) is XLA; cuDNN's fused kernel is several times faster where
      # it applies (half precision, head dim a multiple of 8, a recent cuDNN) and says so at
      # trace time when it does not.
      try:
        out = attend(implementation="cudnn")
      except (NotImplementedError, ValueError, RuntimeError, TypeError):
        out = attend(implementation="xla")
    else:
      out = attend(implementation=implementation)
  return jnp.where(has_key, out, 0).astype(v.dtype)


class MultiHeadAttention(nn.Module):
  """Cross-attention: queries [B, Tq, d_in] attend to keys/values [B, Tk, d_kv] -> [B, Tq, d]."""
  num_heads: int
  features: int
  implementation: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  out_kernel_init: Any = nn.initializers.lecun_normal()  # zeros: the block outputs 0 at init

  def project(self, queries, keys_values):
    """q [B, Tq, h, dh], k, v [B, Tk, h, dh] (submodules 'query', 'key', 'value')."""
    if self.features % self.num_heads:
      raise ValueError(f"attention width {self.features} is not divisible by "
                       f"num_heads={self.num_heads}")
    head_dim = self.features // self.num_heads
    proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype,
                                        param_dtype=self.param_dtype, name=name)
    return proj("query")(queries), proj("key")(keys_values), proj("value")(keys_values)

  def output(self, out):
    """[B, Tq, h, dh] -> [B, Tq, features] (submodule 'out')."""
    return nn.DenseGeneral(self.features, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype, kernel_init=self.out_kernel_init,
                           name="out")(out)

  @nn.compact
  def __call__(self, queries, keys_values, key_mask, value_weight=None):
    """value_weight [B, Tk] (optional) scales each key's value after projection."""
    q, k, v = self.project(queries, keys_values)
    if value_weight is not None:
      v = v * value_weight[:, :, None, None].astype(v.dtype)
    out = dot_product_attention(q, k, v, key_mask, self.implementation)
    return self.output(out)


class MLP(nn.Module):
  """Dense -> GELU -> Dropout -> Dense, on the last axis."""
  hidden: int
  out: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  out_kernel_init: Any = nn.initializers.lecun_normal()  # of fc2

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
    x = nn.gelu(x)
    x = dropout_lib.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.out, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=self.out_kernel_init, name="fc2")(x)


class PositionalEmbedding(nn.Module):
  """Learned additive embedding P [T_max, d] (docs/model.md, Hierarchy: N(0, 0.02)); returns P[:T].

  `max_len=0` sizes the table from the sequence seen at init.
  """
  max_len: int = 0
  init_std: float = 0.02
  where: str = ""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, num_tokens: int, width: int):
    if not self.max_len and self.has_variable("params", "embedding"):
      # Sized at init: a shorter sequence later uses the table's first rows (declaring the
      # parameter with the new length would fail Flax's shape check instead).
      table = self.get_variable("params", "embedding")
    else:
      table = self.param("embedding", nn.initializers.normal(self.init_std),
                         (self.max_len or num_tokens, width), self.param_dtype)
    if num_tokens > table.shape[0]:
      raise ValueError(f"{self.where}: {num_tokens} tokens but the positional table holds "
                       f"{table.shape[0]} (the length seen at init); set "
                       f"config.model.max_len to the longest sequence")
    return table[:num_tokens]
