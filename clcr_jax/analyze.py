"""Analyses of a trained run and of a sweep: robustness, missing modalities, weights, budget,
leakage probes.

  python -m clcr_jax.analyze --workdir=runs/synthetic [--split=test] [--out=runs/synthetic/analysis]
  python -m clcr_jax.analyze --workdir=runs/synthetic --probes        # the leakage probes only
  python -m clcr_jax.analyze --sweep=runs/sweeps/budget_ks [--x=participation/mean] [--metric=...]

From a run (the selected checkpoint, `clcr_jax.load`), on one split, into --out (default
WORKDIR/analysis):
  noise.json, noise.png      the task metric and loss when Gaussian noise of standard deviation
                             sigma * std_m is added to one modality (or all of them) at test time;
                             std_m is that modality's input standard deviation over the split's
                             valid tokens, so sigma is relative and comparable across modalities
  missing.json, missing.png  the metrics with one modality missing (its inputs zeroed, its mask
                             all False), and with only one modality present
  weights.json, weights.png  mean modality weights beta, level weights omega and private gates
                             eta per class (classification; per-segment tasks by each clip's most
                             frequent segment class) or per label sign (regression: negative /
                             zero / positive)
  participation.json, .png   per level and modality: the fraction of valid tokens inside the token
                             budget (alpha > 0) and the mean budget weight per valid token
  analysis.json              all of the above, with the run's identity
The task metric is `evaluate.TASK_METRICS`' (the one `eval.select_metric='auto'` selects on):
accuracy (classification), the task loss (regression; the unrounded MAE with the default L1 loss)
or segment accuracy; with sigma 0 and no modality removed every number equals the run's
results.json on that split (the same `evaluate` code computes both).

With --probes, instead (`leakage_probes`; datasets whose reader returns its true factors, i.e.
'synthetic'; models with pooled summaries, i.e. CLCR):
  leakage_probes.json, .png  held-out linear (ridge) probes from the pooled shared and the pooled
                             private summaries (concatenated over levels and modalities) to each
                             true factor: accuracy for binary factors (label bits, event types),
                             R^2 for continuous ones (event times; per modality, the nuisance walk
                             and |bursts| averaged over valid tokens); headline: the nuisance R^2
                             from the shared summaries and the label bits' accuracy from the
                             private ones

From a sweep directory (experiments/sweep.py output), into DIR/analysis: sweep_curve.json and
sweep_curve.png: the metric (mean +- std over seeds) against a swept key or a measured quantity
(default for budget sweeps: the measured participation), or per point as bars.

This module imports neither TensorFlow nor matplotlib at import time (plots import matplotlib
with the Agg backend when they are drawn).
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from clcr_jax import evaluate
from clcr_jax import inference
from clcr_jax import metric_writers
from clcr_jax import metrics as metrics_lib
from data_pipelines import pipeline

DEFAULT_SIGMAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
ALL = "all"
# The progress lines of the long analyses (passes over a split, probe fits); the CLI prints
# them on stderr, a notebook sees them only if it turns this logger's INFO level on.
_LOG = logging.getLogger(__name__)


def _progress(total: int, unit: str, label: str) -> metric_writers.Progress:
  return metric_writers.Progress(total, unit, label=label, per_unit=True, log=_LOG.info)


# ---------------------------------------------------------------------------------------------
# Running a predictor over a split, optionally perturbed
# ---------------------------------------------------------------------------------------------
Transform = evaluate.Transform


def collect(predictor, reader, split: str, transform: Transform | None = None,
            backend: str | None = None, summaries: bool = False) -> dict[str, Any]:
  """The predictions and diagnostics of `predictor` on every row of `split` (numpy arrays over
  the split's batches, padding rows included, see 'valid'): `evaluate.batch_outputs` with its
  detail (per level and modality 'tokens', 'picked' and 'mass' [N] under 'levels', and
  budget_ratio [N, L]) and, with `summaries`, the pooled 'shared' and 'private' summaries."""
  return predictor.outputs(split, reader, transform, backend, detail=True, summaries=summaries)


# ---------------------------------------------------------------------------------------------
# Perturbations
# ---------------------------------------------------------------------------------------------
def _token_mask_like(x: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
  """The mask broadcast over x when x is laid out [B, T, ...] on the mask's tokens."""
  if x.shape[:2] == mask.shape:
    return mask.reshape(mask.shape + (1,) * (x.ndim - 2))
  return None


def input_std(predictor, reader, split: str, backend: str | None = None) -> dict[str, float]:
  """Per modality, the standard deviation of the inputs over the split's valid rows (and valid
  tokens, for token-aligned inputs)."""
  s1, s2, n = collections.Counter(), collections.Counter(), collections.Counter()
  config = predictor.config
  for batch in pipeline.eval_batches(reader, split, global_batch_size=evaluate.batch_size(config),
                                     backend=backend or config.data.backend):
    valid = np.asarray(batch["valid"], bool)
    for m, x in batch["inputs"].items():
      x = np.asarray(x, np.float64)[valid]
      mask = _token_mask_like(x, np.asarray(batch["masks"][m], bool)[valid])
      weight = np.broadcast_to(mask, x.shape) if mask is not None else np.ones_like(x, bool)
      s1[m] += float(x[weight].sum())
      s2[m] += float((x[weight] ** 2).sum())
      n[m] += int(weight.sum())
  out = {}
  for m in s1:
    mean = s1[m] / max(n[m], 1)
    out[m] = float(math.sqrt(max(s2[m] / max(n[m], 1) - mean**2, 0.0)))
  return out


def gaussian_noise(modalities: Sequence[str], sigma: float, std: Mapping[str, float],
                   seed: int = 0) -> Transform:
  """Adds N(0, (sigma * std_m)^2) to each of `modalities` on valid tokens (padding stays as is).
  The noise of batch i is a pure function of (seed, i), so every call sees the same noise."""

  def transform(batch, i):
    rng = np.random.default_rng([seed, i, int(round(sigma * 1000))])
    inputs = dict(batch["inputs"])
    for m in sorted(batch["inputs"]):
      x = np.asarray(inputs[m], np.float32)
      noise = rng.standard_normal(x.shape).astype(np.float32) * np.float32(sigma * std[m])
      if m not in modalities:
        continue
      mask = _token_mask_like(x, np.asarray(batch["masks"][m], bool))
      if mask is not None:
        noise = noise * mask
      inputs[m] = x + noise
    return dict(batch, inputs=inputs)
  return transform


def drop_modalities(missing: Sequence[str]) -> Transform:
  """Makes `missing` absent: inputs zeroed and masks all False."""

  def transform(batch, i):
    del i
    inputs, masks = dict(batch["inputs"]), dict(batch["masks"])
    for m in missing:
      inputs[m] = np.zeros_like(inputs[m])
      masks[m] = np.zeros_like(masks[m], dtype=bool)
    return dict(batch, inputs=inputs, masks=masks)
  return transform


# ---------------------------------------------------------------------------------------------
# Analyses
# ---------------------------------------------------------------------------------------------
def noise_robustness(predictor, reader, split: str, sigmas=DEFAULT_SIGMAS, seed: int = 0,
                     backend: str | None = None, clean=None) -> dict[str, Any]:
  config = predictor.config
  modalities = tuple(config.model.modalities.keys())
  metric, mode = evaluate.task_metric(config.model.task)
  std = input_std(predictor, reader, split, backend)
  clean = clean if clean is not None else evaluate.summarise(
      collect(predictor, reader, split, backend=backend), config)
  curves = {}
  progress = _progress((len(modalities) + 1) * sum(s != 0 for s in sigmas), "pass",
                       "noise: passes")
  done = 0
  for target in (*modalities, ALL):
    targets = modalities if target == ALL else (target,)
    points = []
    for sigma in sigmas:
      if sigma == 0:
        result = clean
      else:
        result = evaluate.summarise(collect(
            predictor, reader, split, gaussian_noise(targets, sigma, std, seed), backend), config)
        done += 1
        progress.log(done, f"({target}, sigma {sigma:g})")
      points.append({"sigma": float(sigma), metric: result.get(metric),
                     "loss": result.get("loss")})
    curves[target] = points
  return {"metric": metric, "mode": mode, "split": split, "sigmas": [float(s) for s in sigmas],
          "input_std": std, "seed": seed, "curves": curves,
          "note": "noise N(0, (sigma * input_std[m])^2) on the valid tokens of the noisy modality"}


def missing_modalities(predictor, reader, split: str, backend: str | None = None,
                       clean=None) -> dict[str, Any]:
  config = predictor.config
  modalities = tuple(config.model.modalities.keys())
  metric, mode = evaluate.task_metric(config.model.task)
  clean = clean if clean is not None else evaluate.summarise(
      collect(predictor, reader, split, backend=backend), config)
  conditions = [{"condition": "all present", "missing": [], **_pick(clean, metric)}]
  progress = _progress(len(modalities) * (2 if len(modalities) > 2 else 1), "pass",
                       "missing: passes")

  def run(condition: str, missing: list[str]) -> None:
    result = evaluate.summarise(
        collect(predictor, reader, split, drop_modalities(missing), backend), config)
    conditions.append({"condition": condition, "missing": missing, **_pick(result, metric)})
    progress.log(len(conditions) - 1, f"({condition})")

  for m in modalities:
    run(f"without {m}", [m])
  if len(modalities) > 2:
    for m in modalities:
      run(f"only {m}", [o for o in modalities if o != m])
  return {"metric": metric, "mode": mode, "split": split, "conditions": conditions,
          "note": "a missing modality has zero inputs and an all-False mask"}


def _pick(result: Mapping[str, Any], metric: str) -> dict[str, Any]:
  return {metric: result.get(metric), "loss": result.get("loss")}


def _groups(label: np.ndarray, task: str, class_names=None,
            num_classes: int = 0) -> tuple[np.ndarray, list[str]]:
  """Group id per row and the group names (classes, or the sign of a regression label)."""
  label = np.asarray(label)
  if task == "regression":
    y = label.reshape(len(label), -1)[:, 0].astype(np.float64)
    names = ["negative", "zero", "positive"]
    return np.where(y < 0, 0, np.where(y > 0, 2, 1)), names
  if task == "segment_classification":
    rows = label.reshape(len(label), -1).astype(np.int64)
    ids = np.array([np.bincount(row).argmax() for row in rows], np.int64)
  else:
    ids = label.astype(np.int64).reshape(-1)
  num = max(int(num_classes or 0), int(ids.max()) + 1 if ids.size else 0)
  names = list(class_names)[:num] if class_names and len(class_names) >= num else \
      [str(c) for c in range(num)]
  return ids, names


def weights_by_group(outputs: Mapping[str, Any], config, class_names=None) -> dict[str, Any]:
  modalities = list(config.model.modalities.keys())
  valid = outputs["valid"]
  ids, names = _groups(outputs["label"][valid], config.model.task, class_names,
                       config.model.get("num_classes", 0))
  out = {"grouping": "label sign" if config.model.task == "regression" else "class",
         "groups": names, "count": [int((ids == g).sum()) for g in range(len(names))],
         "modalities": modalities}
  for name in ("beta", "omega", "eta"):
    if name not in outputs:
      out[name] = None
      continue
    values = outputs[name][valid]
    out[name] = [values[ids == g].mean(0).tolist() if (ids == g).any() else None
                 for g in range(len(names))]
    out[f"{name}_overall"] = values.mean(0).tolist()
  if "omega" in outputs:
    out["levels"] = [f"level{l}" for l in range(outputs["omega"].shape[1])]
  return out


def participation(outputs: Mapping[str, Any], config) -> dict[str, Any] | None:
  if not outputs.get("levels"):
    return None
  valid = outputs["valid"]
  modalities = list(config.model.modalities.keys())
  rate, mass = [], []
  for level in outputs["levels"]:
    r_row, m_row = [], []
    for m in modalities:
      d = level[m]
      tokens = d["tokens"][valid]
      has = tokens > 0
      r_row.append(float((d["picked"][valid][has] / tokens[has]).mean()) if has.any() else None)
      m_row.append(float((d["mass"][valid][has] / tokens[has]).mean()) if has.any() else None)
    rate.append(r_row)
    mass.append(m_row)
  return {"levels": [f"level{l}" for l in range(len(rate))], "modalities": modalities,
          "participation": rate, "alpha_mass": mass,
          "overall": outputs["participation"][valid].mean(0).tolist(),
          "budget_ratio": outputs["budget_ratio"][valid].mean(0).tolist(),
          "note": "participation: fraction of an example's valid tokens with alpha > 0; "
                  "alpha_mass: mean alpha per valid token; overall: over all modalities (as "
                  "results.json participation/level{l}); budget_ratio: B_l / T"}


# ---------------------------------------------------------------------------------------------
# Leakage probes: linear read-outs of the true factors from the pooled summaries
# ---------------------------------------------------------------------------------------------
# Ridge penalties tried, as multiples of the training rows (features are standardised, so each
# column's squared norm is the number of rows); the one with the lowest leave-one-out error on
# the fitting half is kept.
PROBE_RIDGES = tuple(10.0**k for k in range(-4, 4))
# How a token-aligned factor {m: [N, T, C]} becomes one number per example and channel: the mean
# over valid tokens, or the mean of |x| (bursts have zero mean; their strength is the signal).
TOKEN_FACTOR_CHANNELS = {"nuisance": (("walk", "mean"), ("bursts", "mean_abs"))}


def fit_probe(features: np.ndarray, target: np.ndarray, kind: str, seed: int = 0,
              ridges: Sequence[float] = PROBE_RIDGES) -> dict[str, Any]:
  """A linear probe from features [N, P] to target [N], scored on a held-out half.

  The rows are split in two halves by a permutation drawn from `seed`; on the first, features
  are standardised and a ridge regression (float64, closed form through the SVD, with
  intercept) is fitted, its penalty chosen among `ridges` (x rows) by leave-one-out error; the
  second half scores it. kind 'binary': the two target values become -1 / +1 and the score is
  the accuracy of the prediction's sign; chance is the accuracy of always answering the fitting
  half's majority value. kind 'continuous': the score is R^2 = 1 - SSE / SST on the held-out
  half (SST around the held-out mean; can be negative); chance is 0. Rows with a non-finite
  target are left out. Returns {'score', 'chance', 'ridge', 'rows': (fit, held out)}.
  """
  x = np.asarray(features, np.float64)
  y = np.asarray(target, np.float64)
  if x.ndim != 2 or y.shape != (len(x),):
    raise ValueError(f"fit_probe expects features [N, P] and target [N]; found {x.shape} and "
                     f"{y.shape}")
  if kind not in ("binary", "continuous"):
    raise ValueError(f"fit_probe: kind must be 'binary' or 'continuous', found {kind!r}")
  keep = np.isfinite(y) & np.isfinite(x).all(1)
  x, y = x[keep], y[keep]
  if kind == "binary":
    values = np.unique(y)
    if len(values) != 2:
      raise ValueError(f"fit_probe: a binary target needs exactly 2 values, found {values[:5]}")
    y = np.where(y == values[1], 1.0, -1.0)
  if len(y) < 4:
    raise ValueError(f"fit_probe needs at least 4 rows with finite values, found {len(y)}")
  order = np.random.default_rng(seed).permutation(len(y))
  fit, held = order[:len(y) // 2], order[len(y) // 2:]
  mean, std = x[fit].mean(0), x[fit].std(0)
  std = np.where(std > 1e-12, std, 1.0)  # constant columns stay (at zero) instead of dividing by 0
  xf, xh = (x[fit] - mean) / std, (x[held] - mean) / std
  y_mean = y[fit].mean()
  u, sv, vt = np.linalg.svd(xf, full_matrices=False)
  rank = sv > 1e-10 * max(float(sv.max(initial=0.0)), 1e-300)
  u, sv, vt = u[:, rank], sv[rank], vt[rank]
  uty = u.T @ (y[fit] - y_mean)
  best = None
  for ridge in ridges:
    lam = ridge * len(fit)
    shrink = sv**2 / (sv**2 + lam)
    residual = (y[fit] - y_mean) - u @ (shrink * uty)
    # Leave-one-out residuals of a ridge fit; 1/n is the intercept's share of the leverage.
    leverage = (u**2) @ shrink + 1.0 / len(fit)
    loo = float(np.mean((residual / np.maximum(1.0 - leverage, 1e-12))**2))
    if best is None or loo < best[0]:
      best = (loo, ridge, vt.T @ (sv / (sv**2 + lam) * uty))
  _, ridge, weights = best
  prediction = xh @ weights + y_mean
  truth = y[held]
  if kind == "binary":
    score = float(np.mean(np.where(prediction >= 0, 1.0, -1.0) == truth))
    majority = 1.0 if (y[fit] > 0).mean() >= 0.5 else -1.0
    chance = float(np.mean(truth == majority))
  else:
    sst = float(np.sum((truth - truth.mean())**2))
    score = 1.0 - float(np.sum((truth - prediction)**2)) / sst if sst > 0 else None
    chance = 0.0
  return {"score": score, "chance": chance, "ridge": ridge, "rows": (len(fit), len(held))}


def probe_targets(factors: Mapping[str, Any], masks: Mapping[str, np.ndarray] | None = None
                  ) -> tuple[dict[str, tuple[np.ndarray, str]], dict[str, str]]:
  """The probe targets of a reader's factors: ({name: (float64[N], kind)}, {name: why skipped}).

  A factor [N] of integers with two values is 'binary' (e.g. a label bit), one of floats is
  'continuous' (e.g. an event time). A token-aligned factor {m: [N, T_m, C]} (the nuisance)
  gives one continuous target per modality and channel, '<factor>_<channel>/<m>', summarised
  over the example's valid tokens (`masks` {m: bool[N, T_m]}) as TOKEN_FACTOR_CHANNELS says (the
  mean by default); an example without valid tokens gets NaN (left out of that probe).
  """
  targets, skipped = {}, {}
  for name in sorted(factors):
    value = factors[name]
    if isinstance(value, Mapping):
      for m in sorted(value):
        x = np.asarray(value[m], np.float64)
        x = x[..., None] if x.ndim == 2 else x
        if masks is None or m not in masks:
          raise ValueError(f"factor {name!r}: modality {m!r} is token-aligned [N, T, C] and "
                           f"needs its mask; masks given for {sorted(masks or {})}")
        mask = np.asarray(masks[m], bool)
        if x.ndim != 3 or x.shape[:2] != mask.shape:
          raise ValueError(f"factor {name}/{m}: expected [N, T, C] matching the mask "
                           f"{mask.shape}, found {x.shape}")
        count = mask.sum(1)
        channels = TOKEN_FACTOR_CHANNELS.get(
            name, tuple((f"c{c}", "mean") for c in range(x.shape[2])))
        if len(channels) != x.shape[2]:
          raise ValueError(f"factor {name}/{m}: expected {len(channels)} channels "
                           f"{[c for c, _ in channels]}, found {x.shape[2]}")
        for c, (channel, how) in enumerate(channels):
          v = np.abs(x[..., c]) if how == "mean_abs" else x[..., c]
          with np.errstate(invalid="ignore", divide="ignore"):
            summary = np.where(mask, v, 0.0).sum(1) / count
          targets[f"{name}_{channel}/{m}"] = (np.where(count > 0, summary, np.nan), "continuous")
      continue
    x = np.asarray(value)
    if x.ndim != 1:
      skipped[name] = f"shape {x.shape}: only [N] factors and {{m: [N, T, C]}} are probed"
      continue
    distinct = np.unique(x[np.isfinite(x)] if x.dtype.kind == "f" else x)
    if len(distinct) < 2:
      skipped[name] = "constant"
    elif x.dtype.kind in "biu":
      if len(distinct) == 2:
        targets[name] = (x.astype(np.float64), "binary")
      else:
        skipped[name] = f"categorical with {len(distinct)} values (only binary factors are probed)"
    else:
      targets[name] = (x.astype(np.float64), "continuous")
  return targets, skipped


def _summary_features(outputs: Mapping[str, Any], kind: str, modalities: Sequence[str]
                      ) -> np.ndarray | None:
  """The pooled summaries of `kind` of the valid rows, concatenated over levels and modalities
  (level-major): float64[N, L * M * d], or None when the model has none."""
  levels = outputs.get(kind)
  if not levels:
    return None
  valid = outputs["valid"]
  return np.concatenate([level[m][valid] for level in levels for m in modalities], axis=1)


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def leakage_probes(predictor, reader, split: str, backend: str | None = None, seed: int = 0,
                   ridges: Sequence[float] = PROBE_RIDGES, outputs=None) -> dict[str, Any]:
  """Linear probes from the pooled shared and private summaries to the reader's true factors.

  The model runs over `split` (`collect(..., summaries=True)`, or pass its `outputs`); the
  features are the pooled summaries concatenated over levels and modalities, shared [N, L M d]
  and private [N, L M d]; the targets are `reader.factors[split]` (`probe_targets`), each
  probed by `fit_probe` (held-out half of the split; binary factors: accuracy, continuous
  ones: R^2). Returns {'shared': {target: score}, 'private': {target: score} or None (a model
  without a private stream, e.g. ablation no_intraced), 'chance', 'kind', 'ridge', and
  'headline': nuisance_to_shared_r2 (mean R^2 of the nuisance targets from the shared
  summaries: how much nuisance reaches the shared channel), label_in_private_accuracy (mean
  accuracy of the label bits `reader.label_factors` from the private summaries: how much label
  information stays private), and their counterparts for contrast}.
  Raises ValueError for a reader without factors or a model without pooled summaries.
  """
  config = predictor.config
  modalities = tuple(config.model.modalities.keys())
  factors = getattr(reader, "factors", None)
  if not factors:
    raise ValueError(f"dataset {config.data.name!r} provides no true factors (reader.factors "
                     "is missing); leakage probes need a reader that returns them, e.g. "
                     "'synthetic'")
  if split not in factors:
    raise ValueError(f"dataset {config.data.name!r} has factors for splits {sorted(factors)}, "
                     f"not {split!r}")
  if outputs is None:
    outputs = collect(predictor, reader, split, backend=backend, summaries=True)
  shared = _summary_features(outputs, "shared", modalities)
  if shared is None:
    raise ValueError(f"model {config.model.name!r} has no pooled shared/private summaries "
                     "(aux 'shared'); leakage probes need CLCR (model.name='clcr')")
  private = _summary_features(outputs, "private", modalities)
  n = reader.num_examples(split)
  rows = reader.load_examples(split, np.arange(n), train=False)
  if len(shared) != n or not np.array_equal(np.asarray(outputs["label"])[outputs["valid"]],
                                            np.asarray(rows["label"])):
    raise ValueError(f"the model's outputs on {split!r} ({len(shared)} valid rows) are not the "
                     f"reader's {n} rows in order; cannot align them with the factors")
  targets, skipped = probe_targets(factors[split], rows["masks"])
  result = {"shared": {}, "private": {} if private is not None else None, "chance": {},
            "kind": {}, "ridge": {"shared": {}, "private": {} if private is not None else None}}
  streams = [(s, f) for s, f in (("shared", shared), ("private", private)) if f is not None]
  progress = _progress(len(targets) * len(streams), "fit", "probes: fits")
  fits = 0
  for name, (target, kind) in targets.items():
    result["kind"][name] = "accuracy" if kind == "binary" else "r2"
    for stream, features in streams:
      probe = fit_probe(features, target, kind, seed, ridges)
      fits += 1
      progress.log(fits, f"({name} from {stream})")
      result[stream][name] = probe["score"]
      result["ridge"][stream][name] = probe["ridge"]
      result["chance"][name] = probe["chance"]
  label_bits = [b for b in getattr(reader, "label_factors", ()) if b in targets]
  nuisance = [t for t in targets if t.startswith("nuisance")]
  pick = lambda stream, names: (_mean(result[stream].get(t) for t in names)
                                if result[stream] is not None and names else None)
  result["headline"] = {
      "nuisance_to_shared_r2": pick("shared", nuisance),
      "nuisance_to_private_r2": pick("private", nuisance),
      "label_in_private_accuracy": pick("private", label_bits),
      "label_in_shared_accuracy": pick("shared", label_bits),
      "label_chance_accuracy": _mean(result["chance"][b] for b in label_bits) if label_bits
                               else None}
  result.update(
      split=split, model=config.model.name, dataset=config.data.name, rows=n,
      label_factors=label_bits, nuisance_factors=nuisance, skipped=skipped,
      features={"shared": int(shared.shape[1]),
                "private": None if private is None else int(private.shape[1]),
                "levels": len(outputs["shared"]), "modalities": list(modalities)},
      note="linear ridge probes fitted on one half of the split, scored on the other: "
           "accuracy of the sign for binary factors, held-out R^2 for continuous ones "
           "(nuisance: per modality, mean walk and mean |bursts| over valid tokens)")
  return result


def analyze_probes(workdir: str, split: str = "test", which: str = "best",
                   backend: str | None = None, seed: int = 0) -> dict[str, Any]:
  """`leakage_probes` of one run's checkpoint, JSON-safe, with the run's identity."""
  predictor = inference.load(workdir, which)
  reader = predictor.reader()
  if split not in reader.splits:
    raise ValueError(f"split {split!r} is not in the run's dataset; it has {list(reader.splits)}")
  result = leakage_probes(predictor, reader, split, backend, seed)
  result.update(workdir=os.path.abspath(workdir), checkpoint=which, step=predictor.step,
                seed=seed)
  return metrics_lib.json_safe(result)


def analyze_run(workdir: str, split: str = "test", sigmas=DEFAULT_SIGMAS, seed: int = 0,
                which: str = "best", backend: str | None = None) -> dict[str, Any]:
  """Every analysis of one run, as a JSON-safe dict (see the module docstring)."""
  predictor = inference.load(workdir, which)
  reader = predictor.reader()
  if split not in reader.splits:
    raise ValueError(f"split {split!r} is not in the run's dataset; it has {list(reader.splits)}")
  config = predictor.config
  outputs = collect(predictor, reader, split, backend=backend)
  clean = evaluate.summarise(outputs, config)
  class_names = getattr(reader.task, "class_names", None)
  result = {
      "workdir": os.path.abspath(workdir), "checkpoint": which, "step": predictor.step,
      "split": split, "task": config.model.task, "model": config.model.name,
      "dataset": config.data.name, "seed": config.seed, "metrics": clean,
      "noise": noise_robustness(predictor, reader, split, sigmas, seed, backend, clean),
      "missing": missing_modalities(predictor, reader, split, backend, clean),
      "weights": weights_by_group(outputs, config, class_names),
      "participation": participation(outputs, config),
  }
  return metrics_lib.json_safe(result)


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------
def read_sweep(sweep_dir: str) -> dict[str, Any]:
  """summary.csv (+ sweep.json) of a sweep directory as {'points': [...], 'swept_keys': [...]}
  with each point's label, overrides (as strings), n and {metric: (mean, std)}."""
  path = os.path.join(sweep_dir, "summary.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: run `python -m experiments.sweep ... "
                            f"--workdir_root={sweep_dir}` (or --summarize) first")
  manifest = {}
  if os.path.exists(os.path.join(sweep_dir, "sweep.json")):
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
      manifest = json.load(f)
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  swept = manifest.get("swept_keys")
  if swept is None:
    swept = [c for c in (rows[0].keys() if rows else []) if "." in c and ":" not in c]
  points = []
  for row in rows:
    stats = {}
    for column, value in row.items():
      if column.endswith(":mean") and value != "":
        key = column[:-len(":mean")]
        stats[key] = (float(value), float(row.get(f"{key}:std") or "nan"))
    points.append({"point": row["point"], "label": row["label"], "n": int(row["n"]),
                   "overrides": {k: row[k] for k in swept if row.get(k, "") != ""},
                   "metrics": stats})
  return {"name": manifest.get("name", os.path.basename(os.path.normpath(sweep_dir))),
          "swept_keys": swept, "points": points}


def _float(text: str) -> float | None:
  try:
    value = float(text)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def _default_metric(points) -> str:
  """The first task metric the points have; 'loss' (regression) last, as every run has one."""
  keys = {k for p in points for k in p["metrics"]}
  wanted = [evaluate.task_metric(t)[0] for t in ("classification", "segment_classification",
                                                 "regression")]
  for metric in wanted:
    if metric in keys:
      return metric
  raise ValueError(f"none of {wanted} among the sweep's metrics {sorted(keys)}")


def sweep_curve(sweep_dir: str, x: str | None = None, metric: str | None = None) -> dict[str, Any]:
  """The metric of each point (mean, std over seeds) against `x`.

  x: a swept key, a metric (e.g. 'participation/mean': the measured participation), or
  'point' (one bar per point). Default: 'participation/mean' when a budget key is swept, else
  the swept key when there is one numeric key, else 'point'. With several numeric swept keys
  and x one of them, the curve holds the points whose other keys take their most common value
  (one-at-a-time slices, as in a sensitivity study).
  """
  sweep = read_sweep(sweep_dir)
  points = [p for p in sweep["points"] if p["n"] > 0]
  if not points:
    raise ValueError(f"no finished run in {sweep_dir}")
  metric = metric or _default_metric(points)
  swept = sweep["swept_keys"]
  numeric = [k for k in swept
             if all(_float(p["overrides"][k]) is not None for p in points if k in p["overrides"])
             and any(k in p["overrides"] for p in points)]
  if x is None:
    if any("budget" in k for k in swept) and any(
        "participation/mean" in p["metrics"] for p in points):
      x = "participation/mean"
    elif len(numeric) == 1:
      x = numeric[0]
    else:
      x = "point"
  curve = []
  for p in points:
    if metric not in p["metrics"]:
      continue
    mean, std = p["metrics"][metric]
    entry = {"label": p["label"], "point": p["point"], "n": p["n"], "mean": mean, "std": std}
    if x == "point":
      entry["x"] = p["label"]
    elif x in swept:
      if x not in p["overrides"] or _float(p["overrides"][x]) is None:
        continue
      others = [k for k in numeric if k != x]
      if any(p["overrides"].get(k) != _mode([q["overrides"].get(k) for q in points])
             for k in others):
        continue
      entry["x"] = _float(p["overrides"][x])
    else:
      if x not in p["metrics"]:
        raise ValueError(f"x={x!r} is neither a swept key {swept} nor a metric of the sweep")
      entry["x"], entry["x_std"] = p["metrics"][x]
    curve.append(entry)
  if x != "point":
    curve.sort(key=lambda e: e["x"])
  return {"sweep": sweep["name"], "x": x, "metric": metric, "points": curve}


def _mode(values):
  counts = collections.Counter(v for v in values if v is not None)
  return counts.most_common(1)[0][0] if counts else None


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib is imported here, lazily, with the Agg backend)
# ---------------------------------------------------------------------------------------------
def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  if "ipykernel" not in sys.modules:  # files only, no display; notebooks keep their backend
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def plot_noise(noise: Mapping[str, Any]):
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for target, points in noise["curves"].items():
    sig = [p["sigma"] for p in points]
    style = dict(marker="o", lw=2.5 if target == ALL else 1.5,
                 ls="--" if target == ALL else "-")
    axes[0].plot(sig, [np.nan if p[noise["metric"]] is None else p[noise["metric"]]
                       for p in points], label=target, **style)
    axes[1].plot(sig, [np.nan if p["loss"] is None else p["loss"] for p in points],
                 label=target, **style)
  axes[0].set_ylabel(noise["metric"])
  axes[1].set_ylabel("loss")
  for ax in axes:
    ax.set_xlabel("noise sigma (x input std)")
    ax.grid(alpha=0.3)
  axes[0].legend(title="noisy modality")
  fig.suptitle(f"Gaussian noise at test time ({noise['split']})")
  fig.tight_layout()
  return fig


def plot_missing(missing: Mapping[str, Any]):
  plt = _plt()
  metric = missing["metric"]
  rows = missing["conditions"]
  fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(rows), 3.6))
  values = [np.nan if r[metric] is None else r[metric] for r in rows]
  bars = ax.bar(range(len(rows)), values, color=["tab:green"] + ["tab:orange"] * (len(rows) - 1))
  ax.bar_label(bars, fmt="%.3f", fontsize=8)
  ax.set_xticks(range(len(rows)), [r["condition"] for r in rows], rotation=30, ha="right")
  ax.set_ylabel(metric)
  ax.set_title(f"Missing modalities ({missing['split']})")
  fig.tight_layout()
  return fig


