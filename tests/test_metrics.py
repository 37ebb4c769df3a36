"""Golden tests of clcr_jax.metrics against independent references.

The references below deliberately take another code path than the module:
plain Python loops over Python floats (Python's built-in `round` for the
half-to-even class rounding, `math.fsum` for sums) and scikit-learn's
`accuracy_score` / `f1_score` (scikit-learn is part of the [test] extra).
Hand-derived literal values pin the fixed vectors.
"""

import ast
import json
import math
import pathlib
import statistics
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score

from clcr_jax import metrics

# ----------------------------------------------------------------------------
# Independent references.
# ----------------------------------------------------------------------------


def _clip(v, bound):
  return min(max(v, -bound), bound)


def _ref_pearson(p, y):
  n = len(p)
  if n < 2 or len(set(p)) == 1 or len(set(y)) == 1:
    return math.nan
  mp = math.fsum(p) / n
  my = math.fsum(y) / n
  cov = math.fsum((a - mp) * (b - my) for a, b in zip(p, y))
  vp = math.fsum((a - mp) ** 2 for a in p)
  vy = math.fsum((b - my) ** 2 for b in y)
  return cov / math.sqrt(vp * vy)


def _ref_weighted_f1_loop(y_true, y_pred):
  """Weighted F1 by explicit counting (third path besides sklearn)."""
  labels = sorted(set(y_true) | set(y_pred))
  total, acc = 0, 0.0
  for c in labels:
    tp = sum(1 for t, q in zip(y_true, y_pred) if t == c and q == c)
    fp = sum(1 for t, q in zip(y_true, y_pred) if t != c and q == c)
    fn = sum(1 for t, q in zip(y_true, y_pred) if t == c and q != c)
    support = sum(1 for t in y_true if t == c)
    acc += support * (2 * tp / (2 * tp + fp + fn))
    total += support
  return acc / total


def _ref_mosi(p, y, use_sklearn=True):
  """Unrounded MOSI quantities, MMSA/MulT semantics, loops + sklearn.

  With use_sklearn=False the binary scores come from the counting loop
  (sklearn's input validation makes it the slow part of the random test).
  """
  def acc_fn(t, q):
    if use_sklearn:
      return accuracy_score(t, q)
    return sum(a == b for a, b in zip(t, q)) / len(t)

  def f1_fn(t, q):
    if use_sklearn:
      return f1_score(t, q, average="weighted")
    return _ref_weighted_f1_loop(t, q)

  p = [float(v) for v in p]
  y = [float(v) for v in y]
  n = len(y)
  out = {
      "mae": math.fsum(abs(a - b) for a, b in zip(p, y)) / n,
      "corr": _ref_pearson(p, y),
      # Python's round() of a float is round-half-to-even, like np.round.
      "acc7": sum(round(_clip(a, 3.0)) == round(_clip(b, 3.0))
                  for a, b in zip(p, y)) / n,
      "acc5": sum(round(_clip(a, 2.0)) == round(_clip(b, 2.0))
                  for a, b in zip(p, y)) / n,
  }
  t0 = [b >= 0 for b in y]
  p0 = [a >= 0 for a in p]
  out["has0_acc"] = acc_fn(t0, p0)
  out["has0_f1"] = f1_fn(t0, p0)
  nz = [i for i in range(n) if y[i] != 0]
  tn = [y[i] > 0 for i in nz]
  pn = [p[i] > 0 for i in nz]
  if nz:
    out["non0_acc"] = acc_fn(tn, pn)
    out["non0_f1"] = f1_fn(tn, pn)
    out["non0_f1_swapped"] = f1_fn(pn, tn)
  else:
    out["non0_acc"] = out["non0_f1"] = out["non0_f1_swapped"] = math.nan
  return out


_MMSA_FROM_REF = {
    "Has0_acc_2": "has0_acc", "Has0_F1_score": "has0_f1",
    "Non0_acc_2": "non0_acc", "Non0_F1_score": "non0_f1",
    "Mult_acc_5": "acc5", "Mult_acc_7": "acc7", "MAE": "mae", "Corr": "corr"}
