"""Tests for clcr_jax.models.token_budget.capped_simplex_projection.

The reference is written here, independently of the module: a float64 numpy bisection on tau run
for 100 halvings (no sort, no Newton step), so its threshold is exact to float64 rounding.

Gradients are checked against central finite differences of that float64 reference, not of the
module run in float64. The module computes in float32 by contract, so running it under x64 would
test nothing extra; and x64 is awkward in a shared test process (jax 0.10.2 has no
`jax.experimental.enable_x64`; `jax.enable_x64(True)` scopes the global `jax_enable_x64` flag,
which changes the default dtype of everything traced inside). Nor is it needed: alpha is
piecewise linear in (scores, budget), so away from kinks a float64 difference quotient with a
small step is exact to ~1e-9, and the module's float32 derivatives, built from an active-set
count, must match it to float32 rounding. Points are sampled at least 1e-3 away from every kink
(breakpoint or regime switch), far more than the step moves anything. A second, looser check
differences the float32 module itself with a large step, well away from kinks.

XLA compilation dominates the run time on CPU, so the tests go through a few module-level jitted
functions and reuse a handful of shapes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clcr_jax.models import token_budget
from clcr_jax.models.token_budget import capped_simplex_projection

METHODS = ("sort", "bisection")
# Every token count and every leading shape appears at least once.
SWEEP_SHAPES = (((2, 4), 1), ((), 2), ((3,), 7), ((3,), 50), ((2, 4), 375))
SCORE_KINDS = ("unit", "normal", "ties", "wide")
GRAD_SHAPE = (3, 50)  # Shared by the derivative tests, so their programs compile once.

_project = jax.jit(capped_simplex_projection, static_argnames=("method", "num_bisection_iters"))


def _weighted_sum(scores, budget, mask, weights, method):
  return jnp.sum(weights * capped_simplex_projection(scores, budget, mask, method=method))


_weighted_sum_grad = jax.jit(jax.grad(_weighted_sum, argnums=(0, 1)), static_argnames="method")


@functools.partial(jax.jit, static_argnames="method")
def _jacobians(scores, budget, mask, method):
  """Forward- and reverse-mode Jacobians of alpha with respect to (scores, budget)."""
  project = functools.partial(capped_simplex_projection, mask=mask, method=method)
  return (jax.jacfwd(project, argnums=(0, 1))(scores, budget),
          jax.jacrev(project, argnums=(0, 1))(scores, budget))


# ------------------------------------------------------------------------------------------------
# Float64 reference and random inputs.
# ------------------------------------------------------------------------------------------------


def _reference(scores, budget, mask, iters: int = 100):
  """float64 (alpha, tau, binding) by plain bisection; mirrors the spec's definition."""
  s = np.where(mask, np.asarray(scores, np.float64), 0.0)
  b = np.asarray(budget, np.float64)
  clipped_total = np.where(mask, np.clip(s, 0.0, 1.0), 0.0).sum(-1)
  binding = (b > 0) & (clipped_total > b)
  lo = np.zeros_like(b)
  hi = np.maximum(np.where(mask, s, 0.0).max(-1, initial=0.0), 0.0)
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    g = np.where(mask, np.clip(s - mid[..., None], 0.0, 1.0), 0.0).sum(-1)
    root_below = g < b
    hi = np.where(root_below, mid, hi)
    lo = np.where(root_below, lo, mid)
  tau = np.where(binding, 0.5 * (lo + hi), 0.0)
  alpha = np.where(mask & (b > 0)[..., None], np.clip(s - tau[..., None], 0.0, 1.0), 0.0)
  return alpha, tau, binding


def _kink_distance(scores, budget, mask):
  """Per row: how far (scores, budget) is from any point where alpha is not differentiable."""
  s = np.asarray(scores, np.float64)
  b = np.asarray(budget, np.float64)
  _, tau, _ = _reference(s, b, mask)
  excess = s - tau[..., None]
  to_breakpoint = np.where(mask, np.minimum(np.abs(excess), np.abs(excess - 1.0)), np.inf)
  clipped_total = np.where(mask, np.clip(s, 0.0, 1.0), 0.0).sum(-1)
  return np.minimum(to_breakpoint.min(-1), np.minimum(np.abs(clipped_total - b), np.abs(b)))