def _heatmap(ax, matrix, rows, cols, title, annotate=True):
  data = np.array([[np.nan if v is None else v for v in r] if r is not None
                   else [np.nan] * len(cols) for r in matrix], float)
  im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0.0,
                 vmax=max(1e-6, float(np.nanmax(data))) if np.isfinite(data).any() else 1.0)
  ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
  ax.set_yticks(range(len(rows)), rows)
  ax.set_title(title)
  if annotate and data.size <= 400:
    for i in range(data.shape[0]):
      for j in range(data.shape[1]):
        if np.isfinite(data[i, j]):
          ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
  return im


def plot_weights(weights: Mapping[str, Any]):
  plt = _plt()
  panels = [(n, c) for n, c in (("beta", weights["modalities"]),
                                ("omega", weights.get("levels") or []),
                                ("eta", weights["modalities"])) if weights.get(n) is not None]
  fig, axes = plt.subplots(1, max(1, len(panels)),
                           figsize=(3.6 * max(1, len(panels)),
                                    1.5 + 0.28 * len(weights["groups"])), squeeze=False)
  titles = {"beta": "modality weights beta", "omega": "level weights omega",
            "eta": "private gates eta"}
  for ax, (name, cols) in zip(axes[0], panels):
    im = _heatmap(ax, weights[name], weights["groups"], cols, titles[name])
    fig.colorbar(im, ax=ax, fraction=0.046)
  if not panels:
    axes[0][0].text(0.5, 0.5, "this model has no beta / omega / eta", ha="center")
    axes[0][0].axis("off")
  fig.suptitle(f"Mean weights per {weights['grouping']}")
  fig.tight_layout()
  return fig


