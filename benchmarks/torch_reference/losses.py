"""CLCR training objective in PyTorch (same terms and batching as clcr_jax/losses.py), float32.

  L = L_task + lambda_intra L_Intra + lambda_inter (L_pr + L_sp + L_mix) + lambda_budget penalty
R(X, Y) = ||C||_F^2 / d with C the cross-correlation of batch-standardised columns; all R terms
are computed in one batched contraction over the stacked summaries [2, L, M, N, d].
"""
from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F


def regulariser_pairs(num_levels: int, num_modalities: int):
  """Index pairs into the flattened [shared; private] stack [2 L M] for each R term."""
  idx = lambda kind, l, m: (kind * num_levels + l) * num_modalities + m
  levels, mods = range(num_levels), range(num_modalities)
  shared, private = 0, 1
  return {
      "intra": [(idx(private, l, a), idx(private, l, b)) for l in levels
                for a, b in itertools.combinations(mods, 2)] +
               [(idx(private, l, m), idx(shared, l, m)) for l in levels for m in mods],
      "pr": [(idx(private, l, m), idx(private, k, m)) for m in mods
             for l, k in itertools.combinations(levels, 2)],
      "sp": [(idx(shared, l, m), idx(private, k, m)) for m in mods
             for l in levels for k in levels if l != k],
  }


def task_loss(prediction, label, valid, task: str, regression: str = "l1"):
  prediction = prediction.float()
  w = valid.float()
  if task == "classification":
    per_row = F.cross_entropy(prediction, label.long(), reduction="none")
  elif regression == "l1":
    per_row = (prediction - label.float()).abs()
  else:
    per_row = (prediction - label.float())**2
  return (per_row * w).sum() / w.sum().clamp_min(1.0)


def regularisers(aux, valid, mix_pairs=((0, 2),), eps: float = 1e-5):
  shared, private = aux["shared"], aux["private"]
  mods = sorted(shared[0])
  stack = lambda per_level: torch.stack([torch.stack([x[m] for m in mods]) for x in per_level])
  z = torch.stack([stack(shared), stack(private)]).float()              # [2, L, M, N, d]
  w = valid.float()[:, None]
  n = w.sum().clamp_min(1.0)
  mean = (z * w).sum(-2, keepdim=True) / n
  var = (((z - mean) * w)**2).sum(-2, keepdim=True) / n
  z = ((z - mean) * torch.rsqrt(var + eps) * w).reshape((-1,) + z.shape[-2:])  # [2LM, N, d]
  terms = {}
  for name, pairs in regulariser_pairs(len(shared), len(mods)).items():
    a, b = (torch.tensor(i, device=z.device) for i in zip(*pairs))
    c = torch.einsum("knd,kne->kde", z[a], z[b]) / n
    terms[name] = (c**2).sum() / z.shape[-1]
  omega, wv = aux["omega"], valid.float()
  per_row = sum(omega[:, a] * omega[:, c] for a, c in mix_pairs)
  terms["mix"] = (per_row * wv).sum() / wv.sum().clamp_min(1.0)
  return terms


def total_loss(prediction, aux, batch, loss_config, task: str):
  """(total, terms) as clcr_jax.losses.total_loss under jit (one global batch)."""
  valid = batch["valid"]
  terms = {"task": task_loss(prediction, batch["label"], valid, task, loss_config.regression)}
  terms.update(regularisers(aux, valid, tuple(loss_config.mix_pairs), loss_config.whiten_eps))
  terms["inter"] = terms["pr"] + terms["sp"] + terms["mix"]
  terms["budget"] = ((aux["budget_ratio"].float() - loss_config.budget_target)**2).sum()
  total = (terms["task"] + loss_config.lambda_intra * terms["intra"]
           + loss_config.lambda_inter * terms["inter"]
           + loss_config.lambda_budget * terms["budget"])
  terms["total"] = total
  return total, terms


def make_optimizer(model: torch.nn.Module, learning_rate: float = 1e-3, momentum: float = 0.9,
                   weight_decay: float = 1e-4) -> torch.optim.Optimizer:
  """The paper's SGD (= optax add_decayed_weights + sgd(momentum), as clcr_jax/optim.py)."""
  return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum,
                         weight_decay=weight_decay)
