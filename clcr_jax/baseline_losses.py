"""MISA's auxiliary losses (models/misa.py), in float32 over the global batch.

For row vectors over the N valid rows of the batch (w = valid weights):
* CMD(x, y) with K moments (central moment discrepancy, as MISA uses it: no range scaling):
    ||E x - E y||_2 + sum_{k=2..K} ||E (x - E x)^k - E (y - E y)^k||_2
* D(x, y), the difference (soft orthogonality) loss: centre the columns, divide each row by its
  L2 norm (+1e-6, the norm held constant in the gradient, as the reference detaches it), then
  mean over the [d_x, d_y] entries of (X^T Y)^2.
* MSE(r, o) = mean over rows and columns of (r - o)^2.
MISA's terms: sim = mean over modality pairs of CMD(c_m, c_m'); diff = sum_m D(p_m, c_m) +
sum over pairs D(p_m, p_m'); recon = mean_m MSE(r_m, o_m).

Under pmap the vectors are gathered over the batch axis first (as losses.regularisers does) and
each device returns its share, so the psum is the global value, equal to jit's.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import jax
import jax.numpy as jnp


def _weighted_mean(x, w, n):
  return jnp.sum(x * w, axis=0) / n


def _safe_norm(v):
  """||v||_2 with a zero (not NaN) gradient at v = 0 (two CMD moments can match exactly)."""
  s = jnp.sum(v * v)
  safe = jnp.where(s > 0, s, 1.0)
  return jnp.where(s > 0, jnp.sqrt(safe), 0.0)


def cmd(x, y, valid, moments: int = 5):
  """Central moment discrepancy of x, y [N, d] over the valid [N] rows (MISA's form)."""
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  mx, my = _weighted_mean(x, w, n), _weighted_mean(y, w, n)
  total = _safe_norm(mx - my)
  cx, cy = x - mx, y - my
  for k in range(2, moments + 1):
    total = total + _safe_norm(_weighted_mean(cx**k, w, n) - _weighted_mean(cy**k, w, n))
  return total


def difference(x, y, valid):
  """MISA's difference loss D(x, y) for x [N, d_x], y [N, d_y] over the valid rows."""
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)

  def unit_rows(z):
    z = z.astype(jnp.float32)
    z = (z - _weighted_mean(z, w, n)) * w
    norm = jax.lax.stop_gradient(jnp.linalg.norm(z, axis=1, keepdims=True))
    return z / (norm + 1e-6)
  return jnp.mean((unit_rows(x).T @ unit_rows(y))**2)


def reconstruction(prediction, target, valid):
  """Mean squared error over the valid rows and all columns; prediction, target [N, d]."""
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  err = (prediction.astype(jnp.float32) - target.astype(jnp.float32))**2
  return jnp.sum(err * w) / (n * prediction.shape[-1])


def misa_terms(vectors: Mapping[str, Mapping[str, Any]], valid, moments: int,
               axis=None) -> dict[str, jax.Array]:
  """{'misa_sim', 'misa_diff', 'misa_recon'} from aux['misa'] (models/misa.py)."""
  gather = (lambda x: axis.gather(x)) if axis is not None else (lambda x: x)
  share = (lambda x: axis.share(x)) if axis is not None else (lambda x: x)
  v = {k: {m: gather(x) for m, x in per_mod.items()} for k, per_mod in vectors.items()}
  valid = gather(valid)
  mods = sorted(v["shared"])
  pairs = list(itertools.combinations(mods, 2))
  sim = sum(cmd(v["shared"][a], v["shared"][b], valid, moments) for a, b in pairs) / len(pairs)
  diff = (sum(difference(v["private"][m], v["shared"][m], valid) for m in mods) +
          sum(difference(v["private"][a], v["private"][b], valid) for a, b in pairs))
  recon = sum(reconstruction(v["recon"][m], v["orig"][m], valid) for m in mods) / len(mods)
  return {"misa_sim": share(sim), "misa_diff": share(diff), "misa_recon": share(recon)}
