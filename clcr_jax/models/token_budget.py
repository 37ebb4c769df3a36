"""Learnable token budget: the `TokenBudget` layer and its capped-simplex projection.

`TokenBudget` (bottom of the file) scores each shared token by its energy and spends a learnable
share of the row's valid tokens on them; `capped_simplex_projection` turns the scores into
weights that respect that budget. IntraCED (docs/model.md, Budget) admits shared tokens into the
cross-modal exchange through weights alpha in [0, 1] that spend at most a budget B per row:

    alpha_t = clip(s_t - tau, 0, 1) on valid tokens,   alpha_t = 0 on masked tokens,

with tau >= 0 the smallest threshold such that sum_t alpha_t <= B. In other words, tau = 0 when
the clipped scores already fit the budget (sum_t clip(s_t, 0, 1) <= B), and otherwise tau is the
unique level at which sum_t alpha_t == B. This is the Euclidean projection onto
{alpha in [0, 1]^T : sum_t alpha_t <= B}. Tokens outside the budget get exactly 0, and every
shape is static, so the layer runs under `jit` (design.md, "token budget").

tau solves g(tau) = B, where g(tau) = sum_t clip(s_t - tau, 0, 1) is continuous, piecewise
linear and non-increasing, with breakpoints at s_t and s_t - 1. Two solvers are offered:

* "sort": sorts the 2T breakpoints, accumulates g over them and picks the segment on which g
  crosses B. Exact, O(T log T).
* "bisection": a fixed number of halvings of [0, max_t s_t]. O(iterations * T), with only
  elementwise work and reductions. Sorts are slow on TPU and on XLA:CPU (there "sort" measured
  about 30x slower than "bisection" at [64, 500], jitted forward and backward).

Both finish with one Newton step from the middle of the bracket they found. g is linear inside a
bracket without breakpoints, so that step lands exactly on the root; it also makes the result
independent of the rounding accumulated while searching.

Derivatives are exact (almost everywhere) and come from a `jax.custom_jvp` rule; reverse mode
follows from JAX's linearize-and-transpose. With the active set S = {t : 0 < s_t - tau < 1}:

* binding regime: d tau = (sum_{t in S} d s_t - d B) / |S| and d alpha_t = [t in S] (d s_t - d tau);
* non-binding regime (tau = 0): d alpha_t = [0 < s_t < 1] d s_t, and B has no influence.

At a kink where tau is binding but S is empty (every admitted token saturated), no weight moves
and nothing divides by |S| = 0, so the derivative stays finite (it is zero).
"""
from __future__ import annotations

import numbers
from typing import Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_COMPUTE_DTYPE = jnp.float32
DEFAULT_BISECTION_ITERS = 30


