"""Memory-efficient attention for XLA:CPU: batch blocks, one softmax pass, a flash-style backward.

The exchange attention at the MOSI shape builds logits of [B, h, Tq, Tk] = [64, 4, 500, 425]
per level; materialising them, their softmax and the autodiff residuals costs far more memory
traffic than arithmetic (head dim 16). Here the batch is cut into blocks of a few examples
(`lax.map`), each block's logits stay in cache, normalisation is applied to the small output
instead of the big weights, and the backward recomputes the logits from q, k and the saved
log-sum-exp (the FlashAttention-2 recurrence, without the key tiling a GPU kernel needs) so no
[B, h, Tq, Tk] tensor is ever stored for the backward pass.

Same contract as `layers.dot_product_attention`: q [B, Tq, h, dh], k, v [B, Tk, h, dh],
key_mask bool [B, Tk] -> [B, Tq, h, dh]. A query with no valid key gets the uniform average
here; the caller zeroes it.
"""
from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np

# Logits of masked keys. Finite, so a query with no valid key gives a uniform average, not NaN.
_MASKED = -1e30
# Target size of one block's float32 logits; about the per-core L2 + a slice of L3.
BLOCK_BYTES = 4 << 20


def block_size(batch: int, heads: int, tq: int, tk: int, block_bytes: int = BLOCK_BYTES) -> int:
  """The largest divisor of `batch` whose [block, heads, tq, tk] float32 logits fit block_bytes."""
  per_example = 4 * heads * tq * tk
  best = 1
  for b in range(1, batch + 1):
    if batch % b == 0 and b * per_example <= block_bytes:
      best = b
  return best


def _blocks(size: int, *xs):
  """Each x [B, ...] -> [B / size, size, ...]: `lax.map` runs over the leading block axis."""
  return tuple(einops.rearrange(x, "(n b) ... -> n b ...", b=size) for x in xs)


def _unblock(x):
  """[B / size, size, ...] -> [B, ...], undoing `_blocks`."""
  return einops.rearrange(x, "n b ... -> (n b) ...")


def _logits(q, k, mask):
  """q [b, h, Tq, dh] (pre-scaled), k [b, h, Tk, dh], mask [b, Tk] -> float32 [b, h, Tq, Tk]."""
  s = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  return jnp.where(mask[:, None, None, :], s, _MASKED)


def _forward(q, k, v, mask, size):
  """Head-major q [B, h, Tq, dh] etc. -> (out [B, h, Tq, dh], lse float32 [B, h, Tq])."""
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))

  def block(args):
    q, k, v, mask = args
    s = _logits(q * scale.astype(q.dtype), k, mask)
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    total = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v,
                     preferred_element_type=jnp.float32) / total
    return out.astype(q.dtype), (m + jnp.log(total))[..., 0]

  out, lse = jax.lax.map(block, _blocks(size, q, k, v, mask))
  return _unblock(out), _unblock(lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, size):
  return _forward(q, k, v, mask, size)[0]


def _attention_fwd(q, k, v, mask, size):
  out, lse = _forward(q, k, v, mask, size)
  return out, (q, k, v, mask, out, lse)


def _attention_bwd(size, residuals, d_out):
  q, k, v, mask, out, lse = residuals
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))

  def block(args):
    q, k, v, mask, out, d_out, lse = args
    p = jnp.exp(_logits(q * scale.astype(q.dtype), k, mask) - lse[..., None])
    d_v = jnp.einsum("bhqk,bhqd->bhkd", p.astype(d_out.dtype), d_out,
                     preferred_element_type=jnp.float32)
    d_p = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    # d softmax: p * (d_p - sum_k p d_p), and sum_k p d_p = <d_out, out> per query.
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    d_s = (p * (d_p - row[..., None])).astype(q.dtype)
    d_q = jnp.einsum("bhqk,bhkd->bhqd", d_s, k, preferred_element_type=jnp.float32) * scale
    d_k = jnp.einsum("bhqk,bhqd->bhkd", d_s, q, preferred_element_type=jnp.float32) * scale
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)

  grads = jax.lax.map(block, _blocks(size, q, k, v, mask, out, d_out, lse))
  d_q, d_k, d_v = (_unblock(g) for g in grads)
  return d_q, d_k, d_v, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                        block_bytes: int = BLOCK_BYTES) -> jax.Array:
  """Softmax attention, q [B, Tq, h, dh], k, v [B, Tk, h, dh], key_mask [B, Tk] -> [B, Tq, h, dh]."""
  batch, tq, heads, _ = q.shape
  size = block_size(batch, heads, tq, k.shape[1], block_bytes)
  head_major = lambda x: einops.rearrange(x, "b t h d -> b h t d")
  out = _attention(head_major(q), head_major(k), head_major(v), key_mask, size)
  return einops.rearrange(out, "b h t d -> b t h d")
