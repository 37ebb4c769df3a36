"""Analyses of trained runs and sweeps (clcr_jax/analyze.py) and the analysis notebook, on the
runs of the tiny synthetic sweep (tests/tiny_sweep.py)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clcr_jax import analyze
from clcr_jax import models
from session_once import run_once
from tiny_sweep import REPO, RUNS, tiny_sweep  # pylint: disable=unused-import

RUN_FILES = ("noise.json", "noise.png", "missing.json", "missing.png", "weights.json",
             "weights.png", "participation.json", "participation.png", "analysis.json")
SIGMAS = (0.0, 0.5, 8.0)


@pytest.fixture(scope="module")
def analyses(tiny_sweep, tmp_path_factory, worker_id):
  """The analysis of two runs (seeds 0 and 1 of one point): the first through the CLI, the
  second in process."""
  root, _ = tiny_sweep

  def build(directory):
    cli = subprocess.run(
        [sys.executable, "-m", "clcr_jax.analyze", f"--workdir={root / RUNS[0]}",
         f"--out={directory / 'cli'}", f"--sigmas={','.join(map(str, SIGMAS))}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    (directory / "cli.log").write_text(cli.stdout + cli.stderr)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    second = analyze.analyze_run(str(root / RUNS[1]), "test", SIGMAS)
    analyze.write_run_analysis(second, str(directory / "inprocess"))

  directory = run_once(tmp_path_factory, worker_id, "tiny_analyses", build)
  load = lambda sub: json.loads((directory / sub / "analysis.json").read_text())
  return directory, load("cli"), load("inprocess")


def _results(root, run):
  with open(root / run / "results.json") as f:
    return json.load(f)["test"]


def test_analyze_writes_every_file(analyses):
  directory, first, _ = analyses
  for name in RUN_FILES:
    path = directory / "cli" / name
    assert path.exists(), name
    if name.endswith(".png"):
      assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    else:
      json.loads(path.read_text())
  assert first["task"] == "classification" and first["split"] == "test"
  assert first["noise"]["metric"] == "accuracy"


def test_cli_reports_the_progress_of_each_analysis(analyses):
  directory, first, _ = analyses
  lines = (directory / "cli.log").read_text().splitlines()
  passes = {"noise": len(first["noise"]["curves"]) * sum(s != 0 for s in SIGMAS),
            "missing": len(first["missing"]["conditions"]) - 1}
  for name, total in passes.items():
    progress = [l for l in lines if l.startswith(f"{name}: passes ")]
    assert len(progress) == total, lines
    assert progress[-1].startswith(f"{name}: passes {total}/{total} ("), progress
    assert all("s/pass | ETA " in l for l in progress), progress


def test_clean_analysis_reproduces_results_json(tiny_sweep, analyses):
  root, _ = tiny_sweep
  _, first, second = analyses
  for run, result in ((RUNS[0], first), (RUNS[1], second)):
    expected = _results(root, run)
    assert result["metrics"].keys() == expected.keys()
    for key, value in expected.items():
      assert result["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    clean = result["noise"]["curves"]["all"][0]
    assert clean["sigma"] == 0.0 and clean["accuracy"] == expected["accuracy"]
    assert result["missing"]["conditions"][0]["condition"] == "all present"
    assert result["missing"]["conditions"][0]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    # The overall participation per level is results.json's participation/level{l}.
    part = result["participation"]
    assert part["overall"] == pytest.approx(
        [expected[f"participation/level{l}"] for l in range(3)], abs=1e-6)


def test_noise_and_missing_modalities_change_the_metrics(analyses):
  _, first, _ = analyses
  curves = first["noise"]["curves"]
  assert set(curves) == {"audio", "text", "vision", "all"}
  assert first["noise"]["sigmas"] == list(SIGMAS)
  assert all(v > 0 for v in first["noise"]["input_std"].values())
  for target, points in curves.items():
    assert [p["sigma"] for p in points] == list(SIGMAS)
    losses = [p["loss"] for p in points]
    assert abs(losses[1] - losses[0]) > 1e-6 and abs(losses[2] - losses[0]) > 1e-3, target
  conditions = {c["condition"]: c for c in first["missing"]["conditions"]}
  assert list(conditions) == ["all present", "without audio", "without text", "without vision",
                              "only audio", "only text", "only vision"]
  clean = conditions["all present"]["loss"]
  assert all(abs(c["loss"] - clean) > 1e-6 for k, c in conditions.items() if k != "all present")
  assert conditions["only text"]["missing"] == ["audio", "vision"]


def test_weights_per_class_are_distributions_and_differ_between_runs(analyses):
  _, first, second = analyses
  w1, w2 = first["weights"], second["weights"]
  assert w1["grouping"] == "class" and w1["modalities"] == ["audio", "text", "vision"]
  assert sum(w1["count"]) == 32  # the tiny test split
  assert len(w1["groups"]) == 8 and w1["groups"][5] == "g1w0l1"  # the reader's class names
  for w in (w1, w2):
    for name, width in (("beta", 3), ("omega", 3)):
      for row, count in zip(w[name], w["count"]):
        if count:
          assert len(row) == width and sum(row) == pytest.approx(1.0, abs=1e-5)
  b1, b2 = np.array(w1["beta_overall"]), np.array(w2["beta_overall"])
  assert np.abs(b1 - b2).max() > 1e-3  # different seeds learn different modality weights
  present = [g for g, c in enumerate(w1["count"]) if c]
  per_class = np.array([w1["beta"][g] for g in present])
  assert np.ptp(per_class, axis=0).max() > 1e-4  # and the weights vary over classes


def test_participation_per_level_and_modality(analyses):
  _, first, _ = analyses
  part = first["participation"]
  assert part["levels"] == ["level0", "level1", "level2"]
  assert part["modalities"] == ["audio", "text", "vision"]
  for key in ("participation", "alpha_mass"):
    values = np.array(part[key], float)
    assert values.shape == (3, 3) and (values >= 0).all() and (values <= 1).all()
  # alpha is clip(score - tau, 0, 1): its mass per token is at most the fraction picked.
  assert (np.array(part["alpha_mass"]) <= np.array(part["participation"]) + 1e-9).all()
  # A few tiny steps move the learnable ratio little from its initial value.
  ratio0 = models.default_config().budget.participation_init
  assert part["budget_ratio"] == pytest.approx([ratio0] * 3, rel=0.5)


def test_noise_transform_is_deterministic_and_spares_padding():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6, 3)).astype(np.float32)
  mask = np.ones((4, 6), bool)
  mask[:, 4:] = False
  batch = {"inputs": {"a": x, "b": x.copy()}, "masks": {"a": mask, "b": mask},
           "label": np.zeros(4), "valid": np.ones(4, bool)}
  noisy = analyze.gaussian_noise(["a"], 2.0, {"a": 0.5, "b": 1.0}, seed=3)
  out1, out2 = noisy(batch, 7), noisy(batch, 7)
  np.testing.assert_array_equal(out1["inputs"]["a"], out2["inputs"]["a"])
  delta = out1["inputs"]["a"] - x
  assert np.all(delta[:, 4:] == 0) and np.all(delta[:, :4] != 0)
  assert np.std(delta[:, :4]) == pytest.approx(1.0, rel=0.35)  # sigma * std = 2 * 0.5
  np.testing.assert_array_equal(out1["inputs"]["b"], x)  # other modalities untouched
  assert not np.array_equal(noisy(batch, 8)["inputs"]["a"], out1["inputs"]["a"])
  dropped = analyze.drop_modalities(["b"])(batch, 0)
  assert not dropped["masks"]["b"].any() and not dropped["inputs"]["b"].any()
  assert dropped["masks"]["a"] is mask


def test_groups_for_regression_and_segments():
  ids, names = analyze._groups(np.array([-1.2, 0.0, 0.4, 2.0]), "regression")
  assert names == ["negative", "zero", "positive"] and ids.tolist() == [0, 1, 2, 2]
  ids, names = analyze._groups(np.array([[0, 3, 3], [2, 2, 1]]), "segment_classification")
  assert ids.tolist() == [3, 2] and names == ["0", "1", "2", "3"]


def test_sweep_curve_over_the_tiny_sweep(tiny_sweep, tmp_path):
  root, _ = tiny_sweep
  with open(root / "summary.csv") as f:
    table = {r["data.noise"]: r for r in csv.DictReader(f)}
  curve = analyze.sweep_curve(str(root))
  assert curve["x"] == "data.noise" and curve["metric"] == "accuracy"
  assert [p["x"] for p in curve["points"]] == [0.5, 1.5]
  for p in curve["points"]:
    row = table[str(p["x"])]
    assert p["mean"] == float(row["accuracy:mean"]) and p["std"] == float(row["accuracy:std"])
  # x may be a measured metric (the budget sweep's participation), or the points themselves.
  measured = analyze.sweep_curve(str(root), x="participation/mean", metric="loss")
  assert [p["x"] for p in measured["points"]] == [
      float(table[str(x)]["participation/mean:mean"]) for x in (0.5, 1.5)]
  assert {p["mean"] for p in measured["points"]} == {float(r["loss:mean"]) for r in table.values()}
  bars = analyze.sweep_curve(str(root), x="point")
  assert [p["x"] for p in bars["points"]] == ["noise 0.5", "noise 1.5"]
  shutil.copy(root / "summary.csv", tmp_path / "summary.csv")
  out = subprocess.run([sys.executable, "-m", "clcr_jax.analyze", f"--sweep={tmp_path}",
                        "--metric=loss"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  written = json.loads((tmp_path / "analysis" / "sweep_curve.json").read_text())
  assert written["metric"] == "loss" and len(written["points"]) == 2
  assert (tmp_path / "analysis" / "sweep_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_module_imports_neither_tensorflow_nor_matplotlib():
  code = ("import sys, clcr_jax.analyze; "
          "print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=True)
  assert out.stdout.strip() == "[]"


def test_analysis_notebook_runs(tiny_sweep, tmp_path):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel
  root, _ = tiny_sweep
  sweep = tmp_path / "sweep"
  shutil.copytree(root, sweep)  # the notebook reruns the (finished) sweep and writes into it
  path = os.path.join(REPO, "experiments", "notebooks", "analysis.ipynb")
  nb = nbformat.read(path, as_version=4)
  env = {"CLCR_ANALYSIS_TINY": "1", "CLCR_ANALYSIS_SWEEP": str(sweep)}
  os.environ.update(env)
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  finally:
    for k in env:
      del os.environ[k]
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
  assert "[skip] data.noise=0.5__seed=0" in outputs  # the finished sweep was not rerun
  assert "noise 0.5" in outputs and "without audio" in outputs
  assert images >= 5  # sweep curve, noise, missing, weights, participation
  assert (sweep / RUNS[0] / "analysis" / "analysis.json").exists()