def capped_simplex_projection(
    scores: jax.typing.ArrayLike,
    budget: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike,
    method: str = "sort",
    *,
    num_bisection_iters: int = DEFAULT_BISECTION_ITERS,
) -> jax.Array:
  """Projects per-token scores onto the capped simplex with one budget per row.

  Args:
    scores: float `[..., T]`, un-normalised token weights (any real value). Entries where `mask`
      is False may hold anything, -inf and NaN included; they never influence the result or its
      gradients.
    budget: real `[...]` (exactly `scores.shape[:-1]`), the most weight a row may spend. A row
      with budget <= 0 gets all zeros. Integer budgets are accepted (token counts).
    mask: bool `[..., T]`, True on real tokens, False on padding.
    method: "sort" (exact, O(T log T)) or "bisection" (`num_bisection_iters` halvings, then one
      exact step).
    num_bisection_iters: number of halvings for `method="bisection"`; ignored by "sort". Each
      halving costs one pass over the tokens.

  Returns:
    float32 `[..., T]` weights in [0, 1]; exactly 0 on masked tokens and on tokens outside the
    budget; summing to `budget` when the clipped scores exceed it, and equal to
    `clip(scores, 0, 1)` on valid tokens otherwise. Computed in float32 whatever the input dtype
    (bfloat16 and float16 are upcast; float64 is rounded to float32).

  Raises:
    ValueError: if the shapes of `scores`, `budget` and `mask` do not match, `method` is unknown
      or `num_bisection_iters` is not a positive int.
    TypeError: if `scores` is not floating point, `budget` not real, or `mask` not bool.
  """
  scores, budget, mask = jnp.asarray(scores), jnp.asarray(budget), jnp.asarray(mask)
  _check_inputs(scores, budget, mask, method, num_bisection_iters)
  if scores.shape[-1] == 0:
    return jnp.zeros(scores.shape, _COMPUTE_DTYPE)
  # Padding is replaced once, here, so the solvers and the derivative rule only ever see finite
  # scores (a -inf met by a zero factor would give NaN); `where` sends masked entries a zero
  # cotangent.
  scores = jnp.where(mask, scores.astype(_COMPUTE_DTYPE), 0.0)
  budget = budget.astype(_COMPUTE_DTYPE)
  solve = _SOLVERS[method]
  kwargs = {"num_iters": int(num_bisection_iters)} if method == "bisection" else {}
  # The threshold carries no gradient of its own; `_clip_at_threshold` supplies the
  # implicit-function derivative of tau with respect to scores and budget.
  tau = lax.stop_gradient(solve(scores, budget, mask, **kwargs))
  return _clip_at_threshold(scores, budget, mask, tau)


# ------------------------------------------------------------------------------------------------
# Input checks.
# ------------------------------------------------------------------------------------------------


def _check_inputs(scores: jax.Array, budget: jax.Array, mask: jax.Array, method: str,
                  num_bisection_iters: int) -> None:
  """Raises a readable error instead of letting a broadcast or XLA fail later."""
  if method not in _SOLVERS:
    raise ValueError(f"capped_simplex_projection: method must be one of {sorted(_SOLVERS)}, "
                     f"found {method!r}")
  if (not isinstance(num_bisection_iters, numbers.Integral)
      or isinstance(num_bisection_iters, bool) or num_bisection_iters < 1):
    raise ValueError("capped_simplex_projection: num_bisection_iters must be a positive int, "
                     f"found {num_bisection_iters!r}")
  if scores.ndim < 1:
    raise ValueError("capped_simplex_projection: scores must have shape [..., T] with at least "
                     f"one axis, found shape {scores.shape}")
  if budget.shape != scores.shape[:-1]:
    raise ValueError(f"capped_simplex_projection: budget must have shape scores.shape[:-1] = "
                     f"{scores.shape[:-1]} (one budget per row), found {budget.shape}; "
                     "broadcast a shared budget with jnp.broadcast_to(budget, scores.shape[:-1])")
  if mask.shape != scores.shape:
    raise ValueError(f"capped_simplex_projection: mask must have the shape of scores, "
                     f"{scores.shape}, found {mask.shape}")
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    raise TypeError(f"capped_simplex_projection: scores must be floating point, found "
                    f"{scores.dtype}")
  if not (jnp.issubdtype(budget.dtype, jnp.floating)
          or jnp.issubdtype(budget.dtype, jnp.integer)):
    raise TypeError(f"capped_simplex_projection: budget must be a real number, found "
                    f"{budget.dtype}")
  if mask.dtype != jnp.bool_:
    raise TypeError(f"capped_simplex_projection: mask must be bool, found {mask.dtype}")


# ------------------------------------------------------------------------------------------------
# Regimes, active sets and the final exact step, shared by both solvers.
# All take sanitised float32 scores (0 on masked tokens) of shape [..., T] and per-row [...].
# ------------------------------------------------------------------------------------------------


