"""Evaluation metrics, computed on the host in numpy float64.

Every metric here reproduces the number a reference codebase reports, so that
results can be lined up with published tables (docs/data.md, Metrics):

* CMU-MOSI / CMU-MOSEI regression: `mosi_regression_metrics`, three variants
  ("mmsa" = thuiar/MMSA `metricsTop.__eval_mosei_regression`, the default;
  "mult" = yaohungt/Multimodal-Transformer
  `eval_mosei_senti(exclude_zero=True)`, also what declare-lab/MISA prints;
  "dmd" = mdswyz/DMD `metricsTop`).
* Classification (CREMA-D, Kinetics-Sounds, AVE classification, UCF101):
  `accuracy` (micro accuracy as GeWu-Lab/OGM-GE `valid()`) and `macro_f1`
  (GeWu-Lab/BalanceBenchmark `balancemm/evaluation/precisions.py`).
* AVE localisation: `ave_segment_accuracy` (YapengTian/AVE-ECCV18
  `supervised_main.compute_acc`).
* Seed aggregation: `aggregate_over_seeds` (mean and population std, as MMSA's
  run summary).

Conventions shared by all functions:

* Inputs may be numpy arrays, JAX arrays or nested lists; they are converted
  with `np.asarray` (this module imports neither JAX nor TensorFlow).
* `valid` is an optional boolean mask of shape [N] over the leading (example)
  axis. Rows where it is False pad the last evaluation batch and are dropped
  before anything is computed. At least one row must be valid.
* Bad input raises `ValueError` naming the argument and the expected vs found
  shape, dtype or value. Non-finite values in the valid rows are an error, not
  something to be silently averaged.
* Results are Python floats. A metric that is undefined for the given data is
  `float('nan')` (see `mosi_regression_metrics`); `json_safe` turns NaN and
  infinities into None before writing JSON.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

ArrayLike = Any

MMSA_KEYS: Tuple[str, ...] = (
    "Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score",
    "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")
MULT_KEYS: Tuple[str, ...] = (
    "MAE", "Correlation Coefficient", "mult_acc_7", "mult_acc_5", "F1 score",
    "Accuracy")
DMD_KEYS: Tuple[str, ...] = ("Acc_2", "F1_score", "Acc_7", "MAE")
REGRESSION_VARIANTS: Tuple[str, ...] = ("mmsa", "mult", "dmd")
TASKS: Tuple[str, ...] = (
    "classification", "regression", "segment_classification")


# ----------------------------------------------------------------------------
# Input checking.
# ----------------------------------------------------------------------------


def _asarray(x: ArrayLike, name: str) -> np.ndarray:
  """Converts `x` to a numpy array of real numbers (bool allowed).

  Low-precision floats from ml_dtypes (bfloat16, float8_*, as JAX returns
  them) are widened to float32, which is exact.
  """
  try:
    arr = np.asarray(x)
  except Exception as e:  # Ragged lists and the like.
    raise ValueError(f"`{name}` could not be converted to an array: {e}") from e
  if arr.dtype.kind == "V" and arr.dtype.name.startswith(("bfloat", "float")):
    arr = arr.astype(np.float32)
  if not (np.issubdtype(arr.dtype, np.number)
          or np.issubdtype(arr.dtype, np.bool_)):
    raise ValueError(
        f"`{name}` must hold real numbers; found dtype {arr.dtype}.")
  if np.issubdtype(arr.dtype, np.complexfloating):
    raise ValueError(f"`{name}` must be real-valued; found dtype {arr.dtype}.")
  return arr


def _leading_size(arr: np.ndarray, name: str) -> int:
  if arr.ndim == 0:
    raise ValueError(
        f"`{name}` must have a leading example axis [N, ...]; found a scalar.")
  if arr.shape[0] == 0:
    raise ValueError(f"`{name}` is empty (shape {arr.shape}); need N >= 1.")
  return arr.shape[0]


def _check_same_n(n_a: int, name_a: str, n_b: int, name_b: str) -> None:
  if n_a != n_b:
    raise ValueError(
        f"`{name_a}` and `{name_b}` must have the same number of examples N; "
        f"found {n_a} and {n_b}.")


def _valid_mask(valid: Optional[ArrayLike], n: int) -> Optional[np.ndarray]:
  """Checks a [N] boolean mask; None means every row is valid."""
  if valid is None:
    return None
  arr = _asarray(valid, "valid")
  if arr.dtype != np.bool_:
    raise ValueError(
        f"`valid` must be a boolean mask of shape [{n}]; found dtype "
        f"{arr.dtype}.")
  if arr.shape != (n,):
    raise ValueError(
        f"`valid` must have shape [N] = ({n},); found shape {arr.shape}.")
  if not arr.any():
    raise ValueError(
        "`valid` is False on every row; there is nothing to evaluate.")
  return arr


def _apply_mask(arr: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
  return arr if mask is None else arr[mask]


def _check_finite(arr: np.ndarray, name: str) -> None:
  if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(
        f"`{name}` contains {bad} non-finite value(s) (NaN or inf) in valid "
        "rows; metrics need finite numbers.")


def _regression_vector(x: ArrayLike, name: str) -> np.ndarray:
  """Returns `x` as float64 [N]; accepts [N] or [N, 1, ..., 1]."""
  arr = _asarray(x, name)
  _leading_size(arr, name)
  if arr.dtype == np.bool_:
    raise ValueError(
        f"`{name}` must be a float regression value; found dtype bool.")
  if any(d != 1 for d in arr.shape[1:]):
    raise ValueError(
        f"`{name}` must have shape [N] or [N, 1] (one regression value per "
        f"example); found shape {arr.shape}.")
  return arr.reshape(arr.shape[0]).astype(np.float64)


def _class_ids(x: np.ndarray, name: str) -> np.ndarray:
  """Returns integer class ids as int64; floats must be integral."""
  if x.dtype == np.bool_:
    raise ValueError(
        f"`{name}` must hold integer class ids; found dtype bool.")
  if np.issubdtype(x.dtype, np.floating):
    _check_finite(x, name)
    if not np.all(x == np.round(x)):
      raise ValueError(
          f"`{name}` must hold integer class ids; found non-integral float "
          f"values (dtype {x.dtype}).")
  out = x.astype(np.int64)
  if out.size and out.min() < 0:
    raise ValueError(
        f"`{name}` must hold class ids >= 0; found {int(out.min())}.")
  return out


def _check_range(ids: np.ndarray, name: str, num_classes: int) -> None:
  if ids.size and ids.max() >= num_classes:
    raise ValueError(
        f"`{name}` must hold class ids in [0, {num_classes}); found "
        f"{int(ids.max())}.")


def _check_num_classes(num_classes: Any) -> int:
  if (isinstance(num_classes, (bool, np.bool_))
      or not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
    raise ValueError(
        f"`num_classes` must be a positive integer; found {num_classes!r}.")
  return int(num_classes)


def _predicted_and_true_classes(
    pred: ArrayLike, labels: ArrayLike, valid: Optional[ArrayLike],
    pred_name: str = "pred"
) -> Tuple[np.ndarray, np.ndarray, Optional[int]]:
  """Shared input handling of the classification metrics.

  Returns:
    (predicted class ids [M], true class ids [M], C) where M is the number of
    valid rows and C is `pred.shape[-1]` when `pred` holds logits, else None.
  """
  p = _asarray(pred, pred_name)
  y = _asarray(labels, "labels")
  n_p = _leading_size(p, pred_name)
  n_y = _leading_size(y, "labels")
  if y.ndim != 1:
    raise ValueError(
        f"`labels` must have shape [N] (integer class ids); found shape "
        f"{y.shape}.")
  if p.ndim not in (1, 2):
    raise ValueError(
        f"`{pred_name}` must be class ids [N] or logits/scores [N, C]; found "
        f"shape {p.shape}.")
  _check_same_n(n_p, pred_name, n_y, "labels")
  mask = _valid_mask(valid, n_y)
  p = _apply_mask(p, mask)
  y = _class_ids(_apply_mask(y, mask), "labels")
  if p.ndim == 2:
    if p.dtype == np.bool_:
      raise ValueError(
          f"`{pred_name}` logits [N, C] must be numeric; found bool.")
    _check_finite(p, pred_name)
    num_logits = p.shape[1]
    if num_logits < 1:
      raise ValueError(
          f"`{pred_name}` logits have C = 0 classes (shape {p.shape}).")
    _check_range(y, "labels", num_logits)
    return np.argmax(p, axis=1).astype(np.int64), y, num_logits
  return _class_ids(p, pred_name), y, None


# ----------------------------------------------------------------------------
# Numerical building blocks.
# ----------------------------------------------------------------------------


def _round4(x: float) -> float:
  """`round(x, 4)` as MMSA applies it to numpy float64 values.

  For a numpy scalar, Python's `round` is `np.round`: scale by 1e4, round half
  to even, scale back. This can differ from `round` on a Python float (which
  rounds the exact binary value) when x is within one ulp of a half-way point,
  e.g. 1/800 = 0.00125 -> 0.0012 here, 0.0013 with a Python float.
  NaN stays NaN.
  """
  return float(np.round(np.float64(x), 4))


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """F1 averaged over present labels, weighted by true support.

  Same definition as `sklearn.metrics.f1_score(y_true, y_pred,
  average='weighted')`: the label set is the union of the values in `y_true`
  and `y_pred`; per label F1 = 2 TP / (2 TP + FP + FN) (never 0/0 for a
  present label); weights are the label counts in `y_true`.
  """
  labels = np.union1d(y_true, y_pred)
  f1 = np.empty(labels.shape[0], np.float64)
  support = np.empty(labels.shape[0], np.float64)
  for i, c in enumerate(labels):
    t = y_true == c
    q = y_pred == c
    tp = np.count_nonzero(t & q)
    fp = np.count_nonzero(~t & q)
    fn = np.count_nonzero(t & ~q)
    f1[i] = 2.0 * tp / (2.0 * tp + fp + fn)
    support[i] = np.count_nonzero(t)
  total = support.sum()
  if total == 0:
    return math.nan
  return float(np.dot(f1, support) / total)


def _binary_acc_f1(truth: np.ndarray, pred: np.ndarray,
                   swap_f1_args: bool = False) -> Tuple[float, float]:
  """Accuracy and weighted F1 of two boolean vectors; NaN when empty."""
  if truth.size == 0:
    return math.nan, math.nan
  acc = float(np.mean(truth == pred))
  if swap_f1_args:  # MulT / MISA: f1_score(pred, truth) -> pred-side weights.
    f1 = _weighted_f1(pred, truth)
  else:
    f1 = _weighted_f1(truth, pred)
  return acc, f1


def _multiclass_acc(p: np.ndarray, y: np.ndarray, bound: float) -> float:
  """Share of samples with round(clip(p)) == round(clip(y)) (half to even)."""
  rp = np.round(np.clip(p, -bound, bound))
  ry = np.round(np.clip(y, -bound, bound))
  return float(np.mean(rp == ry))


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
  """Pearson r as `np.corrcoef(p, y)[0, 1]`; NaN if either is constant.

  np.corrcoef gives NaN (with a RuntimeWarning) for most constant vectors, but
  round-off in the mean can make it return 0.0 instead (e.g. eleven 0.1s).
  Here a constant vector (or N < 2) always gives NaN, without a warning.
  """
  if p.size < 2 or np.all(p == p[0]) or np.all(y == y[0]):
    return math.nan
  return float(np.corrcoef(p, y)[0, 1])


# ----------------------------------------------------------------------------
# MOSI / MOSEI regression.
# ----------------------------------------------------------------------------


def mosi_regression_metrics(pred: ArrayLike,
                            label: ArrayLike,
                            variant: str = "mmsa",
                            valid: Optional[ArrayLike] = None
                           ) -> Dict[str, float]:
  """CMU-MOSI / CMU-MOSEI sentiment metrics from regression outputs.

  Let p be the (unclipped) predictions and y the labels of the valid rows.
  Common definitions (identical in all three references):

  * MAE = mean |p - y|; Corr = Pearson r, `np.corrcoef(p, y)[0, 1]`.
  * Acc7 = mean(round(clip(p, -3, 3)) == round(clip(y, -3, 3))), with numpy's
    round-half-to-even (2.5 -> 2, -0.5 -> -0.0 == 0, 1.5 -> 2). Acc5: clip to
    [-2, 2].
  * Has0 ("negative / non-negative"): all rows, classes (y >= 0), (p >= 0).
  * Non0 ("negative / positive"): rows with y != 0 exactly, classes (y > 0),
    (p > 0); a prediction of exactly 0 counts as negative.
  * Binary F1 is scikit-learn's `average='weighted'` F1 (labels present in
    either vector, weighted by the support of the *first* argument),
    reimplemented here in numpy.

  Variants (keys exactly as the codebase names or prints them):

  * "mmsa" — thuiar/MMSA `src/MMSA/utils/metricsTop.py`
    `__eval_mosei_regression` (also used for MOSI). Keys `Has0_acc_2`,
    `Has0_F1_score`, `Non0_acc_2`, `Non0_F1_score` (F1 called as
    f1_score(truth, pred)), `Mult_acc_5`, `Mult_acc_7`, `MAE`, `Corr`. Every
    value rounded to 4 decimals the way MMSA's `round(x, 4)` rounds numpy
    float64 values (`np.round`; see `_round4`). Caveat: scikit-learn 1.9
    returns Python floats from accuracy_score / f1_score, which MMSA then
    rounds with Python's `round`; the two roundings differ only when a value
    sits within one ulp of a 5th-decimal tie (e.g. k/800), never for the
    standard MOSI (686) / MOSEI (4659) test sets' accuracies.
  * "mult" — yaohungt/Multimodal-Transformer `src/eval_metrics.py`
    `eval_mosei_senti(..., exclude_zero=True)`, as MulT calls it. Keys `MAE`,
    `Correlation Coefficient`, `mult_acc_7`,
    `mult_acc_5`, `F1 score`, `Accuracy`. `Accuracy` is the Non0 accuracy;
    `F1 score` is the Non0 weighted F1 called with swapped arguments,
    f1_score(pred, truth), so the weights come from the *predicted* class
    counts and it differs from MMSA's Non0_F1_score (MulT issue #33). MulT
    prints unrounded values, so they are not rounded here.
    declare-lab/MISA `calc_metrics` copies this code (same swapped F1, same
    pos/neg accuracy); it also prints a non-negative/negative accuracy, which
    is MMSA's Has0_acc_2, and returns that one for model selection.
  * "dmd" — mdswyz/DMD `utils/metricsTop.py`: MMSA's code reduced to `Acc_2`
    (= Non0_acc_2), `F1_score` (= Non0_F1_score, correct argument order),
    `Acc_7`, `MAE`; rounded to 4 decimals like "mmsa".

  Degenerate inputs (decisions; the references crash or warn here):

  * Constant `pred` or constant `label` (or a single valid row): the
    correlation is undefined and is NaN. MMSA's np.corrcoef usually returns
    NaN too, but may return 0.0 from round-off; NaN is returned consistently.
  * No valid row with y != 0 (all labels are exactly 0): the Non0 metrics
    (`Non0_acc_2`, `Non0_F1_score` / `Accuracy`, `F1 score` / `Acc_2`,
    `F1_score`) are NaN. MMSA, MulT and DMD raise an IndexError there.
  * NaN values stay in the returned dict; pass it through `json_safe` before
    `json.dump` (which maps NaN to null).

  Precision: float64 throughout. The references receive float32 tensors; the
  float32 -> float64 cast is exact, so comparisons and rounding of p and y
  are identical, but MAE is accumulated in float64 where MMSA/MulT sum in
  float32, which can move the 4th decimal only at an exact tie.

  Args:
    pred: predictions, shape [N] or [N, 1] (any [N, 1, ..., 1]), real.
    label: labels in [-3, 3], shape [N] or [N, 1, ..., 1] (MulT's (N, 1, 1)).
    variant: "mmsa" (default), "mult" or "dmd".
    valid: optional bool [N]; False rows are ignored.

  Returns:
    Dict of Python floats with the variant's keys (`MMSA_KEYS`, `MULT_KEYS`
    or `DMD_KEYS`, in that order).

  Raises:
    ValueError: unknown variant, shapes other than [N]/[N, 1], different N,
      a bad `valid` mask, or non-finite values in valid rows.
  """
  if variant not in REGRESSION_VARIANTS:
    raise ValueError(
        f"`variant` must be one of {REGRESSION_VARIANTS}; found {variant!r}.")
  p = _regression_vector(pred, "pred")
  y = _regression_vector(label, "label")
  _check_same_n(p.shape[0], "pred", y.shape[0], "label")
  mask = _valid_mask(valid, p.shape[0])
  p = _apply_mask(p, mask)
  y = _apply_mask(y, mask)
  _check_finite(p, "pred")
  _check_finite(y, "label")

  mae = float(np.mean(np.abs(p - y)))
  corr = _pearson(p, y)
  acc7 = _multiclass_acc(p, y, 3.0)
  acc5 = _multiclass_acc(p, y, 2.0)
  nz = y != 0
  truth_nz, pred_nz = y[nz] > 0, p[nz] > 0

  if variant == "mult":
    acc2, f1 = _binary_acc_f1(truth_nz, pred_nz, swap_f1_args=True)
    return {
        "MAE": mae,
        "Correlation Coefficient": corr,
        "mult_acc_7": acc7,
        "mult_acc_5": acc5,
        "F1 score": f1,
        "Accuracy": acc2,
    }

  non0_acc, non0_f1 = _binary_acc_f1(truth_nz, pred_nz)
  if variant == "dmd":
    return {
        "Acc_2": _round4(non0_acc),
        "F1_score": _round4(non0_f1),
        "Acc_7": _round4(acc7),
        "MAE": _round4(mae),
    }
  has0_acc, has0_f1 = _binary_acc_f1(y >= 0, p >= 0)
  return {
      "Has0_acc_2": _round4(has0_acc),
      "Has0_F1_score": _round4(has0_f1),
      "Non0_acc_2": _round4(non0_acc),
      "Non0_F1_score": _round4(non0_f1),
      "Mult_acc_5": _round4(acc5),
      "Mult_acc_7": _round4(acc7),
      "MAE": _round4(mae),
      "Corr": _round4(corr),
  }


# ----------------------------------------------------------------------------
# Classification.
# ----------------------------------------------------------------------------


def accuracy(pred: ArrayLike,
             labels: ArrayLike,
             valid: Optional[ArrayLike] = None) -> float:
  """Top-1 (micro) accuracy: correct / number of valid rows.

  Matches GeWu-Lab/OGM-GE `main.valid()` (per-class counts summed, which is
  micro accuracy) and BalanceBenchmark's `trace(confusion) / total`.

  Args:
    pred: predicted class ids [N] (integer, or integral floats) or
      logits/scores [N, C] (argmax over C, first index on ties).
    labels: true class ids [N], in [0, C) when `pred` holds logits.
    valid: optional bool [N]; False rows are ignored.

  Returns:
    Accuracy in [0, 1] as a Python float.

  Raises:
    ValueError: wrong ranks, different N, negative or out-of-range class ids,
      non-integral ids, a bad `valid` mask, non-finite logits.
  """
  p, y, _ = _predicted_and_true_classes(pred, labels, valid)
  return float(np.mean(p == y))


def _confusion_matrix(p: np.ndarray, y: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """[C, C] counts, rows = true class, columns = predicted class."""
  flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def macro_f1(pred: ArrayLike,
             labels: ArrayLike,
             num_classes: int,
             valid: Optional[ArrayLike] = None) -> float:
  """Macro F1 over all `num_classes` classes, as BalanceBenchmark computes it.

  GeWu-Lab/BalanceBenchmark `balancemm/evaluation/precisions.py`
  (`BatchMetricsCalculator.compute_metrics`): from the confusion matrix over
  all classes, per class P = TP / (TP + FP) and R = TP / (TP + FN), each 0
  when its denominator is 0; F1 = 2 P R / (P + R), 0 when P + R = 0; the mean
  over all `num_classes` classes, so a class absent from both labels and
  predictions contributes F1 = 0. This equals
  `sklearn.metrics.f1_score(labels, pred, average='macro',
  labels=range(num_classes), zero_division=0)` and differs from sklearn's
  default macro F1, which averages only over classes that occur.

  Args:
    pred: predicted class ids [N] or logits [N, num_classes].
    labels: true class ids [N] in [0, num_classes).
    num_classes: number of classes C (>= 1).
    valid: optional bool [N]; False rows are ignored.

  Returns:
    Macro F1 in [0, 1] as a Python float.

  Raises:
    ValueError: as `accuracy`, plus logits whose last axis is not
      `num_classes` and ids outside [0, num_classes).
  """
  num_classes = _check_num_classes(num_classes)
  p, y, num_logits = _predicted_and_true_classes(pred, labels, valid)
  return _macro_f1_from_ids(p, y, num_classes, num_logits)


def _macro_f1_from_ids(p: np.ndarray, y: np.ndarray, num_classes: int,
                       num_logits: Optional[int],
                       pred_name: str = "pred") -> float:
  """BalanceBenchmark macro F1 from class ids (see `macro_f1`)."""
  if num_logits is not None and num_logits != num_classes:
    raise ValueError(
        f"`{pred_name}` logits must have shape [N, num_classes={num_classes}]; "
        f"found C = {num_logits}.")
  _check_range(p, pred_name, num_classes)
  _check_range(y, "labels", num_classes)
  cm = _confusion_matrix(p, y, num_classes).astype(np.float64)
  tp = np.diag(cm)
  fp = cm.sum(axis=0) - tp
  fn = cm.sum(axis=1) - tp
  precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp != 0)
  recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn != 0)
  denom = precision + recall
  f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(tp),
                 where=denom != 0)
  return float(np.mean(f1))


def classification_metrics(logits: ArrayLike,
                           labels: ArrayLike,
                           num_classes: int,
                           valid: Optional[ArrayLike] = None
                          ) -> Dict[str, float]:
  """Accuracy (OGM-GE) and macro F1 (BalanceBenchmark) in one pass.

  Args:
    logits: logits/scores [N, num_classes] (or predicted class ids [N]).
    labels: true class ids [N] in [0, num_classes).
    num_classes: number of classes C.
    valid: optional bool [N]; False rows are ignored.

  Returns:
    {"accuracy": float, "macro_f1": float}.

  Raises:
    ValueError: see `accuracy` and `macro_f1`.
  """
  num_classes = _check_num_classes(num_classes)
  p, y, num_logits = _predicted_and_true_classes(logits, labels, valid,
                                                 pred_name="logits")
  f1 = _macro_f1_from_ids(p, y, num_classes, num_logits, pred_name="logits")
  return {"accuracy": float(np.mean(p == y)), "macro_f1": f1}


# ----------------------------------------------------------------------------
# AVE localisation.
# ----------------------------------------------------------------------------


def ave_segment_accuracy(logits: ArrayLike,
                         labels: ArrayLike,
                         valid: Optional[ArrayLike] = None) -> float:
  """Per-segment accuracy of AVE event localisation.

  YapengTian/AVE-ECCV18 `supervised_main.py: compute_acc`: for every video and
  each of its S (= 10) segments, argmax over the C (= 29, background included)
  scores vs argmax of the one-hot label; accuracy over all N * S segments, so
  background segments count like any other class.

  Args:
    logits: per-segment scores [N, S, C].
    labels: per-segment class ids [N, S] (integer, in [0, C)) or one-hot /
      score labels [N, S, C] (argmax over C, first index on ties, as the
      reference does).
    valid: optional bool [N] over videos; all segments of a False video are
      ignored.

  Returns:
    Segment accuracy in [0, 1] as a Python float.

  Raises:
    ValueError: ranks other than [N, S, C] / [N, S] / [N, S, C], mismatched N,
      S or C, ids outside [0, C), a bad `valid` mask, non-finite logits.
  """
  x = _asarray(logits, "logits")
  y = _asarray(labels, "labels")
  if x.ndim != 3:
    raise ValueError(
        f"`logits` must have shape [N, S, C]; found shape {x.shape}.")
  if x.dtype == np.bool_:
    raise ValueError("`logits` must be numeric scores; found dtype bool.")
  n = _leading_size(x, "logits")
  _check_same_n(n, "logits", _leading_size(y, "labels"), "labels")
  if y.ndim == 2:
    if y.shape != x.shape[:2]:
      raise ValueError(
          f"`labels` [N, S] must match `logits` [N, S, C] = {x.shape} in N and "
          f"S; found shape {y.shape}.")
  elif y.ndim == 3:
    if y.shape != x.shape:
      raise ValueError(
          f"one-hot `labels` [N, S, C] must have the shape of `logits` "
          f"{x.shape}; found shape {y.shape}.")
  else:
    raise ValueError(
        f"`labels` must have shape [N, S] (class ids) or [N, S, C] (one-hot); "
        f"found shape {y.shape}.")
  if x.shape[1] == 0 or x.shape[2] == 0:
    raise ValueError(
        f"`logits` must have S >= 1 segments and C >= 1 classes; found shape "
        f"{x.shape}.")
  mask = _valid_mask(valid, n)
  x = _apply_mask(x, mask)
  y = _apply_mask(y, mask)
  _check_finite(x, "logits")
  num_classes = x.shape[2]
  if y.ndim == 3:
    _check_finite(y, "labels")
    true_ids = np.argmax(y, axis=2)
  else:
    true_ids = _class_ids(y, "labels")
    _check_range(true_ids, "labels", num_classes)
  return float(np.mean(np.argmax(x, axis=2) == true_ids))


# ----------------------------------------------------------------------------
# Aggregation, JSON, dispatch.
# ----------------------------------------------------------------------------


def aggregate_over_seeds(results: Sequence[Mapping[str, Any]],
                         scale: float = 1.0,
                         decimals: Optional[int] = None
                        ) -> Dict[str, Dict[str, float]]:
  """Mean and population std of each metric over seeds.

  MMSA's run summary (thuiar/MMSA `run.py`) reports, per metric,
  `round(np.mean(values) * 100, 2)` and `round(np.std(values) * 100, 2)`:
  population std (ddof = 0) of the per-seed values. `scale=100, decimals=2`
  reproduces that table (so "MAE 70.80" means MAE 0.708).

  A None value (what `json_safe` writes for NaN) is read as NaN, and NaN
  propagates into that metric's mean and std.

  Args:
    results: one metric dict per seed, all with the same keys and numeric
      (or None) values.
    scale: factor applied after averaging (mean * scale, std * scale).
    decimals: if given, round mean and std to this many decimals (numpy
      round-half-to-even, as MMSA's round() on numpy floats).

  Returns:
    {key: {"mean": float, "std": float, "n": int}} in the key order of the
    first dict.

  Raises:
    ValueError: empty `results`, dicts with different keys, or values that
      are not numbers.
  """
  if isinstance(results, Mapping) or len(results) == 0:
    raise ValueError(
        "`results` must be a non-empty list of metric dicts (one per seed); "
        f"found {type(results).__name__} of length {len(results)}.")
  keys = list(results[0].keys())
  for i, r in enumerate(results):
    if not isinstance(r, Mapping):
      raise ValueError(
          f"`results[{i}]` must be a dict of metrics; found "
          f"{type(r).__name__}.")
    if set(r.keys()) != set(keys):
      raise ValueError(
          f"`results[{i}]` has keys {sorted(r.keys())}; expected the keys of "
          f"`results[0]`: {sorted(keys)}.")
  out: Dict[str, Dict[str, float]] = {}
  for k in keys:
    vals = []
    for i, r in enumerate(results):
      v = r[k]
      if v is None:
        v = math.nan
      if isinstance(v, (bool, np.bool_)) or not isinstance(
          v, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"`results[{i}][{k!r}]` must be a number; found {v!r}.")
      vals.append(float(v))
    arr = np.asarray(vals, np.float64)
    mean = np.mean(arr) * scale
    std = np.std(arr) * scale
    if decimals is not None:
      mean, std = np.round(mean, decimals), np.round(std, decimals)
    out[k] = {"mean": float(mean), "std": float(std), "n": len(vals)}
  return out


def json_safe(obj: Any) -> Any:
  """Recursively converts metric containers to JSON-safe Python values.

  NaN and +-inf become None (strict JSON has no NaN); numpy scalars and
  arrays become Python numbers and lists; dicts, lists and tuples are walked.
  """
  if isinstance(obj, Mapping):
    return {str(k): json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return [json_safe(v) for v in obj.tolist()]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def metrics_for_task(task: str,
                     prediction: ArrayLike,
                     label: ArrayLike,
                     valid: Optional[ArrayLike] = None,
                     num_classes: Optional[int] = None,
                     variant: str = "mmsa") -> Dict[str, float]:
  """The metric dict for results.json, chosen by task.

  Args:
    task: "classification" ({"accuracy", "macro_f1"} via
      `classification_metrics`), "regression" (the MOSI/MOSEI dict of
      `mosi_regression_metrics` for `variant`) or "segment_classification"
      ({"segment_accuracy"} via `ave_segment_accuracy`).
    prediction: model output: logits [N, C], regression values [N] (or
      [N, 1]), or per-segment logits [N, S, C].
    label: the batch labels in the matching layout.
    valid: optional bool [N]; False rows are ignored.
    num_classes: classification only; defaults to `prediction.shape[-1]`
      when `prediction` holds logits.
    variant: regression only; "mmsa", "mult" or "dmd".

  Returns:
    A flat dict of Python floats (NaN where undefined; see `json_safe`).

  Raises:
    ValueError: unknown task, or any input error of the chosen metric.
  """
  if task == "regression":
    return mosi_regression_metrics(prediction, label, variant=variant,
                                   valid=valid)
  if task == "classification":
    if num_classes is None:
      p = _asarray(prediction, "prediction")
      if p.ndim != 2:
        raise ValueError(
            "`num_classes` is required when `prediction` holds class ids "
            f"(shape {p.shape}) rather than logits [N, C].")
      num_classes = p.shape[1]
    return classification_metrics(prediction, label, num_classes, valid)
  if task == "segment_classification":
    return {"segment_accuracy": ave_segment_accuracy(prediction, label, valid)}
  raise ValueError(f"`task` must be one of {TASKS}; found {task!r}.")