_MULT_FROM_REF = {
    "MAE": "mae", "Correlation Coefficient": "corr", "mult_acc_7": "acc7",
    "mult_acc_5": "acc5", "F1 score": "non0_f1_swapped",
    "Accuracy": "non0_acc"}
_DMD_FROM_REF = {
    "Acc_2": "non0_acc", "F1_score": "non0_f1", "Acc_7": "acc7", "MAE": "mae"}


def _same(a, b, tol=0.0):
  if math.isnan(a) or math.isnan(b):
    return math.isnan(a) and math.isnan(b)
  return abs(a - b) <= tol


def _check_against_ref(p, y, valid=None, use_sklearn=True):
  """All three variants vs the reference on the valid rows."""
  if valid is None:
    rp, ry = list(p), list(y)
  else:
    rp = [a for a, v in zip(p, valid) if v]
    ry = [b for b, v in zip(y, valid) if v]
  ref = _ref_mosi(rp, ry, use_sklearn)
  got = metrics.mosi_regression_metrics(p, y, "mult", valid=valid)
  assert tuple(got) == metrics.MULT_KEYS
  for k, r in _MULT_FROM_REF.items():
    assert _same(got[k], ref[r], 1e-12), (k, got[k], ref[r])
  for variant, mapping, keys in (("mmsa", _MMSA_FROM_REF, metrics.MMSA_KEYS),
                                 ("dmd", _DMD_FROM_REF, metrics.DMD_KEYS)):
    got = metrics.mosi_regression_metrics(p, y, variant, valid=valid)
    assert tuple(got) == keys
    for k, r in mapping.items():
      # Rounded to 4 decimals: within half a unit of the 4th decimal of the
      # unrounded reference, and itself a 4-decimal number.
      assert _same(got[k], ref[r], 0.5e-4 + 1e-12), (variant, k, got[k], ref[r])
      assert _same(got[k], float(np.round(got[k], 4))), (variant, k)
    for k in keys:
      assert isinstance(got[k], float)


# ----------------------------------------------------------------------------
# MOSI / MOSEI regression.
# ----------------------------------------------------------------------------

# Exact zeros (labels and predictions), the +-0.5 / +-1.5 / +-2.5 rounding
# boundaries, predictions beyond +-3, labels that are multiples of 1/3.
_Y = np.array([0.0, 0.0, 1 / 3, -1 / 3, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.0,
               -3.0, 2 / 3, -2 / 3])
_P = np.array([0.0, -0.2, 0.5, -0.5, 0.4, -0.4, 2.5, -1.4, 3.7, -2.5, 2.6,
               -4.0, -0.1, 0.0])