def _is_binding(scores: jax.Array, budget: jax.Array, mask: jax.Array) -> jax.Array:
  """bool `[...]`: the budget is positive and smaller than the clipped scores' total."""
  clipped_total = jnp.sum(jnp.where(mask, jnp.clip(scores, 0.0, 1.0), 0.0), axis=-1)
  return (budget > 0) & (clipped_total > budget)


def _partition(scores: jax.Array, mask: jax.Array,
               tau: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (s - tau, active set S, upper set U) at per-row thresholds `tau`."""
  excess = scores - tau[..., None]
  active = mask & (excess > 0) & (excess < 1)
  upper = mask & (excess >= 1)
  return excess, active, upper


def _newton_step(scores: jax.Array, budget: jax.Array, mask: jax.Array, lo: jax.Array,
                 hi: jax.Array) -> jax.Array:
  """Exact root of g(tau) = budget inside the bracket [lo, hi], float32 `[...]`.

  g is linear with slope -|S| between breakpoints, so one Newton step from an interior point
  reaches the root, given the bracket holds no breakpoint. Writing g(mid) with s - mid (which
  lies in (0, 1) on S) rather than (sum_S s + |U| - B) / |S| avoids cancelling large sums of
  scores. Clipping to the bracket bounds the error by its width when a breakpoint sits within
  rounding distance of the root and the set is off by one token. An empty S (flat g, budget
  equal to |U|) leaves the midpoint, which then is a root.
  """
  mid = 0.5 * (lo + hi)
  excess, active, upper = _partition(scores, mask, mid)
  g_mid = (jnp.sum(jnp.where(active, excess, 0.0), axis=-1)
           + jnp.sum(upper, axis=-1, dtype=_COMPUTE_DTYPE))
  num_active = jnp.sum(active, axis=-1, dtype=_COMPUTE_DTYPE)
  step = jnp.where(num_active > 0, (g_mid - budget) / jnp.maximum(num_active, 1.0), 0.0)
  return jnp.clip(mid + step, lo, hi)


# ------------------------------------------------------------------------------------------------
# Solvers for tau: float32 `[...]`, 0 where the budget does not bind.
# ------------------------------------------------------------------------------------------------


def _solve_tau_sort(scores: jax.Array, budget: jax.Array, mask: jax.Array) -> jax.Array:
  """Finds tau from the sorted breakpoints of g (exact)."""
  binding = _is_binding(scores, budget, mask)
  # Only tau >= 0 matters, and max(p - tau, 0) == max(max(p, 0) - tau, 0) there, so clamping
  # the breakpoints at 0 leaves g unchanged on that range. Masked tokens then contribute the pair
  # (0, 0), which cancels.
  upper_points = jnp.where(mask, jnp.maximum(scores, 0.0), 0.0)  # alpha_t reaches 0 here.
  lower_points = jnp.where(mask, jnp.maximum(scores - 1.0, 0.0), 0.0)  # alpha_t leaves the cap.
  points = jnp.concatenate([upper_points, lower_points], axis=-1)
  signs = jnp.concatenate([jnp.ones_like(upper_points), -jnp.ones_like(lower_points)], axis=-1)
  neg_sorted, signs = lax.sort((-points, signs), dimension=points.ndim - 1, num_keys=1)
  points = -neg_sorted  # Descending, so g(points) is non-decreasing.
  # Just below the j-th point, g falls with slope minus (upper points passed - lower points
  # passed), the number of tokens strictly inside (0, 1): a running count, exact in float32.
  # Accumulating g from these non-negative increments (width times count) avoids the
  # cancellation of the textbook form cumsum(sign * p) - p * cumsum(sign).
  slopes = jnp.cumsum(signs, axis=-1)
  widths = points[..., :-1] - points[..., 1:]
  # Ties sort in any order, so a count can dip below zero, but only across a zero-width gap
  # (e.g. among the points clamped at 0); the clamp keeps g monotone in floating point too.
  increments = widths * jnp.maximum(slopes[..., :-1], 0.0)
  g = jnp.concatenate([jnp.zeros_like(points[..., :1]), jnp.cumsum(increments, axis=-1)],
                      axis=-1)
  # g(first point) = 0 < budget and g(last point) = g(0) > budget on binding rows, so the
  # crossing lies between points[k - 1] (g < budget) and points[k] (g >= budget).
  num_points = points.shape[-1]
  k = jnp.sum(g < budget[..., None], axis=-1)
  k = jnp.clip(k, 1, num_points - 1)[..., None]
  hi = jnp.take_along_axis(points, k - 1, axis=-1)[..., 0]
  lo = jnp.take_along_axis(points, k, axis=-1)[..., 0]
  tau = _newton_step(scores, budget, mask, lo, hi)
  return jnp.where(binding, tau, 0.0)


def _solve_tau_bisection(scores: jax.Array, budget: jax.Array, mask: jax.Array,
                         num_iters: int = DEFAULT_BISECTION_ITERS) -> jax.Array:
  """Finds tau by halving [0, max_t s_t] a fixed number of times, then one exact step."""
  binding = _is_binding(scores, budget, mask)
  # On binding rows g(0) > budget and g(max s) = 0 < budget, so the root is inside.
  lo = jnp.zeros_like(budget)
  hi = jnp.maximum(jnp.max(jnp.where(mask, scores, 0.0), axis=-1), 0.0)

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    g_mid = jnp.sum(jnp.where(mask, jnp.clip(scores - mid[..., None], 0.0, 1.0), 0.0), axis=-1)
    root_below = g_mid < budget
    return jnp.where(root_below, lo, mid), jnp.where(root_below, mid, hi)

  lo, hi = lax.fori_loop(0, num_iters, halve, (lo, hi))
  tau = _newton_step(scores, budget, mask, lo, hi)
  return jnp.where(binding, tau, 0.0)


_SOLVERS: dict[str, Callable[..., jax.Array]] = {
    "sort": _solve_tau_sort,
    "bisection": _solve_tau_bisection,
}


# ------------------------------------------------------------------------------------------------
# Weights at a given threshold, with the implicit-function derivative.
# ------------------------------------------------------------------------------------------------


@jax.custom_jvp
def _clip_at_threshold(scores: jax.Array, budget: jax.Array, mask: jax.Array,
                       tau: jax.Array) -> jax.Array:
  """alpha `[..., T]` = clip(s - tau, 0, 1) on valid tokens of rows with a positive budget.

  `tau` must be the solver's threshold for (scores, budget, mask), passed under stop_gradient:
  its own tangent is ignored, and the rule differentiates tau implicitly through scores and
  budget instead.
  """
  live = mask & (budget > 0)[..., None]
  return jnp.where(live, jnp.clip(scores - tau[..., None], 0.0, 1.0), 0.0)


@_clip_at_threshold.defjvp
def _clip_at_threshold_jvp(primals, tangents):
  """Exact derivative of alpha; linear in the tangents, so JAX can transpose it for grad."""
  scores, budget, mask, tau = primals
  d_scores, d_budget, _, _ = tangents
  # Calling the function itself keeps higher-order derivatives consistent.
  alpha = _clip_at_threshold(scores, budget, mask, tau)
  _, active, _ = _partition(scores, mask, tau)
  active &= (budget > 0)[..., None]
  binding = _is_binding(scores, budget, mask)
  num_active = jnp.sum(active, axis=-1, dtype=_COMPUTE_DTYPE)
  d_active = jnp.where(active, d_scores, 0.0)
  # With S empty (binding at a kink) no token consumes d_tau; max(|S|, 1) only keeps it finite.
  d_tau = jnp.where(binding,
                    (jnp.sum(d_active, axis=-1) - d_budget) / jnp.maximum(num_active, 1.0), 0.0)
  d_alpha = jnp.where(active, d_active - d_tau[..., None], 0.0)
  return alpha, d_alpha


# ------------------------------------------------------------------------------------------------
# The budget layer of one IntraCED level: token scores, the learnable budget, the projection.
# ------------------------------------------------------------------------------------------------


def safe_norm(x: jax.Array) -> jax.Array:
  """||x|| over the last axis with a zero (not NaN) gradient at x = 0 (padded tokens)."""
  sq = jnp.sum(jnp.square(x), axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _standardise_over_tokens(e: jax.Array, mask: jax.Array) -> jax.Array:
  """e [B, T] -> (e - mean) / std over each row's valid tokens (0 on padded tokens)."""
  w = mask.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w, -1, keepdims=True), 1.0)
  mean = jnp.sum(e * w, -1, keepdims=True) / n
  var = jnp.sum(((e - mean) * w)**2, -1, keepdims=True) / n
  return (e - mean) * jax.lax.rsqrt(var + 1e-6) * w


