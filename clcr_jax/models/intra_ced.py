"""Intra-Level Co-Exchange Domain (IntraCED), docs/model.md, IntraCED, Budget and Exchange.

At one level l, for modalities m:
  1. Stiefel split: an orthonormal shared basis U_sh [d, d_sh] common to all modalities and a
     private basis U_pr,m [d, d_pr] per modality, orthogonal to U_sh by construction (QR of
     (I - U_sh U_sh^T) W_pr,m). h_sh = h U_sh, h_pr = h U_pr,m.
  2. Token budget: e_t = ||h_sh,t||, a~_t = sigmoid(kappa (e_t - theta)), and
     alpha = capped-simplex projection of a~ with budget B = r_l * (#valid tokens),
     r_l = sigmoid(b_l) learnable (initial participation ratio 0.68).
  3. Exchange among shared tokens only: h_sh <- LN(h_sh + Dropout(alpha * MHA(h_sh^m, pool of the
     other modalities' shared tokens))), then a position-wise FFN with residual + LN.
Private streams never enter a cross-modal operation; a token with alpha = 0 receives nothing
from the other modalities. Step 2 is token_budget.TokenBudget, step 3's block
transformer_layers.GatedCrossAttentionBlock (which the flat-attention baseline shares).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import layers
from clcr_jax.models import token_budget
from clcr_jax.models import transformer_layers as tl

Dtype = Any


def _gram_schmidt(w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """w [d, k] -> (Q [d, k], T = R^-1 [k, k] upper triangular) with w = Q R, diag(R) > 0.

  Classical Gram-Schmidt with reorthogonalisation (CGS2) in a scan over the k columns. T is
  tracked alongside (Q = w T column by column) so the derivative needs no triangular solve.
  float32 in and out.
  """
  k = w.shape[1]

  def add_column(carry, j):
    q, t = carry
    v = w[:, j]
    coeff = jnp.zeros((k,), jnp.float32)
    for _ in range(2):  # unfilled columns of q are zero and remove nothing
      c = q.T @ v
      v = v - q @ c
      coeff = coeff + c
    inv_norm = jax.lax.rsqrt(jnp.sum(v * v))
    q = q.at[:, j].set(v * inv_norm)
    # q_j = (w_j - Q coeff) / ||v|| and Q = w T for the columns before j.
    t = t.at[:, j].set((jax.nn.one_hot(j, k, dtype=jnp.float32) - t @ coeff) * inv_norm)
    return (q, t), None

  (q, t), _ = jax.lax.scan(add_column, (jnp.zeros_like(w), jnp.zeros((k, k), jnp.float32)),
                           jnp.arange(k))
  return q, t


def orthonormal_columns(w: jax.Array) -> jax.Array:
  """Q of the QR decomposition of w [d, k] with diag(R) > 0 (unique, smooth in w).

  Gram-Schmidt (CGS2), not LAPACK: the model vmaps this over levels, and XLA:CPU's batched
  LAPACK QR (jaxlib 0.10) can deadlock on a 2-thread pool when two run at once, which hung
  training on 2-core machines. CGS2 is orthogonal to float32 rounding, and its diag(R) = column
  norms are positive by construction, so it equals the sign-fixed Householder Q.

  Differentiated by the QR derivative in closed form (a custom JVP, so forward and reverse
  mode both work): differentiating the scan instead would store Q at every column in reverse
  mode, d * k^2 floats, 384 MiB per level at d = 512, k = 256.
  """
  return _orthonormal_columns(w.astype(jnp.float32))


@jax.custom_jvp
def _orthonormal_columns(w: jax.Array) -> jax.Array:
  return _gram_schmidt(w)[0]


@_orthonormal_columns.defjvp
def _orthonormal_columns_jvp(primals, tangents):
  # For w = QR: with Y = dw R^-1 and C = Q^T Y, dQ = Q (Omega - C) + Y, where
  # Omega = tril(C, -1) - tril(C, -1)^T is the skew part that keeps Q^T Q = I. Linear in dw,
  # so reverse mode transposes it and keeps only Q and R^-1 from the forward pass.
  (w,), (dw,) = primals, tangents
  q, r_inv = _gram_schmidt(w)
  y = dw @ r_inv
  c = q.T @ y
  lower = jnp.tril(c, -1)
  return q, q @ (lower - lower.T - c) + y


class StiefelBases(nn.Module):
  """Returns U_sh [d, d_sh] and {m: U_pr,m [d, d_pr]} with U_sh^T U_pr,m = 0 and orthonormal columns."""
  d: int
  d_shared: int
  d_private: int
  modalities: Sequence[str]
  trainable: bool = True  # False: the bases stay at their (random orthonormal) initial value

  @nn.compact
  def __call__(self):
    if self.d_shared + self.d_private > self.d:
      raise ValueError(f"d_shared + d_private = {self.d_shared + self.d_private} exceeds d = {self.d}")
    init = nn.initializers.orthogonal()
    def param(name, shape):
      w = self.param(name, init, shape)
      return w if self.trainable else jax.lax.stop_gradient(w)

    u_sh = orthonormal_columns(param("w_shared", (self.d, self.d_shared)))
    complement = jnp.eye(self.d) - u_sh @ u_sh.T
    # Projected twice: one float32 projection leaves a component along U_sh of order
    # eps * ||W_pr||, which QR amplifies where the projected columns are short; after the second
    # it is of order eps * ||projected W_pr|| ("twice is enough"), so U_sh^T U_pr stays ~1e-7.
    u_pr = {m: orthonormal_columns(complement @ (complement @ param(
                f"w_private_{m}", (self.d, self.d_private))))
            for m in self.modalities}
    return u_sh, u_pr


# Which pool tokens a query may attend to: 'all' valid shared tokens of the other modalities, or
# only those their own 'budget' admits (alpha > 0), each value scaled by its alpha.
BUDGET_POOLS = ("all", "budget")


class IntraCED(nn.Module):
  """One level of IntraCED (the model maps it over the levels with nn.vmap).

  Call: H {m: [B, T_m, d]}, masks {m: bool[B, T_m]} -> dict with
    'shared' {m: [B, T_m, d_sh]} (after exchange), 'private' {m: [B, T_m, d_pr]},
    'alpha' {m: float32[B, T_m]}, 'budget' {m: float32[B]}, 'ratio' float32[].
  With `split=False` (the "w/o IntraCED" ablation) the shared stream is H itself, there is no
  private stream (None), no budget and no exchange.

  The fields are plain values, not the model config, so that one level can be built and tested
  without a whole config; they mirror config.model fields (num_heads, dropout, ffn_mult,
  private_ffn, attention, exchange_norm, exchange_init), its budget block (participation_init,
  kappa_init, theta_init, budget_method, budget_scores, budget_constraint, budget_pool), its
  ablation switches (split = not no_intraced, dense_budget) and stiefel_trainable
  (bases_trainable). Pass them by keyword: clcr.py does.
  """
  d: int
  d_shared: int
  d_private: int
  modalities: Sequence[str]
  num_heads: int = 4
  dropout: float = 0.1
  ffn_mult: int = 2
  split: bool = True
  participation_init: float = 0.68
  kappa_init: float = 1.0
  theta_init: float = -1.0
  budget_method: str = "bisection"
  dense_budget: bool = False
  private_ffn: bool = False
  attention: str = "auto"
  train: bool = False  # an attribute, not a call argument, so that nn.vmap over levels works
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  budget_scores: str = "sigmoid"
  budget_constraint: str = "at_most"
  bases_trainable: bool = True
  exchange_norm: str = "post"
  exchange_init: str = "default"
  budget_pool: str = "all"

  @nn.compact
  def __call__(self, h: Mapping[str, jax.Array], masks: Mapping[str, jax.Array]):
    train = self.train
    if self.budget_pool not in BUDGET_POOLS:
      raise ValueError(f"config.model.budget.pool must be one of {BUDGET_POOLS}, found "
                       f"{self.budget_pool!r}")
    if not self.split:
      ones = {m: masks[m].astype(jnp.float32) for m in self.modalities}
      return {"shared": dict(h), "private": None, "alpha": ones,
              "budget": {m: ones[m].sum(-1) for m in self.modalities},
              "ratio": jnp.ones((), jnp.float32)}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    u_sh, u_pr = StiefelBases(self.d, self.d_shared, self.d_private, tuple(self.modalities),
                              self.bases_trainable, name="bases")()
    shared = {m: h[m] @ u_sh.astype(h[m].dtype) for m in self.modalities}
    private = {m: h[m] @ u_pr[m].astype(h[m].dtype) for m in self.modalities}
    # For LayerNormed h, ||h U_sh|| is about sqrt(d_sh) at init: the default threshold sits there.
    theta = self.theta_init if self.theta_init >= 0 else float(np.sqrt(self.d_shared))
    alpha, budget, ratio = token_budget.TokenBudget(
        participation_init=self.participation_init, kappa_init=self.kappa_init,
        theta_init=theta, method=self.budget_method, dense=self.dense_budget,
        scores=self.budget_scores, constraint=self.budget_constraint,
        name="budget")(shared, masks)
    exchanged = {}
    for m in self.modalities:
      others = [o for o in self.modalities if o != m]
      if not others:  # a single modality has nobody to exchange with
        exchanged[m] = shared[m]
        continue
      pool = jnp.concatenate([shared[o] for o in others], axis=1)
      pool_mask = jnp.concatenate([masks[o] for o in others], axis=1)
      pool_gate = (jnp.concatenate([alpha[o] for o in others], axis=1)
                   if self.budget_pool == "budget" else None)
      exchanged[m] = tl.GatedCrossAttentionBlock(
          num_heads=self.num_heads, dropout=self.dropout, ffn_mult=self.ffn_mult,
          attention=self.attention, norm=self.exchange_norm, output_init=self.exchange_init,
          name=f"exchange_{m}", **kw)(shared[m], alpha[m], pool, pool_mask, pool_gate,
                                       train=train)
    if self.private_ffn:
      private = {m: nn.LayerNorm(name=f"private_norm_{m}", **kw)(
          p + layers.MLP(self.ffn_mult * self.d_private, self.d_private, self.dropout,
                         name=f"private_ffn_{m}", **kw)(p, train=train))
                 for m, p in private.items()}
    return {"shared": exchanged, "private": private, "alpha": alpha, "budget": budget,
            "ratio": ratio}