def test_mmsa_fixed_vector_hand_derived_values():
  # Acc7 classes, half to even: y -> 0 0 0 0 0 0 2 -2 2 -2 3 -3 1 -1,
  # p -> 0 0 0 0 0 0 2 -1 3 -2 3 -3 0 0: 10 / 14 agree.
  # Acc5 (clip 2): y -> ... 2 -2 2 -2 2 -2 1 -1, p -> ... 2 -1 2 -2 2 -2 0 0.
  # Has0: truth y>=0 vs p>=0 disagree at rows 1 (p=-0.2), 12, 13 (p=0.0).
  #   class T: support 8, TP 6, FP 1, FN 2 -> F1 12/15; class F: support 6,
  #   TP 5, FP 2, FN 1 -> F1 10/13.
  # Non0 (rows 2..13): only row 12 (y=2/3, p=-0.1) is wrong; p=0.0 at row 13
  #   counts as negative, which is right for y=-2/3.
  #   class T: support 6, TP 5, FN 1 -> 10/11; class F: support 6, TP 6,
  #   FP 1 -> 12/13.
  # MAE: sum |p - y| = 88/15.
  got = metrics.mosi_regression_metrics(_P, _Y)
  ref_corr = _ref_pearson(list(_P), list(_Y))
  assert ref_corr == pytest.approx(0.9606602, abs=1e-7)
  expected = {
      "Has0_acc_2": 0.7857,                                 # 11/14
      "Has0_F1_score": 0.7868,    # (8 * 12/15 + 6 * 10/13) / 14 = 0.78681
      "Non0_acc_2": 0.9167,                                 # 11/12
      "Non0_F1_score": 0.9161,    # (10/11 + 12/13) / 2 = 0.91608
      "Mult_acc_5": 0.7857,                                 # 11/14
      "Mult_acc_7": 0.7143,                                 # 10/14
      "MAE": 0.419,                                         # 88/210
      "Corr": 0.9607,                     # Pearson r = 0.960660 (loop ref).
  }
  assert got == expected
  assert list(got) == list(metrics.MMSA_KEYS)

  mult = metrics.mosi_regression_metrics(_P, _Y, variant="mult")
  # Swapped f1_score(pred, truth): weights are the predicted counts (5 T, 7 F).
  assert mult["F1 score"] == pytest.approx((5 * 10 / 11 + 7 * 12 / 13) / 12,
                                           abs=1e-15)
  assert mult["F1 score"] != pytest.approx((10 / 11 + 12 / 13) / 2, abs=1e-6)
  assert mult["Accuracy"] == 11 / 12
  assert mult["mult_acc_7"] == 10 / 14
  assert mult["mult_acc_5"] == 11 / 14
  assert mult["MAE"] == pytest.approx(88 / 210, abs=1e-15)
  assert mult["Correlation Coefficient"] == pytest.approx(ref_corr, abs=1e-14)

  dmd = metrics.mosi_regression_metrics(_P, _Y, variant="dmd")
  assert dmd == {"Acc_2": 0.9167, "F1_score": 0.9161, "Acc_7": 0.7143,
                 "MAE": 0.419}

  _check_against_ref(_P, _Y)


def test_acc7_rounds_half_to_even_not_floor_plus_half():
  y = np.array([0.0, 2.0, 2.0, 0.0, -2.0, -2.0])
  p = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
  got = metrics.mosi_regression_metrics(p, y, variant="mult")
  assert got["mult_acc_7"] == 1.0
  assert got["mult_acc_5"] == 1.0
  # A floor(x + 0.5) implementation would give 3/6 on this vector.
  floor_half = np.floor(p + 0.5) == np.floor(y + 0.5)
  assert floor_half.mean() == 0.5


def test_round4_matches_numpy_round_of_mmsa_numpy_scalars():
  # Acc7 = 1/800 = 0.00125: MMSA's round() on a numpy float64 gives 0.0012;
  # Python's round() on a Python float would give 0.0013.
  y = np.zeros(800)
  p = np.full(800, 1.0)
  p[0] = 0.0
  got = metrics.mosi_regression_metrics(p, y)
  assert got["Mult_acc_7"] == 0.0012
  assert round(np.float64(1 / 800), 4) == 0.0012
  assert round(1 / 800, 4) == 0.0013


def test_all_zero_truth_gives_nan_non0_metrics():
  y = np.zeros(5)
  p = np.array([0.3, -0.2, 0.0, 1.4, -2.6])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    mmsa = metrics.mosi_regression_metrics(p, y)
    mult = metrics.mosi_regression_metrics(p, y, variant="mult")
    dmd = metrics.mosi_regression_metrics(p, y, variant="dmd")
  for d, keys in ((mmsa, ("Non0_acc_2", "Non0_F1_score")),
                  (mult, ("Accuracy", "F1 score")),
                  (dmd, ("Acc_2", "F1_score"))):
    for k in keys:
      assert math.isnan(d[k]), k
  # Everything else is still defined.
  assert mmsa["Has0_acc_2"] == 0.6  # p >= 0 at rows 0, 2, 3; truth all True.
  assert mmsa["Has0_F1_score"] == 0.75  # only class True has support: 2*3/8.
  assert mmsa["Mult_acc_7"] == 0.6     # rounds 0, -0, 0, 1, -3 vs 0.
  assert math.isnan(mmsa["Corr"])      # constant label vector.
  assert mmsa["MAE"] == round((0.3 + 0.2 + 0.0 + 1.4 + 2.6) / 5, 4)
  _check_against_ref(p, y)


