"""Sweeps: many runs of one base config, one workdir each, summarised over seeds.

A sweep file (experiments/sweeps/*.py) defines `get_sweep(arg)` and returns a dict:

  config     "experiments/configs/<name>.py[:arg]", the base config (path from the repo root)
  points     list of override dicts {"model.ablation.no_hierarchy": True}, or (label, dict)
             pairs; `grid(...)` and `chain(...)` below build them. {} is the base config itself.
  seeds      config.seed of each run of every point, e.g. (1111, 1112, 1113, 1114, 1115)
  overrides  optional {key: value} applied to every run (before the point's own overrides)
  metrics    optional fnmatch patterns of the metrics in summary.md's main table; "@task" means
             the task's usual ones (accuracy and macro-F1, MMSA's MAE/Corr/Acc-2/F1/Acc-7, ...)
  name, description   optional text for summary.md

Launch (from the repository root):

  python -m experiments.sweep experiments/sweeps/ablation.py:dataset=mosi \\
      --workdir_root=runs/sweeps/ablation_mosi [--parallel=2] [--config.data.root=/data/MOSI]

Every run gets DIR/<name>, its name built from its overrides and seed
(`model.ablation.no_hierarchy=True__seed=1111`; the base point is `base__seed=1111`). Runs with a
results.json are skipped, unfinished ones are relaunched in the same workdir (train_and_evaluate
resumes from the last checkpoint), each as `python -m clcr_jax.main` with its output in
DIR/<name>/train.log. SIGINT/SIGTERM are forwarded to the runs, which checkpoint and stop. Then
DIR/summary.md and DIR/summary.csv hold, per point, the mean and population std over the finished
seeds of every metric of the runs' results.json (`clcr_jax.metrics.aggregate_over_seeds`).

  --dry_run           list the runs and their state (new / partial / done); launch nothing
  --print_commands    print one launch command per unfinished run, for a cluster scheduler;
                      with --tpu=NAME --zone=ZONE as `experiments/launch_tpu.sh` lines
  --summarize         only (re)write the summary of what has finished
  --only=PATTERN      only the runs whose name matches the fnmatch pattern
  --stall_timeout=S   kill a run whose log has not grown for S seconds and relaunch it (it
                      resumes), at most --max_restarts times; 0 (default) never
  --config.a.b=v      an override for every run (after the sweep's own)
"""
from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import fnmatch
import hashlib
import io
import itertools
import json
import math
import os
import re
import runpy
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_KEY = "seed"
# The metrics of summary.md's main table when a sweep names none ("@task"), by task.
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7",
                   "Acc_2", "F1_score", "Acc_7", "Correlation Coefficient", "Accuracy",
                   "F1 score", "mult_acc_7"),
    "segment_classification": ("segment_accuracy",),
}
PARTICIPATION_MEAN = "participation/mean"  # derived: the mean of participation/level{l}


# ---------------------------------------------------------------------------------------------
# Building sweeps (used by sweep files)
# ---------------------------------------------------------------------------------------------
def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """The cartesian product of `axes` as override dicts. Dotted keys go in through a dict:

  grid(**{"loss.lambda_intra": [0.01, 0.1], "loss.lambda_inter": [0.01, 0.1]}) -> 4 points.
  """
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def zipped(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Points that change keys together: zipped(a=[1, 2], b=[3, 4]) -> {a:1, b:3}, {a:2, b:4}."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise ValueError("zipped: every axis needs the same length, found "
                     f"{ {k: len(v) for k, v in axes.items()} }")
  keys = list(axes)
  return [dict(zip(keys, values)) for values in zip(*(axes[k] for k in keys))]


def chain(*point_lists: Iterable[Any]) -> list[Any]:
  """Concatenates point lists, dropping points equal to an earlier one."""
  out, seen = [], []
  for points in point_lists:
    for p in points:
      overrides = p[1] if isinstance(p, tuple) else p
      if overrides not in seen:
        seen.append(overrides)
        out.append(p)
  return out