def _random_scores(rng, shape, kind: str):
  if kind == "unit":
    return rng.uniform(0.0, 1.0, shape)
  if kind == "normal":  # Much mass outside [0, 1].
    return rng.normal(0.5, 1.5, shape)
  if kind == "ties":  # Few distinct values, so breakpoints repeat.
    return np.round(rng.uniform(-0.5, 1.5, shape), 1)
  if kind == "wide":
    return rng.uniform(-5.0, 10.0, shape)
  raise ValueError(kind)


def _random_case(rng, lead, num_tokens: int, kind: str):
  """float32 scores, budget and bool mask; each row draws a mask type and a budget type."""
  shape = lead + (num_tokens,)
  scores = _random_scores(rng, shape, kind).astype(np.float32)
  mask_type = rng.integers(0, 4, lead)  # 0: all valid, 1: all masked, 2-3: random.
  keep = rng.uniform(0.1, 0.9, lead)[..., None]
  mask = np.where((mask_type == 0)[..., None], True, rng.uniform(size=shape) < keep)
  mask &= (mask_type != 1)[..., None]
  clipped_total = np.where(mask, np.clip(scores, 0.0, 1.0), 0.0).sum(-1)
  budget_type = rng.integers(0, 6, lead)
  budget = np.select(
      [budget_type == 0, budget_type == 1, budget_type == 2, budget_type == 3,
       budget_type == 4],
      [np.zeros(lead), -rng.uniform(0.1, 2.0, lead), clipped_total * rng.uniform(1.0, 2.0, lead),
       np.full(lead, num_tokens + 2.5), clipped_total * rng.uniform(0.0, 1.0, lead)],
      default=rng.uniform(0.0, num_tokens, lead))
  return scores, budget.astype(np.float32), mask


def _tolerance(scores) -> float:
  # alpha = s - tau inherits the float32 rounding of the scores' magnitude.
  return 1e-5 * max(1.0, float(np.abs(scores).max(initial=0.0)))


def _points_away_from_kinks(rng, num_rows, num_tokens, regime, min_distance, kind="normal"):
  """Rows whose alpha is differentiable with margin `min_distance`, in the requested regime."""
  rows = []
  while len(rows) < num_rows:
    scores = _random_scores(rng, (num_tokens,), kind).astype(np.float32)
    mask = rng.uniform(size=num_tokens) < 0.8
    clipped_total = np.where(mask, np.clip(scores, 0.0, 1.0), 0.0).sum()
    if regime == "binding":
      budget = np.float32(clipped_total * rng.uniform(0.2, 0.8))
    else:
      budget = np.float32(clipped_total * rng.uniform(1.2, 2.0) + 0.2)
    if _kink_distance(scores, budget, mask) > min_distance:
      rows.append((scores, budget, mask))
  scores, budget, mask = (np.stack(column) for column in zip(*rows))
  return scores, budget, mask


# ------------------------------------------------------------------------------------------------
# Forward values.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lead,num_tokens", SWEEP_SHAPES, ids=str)
def test_matches_float64_reference_and_invariants(lead, num_tokens):
  rng = np.random.default_rng([len(lead), num_tokens])
  for kind in SCORE_KINDS:
    for _ in range(3):
      scores, budget, mask = _random_case(rng, lead, num_tokens, kind)
      expected, _, binding = _reference(scores, budget, mask)
      tol = _tolerance(scores)
      results = {}
      for method in METHODS:
        alpha = np.asarray(_project(scores, budget, mask, method=method))
        results[method] = alpha
        assert alpha.shape == scores.shape and alpha.dtype == np.float32
        np.testing.assert_allclose(alpha, expected, rtol=0, atol=tol, err_msg=f"{method} {kind}")
        assert np.all((alpha >= 0.0) & (alpha <= 1.0))
        assert np.all(alpha[~mask] == 0.0), "masked tokens must be exactly zero"
        assert np.all(alpha[budget <= 0] == 0.0), "a non-positive budget admits nothing"
        totals = alpha.sum(-1)
        np.testing.assert_allclose(totals[binding], budget[binding], rtol=1e-5, atol=tol)
        free = ~binding & (budget > 0)
        np.testing.assert_array_equal(
            alpha[free], np.where(mask, np.clip(scores, 0.0, 1.0), 0.0)[free])
      np.testing.assert_allclose(results["sort"], results["bisection"], rtol=0, atol=tol)