def test_all_zero_truth_subset_selected_by_valid_mask():
  y = np.array([0.0, 1.0, 0.0, -2.0, 0.0])
  p = np.array([0.1, 1.2, -0.4, -1.9, 0.0])
  valid = np.array([True, False, True, False, True])
  got = metrics.mosi_regression_metrics(p, y, valid=valid)
  assert math.isnan(got["Non0_acc_2"]) and math.isnan(got["Non0_F1_score"])
  assert got["Has0_acc_2"] == round(2 / 3, 4)
  _check_against_ref(p, y, valid)


def test_constant_prediction_corr_is_nan_without_warning_and_json_safe():
  y = np.array([1 / 3, -1.0, 2.0, 0.0, -2 / 3, 1.5, -3.0, 0.5, 2.5, 0.0, 1.0])
  p = np.full(11, 0.1)  # eleven 0.1s: np.corrcoef's mean round-off case.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    mmsa = metrics.mosi_regression_metrics(p, y)
    mult = metrics.mosi_regression_metrics(p, y, variant="mult")
  assert math.isnan(mmsa["Corr"])
  assert math.isnan(mult["Correlation Coefficient"])
  assert not any(math.isnan(v) for k, v in mmsa.items() if k != "Corr")
  # Positive constant: every non-zero label is predicted positive.
  assert mmsa["Non0_acc_2"] == round(6 / 9, 4)
  _check_against_ref(p, y)

  safe = metrics.json_safe(mmsa)
  assert safe["Corr"] is None
  assert safe["MAE"] == mmsa["MAE"]
  text = json.dumps(safe, allow_nan=False)
  assert json.loads(text)["Corr"] is None


def test_single_valid_row():
  got = metrics.mosi_regression_metrics([1.0, 9.0], [2.0, -1.0],
                                        valid=np.array([True, False]))
  assert math.isnan(got["Corr"])
  assert got["MAE"] == 1.0
  assert got["Non0_acc_2"] == 1.0 and got["Non0_F1_score"] == 1.0
  _check_against_ref([1.0, 9.0], [2.0, -1.0], [True, False])


def test_regression_random_vectors_against_reference():
  rng = np.random.default_rng(20240601)
  for trial in range(60):
    n = int(rng.integers(1, 50))
    y = rng.integers(-9, 10, size=n) / 3.0           # multiples of 1/3.
    p = rng.normal(0.0, 2.0, size=n)
    if trial % 3 == 0:
      p = np.round(p * 2) / 2                          # many .5 boundaries.
    if trial % 5 == 0:
      p[rng.random(n) < 0.2] = 0.0                     # exact zero preds.
    p = p.astype(np.float32) if trial % 2 else p      # float32 model output.
    valid = rng.random(n) < 0.8
    valid[int(rng.integers(0, n))] = True
    # sklearn on every fourth trial, the counting loop on the others.
    _check_against_ref(p, y, use_sklearn=trial % 4 == 0)
    _check_against_ref(p, y, valid, use_sklearn=trial % 4 == 1)


def test_bfloat16_inputs_are_widened_exactly():
  import ml_dtypes  # pylint: disable=g-import-not-at-top  # JAX dependency.
  p16 = _P.astype(ml_dtypes.bfloat16)
  assert (metrics.mosi_regression_metrics(p16, _Y, "mult")
          == metrics.mosi_regression_metrics(p16.astype(np.float32), _Y,
                                             "mult"))
  logits = np.array([[0.1, 2.0], [3.0, -1.0]]).astype(ml_dtypes.bfloat16)
  assert metrics.accuracy(logits, [1, 0]) == 1.0


def test_regression_accepts_column_shapes_and_valid_ignores_padding():
  y = _Y
  p = _P
  flat = metrics.mosi_regression_metrics(p, y)
  assert metrics.mosi_regression_metrics(p[:, None], y[:, None, None]) == flat
  # Padded rows hold garbage, NaN included; the mask removes them first.
  p_pad = np.concatenate([p, [np.nan, 100.0, -7.0]])
  y_pad = np.concatenate([y, [np.inf, 0.0, 3.0]])
  valid = np.arange(len(p_pad)) < len(p)
  for variant in metrics.REGRESSION_VARIANTS:
    assert (metrics.mosi_regression_metrics(p_pad, y_pad, variant, valid)
            == metrics.mosi_regression_metrics(p, y, variant))