def parse_seeds(text: str) -> tuple[int, ...]:
  """'1111-1115' -> (1111, ..., 1115); '0+3+7' -> (0, 3, 7); '5' -> (5,)."""
  text = str(text).strip()
  if re.fullmatch(r"\d+-\d+", text):
    lo, hi = map(int, text.split("-"))
    if hi < lo:
      raise ValueError(f"seeds={text!r}: empty range")
    return tuple(range(lo, hi + 1))
  try:
    return tuple(int(s) for s in text.split("+"))
  except ValueError:
    raise ValueError(f"seeds={text!r}: expected 'a-b' or 'a+b+c'") from None


# ---------------------------------------------------------------------------------------------
# The sweep and its runs
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Point:
  name: str                       # directory-name stem, from the overrides
  label: str                      # what summary.md shows
  overrides: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Run:
  point: Point
  seed: int
  workdir: str

  @property
  def name(self) -> str:
    return os.path.basename(self.workdir)


@dataclasses.dataclass
class Sweep:
  config: str
  points: list[Point]
  seeds: tuple[int, ...]
  overrides: dict[str, Any]
  metrics: tuple[str, ...] = ("@task",)
  name: str = ""
  description: str = ""
  source: str = ""

  def runs(self, workdir_root: str) -> list[Run]:
    return [Run(p, s, _join(workdir_root, f"{p.name}__{SEED_KEY}={s}"))
            for p in self.points for s in self.seeds]

  def run_overrides(self, run: Run) -> dict[str, Any]:
    """Every override of a run, in the order the command line applies them."""
    return {**self.overrides, **run.point.overrides, SEED_KEY: run.seed}


def _join(root: str, name: str) -> str:
  return root.rstrip("/") + "/" + name if _is_remote(root) else os.path.join(root, name)


def _is_remote(path: str) -> bool:
  return "://" in path


def format_name_value(value: Any) -> str:
  if isinstance(value, float):
    return format(value, "g")
  if isinstance(value, (tuple, list)):
    return ",".join(format_name_value(v) for v in value)
  return str(value)


def point_name(overrides: Mapping[str, Any]) -> str:
  """'k1=v1__k2=v2' (file-system safe), 'base' for no overrides."""
  if not overrides:
    return "base"
  name = "__".join(f"{k}={format_name_value(v)}" for k, v in overrides.items())
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if len(name) > 180:  # stay well under the 255-byte file-name limit
    name = name[:160] + "_" + hashlib.sha1(name.encode()).hexdigest()[:12]
  return name


