"""CLCR objective (docs/model.md, Losses), in float32:

  L = L_task + lambda_intra * L_Intra + lambda_inter * (L_pr + L_sp + L_mix) + budget penalty

* L_task: cross-entropy (classification, per segment for AVE), L1 or MSE (regression).
* R(X, Y): whitened cross-correlation of pooled summaries over the batch: standardise columns,
  C = X^T Y / N, R = ||C||_F^2 / d.
* L_Intra = sum_l [sum_{m<m'} R(p_l^m, p_l^m') + sum_m R(p_l^m, s_l^m)]
* L_pr = sum_m sum_{l<l'} R(p_l^m, p_l'^m);  L_sp = sum_m sum_{l != l'} R(s_l^m, p_l'^m)
* L_mix = mean_b sum_{(a, c) in mix_pairs} omega_a omega_c  (shallow-deep by default)
* budget penalty = lambda_budget * sum_l (r_l - target)^2

Batch statistics (R's standardisation, the means) are over the *global* batch. Under jit the
arrays are global already. Under pmap, `BatchAxis(name)` gathers the per-device summaries and
each device returns its share of the global loss, so psum of per-device gradients is the
gradient of the global loss: the same numbers as jit.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from clcr_jax import baseline_losses


# The first release's reduction of the R terms (see reg_reduction below): a run recorded before
# these fields existed ran it, and the PyTorch reference in benchmarks/ implements it.
PAPER_FORM = {"reg_reduction": "sum", "reg_debias": False}


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.lambda_intra = 0.1      # DEFAULT (Losses); the paper sweeps {0.01, 0.05, 0.1, 0.5, 1.0}
  c.lambda_inter = 0.1      # DEFAULT (Losses)
  c.lambda_budget = 0.01    # DEFAULT (Budget): keeps B_l from drifting to dense exchange
  c.budget_target = 0.68    # the paper's best participation ratio
  c.regression = "l1"       # 'l1' (MAE, MMSA family) | 'mse'. DEFAULT (Losses)
  c.mix_pairs = ((0, 2),)   # "incompatible" level pairs for L_mix (shallow, deep). DEFAULT
  c.whiten_eps = 1e-5
  # How the R terms are reduced. 'sum' (the first release): each term is a sum over its pairs
  # of ||C||_F^2 / d, whose noise floor alone (d / N per pair) is ~10x the task loss at d = 128,
  # N = 64. 'mean': each term is the mean over its pairs and over the d^2 entries of C^2, so
  # lambda weighs an average squared correlation in [0, 1] whatever d and the pair count.
  # 'mean' is the DEFAULT (README, CLCR against late fusion).
  c.reg_reduction = "mean"
  # Subtract each entry's expectation 1/N under independence from the 'mean' estimate, so an
  # independent pair scores ~0 at every batch size (a constant: the gradient is unchanged).
  c.reg_debias = True
  return c


@dataclasses.dataclass(frozen=True)
class BatchAxis:
  """Where the batch lives: one array (jit, name=None) or split over a pmap axis `name`."""
  name: str | None = None

  def sum(self, x):
    return jax.lax.psum(x, self.name) if self.name else x

  def gather(self, x, axis: int = 0):
    return jax.lax.all_gather(x, self.name, axis=axis, tiled=True) if self.name else x

  def share(self, x):
    """This device's share of a value every device computes identically."""
    return x / jax.lax.psum(1, self.name) if self.name else x


def task_loss(prediction, label, valid, task: str, regression: str = "l1",
              axis: BatchAxis = BatchAxis()):
  """Mean task loss over valid rows of the global batch (this device's share under pmap).

  prediction: [B, C] logits | [B] values | [B, S, C] logits; label: int[B] | float[B] | int[B, S].
  """
  prediction = prediction.astype(jnp.float32)
  w = valid.astype(jnp.float32)
  if task == "classification":
    per_row = optax.softmax_cross_entropy_with_integer_labels(prediction, label.astype(jnp.int32))
  elif task == "segment_classification":
    per_row = optax.softmax_cross_entropy_with_integer_labels(
        prediction, label.astype(jnp.int32)).mean(axis=-1)
  elif task == "regression":
    err = prediction - label.astype(jnp.float32)
    if regression == "l1":
      per_row = jnp.abs(err)
    elif regression == "mse":
      per_row = err**2
    else:
      raise ValueError(f"config.loss.regression must be 'l1' or 'mse', found {regression!r}")
  else:
    raise ValueError(f"unknown task {task!r}")
  return jnp.sum(per_row * w) / jnp.maximum(axis.sum(jnp.sum(w)), 1.0)


def _standardise(z, w, n, eps):
  """Columns of z [..., N, d] to zero mean, unit variance over the rows weighted by w [N, 1]."""
  z = z.astype(jnp.float32)
  mean = jnp.sum(z * w, -2, keepdims=True) / n
  var = jnp.sum(((z - mean) * w)**2, -2, keepdims=True) / n
  return (z - mean) * jax.lax.rsqrt(var + eps) * w


