"""Evaluation, in one place: what the model yields per example, the eval loop over a split, the
metrics, and which metric selects the checkpoint.

Used by the training loop (`train_lib`: validation during training and the final test), by
`clcr_jax.load` (`Predictor.evaluate`) and by the analyses (`analyze.collect`), so all three give
the same numbers for the same variables and split.

  per batch (jit-able)   `batch_outputs(prediction, aux, batch)` -> per-example arrays [B, ...]
  over a split (host)    `Evaluator(config, reader, predict_fn).outputs(state, split)` -> [N, ...]
  metrics (host, f64)    `summarise(outputs, config)` -> results.json's dict for one split
  in the train step      `step_diagnostics(aux, valid, axis, modalities)` -> global means

The diagnostics of the model's aux (level weights omega [B, L], modality weights beta [B, M],
private gates eta [B, M], token-budget participation) are computed here and only here.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax import checkpointing
from clcr_jax import losses
from clcr_jax import metrics as metrics_lib
from data_pipelines import pipeline

# The task metric of each task and whether higher or lower is better: what `eval.select_metric=
# 'auto'` selects the checkpoint on, and what the analyses and sweep curves report. Regression
# uses the task loss, as MMSA selects MOSI/MOSEI checkpoints (KeyEval 'Loss'); with the default
# loss.regression='l1' it is the unrounded MAE.
TASK_METRICS: dict[str, tuple[str, str]] = {
    "classification": ("accuracy", "max"),
    "regression": ("loss", "min"),
    "segment_classification": ("segment_accuracy", "max"),
}
WEIGHTS = ("omega", "beta", "eta")  # aux entries averaged per example: [B, L], [B, M], [B, M]
SUMMARIES = ("shared", "private")   # pooled summaries per level {m: [B, d]} (analyses only)


# ---------------------------------------------------------------------------------------------
# Task metric and model selection
# ---------------------------------------------------------------------------------------------
def task_metric(task: str) -> tuple[str, str]:
  """(metric, 'max' | 'min') of `task` (see TASK_METRICS)."""
  if task not in TASK_METRICS:
    raise ValueError(f"config.model.task must be one of {sorted(TASK_METRICS)}, found {task!r}")
  return TASK_METRICS[task]


def batch_size(config) -> int:
  """The global evaluation batch: `eval.batch_size`, or `train.batch_size` when that is <= 0."""
  return config.eval.batch_size if config.eval.batch_size > 0 else config.train.batch_size


def selection_rule(eval_config, task: str) -> tuple[str, str, str]:
  """(split, metric, mode) of model selection from `config.eval`."""
  metric, mode = eval_config.select_metric, eval_config.select_mode
  if metric == "auto":
    metric, mode = task_metric(task)
  if mode not in ("min", "max"):
    raise ValueError(f"config.eval.select_mode must be 'min' or 'max', found {mode!r}")
  return eval_config.select_on, metric, mode


def is_better(value: float | None, best: float | None, mode: str) -> bool:
  """Whether `value` beats `best` (None: nothing yet); ties keep the earlier one."""
  if value is None or not np.isfinite(value):
    return False
  return best is None or (value < best if mode == "min" else value > best)


# ---------------------------------------------------------------------------------------------
# Per batch: what the model yields per example (jnp; runs inside jit, pmap or on the host)
# ---------------------------------------------------------------------------------------------
def token_counts(aux: Mapping[str, Any]) -> list[dict[str, dict[str, jax.Array]]]:
  """Per level and modality, per example [B]: 'tokens' (valid tokens), 'picked' (valid tokens
  inside the token budget, alpha > 0) and 'mass' (sum of alpha over valid tokens). Empty for a
  model without a token budget (no aux 'alpha')."""
  if aux.get("alpha") is None:
    return []
  return [{m: {"tokens": jnp.sum(mask[m], -1),
               "picked": jnp.sum((alpha[m] > 0) & mask[m], -1),
               "mass": jnp.sum(jnp.where(mask[m], alpha[m].astype(jnp.float32), 0.0), -1)}
           for m in alpha}
          for alpha, mask in zip(aux["alpha"], aux["token_mask"])]


def _over_modalities(level: Mapping[str, Mapping[str, jax.Array]], key: str) -> jax.Array:
  return sum(counts[key] for counts in level.values())


def batch_outputs(prediction, aux: Mapping[str, Any], batch: Mapping[str, Any],
                  detail: bool = False, summaries: bool = False) -> dict[str, Any]:
  """The per-example outputs of one batch.

  Always: prediction, label, valid [B], omega [B, L], beta [B, M], eta [B, M] (when the model
  has them) and participation [B, L] (per example, the fraction of its valid tokens over all
  modalities inside the budget). With `detail` (the analyses): 'levels', per level
  {m: token_counts}, and budget_ratio [B, L] (B_l / T, the same on every row). With `summaries`:
  'shared' and 'private', per level {m: [B, d]} (when the model has them).
  """
  out = {"prediction": prediction, "label": batch["label"], "valid": batch["valid"]}
  out.update({k: aux[k] for k in WEIGHTS if aux.get(k) is not None})
  levels = token_counts(aux)
  if levels:
    out["participation"] = jnp.stack(
        [_over_modalities(level, "picked") / jnp.maximum(_over_modalities(level, "tokens"), 1)
         for level in levels], axis=-1)
    if detail:
      out["levels"] = levels
      ratio = jnp.asarray(aux["budget_ratio"], jnp.float32)
      out["budget_ratio"] = jnp.broadcast_to(ratio, (batch["valid"].shape[0],) + ratio.shape)
  if summaries:
    out.update({k: aux[k] for k in SUMMARIES if aux.get(k)})
  return out


def make_predict_fn(model, detail: bool = False, summaries: bool = False) -> Callable:
  """fn(variables, batch) -> `batch_outputs` of `model` in eval mode (not compiled)."""

  def predict(variables, batch):
    prediction, aux = model.apply(variables, batch["inputs"], batch["masks"], train=False)
    return batch_outputs(prediction, aux, batch, detail, summaries)
  return predict


def make_eval_step(model) -> Callable:
  """The eval step over a train state, in the signature `parallel.DataParallel.compile_eval`
  compiles: fn(state, batch, axis) -> `batch_outputs` (per example; gathered, not reduced)."""
  predict = make_predict_fn(model)

  def eval_step(state, batch, axis: losses.BatchAxis):
    del axis
    return predict(checkpointing.model_variables(state), batch)
  return eval_step


def step_diagnostics(aux, valid, axis: losses.BatchAxis, modalities: Sequence[str]
                     ) -> dict[str, jax.Array]:
  """The train step's diagnostics, means over the global batch's valid rows: omega/level{l},
  beta/<m>, eta/<m>, and per level budget/level{l}_participation (valid tokens inside the budget
  over all valid tokens of the batch) and budget/level{l}_ratio."""
  out = {}
  w = valid.astype(jnp.float32)
  n = jnp.maximum(axis.sum(jnp.sum(w)), 1.0)
  mean_rows = lambda x: axis.sum(jnp.sum(x * w[:, None], 0)) / n
  for name in WEIGHTS:
    if aux.get(name) is not None:
      values = mean_rows(aux[name].astype(jnp.float32))
      labels = [f"level{l}" for l in range(values.shape[0])] if name == "omega" else modalities
      out.update({f"{name}/{k}": values[i] for i, k in enumerate(labels)})
  for l, level in enumerate(token_counts(aux)):
    picked = axis.sum(jnp.sum(_over_modalities(level, "picked") * w))
    tokens = axis.sum(jnp.sum(_over_modalities(level, "tokens") * w))
    out[f"budget/level{l}_participation"] = picked / jnp.maximum(tokens, 1.0)
    out[f"budget/level{l}_ratio"] = aux["budget_ratio"][l]
  return out


# ---------------------------------------------------------------------------------------------
# Over a split (host)
# ---------------------------------------------------------------------------------------------
def _host(x) -> np.ndarray:
  """A host copy; floats widened to float64 (the metrics are computed in float64)."""
  x = np.asarray(x)
  if x.dtype.kind == "f" or (x.dtype.kind == "V" and x.dtype.name.startswith(("bfloat",
                                                                              "float"))):
    return x.astype(np.float64)
  return x


Transform = Callable[[dict[str, Any], int], dict[str, Any]]


class Evaluator:
  """The eval loop: runs `predict_fn(state, batch)` (per-example outputs, e.g. a compiled
  `make_eval_step`) over every batch of a split and concatenates the outputs on the host.

  `state` is whatever `predict_fn` takes (a device train state, or model variables), so the
  training loop and `clcr_jax.load` share the loop. With several processes each feeds its own
  rows (`process_index`, `process_count`) and `predict_fn` returns the gathered global batch.
  """

  def __init__(self, config, reader, predict_fn: Callable, process_index: int = 0,
               process_count: int = 1):
    self.config, self.reader, self.predict_fn = config, reader, predict_fn
    self.process_index, self.process_count = process_index, process_count

  def outputs(self, state, split: str, transform: Transform | None = None,
              backend: str | None = None) -> dict[str, Any]:
    """Per-example outputs [N, ...] over `split`'s batches, padding rows included ('valid').
    `transform(batch, i)` changes batch i before the model sees it (analyses' perturbations)."""
    chunks = []
    for i, batch in enumerate(pipeline.eval_batches(
        self.reader, split, global_batch_size=batch_size(self.config),
        process_index=self.process_index, process_count=self.process_count,
        backend=backend or self.config.data.backend)):
      if transform is not None:
        batch = transform(batch, i)
      chunks.append(jax.device_get(self.predict_fn(state, batch)))
    if not chunks:
      raise ValueError(f"split {split!r} of dataset {self.config.data.name!r} gave no "
                       "evaluation batches")
    return jax.tree.map(lambda *xs: _host(np.concatenate(xs)), *chunks)

  def __call__(self, state, split: str) -> dict[str, Any]:
    """The metrics of `split` (`summarise`)."""
    return summarise(self.outputs(state, split), self.config)


# ---------------------------------------------------------------------------------------------
# Metrics (host, numpy float64)
# ---------------------------------------------------------------------------------------------
def task_loss_numpy(prediction, label, valid, task: str, regression: str) -> float:
  """Mean task loss over valid rows, in float64: L1 or MSE (regression), else cross-entropy
  (per segment for segment_classification)."""
  p = np.asarray(prediction, np.float64)[valid]
  y = np.asarray(label)[valid]
  if task == "regression":
    err = p - y.astype(np.float64)
    return float(np.mean(np.abs(err)) if regression == "l1" else np.mean(err**2))
  logp = p - p.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  picked = np.take_along_axis(logp, y.astype(np.int64)[..., None], -1)[..., 0]
  return float(-picked.mean())


def summarise(outputs: Mapping[str, Any], config) -> dict[str, Any]:
  """The metrics of one split from `Evaluator.outputs`: the task's metrics (metrics_lib), 'loss'
  (`task_loss_numpy`), and the means over valid rows of omega/level{l}, beta/<m>, eta/<m> and
  participation/level{l}."""
  task = config.model.task
  modalities = tuple(config.model.modalities.keys())
  valid = np.asarray(outputs["valid"]).astype(bool)
  result = metrics_lib.metrics_for_task(
      task, outputs["prediction"], outputs["label"], valid,
      num_classes=config.model.num_classes or None, variant=config.eval.regression_variant)
  result["loss"] = task_loss_numpy(outputs["prediction"], outputs["label"], valid, task,
                                   config.loss.regression)
  for name, labels in (("omega", None), ("beta", modalities), ("eta", modalities),
                       ("participation", None)):
    if name in outputs:
      values = np.asarray(outputs[name], np.float64)[valid].mean(0)
      labels = labels or [f"level{l}" for l in range(len(values))]
      result.update({f"{name}/{k}": float(v) for k, v in zip(labels, values)})
  return result