def test_edge_rows():
  # Single rows of 4 tokens, the shape of the hand-worked examples below (one compilation).
  scores = np.array([0.3, 0.9, 1.7, 0.5], np.float32)
  mask = np.array([True, True, True, False])
  clipped = np.array([0.3, 0.9, 1.0, 0.0], np.float32)
  for method in METHODS:
    for budget, expected in [(0.0, 0.0), (-1.0, 0.0), (2.2, clipped), (3.0, clipped),
                             (10.0, clipped)]:
      np.testing.assert_array_equal(
          _project(scores, np.float32(budget), mask, method=method), expected, err_msg=budget)
    no_valid_token = _project(scores, np.float32(1.0), np.zeros(4, bool), method=method)
    np.testing.assert_array_equal(no_valid_token, 0.0)
  integer_budget = _project(scores, np.int32(1), mask)  # Token counts are accepted.
  np.testing.assert_array_equal(integer_budget, _project(scores, np.float32(1.0), mask))
  empty = capped_simplex_projection(jnp.zeros((3, 0)), jnp.ones(3), jnp.zeros((3, 0), bool))
  assert empty.shape == (3, 0) and empty.dtype == jnp.float32


# Rows of 4 tokens; a False pads the shorter examples.
_HAND_MASK = np.array([[True, True, True, True], [True, True, True, False],
                       [True, True, False, False]])
_HAND_SCORES = np.array([[0.9, 0.8, 0.1, -0.5], [5.0, 5.0, 1.0, 0.0], [1.5, 0.2, 0.0, 0.0]],
                        np.float32)