# ----------------------------------------------------------------------------
# Classification.
# ----------------------------------------------------------------------------


def _ref_balancebenchmark_macro_f1(y, p, num_classes):
  """Loop form of BalanceBenchmark's confusion-matrix macro F1."""
  scores = []
  for c in range(num_classes):
    tp = sum(1 for t, q in zip(y, p) if t == c and q == c)
    fp = sum(1 for t, q in zip(y, p) if t != c and q == c)
    fn = sum(1 for t, q in zip(y, p) if t == c and q != c)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
  return sum(scores) / num_classes


def test_macro_f1_counts_absent_classes_unlike_sklearn_default():
  num_classes = 5
  y = np.array([0, 0, 1, 1, 2, 2, 2])
  p = np.array([0, 1, 1, 1, 2, 3, 0])  # class 3 predicted, never true;
  # class 4 absent from both.
  # Per class F1: 0: P 1/2 R 1/2 -> 1/2; 1: P 2/3 R 1 -> 4/5;
  # 2: P 1 R 1/3 -> 1/2; 3: 0; 4: 0. Mean over 5 = 1.8 / 5.
  got = metrics.macro_f1(p, y, num_classes)
  assert got == pytest.approx(1.8 / 5, abs=1e-15)
  assert got == pytest.approx(_ref_balancebenchmark_macro_f1(y, p, 5),
                              abs=1e-15)
  sk_default = f1_score(y, p, average="macro", zero_division=0)
  assert sk_default == pytest.approx(1.8 / 4)  # skips absent class 4.
  assert got != pytest.approx(sk_default, abs=1e-6)
  sk_all = f1_score(y, p, average="macro", labels=list(range(num_classes)),
                    zero_division=0)
  assert got == pytest.approx(sk_all, abs=1e-12)


def test_classification_random_against_sklearn_and_loops():
  rng = np.random.default_rng(7)
  for _ in range(40):
    n = int(rng.integers(1, 80))
    num_classes = int(rng.integers(1, 9))
    logits = rng.normal(size=(n, num_classes)).astype(np.float32)
    # Labels drawn from a subset so that some classes are absent.
    labels = rng.integers(0, max(1, num_classes - 1), size=n)
    valid = rng.random(n) < 0.75
    valid[0] = True
    pred = np.argmax(logits, axis=1)
    ps, ys = pred[valid], labels[valid]
    got = metrics.classification_metrics(logits, labels, num_classes, valid)
    assert set(got) == {"accuracy", "macro_f1"}
    assert got["accuracy"] == accuracy_score(ys, ps)
    assert got["accuracy"] == metrics.accuracy(logits, labels, valid)
    assert got["accuracy"] == metrics.accuracy(pred, labels, valid)
    sk = f1_score(ys, ps, average="macro", labels=list(range(num_classes)),
                  zero_division=0)
    assert got["macro_f1"] == pytest.approx(sk, abs=1e-12)
    assert got["macro_f1"] == pytest.approx(
        _ref_balancebenchmark_macro_f1(list(ys), list(ps), num_classes),
        abs=1e-12)
    assert got["macro_f1"] == metrics.macro_f1(pred, labels, num_classes,
                                               valid)