def plot_participation(part: Mapping[str, Any] | None):
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9, 1.8 + 0.5 * (len(part["levels"]) if part else 1)),
                           squeeze=False)
  if part is None:
    axes[0][0].text(0.5, 0.5, "this model has no token budget", ha="center")
    for ax in axes[0]:
      ax.axis("off")
    return fig
  for ax, (key, title) in zip(axes[0], (("participation", "tokens in the budget (alpha > 0)"),
                                        ("alpha_mass", "mean alpha per valid token"))):
    im = _heatmap(ax, part[key], part["levels"], part["modalities"], title)
    im.set_clim(0.0, 1.0)
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.suptitle("Token-budget participation per level and modality")
  fig.tight_layout()
  return fig


def plot_sweep_curve(curve: Mapping[str, Any]):
  plt = _plt()
  points = curve["points"]
  fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(points) + 1.5) if curve["x"] == "point"
                                  else 5.5, 3.8))
  means = [p["mean"] for p in points]
  stds = [p["std"] for p in points]
  if curve["x"] == "point":
    bars = ax.bar(range(len(points)), means, yerr=stds, capsize=4, color="tab:blue")
    ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(points)), [p["label"] for p in points], rotation=30, ha="right")
    lo = min(m - s for m, s in zip(means, stds))
    hi = max(m + s for m, s in zip(means, stds))
    pad = 0.15 * max(hi - lo, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)
  else:
    xs = [p["x"] for p in points]
    ax.errorbar(xs, means, yerr=stds, xerr=[p.get("x_std", 0.0) for p in points], marker="o",
                capsize=3)
    for p in points:
      if p["label"] != p["point"]:
        ax.annotate(p["label"], (p["x"], p["mean"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(curve["x"])
    ax.grid(alpha=0.3)
  ax.set_ylabel(f"{curve['metric']} (mean ± std over seeds)")
  ax.set_title(f"Sweep {curve['sweep']}")
  fig.tight_layout()
  return fig


def plot_probes(probes: Mapping[str, Any]):
  """Bars per probed factor: shared, private (when the model has it) and chance; accuracy of the
  binary factors on the left, R^2 of the continuous ones on the right."""
  plt = _plt()
  panels = [(kind, [t for t, k in probes["kind"].items() if k == kind]) for kind in
            ("accuracy", "r2")]
  panels = [(kind, names) for kind, names in panels if names]
  streams = [s for s in ("shared", "private") if probes.get(s) is not None] + ["chance"]
  colors = {"shared": "tab:blue", "private": "tab:orange", "chance": "tab:gray"}
  widths = [len(names) for _, names in panels] or [1]
  fig, axes = plt.subplots(1, max(1, len(panels)), squeeze=False, gridspec_kw={
      "width_ratios": widths}, figsize=(min(16.0, 2.5 + 0.2 * len(streams) * sum(widths)), 4.2))
  width = 0.8 / len(streams)
  for ax, (kind, names) in zip(axes[0], panels):
    for j, stream in enumerate(streams):
      values = [probes[stream].get(t) for t in names]
      ax.bar(np.arange(len(names)) + (j - (len(streams) - 1) / 2) * width,
             [np.nan if v is None else v for v in values], width, label=stream,
             color=colors[stream])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("held-out accuracy" if kind == "accuracy" else "held-out R^2")
    ax.set_ylim(0.0 if kind == "accuracy" else min(-0.1, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3, axis="y")
  axes[0][0].legend(fontsize=7)
  fig.suptitle(f"Linear probes of the true factors from the pooled summaries "
               f"({probes['model']}, {probes['split']})")
  fig.tight_layout()
  return fig


# ---------------------------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------------------------
def _save(fig, path: str) -> None:
  fig.savefig(path, dpi=120)
  _plt().close(fig)


def _dump(obj: Any, path: str) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, allow_nan=False)
    f.write("\n")


def write_run_analysis(result: Mapping[str, Any], out: str) -> list[str]:
  """Writes the JSON and PNG files of `analyze_run`'s result into `out`; returns their paths."""
  os.makedirs(out, exist_ok=True)
  written = []
  plots = {"noise": plot_noise, "missing": plot_missing, "weights": plot_weights,
           "participation": plot_participation}
  for name, plot in plots.items():
    _dump(result[name], os.path.join(out, f"{name}.json"))
    _save(plot(result[name]), os.path.join(out, f"{name}.png"))
    written += [os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.png")]
  _dump(result, os.path.join(out, "analysis.json"))
  written.append(os.path.join(out, "analysis.json"))
  return written


def write_probe_analysis(probes: Mapping[str, Any], out: str) -> list[str]:
  """Writes `analyze_probes`' result as leakage_probes.json and .png into `out`."""
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, "leakage_probes.json"), os.path.join(out, "leakage_probes.png")]
  _dump(probes, paths[0])
  _save(plot_probes(probes), paths[1])
  return paths


def write_sweep_analysis(curve: Mapping[str, Any], out: str) -> list[str]:
  os.makedirs(out, exist_ok=True)
  _dump(curve, os.path.join(out, "sweep_curve.json"))
  _save(plot_sweep_curve(curve), os.path.join(out, "sweep_curve.png"))
  return [os.path.join(out, "sweep_curve.json"), os.path.join(out, "sweep_curve.png")]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m clcr_jax.analyze",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="", help="a run directory (train_and_evaluate's)")
  parser.add_argument("--sweep", default="", help="a sweep directory (experiments.sweep's)")
  parser.add_argument("--split", default="test")
  parser.add_argument("--out", default="", help="default: WORKDIR/analysis or SWEEP/analysis")
  parser.add_argument("--sigmas", default=",".join(map(str, DEFAULT_SIGMAS)),
                      help="relative noise levels, comma-separated")
  parser.add_argument("--seed", type=int, default=0, help="seed of the test-time noise")
  parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
  parser.add_argument("--backend", default="", help="data backend (default: the run's)")
  parser.add_argument("--x", default="", help="sweep: x axis (swept key, metric or 'point')")
  parser.add_argument("--metric", default="", help="sweep: the metric (default by task)")
  parser.add_argument("--probes", action="store_true",
                      help="run: only the leakage probes (leakage_probes.json, .png), linear "
                           "probes of the dataset's true factors from the pooled summaries")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if not args.workdir and not args.sweep:
    parser.error("give --workdir=RUN and/or --sweep=SWEEP_DIR")
  if args.probes and not args.workdir:
    parser.error("--probes needs --workdir=RUN")
  # Progress on stderr, so that stdout stays the list of files written and the headline.
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  level, propagate = _LOG.level, _LOG.propagate
  _LOG.addHandler(handler)
  _LOG.setLevel(logging.INFO)
  _LOG.propagate = False
  try:
    return _main(args)
  finally:
    _LOG.removeHandler(handler)
    _LOG.setLevel(level)
    _LOG.propagate = propagate


def _main(args: argparse.Namespace) -> int:
  if args.workdir and args.probes:
    probes = analyze_probes(args.workdir, args.split, args.checkpoint, args.backend or None,
                            args.seed)
    for path in write_probe_analysis(probes, args.out or os.path.join(args.workdir, "analysis")):
      print(path)
    print(f"{args.split} probes: {json.dumps(probes['headline'])}")
  elif args.workdir:
    sigmas = tuple(float(s) for s in args.sigmas.split(",") if s)
    if 0.0 not in sigmas:
      sigmas = (0.0,) + sigmas
    result = analyze_run(args.workdir, args.split, sigmas, args.seed, args.checkpoint,
                         args.backend or None)
    out = args.out or os.path.join(args.workdir, "analysis")
    for path in write_run_analysis(result, out):
      print(path)
    metric = result["noise"]["metric"]
    print(f"{args.split} {metric} = {result['metrics'].get(metric)}")
  if args.sweep:
    curve = sweep_curve(args.sweep, args.x or None, args.metric or None)
    out = (args.out if args.out and not args.workdir else os.path.join(args.sweep, "analysis"))
    for path in write_sweep_analysis(curve, out):
      print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
