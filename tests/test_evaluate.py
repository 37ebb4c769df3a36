"""The evaluator (clcr_jax/evaluate.py) against independent numpy computations on fixed
predictions: per-example outputs, the metrics of a split, the train step's diagnostics, the eval
loop over a real reader, and the task metric / selection table."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from clcr_jax import evaluate
from clcr_jax import losses
from data_pipelines import registry
from experiments.configs import synthetic

B, L, C, T = 7, 3, 4, 5
MODALITIES = ("audio", "video")


def _config(task="classification", regression="l1", num_classes=C):
  return ml_collections.ConfigDict({
      "model": {"task": task, "num_classes": num_classes,
                "modalities": {m: {"kind": "sequence"} for m in MODALITIES}},
      "loss": {"regression": regression},
      "eval": {"regression_variant": "mmsa", "batch_size": 8, "select_on": "valid",
               "select_metric": "auto", "select_mode": "max"},
      "data": {"name": "fixed", "backend": "numpy"}})


def _fixed(seed=0):
  """A batch of B rows (the last two padding) with aux as CLCR returns it."""
  rng = np.random.default_rng(seed)
  masks = [{m: rng.random((B, T)) < 0.7 for m in MODALITIES} for _ in range(L)]
  alpha = [{m: np.where(rng.random((B, T)) < 0.5, rng.random((B, T)), 0.0).astype(np.float32)
            for m in MODALITIES} for _ in range(L)]
  softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)
  aux = {"omega": softmax(rng.normal(size=(B, L))).astype(np.float32),
         "beta": softmax(rng.normal(size=(B, 2))).astype(np.float32),
         "eta": rng.random((B, 2)).astype(np.float32),
         "alpha": alpha, "token_mask": masks, "budget_ratio": np.array([0.5, 0.25, 0.75])}
  valid = np.array([True] * (B - 2) + [False] * 2)
  batch = {"label": rng.integers(0, C, B), "valid": valid}
  prediction = rng.normal(size=(B, C)).astype(np.float32)
  return prediction, aux, batch


def _participation(aux):
  """Per example and level: valid tokens with alpha > 0 over valid tokens, all modalities."""
  out = np.zeros((B, L))
  for l in range(L):
    picked = sum(((aux["alpha"][l][m] > 0) & aux["token_mask"][l][m]).sum(-1) for m in MODALITIES)
    tokens = sum(aux["token_mask"][l][m].sum(-1) for m in MODALITIES)
    out[:, l] = picked / np.maximum(tokens, 1)
  return out


def test_batch_outputs_per_example():
  prediction, aux, batch = _fixed()
  out = jax.device_get(evaluate.batch_outputs(prediction, aux, batch, detail=True))
  np.testing.assert_allclose(out["participation"], _participation(aux), rtol=1e-6)
  for name in ("omega", "beta", "eta"):
    np.testing.assert_array_equal(out[name], aux[name])
  for l in range(L):
    for m in MODALITIES:
      mask, alpha = aux["token_mask"][l][m], aux["alpha"][l][m]
      np.testing.assert_array_equal(out["levels"][l][m]["tokens"], mask.sum(-1))
      np.testing.assert_array_equal(out["levels"][l][m]["picked"], ((alpha > 0) & mask).sum(-1))
      np.testing.assert_allclose(out["levels"][l][m]["mass"], (alpha * mask).sum(-1), rtol=1e-6)
  np.testing.assert_allclose(out["budget_ratio"], np.tile(aux["budget_ratio"], (B, 1)))
  # A model without a budget or weights (late fusion) yields the prediction and labels only.
  plain = evaluate.batch_outputs(prediction, {}, batch, detail=True)
  assert sorted(plain) == ["label", "prediction", "valid"]


def _macro_f1(pred, y, num_classes):
  f1 = []
  for c in range(num_classes):
    tp = np.sum((pred == c) & (y == c))
    fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
    f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
  return float(np.mean(f1))


def test_summarise_classification_matches_numpy():
  prediction, aux, batch = _fixed()
  outputs = jax.device_get(evaluate.batch_outputs(prediction, aux, batch))
  got = evaluate.summarise(outputs, _config())
  v = batch["valid"]
  p, y = prediction[v].astype(np.float64), batch["label"][v]
  logp = p - np.log(np.exp(p).sum(-1, keepdims=True))
  assert got["accuracy"] == pytest.approx(np.mean(p.argmax(-1) == y))
  assert got["macro_f1"] == pytest.approx(_macro_f1(p.argmax(-1), y, C))
  assert got["loss"] == pytest.approx(-np.mean(logp[np.arange(len(y)), y]), rel=1e-12)
  for l in range(L):
    assert got[f"omega/level{l}"] == pytest.approx(aux["omega"][v, l].mean(), rel=1e-6)
    assert got[f"participation/level{l}"] == pytest.approx(_participation(aux)[v, l].mean(),
                                                           rel=1e-6)
  for i, m in enumerate(MODALITIES):
    assert got[f"beta/{m}"] == pytest.approx(aux["beta"][v, i].mean(), rel=1e-6)
    assert got[f"eta/{m}"] == pytest.approx(aux["eta"][v, i].mean(), rel=1e-6)


@pytest.mark.parametrize("regression", ["l1", "mse"])
def test_summarise_regression_loss_and_mae(regression):
  rng = np.random.default_rng(1)
  prediction = rng.normal(size=(B, 1)).astype(np.float32)
  label = rng.uniform(-3, 3, size=(B, 1)).astype(np.float32)
  valid = np.array([True] * (B - 1) + [False])
  prediction[-1] = 1e6  # a padding row must not count
  outputs = {"prediction": prediction, "label": label, "valid": valid}
  got = evaluate.summarise(outputs, _config("regression", regression, 0))
  err = prediction[valid, 0].astype(np.float64) - label[valid, 0]
  expected = np.mean(np.abs(err)) if regression == "l1" else np.mean(err**2)
  assert got["loss"] == pytest.approx(expected, rel=1e-12)
  assert got["MAE"] == round(float(np.mean(np.abs(err))), 4)


def test_step_diagnostics_are_global_means_over_valid_rows():
  _, aux, batch = _fixed()
  got = jax.device_get(evaluate.step_diagnostics(aux, batch["valid"], losses.BatchAxis(),
                                                 MODALITIES))
  v = batch["valid"]
  for l in range(L):
    assert got[f"omega/level{l}"] == pytest.approx(aux["omega"][v, l].mean(), rel=1e-6)
    picked = sum(((aux["alpha"][l][m] > 0) & aux["token_mask"][l][m])[v].sum()
                 for m in MODALITIES)
    tokens = sum(aux["token_mask"][l][m][v].sum() for m in MODALITIES)
    # Token-weighted over the batch (train metric), not the per-example mean of results.json.
    assert got[f"budget/level{l}_participation"] == pytest.approx(picked / tokens, rel=1e-6)
    assert got[f"budget/level{l}_ratio"] == pytest.approx(aux["budget_ratio"][l])
  assert got["beta/video"] == pytest.approx(aux["beta"][v, 1].mean(), rel=1e-6)


def test_evaluator_runs_every_batch_of_a_split_once():
  """Over the tiny synthetic reader, with a fixed 'model' (logits = one-hot of label + 1 mod C):
  every valid row is seen once, padding is marked, transforms see each batch index."""
  config = synthetic.get_config("tiny")
  config.data.backend = "numpy"
  reader = registry.get_reader(config.data)
  num_classes = reader.task.num_classes
  config.model.task, config.model.num_classes = "classification", num_classes
  config.model.modalities = {m: {"kind": s.kind} for m, s in reader.modalities.items()}
  config.eval.batch_size = 16
  wrong = lambda y: np.eye(num_classes)[(y + 1) % num_classes]

  def predict(state, batch):
    logits = np.where(state, np.eye(num_classes)[batch["label"]], wrong(batch["label"]))
    return evaluate.batch_outputs(logits, {}, batch)

  seen = []
  evaluator = evaluate.Evaluator(config, reader, predict)
  outputs = evaluator.outputs(True, "test", transform=lambda b, i: seen.append(i) or b)
  n = reader.num_examples("test")
  assert outputs["valid"].sum() == n and len(outputs["valid"]) % 16 == 0
  assert seen == list(range(len(outputs["valid"]) // 16))
  assert outputs["prediction"].dtype == np.float64
  assert evaluator(True, "test")["accuracy"] == 1.0
  assert evaluator(False, "test")["accuracy"] == 0.0


def test_one_task_metric_table_for_selection_and_analyses():
  from clcr_jax import analyze  # pylint: disable=import-outside-toplevel
  eval_config = _config().eval
  for task, (metric, mode) in evaluate.TASK_METRICS.items():
    assert evaluate.selection_rule(eval_config, task) == ("valid", metric, mode)
  points = [{"metrics": {"loss": 1.0, "MAE": 1.0}}]
  assert analyze._default_metric(points) == evaluate.task_metric("regression")[0]  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="config.model.task must be one of"):
    evaluate.task_metric("ranking")
  eval_config.select_metric, eval_config.select_mode = "MAE", "lowest"
  with pytest.raises(ValueError, match="select_mode must be 'min' or 'max', found 'lowest'"):
    evaluate.selection_rule(eval_config, "regression")


def test_is_better_keeps_the_first_of_ties_and_skips_non_finite():
  assert evaluate.is_better(0.5, None, "max")
  assert not evaluate.is_better(0.5, 0.5, "max") and not evaluate.is_better(0.5, 0.5, "min")
  assert evaluate.is_better(0.4, 0.5, "min") and not evaluate.is_better(0.4, 0.5, "max")
  assert not evaluate.is_better(float("nan"), None, "min")
  assert not evaluate.is_better(None, 1.0, "min")