def cross_correlation(x, y, valid, eps: float = 1e-5):
  """R(X, Y) = ||C||_F^2 / d for X, Y [N, d] over the rows where valid [N] is True."""
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  c = _standardise(x, w, n, eps).T @ _standardise(y, w, n, eps) / n
  return jnp.sum(c**2) / x.shape[-1]


def regulariser_pairs(num_levels: int, num_modalities: int):
  """Static index pairs into the stacked summaries Z = [shared; private] of shape
  [2, L, M, N, d] (flattened to [2 L M, N, d]) for each term of docs/model.md, Losses."""
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


def regularisers(aux: Mapping[str, Any], valid, mix_pairs=((0, 2),), eps: float = 1e-5,
                 axis: BatchAxis = BatchAxis(), reduction: str = "sum",
                 debias: bool = False) -> dict[str, jax.Array]:
  """L_intra, L_pr, L_sp, L_mix from CLCR's aux (zeros where a stream or level is absent).

  reduction='sum': each R term is sum_pairs ||C||_F^2 / d; 'mean': mean over pairs and entries
  of C^2 (minus 1/N with `debias`, N the number of valid rows of the global batch).

  All R terms are computed in one batched contraction over the stacked summaries: one
  standardisation per summary, not per pair, and a small graph to compile.
  """
  zero = jnp.zeros((), jnp.float32)
  shared, private = aux.get("shared"), aux.get("private")
  terms = {"intra": zero, "pr": zero, "sp": zero, "mix": zero}
  if shared is None:  # baselines carry no summaries
    return terms
  if private is not None:
    mods = sorted(shared[0])
    stack = lambda per_level: jnp.stack([jnp.stack([x[m] for m in mods]) for x in per_level])
    z = jnp.stack([stack(shared), stack(private)])             # [2, L, M, N, d]
    z = axis.gather(z, axis=3)                                 # the global batch
    w = axis.gather(valid).astype(jnp.float32)[:, None]
    n = jnp.maximum(jnp.sum(w), 1.0)
    z = _standardise(z, w, n, eps).reshape((-1,) + z.shape[-2:])  # [2 L M, N, d]
    for name, pairs in regulariser_pairs(len(shared), len(mods)).items():
      if not pairs:
        continue
      a, b = (jnp.asarray(i) for i in zip(*pairs))
      c = jnp.einsum("knd,kne->kde", z[a], z[b]) / n
      if reduction == "sum":
        value = jnp.sum(c**2) / z.shape[-1]
      elif reduction == "mean":
        value = jnp.mean(c**2) - (1.0 / n if debias else 0.0)
      else:
        raise ValueError(f"config.loss.reg_reduction must be 'sum' or 'mean', found {reduction!r}")
      terms[name] = axis.share(value)
  omega = aux.get("omega")
  pairs = [(a, c) for a, c in mix_pairs if max(a, c) < len(shared)]
  if omega is not None and pairs:
    w = valid.astype(jnp.float32)
    per_row = sum(omega[:, a] * omega[:, c] for a, c in pairs)
    terms["mix"] = jnp.sum(per_row * w) / jnp.maximum(axis.sum(jnp.sum(w)), 1.0)
  return terms


def budget_penalty(aux, target: float):
  ratio = aux.get("budget_ratio")
  if ratio is None:
    return jnp.zeros((), jnp.float32)
  return jnp.sum((ratio.astype(jnp.float32) - target)**2)


def total_loss(prediction, aux, batch, loss_config, task: str,
               axis: BatchAxis = BatchAxis(),
               model_config=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training objective and its terms (for logging).

  Returns (total, {'task', 'intra', 'inter', 'pr', 'sp', 'mix', 'budget', 'total'}); under pmap
  each value is this device's share, so psum gives the global number. A model whose aux carries
  its own objective's inputs (MISA: aux['misa']) adds its terms, weighted by `model_config`
  (config.model), e.g. 'misa_sim', 'misa_diff', 'misa_recon'.
  """
  valid = batch["valid"]
  terms = {"task": task_loss(prediction, batch["label"], valid, task, loss_config.regression,
                             axis)}
  terms.update(regularisers(aux, valid, tuple(loss_config.mix_pairs), loss_config.whiten_eps,
                            axis, loss_config.reg_reduction,
                            loss_config.reg_debias))
  terms["inter"] = terms["pr"] + terms["sp"] + terms["mix"]
  terms["budget"] = axis.share(budget_penalty(aux, loss_config.budget_target))
  total = (terms["task"] + loss_config.lambda_intra * terms["intra"] +
           loss_config.lambda_inter * terms["inter"] + loss_config.lambda_budget * terms["budget"])
  if aux.get("misa") is not None:
    if model_config is None:
      raise ValueError("aux has MISA's vectors: pass model_config (config.model) to total_loss "
                       "for the MISA loss weights")
    mc = model_config.misa
    terms.update(baseline_losses.misa_terms(aux["misa"], valid, mc.cmd_moments, axis))
    total = total + (mc.sim_weight * terms["misa_sim"] + mc.diff_weight * terms["misa_diff"] +
                     mc.recon_weight * terms["misa_recon"])
  terms["total"] = total
  return total, terms
