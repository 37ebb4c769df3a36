"""The tiny synthetic sweep (experiments/sweeps/synthetic_tiny.py: 2 points x 2 seeds), run once
per test session through the shipped CLI, and interrupted on the way:

  1. `python -m experiments.sweep ... --parallel=1`; once its first run is done and the second
     has started, the sweep gets SIGTERM (it forwards it to the run, which stops);
  2. `--dry_run` shows the state of every run;
  3. the same command with `--parallel=2` finishes the sweep: the finished run is skipped, the
     interrupted one relaunched in its workdir, the two others run.
What each step printed and returned, and the finished run's results.json at the interruption,
go to observations.json for tests/test_sweep.py; tests/test_analyze.py and the analysis
notebook use the finished sweep.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from session_once import run_once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_FILE = os.path.join("experiments", "sweeps", "synthetic_tiny.py")
RUNS = ["data.noise=0.5__seed=0", "data.noise=0.5__seed=1", "data.noise=1.5__seed=0",
        "data.noise=1.5__seed=1"]
TIMEOUT_S = 600


def sweep_command(root, *extra):
  return [sys.executable, "-m", "experiments.sweep", SWEEP_FILE, f"--workdir_root={root}",
          *extra]


def _interrupted_launch(root) -> dict:
  proc = subprocess.Popen(sweep_command(root, "--parallel=1"), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(TIMEOUT_S, proc.kill)
  watchdog.start()
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("[start 2/"):
        break
    # Let the second run get going, then stop the sweep the way a scheduler or Ctrl-C would.
    time.sleep(3)
    first_results = os.path.join(root, RUNS[0], "results.json")
    snapshot = {"exists": os.path.exists(first_results)}
    if snapshot["exists"]:
      snapshot["mtime_ns"] = os.stat(first_results).st_mtime_ns
      with open(first_results) as f:
        snapshot["results"] = json.load(f)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate()
    lines.append(rest)
  finally:
    watchdog.cancel()
    if proc.poll() is None:
      proc.kill()
  return {"returncode": proc.returncode, "output": "".join(lines), "first": snapshot,
          "finished": [r for r in RUNS if os.path.exists(os.path.join(root, r, "results.json"))]}


def build(directory) -> None:
  root = directory / "sweep"
  observations = {"interrupted": _interrupted_launch(root)}
  dry = subprocess.run(sweep_command(root, "--dry_run"), cwd=REPO, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
  observations["dry_run"] = {"returncode": dry.returncode, "output": dry.stdout + dry.stderr}
  rerun = subprocess.run(sweep_command(root, "--parallel=2"), cwd=REPO, capture_output=True,
                         text=True, timeout=TIMEOUT_S)
  observations["rerun"] = {"returncode": rerun.returncode, "output": rerun.stdout + rerun.stderr}
  (directory / "observations.json").write_text(json.dumps(observations, indent=2))


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, worker_id):
  """(sweep directory, observations) of the finished tiny sweep."""
  directory = run_once(tmp_path_factory, worker_id, "tiny_sweep", build)
  observations = json.loads((directory / "observations.json").read_text())
  return directory / "sweep", observations
