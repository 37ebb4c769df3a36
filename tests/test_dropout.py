"""clcr_jax.models.dropout: its bits against a NumPy Threefry-2x32, its statistics, its module."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from clcr_jax.models import dropout

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(key, c0, c1):
  """Threefry-2x32, 20 rounds (Salmon et al. 2011), on uint32 NumPy arrays."""
  k0, k1 = (np.uint32(k) for k in key)
  ks = (k0, k1, np.uint32(k0 ^ k1 ^ np.uint32(0x1BD11BDA)))
  rotl = lambda v, r: (v << np.uint32(r)) | (v >> np.uint32(32 - r))
  x0, x1 = np.asarray(c0, np.uint32) + ks[0], np.asarray(c1, np.uint32) + ks[1]
  for group in range(5):
    for r in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = rotl(x1, r) ^ x0
    x0 = x0 + ks[(group + 1) % 3]
    x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def _reference_uniform16(key, shape):
  """Four 16-bit uniforms per hash of (0, row-major index of the [..., ceil(last/4)] word)."""
  *lead, last = shape
  words = (*lead, -(-last // 4))
  index = np.arange(int(np.prod(words)), dtype=np.uint32).reshape(words)
  x0, x1 = _threefry2x32(key, np.zeros_like(index), index)
  halves = [x0 & 0xFFFF, x0 >> 16, x1 & 0xFFFF, x1 >> 16]
  return np.stack(halves, axis=-1).astype(np.uint16).reshape(*lead, -1)[..., :last]


def test_numpy_threefry_matches_the_published_known_answers():
  # Random123's known-answer vectors for Threefry-2x32 with 20 rounds.
  with np.errstate(over="ignore"):
    cases = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
             ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
             ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    for key, (c0, c1), expected in cases:
      got = _threefry2x32(key, np.array([c0], np.uint32), np.array([c1], np.uint32))
      assert (int(got[0][0]), int(got[1][0])) == expected


@pytest.mark.parametrize("shape", [(3, 5, 7), (16,), (2, 4, 8)])
def test_uniform16_is_threefry_of_the_row_major_word_index(shape):
  key = jax.random.key(42)
  got = np.asarray(jax.jit(dropout.uniform16, static_argnums=1)(key, shape))
  with np.errstate(over="ignore"):
    expected = _reference_uniform16(np.asarray(jax.random.key_data(key)), shape)
  assert got.dtype == np.uint16 and got.shape == shape
  np.testing.assert_array_equal(got, expected)


def test_dropout_statistics_and_values():
  rate, shape = 0.1, (64, 128, 130)  # the last axis is not a multiple of 4
  x = jax.random.normal(jax.random.key(1), shape)
  y = np.asarray(jax.jit(dropout.dropout, static_argnums=2)(jax.random.key(7), x, rate))
  x = np.asarray(x)
  keep = y != 0
  threshold = round(rate * 65536)
  p = 1 - threshold / 65536
  n = keep.size
  # Keep fraction within 5 binomial standard deviations of the quantised keep probability.
  assert abs(keep.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
  # Kept elements are scaled by exactly 1 / p (so the expectation is x), dropped ones are zero.
  np.testing.assert_allclose(y[keep], x[keep] * np.float32(65536 / (65536 - threshold)),
                             rtol=1e-6)
  # The four uniforms of one hash are independent: neighbours along the last axis are kept
  # together with probability p^2, and every position within a group of four keeps p.
  both = (keep[..., :-1] & keep[..., 1:]).mean()
  assert abs(both - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / keep[..., 1:].size)
  for offset in range(4):
    column = keep[..., offset::4]
    assert abs(column.mean() - p) < 5 * np.sqrt(p * (1 - p) / column.size)
  # A different key draws a different mask.
  y2 = np.asarray(dropout.dropout(jax.random.key(8), jnp.asarray(x), rate))
  assert ((y2 != 0) != keep).mean() > 0.1


def test_module_edges_gradient_and_errors():
  x = jax.random.normal(jax.random.key(0), (4, 10, 6))
  rngs = {"dropout": jax.random.key(3)}
  apply = lambda rate, det=False: dropout.Dropout(rate, deterministic=det).apply({}, x, rngs=rngs)
  np.testing.assert_array_equal(apply(0.3, det=True), x)
  np.testing.assert_array_equal(apply(0.0), x)
  np.testing.assert_array_equal(apply(1.0), np.zeros(x.shape))
  np.testing.assert_array_equal(apply(0.3), apply(0.3))  # same rng, same mask
  y = apply(0.3)
  grad = jax.grad(lambda x: jnp.sum(dropout.Dropout(0.3).apply({}, x, rngs=rngs)))(x)
  scale = 65536 / (65536 - round(0.3 * 65536))
  np.testing.assert_allclose(grad, np.where(np.asarray(y) != 0, scale, 0.0), rtol=1e-6)
  with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\], found 1.5"):
    apply(1.5)
  # A scalar keeps its shape (it is scaled or zeroed, never broadcast to [1]).
  scalar = dropout.dropout(jax.random.key(0), jnp.float32(2.0), 0.5)
  assert scalar.shape == () and float(scalar) in (0.0, 4.0)
  # bfloat16 stays bfloat16.
  assert dropout.dropout(jax.random.key(0), x.astype(jnp.bfloat16), 0.1).dtype == jnp.bfloat16


def test_mask_is_the_same_when_the_batch_is_sharded():
  devices = np.array(jax.devices()[:8])
  assert devices.size == 8, "tests/conftest.py sets 8 CPU devices"
  sharding = NamedSharding(Mesh(devices, ("data",)), P("data"))
  x = jax.random.normal(jax.random.key(0), (16, 12, 10))
  fn = jax.jit(lambda key, x: dropout.dropout(key, x, 0.25))
  single = np.asarray(fn(jax.random.key(5), x))
  sharded = fn(jax.random.key(5), jax.device_put(x, sharding))
  assert sharded.sharding.is_equivalent_to(sharding, x.ndim)
  np.testing.assert_array_equal(np.asarray(sharded), single)
