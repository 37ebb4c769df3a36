"""Multi-host data parallelism, for real: two processes on this machine joined by
jax.distributed.initialize (local coordinator, gloo CPU collectives), 4 CPU devices each.

Each process reads its own slice of the data (data_pipelines.sampling: a contiguous slice and a
per-process permutation, like tfds.split_for_jax_process), so a two-process run does not see the
batches a one-process run sees. The reference is therefore one process with 8 devices that runs
the same train step on the same *global* batches (both processes' local batches, concatenated in
process order). The two-process run must match it step by step.

Workers: tests/multihost_worker.py. The first two tests share one two-process run.

The CLI tests at the end launch `python -m clcr_jax.main` twice with the launch fields
(config.parallel.coordinator_address, num_processes, process_id), 2 CPU devices each, and
preempt one process with SIGTERM: both must checkpoint one common step and exit, and the
relaunched pair must finish as an uninterrupted pair does.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from clcr_jax import checkpointing
import multihost_checkpoint_worker
import multihost_worker
from session_once import run_once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 8  # the tiny config: 64 rows / batch 16 x 2 epochs
TIMEOUT_S = 480


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _child_env(devices_per_process: int = 4) -> dict[str, str]:
  env = os.environ.copy()
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(
      flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
  env["JAX_PLATFORMS"] = "cpu"
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(var, None)
  return env


def _two_processes(directory, worker="multihost_worker.py"):
  out, workdir = directory / "out", directory / "run"
  out.mkdir()
  coordinator = f"127.0.0.1:{_free_port()}"
  logs = [open(directory / f"worker_{i}.log", "w") for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", worker), coordinator, "2",
       str(i), str(out), str(workdir)], cwd=REPO, env=_child_env(), stdout=logs[i],
      stderr=subprocess.STDOUT) for i in range(2)]
  try:
    for p in procs:
      p.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    pass
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  (directory / "returncodes.json").write_text(json.dumps([p.returncode for p in procs]))


def _reference(directory):
  """One process, 8 devices, the global batches of the two-process run: the loss of every step
  and the test metrics after the last one."""
  from clcr_jax import evaluate  # pylint: disable=import-outside-toplevel
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8 and jax.process_count() == 1
  config, reader, dp, model, state, rng, train_fn = multihost_worker.build(
      multihost_worker.tiny_config())
  per_process = [multihost_worker.local_batches(reader, config, NUM_STEPS, p, 2)
                 for p in range(2)]
  losses = []
  for parts in zip(*per_process):
    batch = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    state, metrics = train_fn(state, dp.put_batch(batch), rng)
    losses.append(float(metrics["loss/total"]))
  eval_fn = dp.compile_eval(evaluate.make_eval_step(model))
  chunks = [eval_fn(state, dp.put_batch(b)) for b in pipeline.eval_batches(
      reader, "test", global_batch_size=config.train.batch_size, backend="numpy")]
  outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  test = evaluate.summarise(outputs, config)
  (directory / "reference.json").write_text(json.dumps({"loss/total": losses, "test": test}))


def _build(directory):
  _two_processes(directory)
  _reference(directory)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, worker_id):
  return run_once(tmp_path_factory, worker_id, "multihost_run", _build)


@pytest.fixture(scope="module")
def reference(run_dir):
  return json.loads((run_dir / "reference.json").read_text())


def _worker_logs(directory) -> str:
  return "\n".join(f"--- worker {i} (last 4000 chars) ---\n"
                   f"{(directory / f'worker_{i}.log').read_text()[-4000:]}" for i in range(2))


def _read(directory, name):
  path = directory / "out" / name
  return json.loads(path.read_text()) if path.exists() else None


def test_two_processes_see_one_global_mesh_and_the_same_step_losses(run_dir, reference):
  d = run_dir
  topologies = [_read(d, f"topology_{i}.json") for i in range(2)]
  assert None not in topologies, _worker_logs(d)
  assert [t["process_index"] for t in topologies] == [0, 1]
  for t in topologies:
    assert (t["process_count"], t["device_count"], t["local_device_count"]) == (2, 8, 4)
  steps = [_read(d, f"steps_{i}.json") for i in range(2)]
  assert None not in steps, _worker_logs(d)
  # Both processes hold the same replicated loss, and it is the 8-device loss of the same
  # global batch: the gradient all-reduce and the batch assembly across hosts are right.
  assert steps[0] == steps[1]
  np.testing.assert_allclose(steps[0]["loss/total"],
                             reference["loss/total"][:multihost_worker.STEP_CHECK_STEPS],
                             rtol=2e-5)
  # The evaluation outputs are gathered from both processes: every process holds the global
  # batch of 16 rows (each host's 8, in process order), the same on both.
  valid_labels = [int(v) for v in multihost_worker.valid_labels()]
  assert steps[0]["eval_rows"] == 16
  assert steps[0]["eval_labels"] == valid_labels[:8] + valid_labels[16:24]
  # Not a vacuous match: the loss changes from step to step.
  assert len(set(np.round(steps[0]["loss/total"], 4))) == multihost_worker.STEP_CHECK_STEPS


def test_train_and_evaluate_on_two_processes_matches_one_process(run_dir, reference):
  d = run_dir
  errors = [(d / "out" / f"error_{i}.txt") for i in range(2)]
  for e in errors:
    if not e.exists():
      continue
    text = e.read_text()
    hint = ("\ntrain_lib.py puts the PRNG key with jax.device_put on a sharding that spans both"
            " processes; build it with jax.jit(lambda: train_key, out_shardings=dp.replicated)()"
            " instead." if "addressable devices" in text else "")
    pytest.fail(f"train_and_evaluate failed on two processes:\n{text}{hint}")
  results = [_read(d, f"results_{i}.json") for i in range(2)]
  assert None not in results, _worker_logs(d)
  assert json.loads((d / "returncodes.json").read_text()) == [0, 0]
  # Every process returns the same results; process 0 wrote them.
  assert results[0] == results[1]
  with open(d / "run" / "results.json") as f:
    assert json.load(f) == results[0]
  assert results[0]["final_step"] == NUM_STEPS
  # The logged train loss of every step is the one-process loss on the same global batches.
  with open(d / "run" / "metrics.jsonl") as f:
    train = [json.loads(line) for line in f if '"split": "train"' in line]
  assert [r["step"] for r in train] == list(range(1, NUM_STEPS + 1))
  np.testing.assert_allclose([r["loss/total"] for r in train], reference["loss/total"],
                             rtol=2e-5)
  # And the model it trained is the one-process model: the test metrics of the selected
  # checkpoint (the only evaluation, at the last step) are the one-process model's. (Parameters
  # themselves are not compared: with Adam, those whose gradient is zero in exact arithmetic --
  # the key biases of softmax attention, the level-logit bias, the directions of the private
  # bases that QR ignores -- move with rounding noise, which differs between reduction orders.)
  assert results[0]["selection"]["step"] == NUM_STEPS
  expected = reference["test"]
  assert results[0]["test"].keys() == expected.keys()
  for key, value in expected.items():
    assert results[0]["test"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_latest_and_best_checkpoints_of_one_step_save_together_on_two_processes(tmp_path):
  # orbax names its cross-process barriers after the step; when the newest checkpoint is also
  # the best one, both managers save that step at once, and before the managers had barrier
  # prefixes of their own this failed every time ("Barrier <name> is already ongoing", the name
  # depending on which barrier the two saves met at first).
  _two_processes(tmp_path, worker="multihost_checkpoint_worker.py")
  errors = [tmp_path / "out" / f"error_{i}.txt" for i in range(2)]
  for e in errors:
    assert not e.exists(), e.read_text()
  assert json.loads((tmp_path / "returncodes.json").read_text()) == [0, 0], _worker_logs(tmp_path)
  restored = [_read(tmp_path, f"checkpoints_{i}.json") for i in range(2)]
  assert restored[0] == restored[1]
  last = multihost_checkpoint_worker.NUM_SAVES
  for which in ("latest", "best"):
    got = restored[0][which]
    assert got == {"meta": {"step": last}, "w_mean": float(last), "step": last,
                   "latest_step": last}, which
    # max_to_keep=1: only the newest step is left, and no unfinished temporary folder.
    directory = checkpointing.checkpoint_dir(str(tmp_path / "run"), which)
    assert sorted(os.listdir(directory)) == [str(last)], which


def _parallel_config(**fields):
  from experiments.configs import common  # pylint: disable=import-outside-toplevel
  config = common.base_config().parallel
  config.update(fields)
  return config


def test_launch_fields_are_passed_to_jax_distributed_all_or_none():
  from clcr_jax import parallel  # pylint: disable=import-outside-toplevel
  full = {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
  assert parallel.distributed_init_args(_parallel_config(multihost=True, **full)) == full
  # Unset: JAX detects the cluster; single-process runs start no distributed runtime.
  assert parallel.distributed_init_args(_parallel_config(multihost=True)) == {}
  assert parallel.distributed_init_args(_parallel_config()) is None
  with pytest.raises(ValueError, match=r"set together or not at all.*found "
                     r"coordinator_address='10.0.0.1:1234', num_processes=2, "
                     r"process_id=-1 \(unset\)"):
    parallel.distributed_init_args(_parallel_config(
        multihost=True, coordinator_address="10.0.0.1:1234", num_processes=2))
  with pytest.raises(ValueError, match=r"multihost=False; add --config.parallel.multihost=True"):
    parallel.distributed_init_args(_parallel_config(**full))
  bad = [({"coordinator_address": "10.0.0.1"}, r"coordinator_address must be host:port.*"
          r"found '10.0.0.1'"),
         ({"process_id": 2}, r"process_id must be in \[0, 1\] \(num_processes=2\), found 2"),
         ({"num_processes": -1, "process_id": 0}, r"num_processes must be at least 1, found -1")]
  for fields, message in bad:
    with pytest.raises(ValueError, match=message):
      parallel.distributed_init_args(_parallel_config(multihost=True, **{**full, **fields}))


# -- the CLI on two processes: launch fields and preemption -------------------------------------
CLI_STEPS = 24  # 6 epochs of the tiny config's 4 steps: time for the SIGTERM to land mid-run
PREEMPTION_CHECK_EVERY = 2
STOP_TIMEOUT_S = 180  # from SIGTERM to both processes gone; without agreement they never exit


def _start_cli(workdir, logs_prefix):
  """Two `python -m clcr_jax.main` processes of 2 CPU devices each, joined by the launch
  fields, on the tiny config; evaluation and the scheduled checkpoint only at the last step."""
  coordinator = f"127.0.0.1:{_free_port()}"
  logs = [f"{logs_prefix}_{i}.log" for i in range(2)]
  procs = []
  for i in range(2):
    with open(logs[i], "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "clcr_jax.main",
           f"--config={os.path.join(REPO, 'experiments', 'configs', 'synthetic.py')}:tiny",
           f"--workdir={workdir}", "--config.data.backend=numpy",
           f"--config.train.num_epochs={CLI_STEPS // 4}", "--config.train.log_every_steps=1",
           "--config.eval.every_steps=1000", "--config.checkpoint.every_steps=1000",
           f"--config.checkpoint.preemption_check_every_steps={PREEMPTION_CHECK_EVERY}",
           "--config.parallel.multihost=True",
           f"--config.parallel.coordinator_address={coordinator}",
           "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}"],
          cwd=REPO, env=_child_env(2), stdout=log, stderr=subprocess.STDOUT))
  return procs, logs


def _logs(logs) -> str:
  return "\n".join(f"--- {path} (last 4000 chars) ---\n{open(path).read()[-4000:]}"
                    for path in logs)


def _wait_all(procs, logs, timeout_s, what):
  """Waits for every process; kills them all and fails, with their logs, past the deadline."""
  deadline = time.monotonic() + timeout_s
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
  except subprocess.TimeoutExpired:
    pytest.fail(f"{what}: still running after {timeout_s} s\n{_logs(logs)}")
  finally:
    _kill(procs)
  return [p.returncode for p in procs]


def _kill(procs):
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()


def _run_cli(workdir, logs_prefix):
  procs, logs = _start_cli(workdir, logs_prefix)
  codes = _wait_all(procs, logs, TIMEOUT_S, "two-process CLI run")
  assert codes == [0, 0], _logs(logs)
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f), logs


def _train_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if '"split": "train"' in line]
  return [(r["step"], r["loss/total"]) for r in rows]


def test_sigterm_to_one_cli_process_stops_both_at_one_step_and_the_rerun_matches(tmp_path):
  reference, _ = _run_cli(tmp_path / "reference", str(tmp_path / "reference"))
  assert reference["final_step"] == CLI_STEPS

  workdir = tmp_path / "run"
  procs, logs = _start_cli(workdir, str(tmp_path / "run"))
  # SIGTERM as soon as process 0's handler is in place (before the first step compiles).
  deadline = time.monotonic() + TIMEOUT_S
  while f"Training steps 1 to {CLI_STEPS}" not in open(logs[0]).read():
    if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
      _kill(procs)
      pytest.fail(f"the run did not reach its training loop\n{_logs(logs)}")
    time.sleep(0.02)
  procs[0].send_signal(signal.SIGTERM)
  codes = _wait_all(procs, logs, STOP_TIMEOUT_S, "after SIGTERM to process 0")
  assert codes == [143, 143], _logs(logs)
  # Both checkpointed the same step, a step of the agreement, and named who was signalled.
  stopped = [re.findall(r"Checkpointed step (\d+) after SIGTERM to process\(es\) \[0\]",
                        open(path).read()) for path in logs]
  assert len(stopped[0]) == 1 and stopped[0] == stopped[1], _logs(logs)
  step = int(stopped[0][0])
  assert step % PREEMPTION_CHECK_EVERY == 0 and step < CLI_STEPS, _logs(logs)
  assert sorted(os.listdir(checkpointing.checkpoint_dir(str(workdir), "latest"))) == [str(step)]
  assert not (workdir / "results.json").exists()

  resumed, logs = _run_cli(workdir, str(tmp_path / "rerun"))
  assert all(re.search(rf"Resumed from \S+ at step {step}\b", open(path).read())
             for path in logs), _logs(logs)
  assert resumed == reference
  # The resumed log holds every step once, with the uninterrupted run's losses.
  assert _train_rows(workdir) == _train_rows(tmp_path / "reference")


def test_cli_stops_at_launch_when_only_some_launch_fields_are_set(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "clcr_jax.main",
       f"--config={os.path.join(REPO, 'experiments', 'configs', 'synthetic.py')}:tiny",
       f"--workdir={workdir}", "--config.parallel.multihost=True",
       "--config.parallel.coordinator_address=127.0.0.1:1234"],
      cwd=REPO, env=_child_env(2), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "num_processes=0 (unset), process_id=-1 (unset)" in proc.stderr, proc.stderr
  assert not workdir.exists()
