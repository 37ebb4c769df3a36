"""The blockwise attention (CPU default) against the explicit softmax, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clcr_jax.models import blockwise_attention
from clcr_jax.models import layers


def _inputs(dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(ks[0], (6, 7, 2, 8), dtype)
  k = jax.random.normal(ks[1], (6, 11, 2, 8), dtype)
  v = jax.random.normal(ks[2], (6, 11, 2, 8), dtype)
  lengths = jnp.array([11, 5, 1, 0, 9, 3])  # example 3 has no valid key at all
  mask = jnp.arange(11)[None, :] < lengths[:, None]
  return q, k, v, mask


def _reference(q, k, v, mask):
  """float64 numpy softmax attention, zero for queries without keys."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  s = np.where(np.asarray(mask)[:, None, None, :], s, -np.inf)
  with np.errstate(invalid="ignore"):
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", np.nan_to_num(w), v)
  return np.where(np.asarray(mask).any(-1)[:, None, None, None], out, 0.0)


@pytest.mark.parametrize("block_bytes", [1, 4 * 2 * 7 * 11 * 2, 1 << 30])
def test_blockwise_matches_a_float64_softmax(block_bytes, monkeypatch):
  monkeypatch.setattr(blockwise_attention, "BLOCK_BYTES", block_bytes)
  q, k, v, mask = _inputs()
  out = jax.jit(lambda *a: layers.dot_product_attention(*a, implementation="blockwise"))(
      q, k, v, mask)
  np.testing.assert_allclose(out, _reference(q, k, v, mask), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out)[3] == 0)


def test_block_size_divides_the_batch_and_respects_the_budget():
  assert blockwise_attention.block_size(64, 4, 500, 425, 4 << 20) == 1
  # 80 kB per example: 52 fit, and 32 is the largest divisor of 64 up to 52.
  assert blockwise_attention.block_size(64, 4, 50, 100, 4 << 20) == 32
  assert blockwise_attention.block_size(6, 1, 1, 1, 1 << 30) == 6
  assert blockwise_attention.block_size(7, 4, 500, 500, 1) == 1


def test_blockwise_gradients_equal_the_einsum_ones():
  q, k, v, mask = _inputs()
  w = jax.random.normal(jax.random.key(5), q.shape)

  def loss(impl):
    return lambda q, k, v: jnp.sum(
        w * jnp.tanh(layers.dot_product_attention(q, k, v, mask, implementation=impl)))

  got = jax.jit(jax.grad(loss("blockwise"), argnums=(0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss("einsum"), argnums=(0, 1, 2)))(q, k, v)
  for g, r, name in zip(got, want, "qkv"):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5, err_msg=f"d loss / d {name}")
  # Nothing flows into the example without keys, nor into masked keys and values.
  assert np.all(np.asarray(got[0])[3] == 0)
  assert np.all(np.asarray(got[1])[1, 5:] == 0) and np.all(np.asarray(got[2])[1, 5:] == 0)


def test_blockwise_in_bfloat16_stays_close_to_float32():
  q, k, v, mask = _inputs()
  low = layers.dot_product_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask,
                                     implementation="blockwise")
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), _reference(q, k, v, mask), atol=5e-2)


def test_an_unknown_implementation_names_the_field():
  q, k, v, mask = _inputs()
  with pytest.raises(ValueError, match="model.attention must be one of"):
    layers.dot_product_attention(q, k, v, mask, implementation="flash")


def test_the_accelerator_choice_falls_back_to_xla_without_cudnn():
  q, k, v, mask = _inputs()
  out = layers.dot_product_attention(q, k, v, mask, implementation="cudnn_or_xla")
  np.testing.assert_allclose(out, _reference(q, k, v, mask), rtol=1e-5, atol=1e-6)
