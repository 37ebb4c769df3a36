"""Leakage probes (clcr_jax.analyze.leakage_probes): the ridge probe against independent
least-squares fits, the targets made of the true factors, and a tiny trained CLCR run (the first
run of the tiny synthetic sweep, tests/tiny_sweep.py, shared with tests/test_analyze.py), with
the w/o IntraCED ablation and a model without summaries."""
from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest

import clcr_jax
from clcr_jax import analyze
from clcr_jax import inference
from clcr_jax import models
from session_once import run_once
from tiny_sweep import RUNS, tiny_sweep  # pylint: disable=unused-import


def _halves(n, seed=0):
  """The fitting and held-out rows fit_probe uses (its docstring: a permutation from seed)."""
  order = np.random.default_rng(seed).permutation(n)
  return order[:n // 2], order[n // 2:]


def test_probe_finds_a_linear_factor_and_not_an_absent_one():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 12))
  present = (x @ rng.normal(size=12) + 0.1 * rng.normal(size=2000) > 0).astype(np.int32)
  absent = rng.integers(0, 2, 2000)
  hit = analyze.fit_probe(x, present, "binary")
  miss = analyze.fit_probe(x, absent, "binary")
  assert hit["score"] > 0.95
  assert abs(miss["score"] - 0.5) < 0.05 and abs(miss["chance"] - 0.5) < 0.05
  assert hit["rows"] == (1000, 1000)
  # A continuous factor absent from the features has held-out R^2 near 0 (at most ~0).
  assert analyze.fit_probe(x, rng.normal(size=2000), "continuous")["score"] < 0.02


def test_probe_r2_matches_least_squares_computed_independently():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(600, 5)) * [1.0, 3.0, 0.2, 1.0, 10.0] + 4.0
  y = x @ np.array([0.5, -0.2, 2.0, 0.0, 0.03]) + 1.5 + rng.normal(size=600)
  fit, held = _halves(600)
  # Ordinary least squares with an intercept, by numpy.linalg.lstsq, on the same halves.
  design = lambda rows: np.c_[x[rows], np.ones(len(rows))]
  w = np.linalg.lstsq(design(fit), y[fit], rcond=None)[0]
  residual = y[held] - design(held) @ w
  expected = 1.0 - (residual**2).sum() / ((y[held] - y[held].mean())**2).sum()
  assert analyze.fit_probe(x, y, "continuous", ridges=(0.0,))["score"] == pytest.approx(
      expected, rel=1e-9)
  # With its own ridge choice it lands close to OLS here (n >> p).
  assert analyze.fit_probe(x, y, "continuous")["score"] == pytest.approx(expected, abs=0.01)
  # One feature: numpy.polyfit of degree 1.
  slope, intercept = np.polyfit(x[fit, 1], y[fit], 1)
  residual = y[held] - (slope * x[held, 1] + intercept)
  expected = 1.0 - (residual**2).sum() / ((y[held] - y[held].mean())**2).sum()
  assert analyze.fit_probe(x[:, 1:2], y, "continuous", ridges=(0.0,))["score"] == pytest.approx(
      expected, rel=1e-9)


def test_probe_checks_its_input():
  x = np.zeros((10, 2))
  with pytest.raises(ValueError, match=r"features \[N, P\] and target \[N\]; found \(10, 2\) "
                                       r"and \(9,\)"):
    analyze.fit_probe(x, np.zeros(9), "binary")
  with pytest.raises(ValueError, match="exactly 2 values"):
    analyze.fit_probe(x, np.arange(10) % 3, "binary")
  with pytest.raises(ValueError, match="kind must be 'binary' or 'continuous', found 'r2'"):
    analyze.fit_probe(x, np.zeros(10), "r2")


def test_probe_targets_summarise_the_nuisance_over_valid_tokens():
  rng = np.random.default_rng(2)
  nuisance = {"a": rng.normal(size=(6, 5, 2)), "b": rng.normal(size=(6, 3, 2))}
  masks = {"a": np.arange(5)[None] < np.array([5, 4, 3, 2, 1, 0])[:, None],
           "b": np.ones((6, 3), bool)}
  factors = {"bit": np.array([0, 1, 1, 0, 1, 0], np.int32), "time": rng.uniform(size=6),
             "klass": np.arange(6, dtype=np.int32), "flat": np.ones(6, np.int32),
             "nuisance": nuisance}
  targets, skipped = analyze.probe_targets(factors, masks)
  assert targets["bit"][1] == "binary" and targets["time"][1] == "continuous"
  assert set(skipped) == {"klass", "flat"}
  for m in ("a", "b"):
    for i in range(6):
      valid = nuisance[m][i][masks[m][i]]
      walk, bursts = targets[f"nuisance_walk/{m}"][0][i], targets[f"nuisance_bursts/{m}"][0][i]
      if len(valid):
        assert walk == pytest.approx(valid[:, 0].mean())
        assert bursts == pytest.approx(np.abs(valid[:, 1]).mean())
      else:  # no valid token: left out of the probe
        assert np.isnan(walk) and np.isnan(bursts)
  with pytest.raises(ValueError, match="needs its mask"):
    analyze.probe_targets({"nuisance": nuisance}, {"b": masks["b"]})


