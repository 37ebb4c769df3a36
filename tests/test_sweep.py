"""Sweeps (experiments/sweep.py, experiments/sweeps/*.py) and the TPU launcher.

The end-to-end tests use the tiny synthetic sweep that tests/tiny_sweep.py runs once per
session through the CLI, interrupting it on the way.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import stat
import subprocess
import sys

import numpy as np
import pytest

from experiments import sweep as sweep_lib
from tiny_sweep import REPO, RUNS, tiny_sweep  # pylint: disable=unused-import

SWEEPS = os.path.join(REPO, "experiments", "sweeps")
SHIPPED = ("ablation", "regularizers", "budget", "baselines", "synthetic_tiny")


# ---------------------------------------------------------------------------------------------
# Declaring and expanding sweeps
# ---------------------------------------------------------------------------------------------
def test_grid_zipped_and_chain():
  g = sweep_lib.grid(**{"a.x": [1, 2], "b": ["u", "v"]})
  assert g == [{"a.x": 1, "b": "u"}, {"a.x": 1, "b": "v"}, {"a.x": 2, "b": "u"},
               {"a.x": 2, "b": "v"}]
  assert sweep_lib.zipped(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(ValueError, match="same length"):
    sweep_lib.zipped(a=[1, 2], b=[3])
  # chain drops repeated points (the shared default of two one-at-a-time sweeps).
  assert sweep_lib.chain([{"a": 1}, {"a": 2}], [("x", {"a": 2}), {"a": 3}]) == [
      {"a": 1}, {"a": 2}, {"a": 3}]
  assert sweep_lib.parse_seeds("1111-1115") == (1111, 1112, 1113, 1114, 1115)
  assert sweep_lib.parse_seeds("0+3") == (0, 3)
  with pytest.raises(ValueError):
    sweep_lib.parse_seeds("a-b")


def test_run_names_are_readable_and_commands_carry_every_override(tmp_path):
  sweep = sweep_lib.load_sweep(os.path.join(SWEEPS, "ablation.py") + ":dataset=mosi")
  runs = sweep.runs(str(tmp_path))
  assert len(runs) == 6 * 5  # Table 3's six rows x MMSA's five seeds
  assert sorted({r.seed for r in runs}) == [1111, 1112, 1113, 1114, 1115]
  names = [r.name for r in runs]
  assert len(set(names)) == len(names)
  assert "model.ablation.no_hierarchy=True__seed=1111" in names
  assert "loss.lambda_intra=0__loss.lambda_inter=0__seed=1115" in names
  assert "base__seed=1111" in names
  run = next(r for r in runs if r.name == "loss.lambda_intra=0__loss.lambda_inter=0__seed=1112")
  assert run.workdir == os.path.join(str(tmp_path), run.name)
  cmd = sweep_lib.command(sweep, run)
  assert cmd[:3] == ["python", "-m", "clcr_jax.main"]
  assert "--config=experiments/configs/mosi.py" in cmd
  assert f"--workdir={run.workdir}" in cmd
  assert {"--config.loss.lambda_intra=0.0", "--config.loss.lambda_inter=0.0",
          "--config.seed=1112"} <= set(cmd)
  labels = [p.label for p in sweep.points]
  assert labels == ["full", "w/o hierarchy", "w/o IntraCED", "w/o InterCAD", "full mix",
                    "w/o regularisation"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sweeps_expand_onto_valid_config_fields(name):
  sweep = sweep_lib.load_sweep(os.path.join(SWEEPS, f"{name}.py"))
  sweep_lib.validate(sweep)  # raises on a key the config does not have or a wrong type
  assert sweep.points and sweep.seeds


def test_benchmark_sweeps_use_the_right_configs_and_seeds():
  for dataset in ("mosi", "mosei"):
    s = sweep_lib.load_sweep(os.path.join(SWEEPS, "baselines.py") + f":dataset={dataset}")
    assert s.seeds == (1111, 1112, 1113, 1114, 1115)
    assert s.config == f"experiments/configs/{dataset}.py"
  s = sweep_lib.load_sweep(os.path.join(SWEEPS, "budget.py") +
                           ":dataset=kinetics_sounds,seeds=0-2,epochs=7,tiny")
  assert s.config == "experiments/configs/kinetics_sounds.py:tiny"
  assert s.seeds == (0, 1, 2) and s.overrides == {"train.num_epochs": 7}
  ratios = [p.overrides.get("model.budget.participation_init") for p in s.points]
  assert ratios[:-1] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.8, 0.9, 1.0]
  assert all(p.overrides["loss.budget_target"] == p.overrides["model.budget.participation_init"]
             for p in s.points[:-1])
  assert s.points[-1].overrides == {"model.ablation.dense_budget": True}
  lam = sweep_lib.load_sweep(os.path.join(SWEEPS, "regularizers.py") + ":dataset=cremad")
  assert lam.seeds == (0,) and len(lam.points) == 9
  grid = sweep_lib.load_sweep(os.path.join(SWEEPS, "regularizers.py") + ":mode=grid")
  assert {(p.overrides["loss.lambda_intra"], p.overrides["loss.lambda_inter"])
          for p in grid.points} == {(a, b) for a in (0.01, 0.05, 0.1, 0.5, 1.0)
                                    for b in (0.01, 0.05, 0.1, 0.5, 1.0)}
  base = sweep_lib.load_sweep(os.path.join(SWEEPS, "baselines.py"))
  assert [p.overrides["model.name"] for p in base.points] == [
      "clcr", "late_fusion", "flat_attention", "mult", "mbt", "misa"]
  assert "OGM-GE" in base.description  # three modalities: left out, and said so
  av = sweep_lib.load_sweep(os.path.join(SWEEPS, "baselines.py") + ":dataset=cremad")
  assert av.points[-1].overrides == {"model.name": "late_fusion", "model.fusion_head": "linear",
                                     "train.modulation": "ogm_ge"}
  segments = sweep_lib.load_sweep(os.path.join(SWEEPS, "baselines.py") +
                                  ":dataset=ave,task=segment_classification")
  assert not {"mult", "mbt", "misa"} & {p.overrides["model.name"] for p in segments.points}
  with pytest.raises(ValueError, match="dataset"):
    sweep_lib.load_sweep(os.path.join(SWEEPS, "ablation.py") + ":dataset=imagenet")


def sweep_command_prefix():
  return [sys.executable, "-m", "experiments.sweep"]


def test_a_typo_in_a_sweep_fails_before_anything_runs(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_sweep(arg=None):\n"
                 "  return dict(config='experiments/configs/synthetic.py:tiny',\n"
                 "              points=[{'model.ablation.no_hierarchyy': True}], seeds=[0])\n")
  out = subprocess.run([*sweep_command_prefix(), str(bad), f"--workdir_root={tmp_path / 'r'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert "no_hierarchyy" in out.stderr and "no_hierarchy" in out.stderr.split("valid fields")[1]
  assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_print_commands_for_a_cluster_and_a_tpu_pod(tmp_path):
  spec = os.path.join("experiments", "sweeps", "baselines.py") + ":dataset=mosi"
  out = subprocess.run([*sweep_command_prefix(), spec, "--workdir_root=gs://bucket/clcr/b",
                        "--print_commands", "--config.data.root=/data/MOSI"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
  lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
  assert len(lines) == 30  # 6 points that apply to MOSI x 5 seeds
  first = shlex.split(lines[0])
  assert first[:4] == ["python", "-m", "clcr_jax.main", "--config=experiments/configs/mosi.py"]
  assert "--workdir=gs://bucket/clcr/b/model.name=clcr__seed=1111" in first
  assert "--config.data.root=/data/MOSI" in first and "--config.seed=1111" in first
  tpu = subprocess.run([*sweep_command_prefix(), spec, "--workdir_root=/mnt/clcr/b",
                        "--print_commands", "--tpu=pod", "--zone=us-central2-b"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
  line = [l for l in tpu.stdout.splitlines() if not l.startswith("#")][0]
  assert shlex.split(line)[:5] == ["bash", "experiments/launch_tpu.sh", "pod", "us-central2-b",
                                   "--config=experiments/configs/mosi.py"]


def test_launch_tpu_runs_one_multihost_command_on_every_worker(tmp_path):
  bindir = tmp_path / "bin"
  bindir.mkdir()
  record = tmp_path / "calls.txt"
  fake = bindir / "gcloud"
  fake.write_text(f"#!/usr/bin/env bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done "
                  f">> {record}\necho ---- >> {record}\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
  script = os.path.join(REPO, "experiments", "launch_tpu.sh")
  subprocess.run(["bash", script, "my-pod", "europe-west4-a",
                  "--config=experiments/configs/cremad.py:tiny", "--workdir=/mnt/runs/c d",
                  "--config.train.num_epochs=3"], env=env, check=True, timeout=60)
  args = record.read_text().split("----\n")[0].splitlines()
  assert args[:6] == ["compute", "tpus", "tpu-vm", "ssh", "my-pod", "--worker=all"]
  assert args[args.index("--zone") + 1] == "europe-west4-a"
  remote = shlex.split(args[args.index("--command") + 1])
  main = remote[remote.index("python"):]
  assert main == ["python", "-m", "clcr_jax.main", "--config=experiments/configs/cremad.py:tiny",
                  "--workdir=/mnt/runs/c d", "--config.train.num_epochs=3",
                  "--config.parallel.multihost=True"]
  # Without a workdir, or with its own multihost flag, it refuses before calling gcloud.
  for bad in (["--config=x.py"], ["--config=x.py", "--workdir=w",
                                  "--config.parallel.multihost=False"]):
    r = subprocess.run(["bash", script, "p", "z", *bad], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
  assert record.read_text().count("----") == 1


def test_runner_relaunches_a_stalled_run_and_reports_a_failed_one(tmp_path):
  # A stand-in for `python -m clcr_jax.main`: the first launch of a run hangs without output,
  # the second finishes; runs of the noise=1.5 point fail.
  fake = tmp_path / "fake_python"
  fake.write_text(
      "#!/usr/bin/env bash\n"
      "for a in \"$@\"; do case $a in --workdir=*) w=${a#--workdir=};; esac; done\n"
      "case $w in *noise=1.5*) echo boom; exit 3;; esac\n"
      "if [ ! -e \"$w/launched\" ]; then touch \"$w/launched\"; exec sleep 600; fi\n"
      "echo '{\"test\": {\"accuracy\": 0.5}}' > \"$w/results.json\"\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  sweep_file = tmp_path / "s.py"
  sweep_file.write_text(
      "def get_sweep(arg=None):\n"
      "  return dict(config='experiments/configs/synthetic.py:tiny', seeds=[0],\n"
      "              points=[{'data.noise': 0.5}, {'data.noise': 1.5}])\n")
  out = subprocess.run([*sweep_command_prefix(), str(sweep_file),
                        f"--workdir_root={tmp_path / 'r'}", f"--python={fake}",
                        "--stall_timeout=2", "--parallel=2"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stdout + out.stderr
  lines = out.stdout
  assert "[stalled] data.noise=0.5__seed=0" in lines
  assert "[restart 1/2] data.noise=0.5__seed=0" in lines
  assert "[done] data.noise=0.5__seed=0" in lines
  assert "[failed] data.noise=1.5__seed=0: exit 3" in lines and "boom" in lines
  assert "summary of 1/2 finished runs" in lines
  # One progress line per run that ended for good (a restart is not one), with rate and ETA.
  progress = [l for l in lines.splitlines() if l.startswith("[progress] runs ")]
  assert len(progress) == 2 and "runs 2/2 ended (1 failed) | " in progress[-1], progress
  assert all("/run | ETA " in l for l in progress), progress
  log = (tmp_path / "r" / "data.noise=0.5__seed=0" / "train.log").read_text()
  assert log.count("--workdir=") == 2  # launched twice, in the same workdir


# ---------------------------------------------------------------------------------------------
# Aggregation (on hand-made results.json files)
# ---------------------------------------------------------------------------------------------
def _fake_run(run, test):
  os.makedirs(run.workdir, exist_ok=True)
  with open(os.path.join(run.workdir, "results.json"), "w") as f:
    json.dump({"test": test, "valid": {"accuracy": 0.0}}, f)


def test_summary_is_mean_and_population_std_over_finished_seeds(tmp_path):
  sweep = sweep_lib.Sweep(
      config="experiments/configs/synthetic.py:tiny", seeds=(1, 2, 3), overrides={},
      points=[sweep_lib.Point("a=1", "one", {"a": 1}), sweep_lib.Point("a=2", "two", {"a": 2})],
      metrics=("@task", "participation/*"), name="fake")
  runs = sweep.runs(str(tmp_path))
  values = {1: [0.5, 0.7, 0.9], 2: [0.25, 0.75]}  # point a=2: seed 3 unfinished
  for run in runs:
    seeds = values[run.point.overrides["a"]]
    if run.seed <= len(seeds):
      acc = seeds[run.seed - 1]
      _fake_run(run, {"accuracy": acc, "macro_f1": None if run.seed == 1 else acc / 2,
                      "participation/level0": 0.5, "participation/level1": acc})
  rows = sweep_lib.write_summary(sweep, runs, str(tmp_path))
  one, two = rows
  assert one["seeds"] == [1, 2, 3] and two["seeds"] == [1, 2]
  assert one["metrics"]["accuracy"]["mean"] == pytest.approx(0.7)
  assert one["metrics"]["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
  assert two["metrics"]["accuracy"]["std"] == pytest.approx(0.25)  # population, not sample
  assert math.isnan(one["metrics"]["macro_f1"]["mean"])  # None (NaN) propagates
  assert two["metrics"]["participation/mean"]["mean"] == pytest.approx(np.mean([0.375, 0.625]))
  with open(tmp_path / "summary.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["point"] for r in table] == ["a=1", "a=2"]
  assert table[1]["a"] == "2" and table[1]["n"] == "2" and table[1]["planned_seeds"] == "1 2 3"
  assert float(table[0]["accuracy:std"]) == pytest.approx(np.std([0.5, 0.7, 0.9]))
  md = (tmp_path / "summary.md").read_text()
  header = next(line for line in md.splitlines() if line.startswith("| point"))
  assert header.startswith("| point | n | accuracy | macro_f1 | participation/level0")
  assert "| two | 2/3 | 0.5000 ± 0.2500 |" in md
  assert "Unfinished: two (seeds [3])" in md


def test_a_workdir_made_with_other_overrides_is_a_conflict_not_a_skip(tmp_path):
  path = os.path.join(SWEEPS, "ablation.py") + ":dataset=synthetic,epochs=2,seeds=0"
  sweep = sweep_lib.load_sweep(path)
  run = sweep.runs(str(tmp_path))[0]
  _fake_run(run, {"accuracy": 0.5})
  saved = {"seed": 0, "train": {"num_epochs": 5}, "model": {"d": 32}}
  with open(os.path.join(run.workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  assert sweep_lib.conflicts(sweep, run) == ["train.num_epochs=5 (asked: 2)"]
  proc = subprocess.run([sys.executable, "-m", "experiments.sweep", path,
                         f"--workdir_root={tmp_path}"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "made with other overrides" in proc.stderr
  assert f"{run.name}: train.num_epochs=5 (asked: 2)" in proc.stderr
  assert not os.path.exists(tmp_path / "summary.md")
  saved["train"]["num_epochs"] = 2  # the same overrides: no conflict
  with open(os.path.join(run.workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  assert sweep_lib.conflicts(sweep, run) == []


# ---------------------------------------------------------------------------------------------
# The tiny sweep, end to end
# ---------------------------------------------------------------------------------------------
def test_interrupted_sweep_resumes_without_redoing_finished_runs(tiny_sweep):
  root, obs = tiny_sweep
  first = obs["interrupted"]
  assert first["returncode"] == 128 + 15, first["output"]
  assert f"[done] {RUNS[0]}" in first["output"]
  assert f"[interrupted] {RUNS[1]}" in first["output"]
  assert first["finished"] == [RUNS[0]]
  assert first["first"]["exists"]
  # The dry run saw one finished run, and no results for the interrupted one.
  states = {name: state for state, name in
            re.findall(r"\[(\w+)\s*\] (\S+)", obs["dry_run"]["output"])}
  assert states[RUNS[0]] == "done"
  assert states[RUNS[1]] in ("new", "partial") and states[RUNS[3]] == "new"
  # The rerun skipped the finished run and completed the others.
  rerun = obs["rerun"]
  assert rerun["returncode"] == 0, rerun["output"]
  assert f"[skip] {RUNS[0]}" in rerun["output"]
  assert sorted(re.findall(r"\[done\] (\S+)", rerun["output"])) == sorted(RUNS[1:])
  finished = os.path.join(root, RUNS[0], "results.json")
  assert os.stat(finished).st_mtime_ns == first["first"]["mtime_ns"]
  with open(finished) as f:
    assert json.load(f) == first["first"]["results"]
  # One launch for the finished run, two (in the same workdir) for the interrupted one.
  launches = lambda run: (root / run / "train.log").read_text().count("clcr_jax.main --config=")
  assert launches(RUNS[0]) == 1 and launches(RUNS[1]) == 2 and launches(RUNS[2]) == 1
  assert json.loads((root / "sweep.json").read_text())["runs"][1]["name"] == RUNS[1]


def test_tiny_sweep_summary_matches_a_hand_computation(tiny_sweep):
  root, _ = tiny_sweep
  results = {}
  for run in RUNS:
    with open(root / run / "results.json") as f:
      results[run] = json.load(f)["test"]
  # The runs differ, or the aggregation check would be vacuous.
  assert results[RUNS[0]]["loss"] != results[RUNS[1]]["loss"]
  with open(root / "summary.csv") as f:
    table = {r["point"]: r for r in csv.DictReader(f)}
  assert sorted(table) == ["data.noise=0.5", "data.noise=1.5"]
  for point, runs in (("data.noise=0.5", RUNS[:2]), ("data.noise=1.5", RUNS[2:])):
    row = table[point]
    assert row["n"] == "2" and row["seeds"] == "0 1" and row["data.noise"] in ("0.5", "1.5")
    for key in results[runs[0]]:
      values = [results[r][key] for r in runs]
      mean = sum(values) / 2
      std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
      assert float(row[f"{key}:mean"]) == pytest.approx(mean, rel=1e-12, abs=1e-15), key
      assert float(row[f"{key}:std"]) == pytest.approx(std, rel=1e-9, abs=1e-15), key
  md = (root / "summary.md").read_text()
  acc = [results[r]["accuracy"] for r in RUNS[:2]]
  cell = f"{np.mean(acc):.4f} ± {np.std(acc):.4f}"
  assert re.search(rf"\| noise 0\.5 \| 2/2 \| {re.escape(cell)} \|", md), md
