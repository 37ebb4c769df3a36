"""Capped-simplex projection of token scores (IntraCED's learnable token budget), PyTorch.

Same algorithm as clcr_jax/models/token_budget.py: per row, alpha_t = clip(s_t - tau, 0, 1) on
valid tokens, with tau >= 0 the smallest threshold such that sum_t alpha_t <= B. tau is found by
a fixed number of bisection halvings of [0, max_t s_t] followed by one exact Newton step, without
gradient; the derivative of alpha comes from the implicit-function rule, implemented as the
backward pass of a `torch.autograd.Function`:

  active set S = {t : 0 < s_t - tau < 1} (rows with a positive budget),
  binding rows:  d tau = (sum_{t in S} d s_t - d B) / |S|,   d alpha_t = [t in S](d s_t - d tau),
  otherwise:     d alpha_t = [t in S] d s_t.
Its transpose (what backward computes) for an upstream gradient g:
  G = sum_{t in S} g_t,  grad s_t = [t in S](g_t - binding * G / |S|),  grad B = binding * G / |S|.
"""
from __future__ import annotations

import torch

DEFAULT_BISECTION_ITERS = 30


def _is_binding(scores, budget, mask):
  clipped = torch.where(mask, scores.clamp(0.0, 1.0), torch.zeros_like(scores)).sum(-1)
  return (budget > 0) & (clipped > budget)


def _partition(scores, mask, tau):
  excess = scores - tau.unsqueeze(-1)
  active = mask & (excess > 0) & (excess < 1)
  upper = mask & (excess >= 1)
  return excess, active, upper


def _newton_step(scores, budget, mask, lo, hi):
  """Exact root of g(tau) = budget inside a bracket holding no breakpoint."""
  mid = 0.5 * (lo + hi)
  excess, active, upper = _partition(scores, mask, mid)
  g_mid = (torch.where(active, excess, torch.zeros_like(excess)).sum(-1)
           + upper.sum(-1, dtype=torch.float32))
  num_active = active.sum(-1, dtype=torch.float32)
  step = torch.where(num_active > 0, (g_mid - budget) / num_active.clamp_min(1.0),
                     torch.zeros_like(g_mid))
  return torch.minimum(torch.maximum(mid + step, lo), hi)


@torch.no_grad()
def solve_tau_bisection(scores, budget, mask, num_iters: int = DEFAULT_BISECTION_ITERS):
  """tau [...] (0 where the budget does not bind) for float32 scores [..., T] (0 on padding)."""
  binding = _is_binding(scores, budget, mask)
  lo = torch.zeros_like(budget)
  hi = torch.where(mask, scores, torch.zeros_like(scores)).amax(-1).clamp_min(0.0)
  zeros = torch.zeros_like(scores)
  for _ in range(num_iters):
    mid = 0.5 * (lo + hi)
    g_mid = torch.where(mask, (scores - mid.unsqueeze(-1)).clamp(0.0, 1.0), zeros).sum(-1)
    root_below = g_mid < budget
    lo, hi = torch.where(root_below, lo, mid), torch.where(root_below, mid, hi)
  tau = _newton_step(scores, budget, mask, lo, hi)
  return torch.where(binding, tau, torch.zeros_like(tau))


class ClipAtThreshold(torch.autograd.Function):
  """alpha = clip(s - tau, 0, 1) on live tokens, with the implicit-function backward."""

  @staticmethod
  def forward(ctx, scores, budget, mask, tau):  # pylint: disable=arguments-differ
    live = mask & (budget > 0).unsqueeze(-1)
    alpha = torch.where(live, (scores - tau.unsqueeze(-1)).clamp(0.0, 1.0),
                        torch.zeros_like(scores))
    _, active, _ = _partition(scores, mask, tau)
    active = active & (budget > 0).unsqueeze(-1)
    binding = _is_binding(scores, budget, mask)
    ctx.save_for_backward(active, binding)
    return alpha

  @staticmethod
  def backward(ctx, grad_alpha):  # pylint: disable=arguments-differ
    active, binding = ctx.saved_tensors
    g = torch.where(active, grad_alpha, torch.zeros_like(grad_alpha))
    num_active = active.sum(-1, dtype=torch.float32).clamp_min(1.0)
    share = torch.where(binding, g.sum(-1) / num_active, torch.zeros_like(num_active))
    grad_scores = torch.where(active, g - share.unsqueeze(-1), torch.zeros_like(g))
    return grad_scores, share, None, None


def capped_simplex_projection(scores, budget, mask, num_iters: int = DEFAULT_BISECTION_ITERS):
  """float32 weights [..., T] in [0, 1], 0 on masked tokens, spending at most budget [...]."""
  scores = torch.where(mask, scores.float(), torch.zeros((), device=scores.device))
  budget = budget.float()
  tau = solve_tau_bisection(scores.detach(), budget.detach(), mask, num_iters)
  return ClipAtThreshold.apply(scores, budget, mask, tau)