_HAND_BUDGET = np.array([1.0, 2.0, 1.0], np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_hand_worked_examples_and_jacobians(method):
  # Row 0: clip-sum 1.8 > 1, so (0.9 - tau) + (0.8 - tau) = 1 gives tau = 0.35 and S = {0, 1}.
  # Rows 1 and 2 bind with g flat at the root (every admitted token saturated): |S| = 0, tau is
  # not unique, and the derivative must still be finite (it is zero).
  for row, expected in enumerate([[0.55, 0.45, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0],
                                  [1.0, 0.0, 0.0, 0.0]]):
    args = (_HAND_SCORES[row], _HAND_BUDGET[row], _HAND_MASK[row])
    np.testing.assert_allclose(_project(*args, method=method), expected, atol=1e-6)
    for d_scores, d_budget in _jacobians(*args, method=method):
      expected_d_scores = np.zeros((4, 4))
      expected_d_budget = np.zeros(4)
      if row == 0:
        expected_d_scores[:2, :2] = [[0.5, -0.5], [-0.5, 0.5]]
        expected_d_budget[:2] = 0.5
      np.testing.assert_allclose(d_scores, expected_d_scores, atol=1e-6)
      np.testing.assert_allclose(d_budget, expected_d_budget, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Derivatives.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("regime", ("binding", "free"))
@pytest.mark.parametrize("method", METHODS)
def test_grad_matches_float64_finite_differences(method, regime):
  rng = np.random.default_rng(["binding", "free"].index(regime))
  num_rows, num_tokens = GRAD_SHAPE
  step = 1e-6
  scores, budget, mask = _points_away_from_kinks(rng, num_rows, num_tokens, regime, 1e-3)
  weights = rng.normal(size=scores.shape).astype(np.float32)
  grad_scores, grad_budget = _weighted_sum_grad(scores, budget, mask, weights, method=method)

  # Central differences for every token and the budget, evaluated as one batch:
  # axis 0 enumerates the perturbed coordinate (T tokens, then the budget).
  s64, b64 = scores.astype(np.float64), budget.astype(np.float64)
  bumps = np.zeros((num_tokens + 1,) + s64.shape)
  bumps[np.arange(num_tokens), :, np.arange(num_tokens)] = step
  budget_bumps = np.zeros((num_tokens + 1,) + b64.shape)
  budget_bumps[-1] = step

  def reference_loss(sign):
    alpha = _reference(s64 + sign * bumps, b64 + sign * budget_bumps, mask)[0]
    return (weights * alpha).sum(-1)  # [T + 1, rows]

  fd = (reference_loss(1.0) - reference_loss(-1.0)) / (2 * step)
  fd_scores, fd_budget = fd[:-1].T, fd[-1]

  np.testing.assert_allclose(grad_scores, fd_scores, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_budget, fd_budget, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(grad_scores)[~mask] == 0.0)
  if regime == "binding":
    assert np.all(np.abs(grad_budget) > 0), "the budget must receive gradient when it binds"
  else:
    np.testing.assert_array_equal(grad_budget, 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_grad_matches_finite_differences_of_the_module(method):
  # float32 differences need a large step; alpha is piecewise linear, so the quotient stays
  # exact as long as the step crosses no kink (margin 0.05 > 2 * step).
  rng = np.random.default_rng(7)
  step = 1e-2
  for regime in ("binding", "free"):
    scores, budget, mask = _points_away_from_kinks(rng, 3, 7, regime, 0.05, kind="unit")
    weights = rng.normal(size=scores.shape).astype(np.float32)

    def loss(s, b):
      return np.sum(weights * np.asarray(_project(s, b, mask, method=method), np.float64))

    grad_scores, grad_budget = _weighted_sum_grad(scores, budget, mask, weights, method=method)
    for index in np.ndindex(scores.shape):
      bump = np.zeros_like(scores)
      bump[index] = step
      fd = (loss(scores + bump, budget) - loss(scores - bump, budget)) / (2 * step)
      np.testing.assert_allclose(grad_scores[index], fd, rtol=1e-3, atol=1e-3)
    for row in range(budget.shape[0]):
      bump = np.zeros_like(budget)
      bump[row] = step
      fd = (loss(scores, budget + bump) - loss(scores, budget - bump)) / (2 * step)
      np.testing.assert_allclose(grad_budget[row], fd, rtol=1e-3, atol=1e-3)


@functools.partial(jax.jit, static_argnames="method")
def _jvp_and_vjp(scores, budget, mask, tangents, cotangent, method):
  project = functools.partial(capped_simplex_projection, mask=mask, method=method)
  _, jv = jax.jvp(project, (scores, budget), tangents)
  _, pullback = jax.vjp(project, scores, budget)
  return jv, pullback(cotangent)


@pytest.mark.parametrize("method", METHODS)
def test_non_positive_budget_has_zero_gradient(method):
  rng = np.random.default_rng(17)
  scores = rng.uniform(0.0, 1.0, GRAD_SHAPE).astype(np.float32)
  mask = np.ones(GRAD_SHAPE, bool)
  budget = np.array([-1.0, 0.0, -1e-3], np.float32)  # alpha is identically 0 for budget < 0.
  weights = rng.normal(size=GRAD_SHAPE).astype(np.float32)
  grads = _weighted_sum_grad(scores, budget, mask, weights, method=method)
  for grad in grads:
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_jvp_and_vjp_are_transposes(method):
  rng = np.random.default_rng(11)
  scores, budget, mask = _random_case(rng, GRAD_SHAPE[:1], GRAD_SHAPE[1], "normal")
  scores = np.where(mask, scores, -np.inf).astype(np.float32)  # Padding as the model sets it.
  budget = np.abs(budget) + 0.5  # Keep every row live so the check is not vacuous.
  v_scores = rng.normal(size=scores.shape).astype(np.float32)
  v_budget = rng.normal(size=budget.shape).astype(np.float32)
  u = rng.normal(size=scores.shape).astype(np.float32)
  jv, (ju_scores, ju_budget) = _jvp_and_vjp(scores, budget, mask, (v_scores, v_budget), u,
                                            method=method)
  for array in (jv, ju_scores, ju_budget):
    assert np.all(np.isfinite(array))
  assert np.all(np.asarray(jv)[~mask] == 0.0) and np.all(np.asarray(ju_scores)[~mask] == 0.0)
  lhs = float(np.sum(u * jv))
  rhs = float(np.sum(ju_scores * v_scores) + np.sum(ju_budget * v_budget))
  assert abs(lhs) > 1e-3
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Masking, transformations, dtypes.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_masked_entries_never_matter(method):
  rng = np.random.default_rng(3)
  scores, budget, mask = _random_case(rng, GRAD_SHAPE[:1], GRAD_SHAPE[1], "normal")
  budget = np.abs(budget) + 0.5
  weights = rng.normal(size=scores.shape).astype(np.float32)
  baseline = np.where(mask, scores, 0.0).astype(np.float32)
  expected_alpha = _project(baseline, budget, mask, method=method)
  expected_grads = _weighted_sum_grad(baseline, budget, mask, weights, method=method)
  for fill in (-np.inf, np.inf, np.nan, 1e30, -7.0, 0.5):
    filled = np.where(mask, scores, np.float32(fill))
    alpha = _project(filled, budget, mask, method=method)
    assert np.all(np.isfinite(alpha))
    np.testing.assert_array_equal(alpha, expected_alpha)
    grads = _weighted_sum_grad(filled, budget, mask, weights, method=method)
    for got, want in zip(grads, expected_grads):
      assert np.all(np.isfinite(got))
      np.testing.assert_array_equal(got, want)
    assert np.all(np.asarray(grads[0])[~mask] == 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_matches_batched_call(method):
  # vmap of the derivative rule is covered by jacfwd / jacrev in the hand-worked test.
  rng = np.random.default_rng(5)
  scores, budget, mask = _random_case(rng, (3,), 7, "ties")
  project = functools.partial(capped_simplex_projection, method=method)
  expected = _project(scores, budget, mask, method=method)
  # Eager vmap dispatches op by op and is slow to run; under jit it is one program.
  stacked = [np.stack([x, x[::-1]]) for x in (scores, budget, mask)]
  np.testing.assert_array_equal(jax.jit(jax.vmap(project))(*stacked),
                                np.stack([expected, expected[::-1]]))


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_inputs_compute_in_float32(method):
  rng = np.random.default_rng(9)
  scores, budget, mask = _random_case(rng, GRAD_SHAPE[:1], GRAD_SHAPE[1], "unit")
  budget = np.abs(budget) + 0.5
  low_scores, low_budget = jnp.asarray(scores, jnp.bfloat16), jnp.asarray(budget, jnp.bfloat16)
  alpha = _project(low_scores, low_budget, mask, method=method)
  assert alpha.dtype == jnp.float32
  np.testing.assert_array_equal(
      alpha, _project(np.asarray(low_scores, np.float32), np.asarray(low_budget, np.float32), mask,
                      method=method))
  if method == "sort":  # The derivative rule is shared by both methods.
    weights = jnp.asarray(rng.normal(size=scores.shape), jnp.bfloat16)
    grads = _weighted_sum_grad(low_scores, low_budget, mask, weights, method=method)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)
    assert np.any(np.asarray(grads[0], np.float32) != 0.0)


def test_bisection_iteration_count_is_a_knob():
  rng = np.random.default_rng(13)
  scores, budget, mask = _random_case(rng, GRAD_SHAPE[:1], GRAD_SHAPE[1], "normal")
  alpha = _project(scores, budget, mask, method="bisection", num_bisection_iters=60)
  np.testing.assert_allclose(alpha, _reference(scores, budget, mask)[0], atol=_tolerance(scores))
  assert token_budget.DEFAULT_BISECTION_ITERS == 30


# ------------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------------


def test_clear_errors():
  scores, mask = jnp.zeros((2, 5)), jnp.ones((2, 5), bool)
  with pytest.raises(ValueError, match=r"budget must have shape .*\(2,\).*found \(5,\)"):
    capped_simplex_projection(scores, jnp.ones(5), mask)
  with pytest.raises(ValueError, match=r"budget must have shape .*\(2,\).*found \(2, 1\)"):
    capped_simplex_projection(scores, jnp.ones((2, 1)), mask)
  with pytest.raises(ValueError, match=r"mask must have the shape of scores, \(2, 5\), "
                                       r"found \(2, 4\)"):
    capped_simplex_projection(scores, jnp.ones(2), jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match=r"method must be one of \['bisection', 'sort'\], "
                                       r"found 'topk'"):
    capped_simplex_projection(scores, jnp.ones(2), mask, method="topk")
  with pytest.raises(ValueError, match="num_bisection_iters"):
    capped_simplex_projection(scores, jnp.ones(2), mask, "bisection", num_bisection_iters=0)
  with pytest.raises(ValueError, match="at least one axis"):
    capped_simplex_projection(jnp.zeros(()), jnp.ones(()), jnp.ones((), bool))
  with pytest.raises(TypeError, match="mask must be bool, found float32"):
    capped_simplex_projection(scores, jnp.ones(2), jnp.ones((2, 5)))
  with pytest.raises(TypeError, match="scores must be floating point, found int32"):
    capped_simplex_projection(jnp.zeros((2, 5), jnp.int32), jnp.ones(2), mask)
  with pytest.raises(ValueError, match=r"budget must have shape .*\(2,\)"):  # Under jit too.
    _project(scores, jnp.ones(5), mask)
