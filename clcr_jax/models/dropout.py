"""Dropout that draws four 16-bit uniforms from each Threefry hash.

`flax.linen.Dropout` draws one float32 uniform per element, and with JAX's partitionable
Threefry (the default) every element costs one Threefry-2x32 hash of which 32 of the 64 output
bits are used; on CPU that hashing was 8 % of the MOSI train step. Here one hash gives 64 bits =
four 16-bit uniforms, so a mask costs a quarter of the hashes. The drop threshold is the rate
rounded to a multiple of 2^-16 (0.1 -> 0.100006), and kept values are scaled by the inverse of
that exact keep probability, so E[dropout(x)] = x still holds exactly.

The counters are the elements' row-major indices laid out in the output's own shape (as
`jax.random.bits` does), so the mask is elementwise in the array's index space: a batch-sharded
activation gets its mask without communication, and the same key gives the same mask however
the array is sharded.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

_LEVELS = 1 << 16  # uniforms are integers in [0, 2^16)
_PER_HASH = 4      # 16-bit uniforms per Threefry-2x32 output pair (2 x 32 bits)


def drop_threshold(rate: float) -> int:
  """The 16-bit threshold: an element is dropped when its uniform is below it."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"dropout rate must be in [0, 1], found {rate}")
  return int(round(rate * _LEVELS))


def uniform16(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint16 [*shape] i.i.d. uniform on [0, 2^16), four per Threefry hash along the last axis."""
  *lead, last = tuple(shape) or (1,)  # a scalar draws one word, then takes its first uniform
  words = (*lead, -(-last // _PER_HASH))
  if np.prod(words, dtype=np.int64) >= 2**32:
    raise ValueError(f"dropout mask of shape {tuple(shape)} needs {np.prod(words)} hashes; at most "
                     "2^32 are addressable by the 32-bit counter")
  index = jnp.zeros(words, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(words))):
    index += jax.lax.broadcasted_iota(jnp.uint32, words, axis) * np.uint32(stride)
    stride *= words[axis]
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  hi, lo = threefry2x32_p.bind(key[0], key[1], jnp.zeros(words, jnp.uint32), index)
  bits = jax.lax.bitcast_convert_type(jnp.stack([hi, lo], axis=-1), jnp.uint16)
  return bits.reshape(*lead, _PER_HASH * words[-1])[..., :last].reshape(tuple(shape))


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """x with each element zeroed with probability ~rate and the rest scaled to keep E[x]."""
  threshold = drop_threshold(rate)
  if threshold == 0:
    return x
  if threshold == _LEVELS:
    return jnp.zeros_like(x)
  keep = uniform16(key, x.shape) >= np.uint16(threshold)
  scale = np.float32(_LEVELS / (_LEVELS - threshold))
  return jnp.where(keep, x * scale.astype(x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """Drop-in for `nn.Dropout(rate, deterministic=...)`, using the 'dropout' rng collection."""
  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.deterministic or drop_threshold(self.rate) == 0:
      return x
    return dropout(self.make_rng("dropout"), x, self.rate)