def test_classification_valid_mask_ignores_padded_rows():
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0],
                     [9.0, 0.0, 0.0], [np.nan, 0.0, 0.0]])
  labels = np.array([0, 1, 1, 2, 0])  # rows 3, 4 pad the batch.
  valid = np.array([True, True, True, False, False])
  got = metrics.classification_metrics(logits, labels, 3, valid)
  assert got["accuracy"] == 2 / 3
  # class 0: F1 1; class 1: P 1 R 1/2 -> 2/3; class 2: P 0 -> 0.
  assert got["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-15)
  assert got == metrics.classification_metrics(logits[:3], labels[:3], 3)


def test_accuracy_float_ids_and_argmax_ties():
  assert metrics.accuracy(np.array([0.0, 2.0, 1.0]), [0, 2, 2]) == 2 / 3
  # Ties resolve to the first index, like np.argmax / torch.argmax on CPU.
  assert metrics.accuracy(np.array([[1.0, 1.0], [0.0, 0.0]]), [0, 0]) == 1.0


# ----------------------------------------------------------------------------
# AVE localisation.
# ----------------------------------------------------------------------------


def _ref_compute_acc(labels_onehot, logits):
  """Double loop as AVE-ECCV18 compute_acc, then sklearn accuracy."""
  real, pred = [], []
  for i in range(labels_onehot.shape[0]):
    for j in range(labels_onehot.shape[1]):
      real.append(int(np.argmax(labels_onehot[i, j, :])))
      pred.append(int(np.argmax(logits[i, j, :])))
  return accuracy_score(real, pred)


def test_ave_segment_accuracy_with_background():
  rng = np.random.default_rng(3)
  n, s, c = 6, 10, 29
  ids = rng.integers(0, 28, size=(n, s))
  ids[:, :3] = 28                 # background segments (index 28).
  ids[5] = 28                     # one all-background video.
  onehot = np.eye(c, dtype=np.float32)[ids]
  logits = rng.normal(size=(n, s, c)).astype(np.float32)
  hit = rng.random((n, s)) < 0.6
  logits[hit, ids[hit]] += 10.0   # make ~60 % of the segments right.
  expected = _ref_compute_acc(onehot, logits)
  assert 0.3 < expected < 0.9
  assert metrics.ave_segment_accuracy(logits, onehot) == expected
  assert metrics.ave_segment_accuracy(logits, ids) == expected
  # Background counts like any class: predicting background everywhere scores
  # the share of background segments.
  bg_logits = np.zeros((n, s, c))
  bg_logits[..., 28] = 1.0
  assert metrics.ave_segment_accuracy(bg_logits, ids) == np.mean(ids == 28)
  # Valid mask over videos.
  valid = np.array([True, True, False, True, False, True])
  got = metrics.ave_segment_accuracy(logits, onehot, valid)
  assert got == _ref_compute_acc(onehot[valid], logits[valid])
  garbage = logits.copy()
  garbage[~valid] = np.nan
  assert metrics.ave_segment_accuracy(garbage, ids, valid) == got


# ----------------------------------------------------------------------------
# Seeds, dispatch, JSON.
# ----------------------------------------------------------------------------


def test_aggregate_over_seeds_population_std():
  runs = [{"Non0_acc_2": 0.8012, "MAE": 0.7123},
          {"Non0_acc_2": 0.8150, "MAE": 0.7011},
          {"Non0_acc_2": 0.7969, "MAE": 0.7254}]
  got = metrics.aggregate_over_seeds(runs)
  for k in ("Non0_acc_2", "MAE"):
    vals = [r[k] for r in runs]
    mean = math.fsum(vals) / 3
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / 3)  # ddof 0.
    assert got[k]["n"] == 3
    assert got[k]["mean"] == pytest.approx(mean, abs=1e-15)
    assert got[k]["std"] == pytest.approx(std, abs=1e-15)
    assert got[k]["std"] == pytest.approx(statistics.pstdev(vals), abs=1e-15)
    assert got[k]["std"] < statistics.stdev(vals)  # not the sample std.
  mmsa = metrics.aggregate_over_seeds(runs, scale=100, decimals=2)
  # Non0 in %: mean 80.4367 -> 80.44; deviations -0.3167, 1.0633, -0.7467,
  # std = sqrt((0.1003 + 1.1307 + 0.5575) / 3) = sqrt(0.5962) = 0.7721 -> 0.77
  # (the sample std would be 0.9457).
  assert mmsa["Non0_acc_2"] == {"mean": 80.44, "std": 0.77, "n": 3}
  assert mmsa["MAE"]["mean"] == 71.29
  assert list(mmsa) == ["Non0_acc_2", "MAE"]
  # None (a JSON-safe NaN) propagates as NaN.
  nan_runs = [{"Corr": 0.5}, {"Corr": None}]
  agg = metrics.aggregate_over_seeds(nan_runs)
  assert math.isnan(agg["Corr"]["mean"]) and agg["Corr"]["n"] == 2