def format_cli_value(value: Any) -> str:
  """A value as `--config.k=<value>` expects it (ml_collections config_flags)."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    inner = ",".join(format_cli_value(v) for v in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"
  return str(value)


def parse_cli_value(text: str) -> Any:
  """'0.1' -> 0.1, 'True' -> True, '(1,2)' -> (1, 2), anything else -> the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _resolve_config_path(spec: str) -> tuple[str, str]:
  path, _, arg = spec.partition(":")
  if not os.path.isabs(path):
    path = os.path.join(REPO_ROOT, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep config {spec!r}: {path} does not exist")
  return path, arg


def load_sweep(spec: str) -> Sweep:
  """Reads a sweep file 'path.py[:arg]' (its get_sweep(arg)) into a Sweep; `validate` checks
  its overrides against the config."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path} does not exist")
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  namespace = runpy.run_path(path)
  if "get_sweep" not in namespace:
    raise ValueError(f"{path} defines no get_sweep(arg)")
  d = namespace["get_sweep"](arg) if arg else namespace["get_sweep"]()
  unknown = set(d) - {"config", "points", "seeds", "overrides", "metrics", "name", "description"}
  if unknown or "config" not in d:
    raise ValueError(f"{path}: get_sweep() must return a dict with 'config' (and 'points', "
                     f"'seeds', 'overrides', 'metrics', 'name', 'description'); found keys "
                     f"{sorted(d)}")
  points, names = [], set()
  for p in d.get("points") or [{}]:
    label, overrides = (p if isinstance(p, tuple) else (None, p))
    overrides = dict(overrides)
    if SEED_KEY in overrides:
      raise ValueError(f"{path}: a point sets {SEED_KEY!r}; give seeds in 'seeds'")
    name = point_name(overrides)
    if name in names:
      raise ValueError(f"{path}: two points are both named {name!r}")
    names.add(name)
    points.append(Point(name, label or name, overrides))
  seeds = tuple(int(s) for s in d.get("seeds") or (0,))
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"{path}: repeated seeds {seeds}")
  return Sweep(config=d["config"], points=points, seeds=seeds,
               overrides=dict(d.get("overrides") or {}),
               metrics=tuple(d.get("metrics") or ("@task",)),
               name=d.get("name") or os.path.splitext(os.path.basename(path))[0],
               description=d.get("description", ""), source=spec)


def validate(sweep: Sweep) -> None:
  """Builds the base config and applies every run's overrides to a locked copy, so a typo or a
  wrongly typed value fails before the first launch, naming the key."""
  path, arg = _resolve_config_path(sweep.config)
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  namespace = runpy.run_path(path)
  base = namespace["get_config"](arg) if arg else namespace["get_config"]()
  for point in sweep.points:
    config = base.copy_and_resolve_references()
    config.lock()
    for key, value in {**sweep.overrides, **point.overrides, SEED_KEY: sweep.seeds[0]}.items():
      node = config
      *parents, leaf = key.split(".")
      where = "config"
      for p in parents:
        if not hasattr(node, "keys") or p not in node:
          raise ValueError(f"sweep {sweep.name!r}, point {point.label!r}: {where} has no field "
                           f"{p!r} (override {key})")
        node, where = node[p], f"{where}.{p}"
      if not hasattr(node, "keys") or leaf not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a block)"
        raise ValueError(f"sweep {sweep.name!r}, point {point.label!r}: {where} has no field "
                         f"{leaf!r} (override {key}); valid fields: {valid}")
      try:
        node[leaf] = value
      except (TypeError, ValueError) as e:
        raise ValueError(f"sweep {sweep.name!r}, point {point.label!r}: {key}={value!r}: {e}") \
            from None


# ---------------------------------------------------------------------------------------------
# Run state and commands
# ---------------------------------------------------------------------------------------------
def results_path(run: Run) -> str:
  return os.path.join(run.workdir, "results.json")


def read_results(run: Run) -> dict[str, Any] | None:
  try:
    with open(results_path(run)) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def state(run: Run) -> str:
  """'done' (results.json), 'partial' (a checkpoint, no results) or 'new'."""
  if read_results(run) is not None:
    return "done"
  from clcr_jax import checkpointing  # pylint: disable=import-outside-toplevel
  if checkpointing.has_checkpoint(run.workdir, "latest"):
    return "partial"
  return "new"


def _same_value(saved: Any, wanted: Any) -> bool:
  if isinstance(saved, (int, float)) and isinstance(wanted, (int, float)):
    return math.isclose(float(saved), float(wanted), rel_tol=1e-12, abs_tol=0.0)
  if isinstance(saved, list) and isinstance(wanted, (list, tuple)):
    return len(saved) == len(wanted) and all(map(_same_value, saved, wanted))
  return saved == wanted


def conflicts(sweep: Sweep, run: Run) -> list[str]:
  """Overrides of `run` that its workdir's config.json (an earlier launch) contradicts.

  A workdir made by the same sweep with other sweep-wide overrides (say, another epoch count)
  has the same name; skipping or resuming it would mix runs in the summary.
  """
  try:
    with open(os.path.join(run.workdir, "config.json")) as f:
      saved = json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return []
  out = []
  for key, wanted in sweep.run_overrides(run).items():
    node, found = saved, True
    for part in key.split("."):
      if isinstance(node, dict) and part in node:
        node = node[part]
      else:
        found = False
        break
    if found and not _same_value(node, wanted):
      out.append(f"{key}={node!r} (asked: {wanted!r})")
  return out


def command(sweep: Sweep, run: Run, python: str = "python", absolute: bool = False) -> list[str]:
  """`python -m clcr_jax.main ...` for one run."""
  config = sweep.config
  if absolute:
    path, arg = _resolve_config_path(config)
    config = path + (":" + arg if arg else "")
  return [python, "-m", "clcr_jax.main", f"--config={config}", f"--workdir={run.workdir}",
          *(f"--config.{k}={format_cli_value(v)}" for k, v in sweep.run_overrides(run).items())]


def tpu_command(sweep: Sweep, run: Run, tpu: str, zone: str) -> list[str]:
  return ["bash", "experiments/launch_tpu.sh", tpu, zone, *command(sweep, run)[3:]]


# ---------------------------------------------------------------------------------------------
# Local runner
# ---------------------------------------------------------------------------------------------
class _Stop:
  """Turns SIGINT/SIGTERM into a flag; the runner forwards SIGTERM to its runs."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGINT, signal.SIGTERM):
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)