class TokenBudget(nn.Module):
  """Learnable token budget of one level (docs/model.md, Budget).

  Parameters: k (kappa = softplus(k)), theta, b (participation ratio r = sigmoid(b)).
  Call: shared {m: [B, T, d_sh]}, masks {m: bool[B, T]} ->
    alpha {m: float32[B, T]}, budget {m: float32[B]}, ratio float32[].
  `dense=True` (the "dense budget" ablation) has no parameters: every valid token exchanges
  (alpha = mask), so the budget is the valid-token count and the ratio 1.
  """
  participation_init: float = 0.68
  kappa_init: float = 1.0
  theta_init: float = 0.0
  method: str = "bisection"
  dense: bool = False
  scores: str = "sigmoid"
  constraint: str = "at_most"

  @nn.compact
  def __call__(self, shared, masks):
    if self.dense:
      alpha = {m: masks[m].astype(jnp.float32) for m in shared}
      return alpha, {m: a.sum(-1) for m, a in alpha.items()}, jnp.ones((), jnp.float32)
    r0 = float(np.clip(self.participation_init, 1e-4, 1 - 1e-4))
    b = self.param("b", nn.initializers.constant(np.log(r0 / (1 - r0))), ())
    k = self.param("k", nn.initializers.constant(np.log(np.expm1(self.kappa_init))), ())
    theta = self.param("theta", nn.initializers.constant(self.theta_init), ())
    ratio = jax.nn.sigmoid(b)
    alpha, budget = {}, {}
    for m, h in shared.items():
      mask = masks[m]
      n_valid = jnp.sum(mask, axis=-1).astype(jnp.float32)
      budget[m] = ratio * n_valid
      e = safe_norm(h.astype(jnp.float32))
      if self.scores == "sigmoid":
        scores = jax.nn.sigmoid(jax.nn.softplus(k) * (e - theta))
      elif self.scores == "zscore":
        # Energies standardised over the row's valid tokens, so the budget ranks tokens within
        # the row whatever the scale of h; kappa sets how hard the ranking is.
        scores = jax.nn.softplus(k) * _standardise_over_tokens(e, mask)
      else:
        raise ValueError("config.model.budget.scores must be 'sigmoid' or 'zscore', found "
                         f"{self.scores!r}")
      if self.constraint == "exactly":
        # sum alpha = B exactly: shift every row so that all its valid tokens start saturated
        # (the 'at most' projection then binds). The projection ignores a uniform shift, so
        # the shift carries no gradient.
        low = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1, keepdims=True)
        scores = scores - jax.lax.stop_gradient(jnp.where(jnp.isfinite(low), low, 0.0)) + 1.0
      elif self.constraint != "at_most":
        raise ValueError("config.model.budget.constraint must be 'at_most' or 'exactly', found "
                         f"{self.constraint!r}")
      alpha[m] = capped_simplex_projection(scores, budget[m], mask, method=self.method)
    return alpha, budget, ratio