@pytest.fixture(scope="module")
def probed_run(tiny_sweep, tmp_path_factory, worker_id):
  """(predictor, reader, CLI output directory) of a tiny CLCR run probed through the CLI."""
  root, _ = tiny_sweep
  workdir = str(root / RUNS[0])

  def build(directory):
    assert analyze.main([f"--workdir={workdir}", "--probes", f"--out={directory}"]) == 0

  directory = run_once(tmp_path_factory, worker_id, "tiny_probes", build)
  predictor = clcr_jax.load(workdir)
  return predictor, predictor.reader(), directory


def _check_scores(result, streams):
  for stream in streams:
    scores = result[stream]
    assert set(scores) == set(result["kind"])
    for name, value in scores.items():
      if result["kind"][name] == "accuracy":
        assert 0.0 <= value <= 1.0, (stream, name)
      else:
        assert value is None or value <= 1.0, (stream, name)


def test_leakage_probes_of_a_tiny_clcr_run(probed_run):
  _, _, directory = probed_run
  result = json.loads((directory / "leakage_probes.json").read_text())
  assert (directory / "leakage_probes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert result["model"] == "clcr" and result["dataset"] == "synthetic" and result["rows"] == 32
  assert result["label_factors"] == ["global", "window", "local"]
  kinds = result["kind"]
  assert {k for k, v in kinds.items() if v == "accuracy"} == {"global", "window", "local"}
  assert {k for k, v in kinds.items() if v == "r2"} == {"event_time", "window_start"} | {
      f"nuisance_{c}/{m}" for c in ("walk", "bursts") for m in ("audio", "text", "vision")}
  assert sorted(result["nuisance_factors"]) == sorted(k for k in kinds if "nuisance" in k)
  d = result["features"]
  assert d["levels"] == 3 and d["shared"] == d["private"] == 3 * 3 * 16  # L x M x d
  _check_scores(result, ("shared", "private"))
  assert all(0.0 <= v <= 1.0 for k, v in result["chance"].items() if kinds[k] == "accuracy")
  head = result["headline"]
  assert head["nuisance_to_shared_r2"] <= 1.0 and head["nuisance_to_private_r2"] <= 1.0
  assert head["nuisance_to_shared_r2"] == pytest.approx(
      np.mean([result["shared"][k] for k in result["nuisance_factors"]]))
  assert 0.0 <= head["label_in_private_accuracy"] <= 1.0
  assert head["label_in_private_accuracy"] == pytest.approx(
      np.mean([result["private"][b] for b in result["label_factors"]]))
  assert result["step"] > 0 and result["checkpoint"] == "best"


def test_without_intraced_there_is_no_private_stream(probed_run):
  predictor, reader, _ = probed_run
  config = ml_collections.ConfigDict(predictor.config.to_dict())
  config.model.ablation.no_intraced = True
  batch = reader.load_examples("test", np.arange(4), train=False)
  variables = models.build_model(config.model).init(jax.random.PRNGKey(0), batch["inputs"],
                                                    batch["masks"], train=False)
  ablated = inference.Predictor(config, variables, 0, predictor.workdir)
  result = analyze.leakage_probes(ablated, reader, "test")
  assert result["private"] is None and result["features"]["private"] is None
  assert result["headline"]["label_in_private_accuracy"] is None
  assert result["headline"]["label_in_shared_accuracy"] is not None
  _check_scores(result, ("shared",))


class _NoSummaries:
  """A predictor whose model has no pooled summaries, like late fusion (aux: beta only)."""

  def __init__(self, predictor):
    self.config = ml_collections.ConfigDict(predictor.config.to_dict())
    self.config.model.name = "late_fusion"
    self._predictor = predictor

  def __call__(self, inputs, masks):
    prediction, aux = self._predictor(inputs, masks)
    return prediction, {"beta": aux["beta"]}

  def outputs(self, *args, **kwargs):  # what Predictor.outputs gives for such a model
    out = dict(self._predictor.outputs(*args, **kwargs))
    out.pop("shared", None)
    out.pop("private", None)
    return out


class _NoFactors:
  def __init__(self, reader):
    self._reader = reader

  def __getattr__(self, name):
    if name == "factors":
      raise AttributeError(name)
    return getattr(self._reader, name)


def test_clear_errors_for_a_model_or_dataset_without_what_probes_need(probed_run):
  predictor, reader, _ = probed_run
  with pytest.raises(ValueError, match="model 'late_fusion' has no pooled shared/private"):
    analyze.leakage_probes(_NoSummaries(predictor), reader, "test")
  with pytest.raises(ValueError, match="dataset 'synthetic' provides no true factors"):
    analyze.leakage_probes(predictor, _NoFactors(reader), "test")
  with pytest.raises(ValueError, match="factors for splits .* not 'nope'"):
    analyze.leakage_probes(predictor, reader, "nope")