def test_metrics_for_task_dispatch():
  reg = metrics.metrics_for_task("regression", _P, _Y, None)
  assert reg == metrics.mosi_regression_metrics(_P, _Y)
  dmd = metrics.metrics_for_task("regression", _P, _Y, None, variant="dmd")
  assert tuple(dmd) == metrics.DMD_KEYS
  logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0]])
  labels = np.array([1, 0, 0])
  valid = np.array([True, True, False])
  cls = metrics.metrics_for_task("classification", logits, labels, valid)
  assert cls == {"accuracy": 1.0, "macro_f1": pytest.approx(2 / 3)}
  cls4 = metrics.metrics_for_task("classification", np.argmax(logits, 1),
                                  labels, valid, num_classes=4)
  assert cls4["macro_f1"] == pytest.approx(0.5)
  seg = metrics.metrics_for_task("segment_classification",
                                 np.eye(3)[[[0, 1], [2, 2]]],
                                 np.array([[0, 1], [2, 0]]), None)
  assert seg == {"segment_accuracy": 0.75}


def test_json_safe():
  obj = {"a": np.float32(0.5), "b": float("nan"), "c": [np.inf, 1, None],
         "d": {"e": np.int64(3), "f": np.array([1.0, np.nan])}}
  assert metrics.json_safe(obj) == {"a": 0.5, "b": None, "c": [None, 1, None],
                                    "d": {"e": 3, "f": [1.0, None]}}


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------