def _tail(path: str, lines: int = 15) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except FileNotFoundError:
    return ""


def _log(message: str) -> None:
  print(message, flush=True)


@dataclasses.dataclass
class _Active:
  """A launched run: its process, its log, and when its log last grew."""
  run: Run
  proc: subprocess.Popen
  logfile: Any
  started: float
  last_size: int = -1
  last_change: float = 0.0
  sent_term: float | None = None
  stalled: bool = False

  def log_grew(self, now: float) -> None:
    size = os.fstat(self.logfile.fileno()).st_size
    if size != self.last_size:
      self.last_size, self.last_change = size, now


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
  try:
    os.killpg(proc.pid, signum)
  except ProcessLookupError:
    pass


def run_local(sweep: Sweep, runs: Sequence[Run], parallel: int = 1, python: str | None = None,
              log=_log, grace_s: float = 300.0, stall_timeout_s: float = 0.0,
              max_restarts: int = 2) -> dict[str, str]:
  """Runs the unfinished `runs`, `parallel` at a time.

  A run whose train.log has not grown for `stall_timeout_s` seconds (0: never) is killed and
  relaunched in its workdir, where it resumes from its last checkpoint, at most `max_restarts`
  times. Returns {run name: status}, status in 'skipped' (already done), 'done',
  'failed (exit N)', 'stalled', 'interrupted', 'not started'.
  """
  from clcr_jax import metric_writers  # pylint: disable=import-outside-toplevel
  python = python or sys.executable
  status = {}
  todo = []
  for run in runs:
    if state(run) == "done":
      status[run.name] = "skipped"
      log(f"[skip] {run.name}: finished (results.json)")
    else:
      todo.append(run)
  env = os.environ.copy()
  if parallel > 1:
    # Several runs on one accelerator must not each grab most of its memory.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
  restarts = {run.name: 0 for run in todo}
  queue = list(todo)
  active: list[_Active] = []
  launched = 0
  # Runs ended for good (done, failed or stalled out) over the wall time since the launch: with
  # `parallel` runs at once this is the sweep's throughput, so the ETA needs no rescaling.
  progress = metric_writers.Progress(len(todo), "run", label="[progress] runs", per_unit=True,
                                     log=log)
  ended, failed = 0, 0

  def finished(ok: bool) -> None:
    nonlocal ended, failed
    ended += 1
    failed += not ok
    progress.log(ended, f"ended ({failed} failed)" if failed else "ended")

  def launch(run: Run) -> None:
    nonlocal launched
    os.makedirs(run.workdir, exist_ok=True)
    logfile = open(os.path.join(run.workdir, "train.log"), "a")
    cmd = command(sweep, run, python, absolute=True)
    logfile.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
    logfile.flush()
    resumed = state(run)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=logfile,
                            stderr=subprocess.STDOUT, start_new_session=True)
    now = time.time()
    active.append(_Active(run, proc, logfile, now, last_change=now))
    if restarts[run.name] == 0:
      launched += 1
    log(f"[start {launched}/{len(todo)}] {run.name} ({resumed}) pid {proc.pid}")

  with _Stop() as stop:
    while (queue and stop.signum is None) or active:
      while stop.signum is None and queue and len(active) < max(1, parallel):
        launch(queue.pop(0))
      now = time.time()
      for a in active:
        if stop.signum is not None and a.sent_term is None and a.proc.poll() is None:
          _signal_group(a.proc, signal.SIGTERM)  # train_lib checkpoints, then exits
          a.sent_term = now
          log(f"[stop] SIGTERM to {a.run.name}")
        a.log_grew(now)
        if (stall_timeout_s > 0 and not a.stalled and a.proc.poll() is None
            and now - a.last_change > stall_timeout_s):
          a.stalled = True
          log(f"[stalled] {a.run.name}: no output for {now - a.last_change:.0f}s; killing it")
          _signal_group(a.proc, signal.SIGKILL)  # a hung process may never run a handler
        if a.sent_term is not None and a.proc.poll() is None and now - a.sent_term > grace_s:
          _signal_group(a.proc, signal.SIGKILL)
      for a in [a for a in active if a.proc.poll() is not None]:
        active.remove(a)
        a.logfile.close()
        run, code, path = a.run, a.proc.returncode, os.path.join(a.run.workdir, "train.log")
        if code == 0 and read_results(run) is not None:
          status[run.name] = "done"
          log(f"[done] {run.name} in {time.time() - a.started:.0f}s")
          finished(True)
        elif stop.signum is not None:
          status[run.name] = "interrupted"
          log(f"[interrupted] {run.name} (exit {code}); rerun the sweep to resume it")
        elif a.stalled and restarts[run.name] < max_restarts:
          restarts[run.name] += 1
          log(f"[restart {restarts[run.name]}/{max_restarts}] {run.name}: relaunching in its "
              "workdir (it resumes from its last checkpoint)")
          queue.insert(0, run)
        elif a.stalled:
          status[run.name] = "stalled"
          log(f"[failed] {run.name}: stalled {max_restarts + 1} times; see {path}")
          finished(False)
        else:
          status[run.name] = f"failed (exit {code})"
          log(f"[failed] {run.name}: exit {code}; last lines of {path}:\n{_tail(path)}")
          finished(False)
      time.sleep(0.2)
    for run in queue:
      status.setdefault(run.name, "not started")
    if stop.signum is not None:
      status["__signal__"] = str(stop.signum)
  return status


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
def _numeric_metrics(d: Mapping[str, Any]) -> dict[str, Any]:
  out = {k: v for k, v in d.items()
         if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
  levels = [v for k, v in out.items() if re.fullmatch(r"participation/level\d+", k)]
  if levels and all(v is not None for v in levels):
    out[PARTICIPATION_MEAN] = float(sum(levels) / len(levels))
  return out


def task_of(metrics: Mapping[str, Any]) -> str:
  if "accuracy" in metrics:
    return "classification"
  if "segment_accuracy" in metrics:
    return "segment_classification"
  return "regression"


def summarize(sweep: Sweep, runs: Sequence[Run], split: str = "test") -> list[dict[str, Any]]:
  """One row per point: its finished seeds and {metric: {mean, std, n}} over them."""
  from clcr_jax import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  rows = []
  for point in sweep.points:
    per_seed, seeds = [], []
    for run in runs:
      if run.point.name != point.name:
        continue
      results = read_results(run)
      if results is not None and isinstance(results.get(split), Mapping):
        per_seed.append(_numeric_metrics(results[split]))
        seeds.append(run.seed)
    planned = [r.seed for r in runs if r.point.name == point.name]
    aggregated = {}
    if per_seed:
      common = [k for k in per_seed[0] if all(k in r for r in per_seed)]
      aggregated = metrics_lib.aggregate_over_seeds([{k: r[k] for k in common} for r in per_seed])
    rows.append({"point": point.name, "label": point.label, "overrides": point.overrides,
                 "seeds": seeds, "planned_seeds": planned, "metrics": aggregated})
  return rows


def _metric_keys(rows) -> list[str]:
  keys = []
  for row in rows:
    keys += [k for k in row["metrics"] if k not in keys]
  return keys


def main_metrics(sweep: Sweep, rows) -> list[str]:
  keys = _metric_keys(rows)
  if not keys:
    return []
  task = task_of(keys)
  out = []
  for pattern in sweep.metrics:
    wanted = TASK_METRICS[task] if pattern == "@task" else (pattern,)
    for w in wanted:
      out += [k for k in keys if fnmatch.fnmatchcase(k, w) and k not in out]
  return out


def _fmt(stats: Mapping[str, float] | None, digits: int = 4) -> str:
  if not stats:
    return ""
  mean, std = stats["mean"], stats["std"]
  if not (math.isfinite(mean) and math.isfinite(std)):
    return "nan"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def swept_keys(sweep: Sweep) -> list[str]:
  keys = []
  for p in sweep.points:
    keys += [k for k in p.overrides if k not in keys]
  return keys


def summary_csv(sweep: Sweep, rows) -> str:
  keys, swept = _metric_keys(rows), swept_keys(sweep)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["point", "label", *swept, "n", "seeds", "planned_seeds",
                   *[f"{k}:{s}" for k in keys for s in ("mean", "std")]])
  for row in rows:
    values = [format_cli_value(row["overrides"][k]) if k in row["overrides"] else ""
              for k in swept]
    stats = [repr(row["metrics"][k][s]) if k in row["metrics"] else ""
             for k in keys for s in ("mean", "std")]
    writer.writerow([row["point"], row["label"], *values, len(row["seeds"]),
                     " ".join(map(str, row["seeds"])), " ".join(map(str, row["planned_seeds"])),
                     *stats])
  return out.getvalue()


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  esc = lambda s: str(s).replace("|", "\\|")
  lines = ["| " + " | ".join(map(esc, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
  return "\n".join(lines)


def summary_markdown(sweep: Sweep, rows, split: str = "test") -> str:
  main, keys = main_metrics(sweep, rows), _metric_keys(rows)
  seeds = ", ".join(map(str, sweep.seeds))
  common = ", ".join(f"`{k}={format_cli_value(v)}`" for k, v in sweep.overrides.items())
  text = [f"# Sweep `{sweep.name}`", ""]
  if sweep.description:
    text += [sweep.description, ""]
  text += [f"Base config `{sweep.config}`" + (f" with {common}" if common else "") +
           f"; seeds {seeds}; metrics of the `{split}` split of each run's results.json "
           "(the selected checkpoint).",
           "Cells: mean ± population std over the finished seeds (n).", ""]
  text.append(_md_table(["point", "n", *main],
                        [[r["label"], f"{len(r['seeds'])}/{len(r['planned_seeds'])}",
                          *[_fmt(r["metrics"].get(k)) for k in main]] for r in rows]))
  text += ["", "## All metrics", ""]
  text.append(_md_table(["metric", *[r["label"] for r in rows]],
                        [[k, *[_fmt(r["metrics"].get(k)) for r in rows]] for k in keys]))
  missing = [f"{r['label']} (seeds {sorted(set(r['planned_seeds']) - set(r['seeds']))})"
             for r in rows if len(r["seeds"]) < len(r["planned_seeds"])]
  if missing:
    text += ["", "Unfinished: " + "; ".join(missing) + "."]
  return "\n".join(text) + "\n"


def _write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_summary(sweep: Sweep, runs: Sequence[Run], workdir_root: str,
                  split: str = "test") -> list[dict[str, Any]]:
  rows = summarize(sweep, runs, split)
  _write(os.path.join(workdir_root, "summary.csv"), summary_csv(sweep, rows))
  _write(os.path.join(workdir_root, "summary.md"), summary_markdown(sweep, rows, split))
  return rows


def write_manifest(sweep: Sweep, runs: Sequence[Run], workdir_root: str) -> None:
  """DIR/sweep.json: the expanded sweep (what the notebook and `analyze --sweep` read)."""
  manifest = {
      "name": sweep.name, "source": sweep.source, "config": sweep.config,
      "overrides": sweep.overrides, "seeds": list(sweep.seeds), "metrics": list(sweep.metrics),
      "swept_keys": swept_keys(sweep),
      "points": [{"name": p.name, "label": p.label, "overrides": p.overrides}
                 for p in sweep.points],
      "runs": [{"name": r.name, "point": r.point.name, "seed": r.seed, "workdir": r.name}
               for r in runs],
  }
  _write(os.path.join(workdir_root, "sweep.json"), json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]):
  parser = argparse.ArgumentParser(
      prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("sweep",
                      help="sweep file[:arg], e.g. experiments/sweeps/ablation.py:dataset=mosi")
  parser.add_argument("--workdir_root", required=True, help="directory of the sweep's runs")
  parser.add_argument("--parallel", type=int, default=1, help="runs at a time (local runner)")
  parser.add_argument("--dry_run", action="store_true", help="list the runs; launch nothing")
  parser.add_argument("--print_commands", action="store_true",
                      help="print one launch command per unfinished run and exit")
  parser.add_argument("--tpu", default="", help="with --print_commands: TPU VM name")
  parser.add_argument("--zone", default="", help="with --print_commands: TPU zone")
  parser.add_argument("--summarize", action="store_true", help="only write the summary")
  parser.add_argument("--only", default="", help="fnmatch pattern on run names")
  parser.add_argument("--split", default="test", help="results.json split to summarise")
  parser.add_argument("--python", default=sys.executable, help="interpreter of the runs")
  parser.add_argument("--stall_timeout", type=float, default=0.0,
                      help="kill and relaunch a run whose log has not grown for this many "
                           "seconds (0: never); allow for compilation and evaluation")
  parser.add_argument("--max_restarts", type=int, default=2, help="relaunches of a stalled run")
  args, extra = parser.parse_known_args(argv)
  overrides = {}
  for a in extra:
    if not a.startswith("--config.") or "=" not in a:
      parser.error(f"unrecognised argument {a!r} (overrides look like --config.a.b=value)")
    key, value = a[len("--config."):].split("=", 1)
    overrides[key] = parse_cli_value(value)
  if overrides.pop(SEED_KEY, None) is not None:
    parser.error("--config.seed: the sweep file sets the seeds")
  if (args.tpu or args.zone) and not (args.tpu and args.zone and args.print_commands):
    parser.error("--tpu and --zone go together, with --print_commands")
  return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
  args, extra = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    return _main(args, extra)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _main(args, extra) -> int:
  sweep = load_sweep(args.sweep)
  sweep.overrides.update(extra)
  runs = sweep.runs(args.workdir_root)
  if args.only:
    runs = [r for r in runs if fnmatch.fnmatchcase(r.name, args.only)]
    if not runs:
      print(f"--only={args.only!r} matches no run of sweep {sweep.name!r}", file=sys.stderr)
      return 2
  remote = _is_remote(args.workdir_root)
  if args.print_commands:
    validate(sweep)
    todo = runs if remote else [r for r in runs if state(r) != "done"]
    print(f"# sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo)} finished (not "
          f"listed); run from {REPO_ROOT}")
    for run in todo:
      cmd = (tpu_command(sweep, run, args.tpu, args.zone) if args.tpu
             else command(sweep, run))
      print(shlex.join(cmd))
    return 0
  if remote:
    print(f"--workdir_root={args.workdir_root}: the local runner, --dry_run and --summarize "
          "need a local directory; use --print_commands for remote workdirs", file=sys.stderr)
    return 2
  if args.dry_run:
    validate(sweep)
    print(f"sweep {sweep.name}: {len(sweep.points)} points x {len(sweep.seeds)} seeds "
          f"= {len(runs)} runs under {args.workdir_root}")
    for run in runs:
      print(f"  [{state(run):7s}] {run.name}")
    return 0
  os.makedirs(args.workdir_root, exist_ok=True)
  all_runs = sweep.runs(args.workdir_root)
  clashes = {r.name: c for r in all_runs if (c := conflicts(sweep, r))}
  if clashes:
    print(f"{len(clashes)} run directories under {args.workdir_root} were made with other "
          "overrides than this sweep now asks for (their config.json says so); skipping, "
          "resuming or summarising them would mix two experiments:", file=sys.stderr)
    for name, c in list(clashes.items())[:10]:
      print(f"  {name}: {', '.join(c)}", file=sys.stderr)
    print("Use another --workdir_root, or delete those directories.", file=sys.stderr)
    return 2
  if not args.summarize:
    validate(sweep)
    write_manifest(sweep, all_runs, args.workdir_root)
    status = run_local(sweep, runs, args.parallel, args.python,
                       stall_timeout_s=args.stall_timeout, max_restarts=args.max_restarts)
  else:
    status = {}
  rows = write_summary(sweep, all_runs, args.workdir_root, args.split)
  done = sum(len(r["seeds"]) for r in rows)
  print(f"summary of {done}/{len(all_runs)} finished runs: "
        f"{os.path.join(args.workdir_root, 'summary.md')}, summary.csv")
  if "__signal__" in status:
    return 128 + int(status["__signal__"])
  failed = [k for k, v in status.items() if v.startswith("failed") or v == "stalled"]
  if failed:
    print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  # Import under the package name so that sweep files that use `experiments.sweep` helpers share
  # this module's objects.
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  from experiments import sweep as _sweep  # pylint: disable=import-self
  sys.exit(_sweep.main())