_ERRORS = [
    # (function, args, kwargs, message regex)
    (metrics.mosi_regression_metrics, ([0.1, 0.2, 0.3], [0.1, 0.2]), {},
     r"`pred` and `label` must have the same number of examples N; found 3 "
     r"and 2"),
    (metrics.mosi_regression_metrics, (np.zeros((3, 2)), np.zeros(3)), {},
     r"`pred` must have shape \[N\] or \[N, 1\].*found shape \(3, 2\)"),
    (metrics.mosi_regression_metrics, (0.5, 0.5), {},
     r"`pred` must have a leading example axis"),
    (metrics.mosi_regression_metrics, ([], []), {}, r"`pred` is empty"),
    (metrics.mosi_regression_metrics, ([0.1], [0.2]), {"variant": "misa"},
     r"`variant` must be one of \('mmsa', 'mult', 'dmd'\); found 'misa'"),
    (metrics.mosi_regression_metrics, ([np.nan, 0.2], [0.1, 0.2]), {},
     r"`pred` contains 1 non-finite"),
    (metrics.mosi_regression_metrics, ([0.1, 0.2], [0.1, 0.2]),
     {"valid": np.array([1, 0])}, r"`valid` must be a boolean mask.*int"),
    (metrics.mosi_regression_metrics, ([0.1, 0.2], [0.1, 0.2]),
     {"valid": np.array([True, False, True])},
     r"`valid` must have shape \[N\] = \(2,\); found shape \(3,\)"),
    (metrics.mosi_regression_metrics, ([0.1, 0.2], [0.1, 0.2]),
     {"valid": np.array([False, False])}, r"`valid` is False on every row"),
    (metrics.accuracy, ([0, 1, 2], [0, 1]), {},
     r"`pred` and `labels` must have the same number of examples N; found 3 "
     r"and 2"),
    (metrics.accuracy, (np.zeros((2, 3, 4)), [0, 1]), {},
     r"`pred` must be class ids \[N\] or logits/scores \[N, C\]; found shape "
     r"\(2, 3, 4\)"),
    (metrics.accuracy, ([0, 1], np.zeros((2, 3), int)), {},
     r"`labels` must have shape \[N\].*found shape \(2, 3\)"),
    (metrics.accuracy, (np.zeros((2, 3)), [0, 3]), {},
     r"`labels` must hold class ids in \[0, 3\); found 3"),
    (metrics.accuracy, ([0, 1], [0, -1]), {},
     r"`labels` must hold class ids >= 0; found -1"),
    (metrics.accuracy, ([0, 1], [0.0, 0.5]), {},
     r"`labels` must hold integer class ids; found non-integral"),
    (metrics.accuracy, ([0, 1], np.array([True, False])), {},
     r"`labels` must hold integer class ids; found dtype bool"),
    (metrics.macro_f1, ([0, 1], [0, 5], 5), {},
     r"`labels` must hold class ids in \[0, 5\); found 5"),
    (metrics.macro_f1, ([0, 7], [0, 1], 5), {},
     r"`pred` must hold class ids in \[0, 5\); found 7"),
    (metrics.macro_f1, (np.zeros((2, 4)), [0, 1], 5), {},
     r"`pred` logits must have shape \[N, num_classes=5\]; found C = 4"),
    (metrics.macro_f1, ([0, 1], [0, 1], 0), {},
     r"`num_classes` must be a positive integer; found 0"),
    (metrics.classification_metrics, (np.zeros((2, 4)), [0, 1], 3), {},
     r"`logits` logits must have shape \[N, num_classes=3\]; found C = 4"),
    (metrics.classification_metrics, (np.zeros((3, 3)), [0, 1], 3), {},
     r"`logits` and `labels` must have the same number of examples N"),
    (metrics.ave_segment_accuracy, (np.zeros((2, 10)), np.zeros((2, 10), int)),
     {}, r"`logits` must have shape \[N, S, C\]; found shape \(2, 10\)"),
    (metrics.ave_segment_accuracy,
     (np.zeros((2, 10, 29)), np.zeros((2, 9), int)), {},
     r"`labels` \[N, S\] must match `logits`.*found shape \(2, 9\)"),
    (metrics.ave_segment_accuracy,
     (np.zeros((2, 10, 29)), np.zeros((2, 10, 28))), {},
     r"one-hot `labels` \[N, S, C\] must have the shape of `logits`"),
    (metrics.ave_segment_accuracy,
     (np.zeros((2, 10, 29)), np.full((2, 10), 29)), {},
     r"`labels` must hold class ids in \[0, 29\); found 29"),
    (metrics.ave_segment_accuracy,
     (np.zeros((3, 10, 29)), np.zeros((2, 10), int)), {},
     r"`logits` and `labels` must have the same number of examples N; found "
     r"3 and 2"),
    (metrics.ave_segment_accuracy, (np.zeros((2, 10, 29)), np.zeros(2, int)),
     {}, r"`labels` must have shape \[N, S\] \(class ids\) or \[N, S, C\]"),
    (metrics.aggregate_over_seeds, ([],), {},
     r"`results` must be a non-empty list"),
    (metrics.aggregate_over_seeds, ([{"a": 1.0}, {"b": 1.0}],), {},
     r"`results\[1\]` has keys \['b'\]; expected the keys of `results\[0\]`"),
    (metrics.aggregate_over_seeds, ([{"a": 1.0}, {"a": "x"}],), {},
     r"`results\[1\]\['a'\]` must be a number"),
    (metrics.metrics_for_task, ("detection", [0.1], [0.1], None), {},
     r"`task` must be one of .*found 'detection'"),
    (metrics.metrics_for_task, ("classification", [0, 1], [0, 1], None), {},
     r"`num_classes` is required when `prediction` holds class ids"),
]


@pytest.mark.parametrize(
    "fn,args,kwargs,match", _ERRORS,
    ids=[f"{e[0].__name__}-{i}" for i, e in enumerate(_ERRORS)])
def test_bad_input_raises_clear_value_error(fn, args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fn(*args, **kwargs)


def test_metrics_module_imports_no_framework():
  """metrics.py is host-side numpy: no JAX, TensorFlow, torch or sklearn."""
  src = pathlib.Path(metrics.__file__).read_text()
  imported = set()
  for node in ast.walk(ast.parse(src)):
    if isinstance(node, ast.Import):
      imported.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      imported.add(node.module.split(".")[0])
  assert imported <= {"__future__", "math", "typing", "numpy"}, imported
