"""The training system: train_and_evaluate end to end, resume, kill -9, jit vs pmap, CLI errors."""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import clcr_jax
from clcr_jax import checkpointing
from clcr_jax import losses
from clcr_jax import models
from clcr_jax import optim
from clcr_jax import parallel
from clcr_jax import train_lib
from data_pipelines import pipeline
from data_pipelines import registry
from experiments.configs import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "synthetic.py")


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = synthetic.get_config("tiny")
  config.data.backend = "numpy"
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def latest_params(workdir: str, which: str = "latest"):
  variables, step = checkpointing.load_variables(workdir, which)
  return step, jax.tree.map(np.asarray, variables["params"])


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# Python-level traces of the train step in `finished_run` (a jitted function retraces when the
# shapes, dtypes or static values of its arguments change; each trace is a compile).
_TRAIN_STEP_TRACES: list = []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  make_train_step = train_lib.make_train_step

  def counting_make_train_step(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def counted(*a, **k):
      _TRAIN_STEP_TRACES.append(1)
      return step_fn(*a, **k)
    return counted
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train_lib, "make_train_step", counting_make_train_step)
    results = clcr_jax.train_and_evaluate(tiny_config(), workdir)
  return workdir, results


def test_the_train_step_is_compiled_once_per_run(finished_run):
  # 8 steps over 2 epochs, with evaluations and checkpoints between them: one trace.
  assert finished_run[1]["final_step"] == 8
  assert len(_TRAIN_STEP_TRACES) == 1, f"the train step was traced {len(_TRAIN_STEP_TRACES)} times"


def test_derived_values_are_recorded_not_stored_in_the_config(finished_run, tmp_path):
  workdir, _ = finished_run
  with open(os.path.join(workdir, "config.json")) as f:
    record = json.load(f)
  # config.json records what was run, resolved values included ...
  assert record["train"]["total_steps"] == 8 and record["eval"]["batch_size"] == 16
  assert record["model"]["task"] == "classification" and record["model"]["num_classes"] == 8
  # ... while the caller's config is left as it was, and has no derived field to fill.
  config = tiny_config(**{"train.num_epochs": 1})
  before = config.to_dict()
  clcr_jax.train_and_evaluate(config, str(tmp_path))
  assert config.to_dict() == before and "total_steps" not in config.train
  assert optim.total_steps(config.train, 4) == 4
  assert optim.total_steps(tiny_config(**{"train.max_steps": 3}).train, 4) == 3


def test_train_and_evaluate_writes_the_run_directory(finished_run):
  workdir, results = finished_run
  for name in ("results.json", "config.json", "metrics.jsonl", "data_fingerprint.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk == results
  assert set(results["test"]) >= {"accuracy", "macro_f1", "loss"}
  assert 0.0 <= results["test"]["accuracy"] <= 1.0
  assert results["selection"]["split"] == "valid" and not results["selection"]["on_test"]
  assert results["final_step"] == 8  # 64 train rows / batch 16 * 2 epochs
  # The selected checkpoint is the one whose validation accuracy results.json reports.
  evals = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "valid"]
  best = max(evals, key=lambda r: r["accuracy"])  # first maximum wins, as in the loop
  assert results["selection"]["step"] == best["step"]
  assert results["valid"]["accuracy"] == pytest.approx(best["accuracy"])
  # Latest and best checkpoints exist; the predictor reproduces the test metrics.
  assert latest_params(workdir)[0] == 8


def test_load_reproduces_results_json(finished_run):
  """clcr_jax.load's predictor evaluates with the training run's evaluator: every metric of
  results.json (task metrics, loss, omega / beta / eta, participation) on both splits."""
  workdir, results = finished_run
  predictor = clcr_jax.load(workdir)
  assert predictor.step == results["selection"]["step"]
  for split in ("valid", "test"):
    again = predictor.evaluate(split)
    assert again.keys() == results[split].keys(), split
    for key, value in results[split].items():
      assert again[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (split, key)
  assert clcr_jax.load(workdir, "latest").step == 8


def test_load_errors_name_the_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    clcr_jax.load(str(tmp_path))
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=f"no 'best' checkpoint in {tmp_path}"):
    clcr_jax.load(str(tmp_path))


def test_tensorboard_events_are_readable(finished_run):
  from tensorboard.backend.event_processing import event_accumulator  # independent reader
  workdir, _ = finished_run
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  tags = acc.Tags()["scalars"]
  assert "train/loss/total" in tags and "valid/accuracy" in tags
  assert "train/budget/level0_participation" in tags and "train/omega/level2" in tags
  logged = {r["step"]: r["loss/total"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if r["split"] == "train"}
  for event in acc.Scalars("train/loss/total"):
    assert event.value == pytest.approx(logged[event.step], rel=1e-6)


def test_second_call_resumes_and_does_not_retrain(finished_run):
  workdir, results = finished_run
  before = os.path.getmtime(os.path.join(workdir, "metrics.jsonl"))
  step, params = latest_params(workdir)
  again = clcr_jax.train_and_evaluate(tiny_config(), workdir)
  assert again == results
  assert os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) == before
  step2, params2 = latest_params(workdir)
  assert step2 == step
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_resuming_with_a_different_model_or_seed_is_refused(finished_run):
  workdir, _ = finished_run
  with open(os.path.join(workdir, "config.json")) as f:
    saved = f.read()
  d = tiny_config().model.d
  with pytest.raises(ValueError, match=r"different run[\s\S]*model\.d: %d in the workdir, %d now"
                     r"[\s\S]*seed: 0 in the workdir, 7 now" % (d, 2 * d)):
    clcr_jax.train_and_evaluate(tiny_config(**{"model.d": 2 * d, "seed": 7}), workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == saved  # the workdir is left as it was


def test_a_field_newer_than_the_workdir_resumes_at_its_default_only(finished_run, tmp_path):
  workdir, results = finished_run
  old = str(tmp_path / "older")
  shutil.copytree(workdir, old)
  path = os.path.join(old, "config.json")
  with open(path) as f:
    saved = json.load(f)
  del saved["model"]["exchange_init"]  # as written before the field existed
  with open(path, "w") as f:
    json.dump(saved, f)
  with pytest.raises(ValueError, match=r"model\.exchange_init: '<absent>' in the workdir, "
                     r"'zero' now"):
    clcr_jax.train_and_evaluate(tiny_config(**{"model.exchange_init": "zero"}), old)
  # Loading fills the absent field at its default, so the older run evaluates as it trained.
  loaded = clcr_jax.load(old)
  assert loaded.config.model.exchange_init == "default"
  again = loaded.evaluate("test")
  for key, value in results["test"].items():
    assert again[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
  assert clcr_jax.train_and_evaluate(tiny_config(), old) == results


def _launch(workdir, *extra, env=None):
  cmd = [sys.executable, "-m", "clcr_jax.main", f"--config={CONFIG}:tiny", f"--workdir={workdir}",
         "--config.data.backend=numpy", "--config.train.num_epochs=5",
         "--config.checkpoint.every_steps=3", "--config.eval.every_steps=4", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env or os.environ.copy(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(workdir, proc, timeout=600):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if checkpointing.has_checkpoint(workdir, "latest"):
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended before its first checkpoint:\n{proc.stdout.read()}")
    time.sleep(0.05)
  raise AssertionError("no checkpoint appeared")


def test_kill_9_and_resume_is_bitwise_identical(tmp_path):
  reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
  proc = _launch(reference)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out

  proc = _launch(killed)
  _wait_for_checkpoint(killed, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, "results.json"))
  proc = _launch(killed)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out
  assert "Resumed from" in out

  ref_step, ref_params = latest_params(reference)
  step, params = latest_params(killed)
  assert step == ref_step == 20
  jax.tree.map(np.testing.assert_array_equal, ref_params, params)
  with open(os.path.join(reference, "results.json")) as f:
    ref_results = json.load(f)
  with open(os.path.join(killed, "results.json")) as f:
    assert json.load(f) == ref_results
  # The resumed log holds each step once, with the uninterrupted run's values.
  ref_log = read_jsonl(os.path.join(reference, "metrics.jsonl"))
  log = read_jsonl(os.path.join(killed, "metrics.jsonl"))
  assert [(r["step"], r["split"]) for r in log] == [(r["step"], r["split"]) for r in ref_log]
  for a, b in zip(ref_log, log):
    assert {k: v for k, v in a.items() if "steps" not in k} == \
        {k: v for k, v in b.items() if "steps" not in k}


def test_sigterm_checkpoints_before_exit(tmp_path):
  workdir = str(tmp_path / "run")
  proc = _launch(workdir, "--config.checkpoint.every_steps=1000", "--config.train.num_epochs=50")
  _wait_for_log = time.time()
  # Wait until training runs (a train log line), then ask it to stop.
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if "steps/s" in line:
      break
    assert time.time() - _wait_for_log < 600, "".join(lines)
  proc.send_signal(signal.SIGTERM)
  out = "".join(lines) + proc.stdout.read()
  proc.wait(timeout=300)
  assert proc.returncode != 0
  assert "SIGTERM" in out
  step, _ = latest_params(workdir)
  assert 0 < step < 200  # an off-schedule checkpoint (the schedule would save at the end only)


def test_locked_config_typo_fails_with_the_valid_keys(tmp_path):
  proc = _launch(str(tmp_path / "x"), "--config.train.learning_rat=0.1")
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert "learning_rat" in out and "learning_rate" in out
  assert not os.path.exists(tmp_path / "x" / "config.json")


def test_non_divisible_batch_fails_clearly(tmp_path):
  with pytest.raises(ValueError, match=r"train.batch_size=12 is not divisible by the 8 devices"):
    clcr_jax.train_and_evaluate(tiny_config(**{"train.batch_size": 12}), str(tmp_path))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config(**{"train.learning_rate": 1e30, "train.optimizer": "sgd",
                          "train.schedule": "constant", "checkpoint.every_steps": 1,
                          "train.log_every_steps": 1})
  with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+;") as err:
    clcr_jax.train_and_evaluate(config, str(tmp_path))
  bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
  step, params = latest_params(str(tmp_path))
  assert step == bad_step - 1
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
# jit and pmap: one step function, two wrappers, the same numbers
# ---------------------------------------------------------------------------------------------
def _run_steps(mode: str, num_steps: int, traces: list):
  # SGD, not Adam: Adam's update divides by sqrt(v) and turns float-rounding differences in
  # near-zero gradients into full-size steps, which would hide what this test compares.
  config = tiny_config(**{"model.dropout": 0.0, "train.batch_size": 16, "train.optimizer": "sgd",
                          "train.learning_rate": 1e-3, "train.schedule": "constant",
                          "train.warmup_steps": 0})
  reader = registry.get_reader(config.data)
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = train_lib.resolve_model_config(config.model, reader)
  config.train.max_steps = num_steps
  dp = parallel.DataParallel(mode)
  model = models.build_model(config.model, axis_name=dp.model_axis_name)
  tx = optim.make_optimizer(config.train, 4)
  step_fn = train_lib.make_train_step(model, tx, optim.make_schedule(config.train, 4), config)

  def counted(*args, **kwargs):
    traces.append(mode)
    return step_fn(*args, **kwargs)
  sample = reader.load_examples("train", np.arange(2), train=False)
  variables = models.build_model(config.model).init(jax.random.key(0), sample["inputs"],
                                                    sample["masks"], train=False)
  state = {"params": variables["params"], "batch_stats": {}, "opt_state": tx.init(variables["params"]),
           "step": jnp.zeros((), jnp.int32)}
  train = dp.compile_train(counted)
  device_state = dp.put_state(state)
  batches = pipeline.train_batches(reader, "train", global_batch_size=16, seed=0, start_step=0,
                                   num_steps=num_steps, backend="numpy")
  losses_seen = []
  for batch in batches:
    device_state, m = train(device_state, dp.put_batch(batch), jax.random.key(1))
    losses_seen.append({k: float(v) for k, v in m.items()})
  return losses_seen, jax.tree.map(np.asarray, dp.get_state(device_state)["params"])


def test_jit_and_pmap_give_the_same_losses_on_8_devices():
  assert jax.device_count() == 8
  traces: list = []
  jit_metrics, jit_params = _run_steps("jit", 5, traces)
  pmap_metrics, pmap_params = _run_steps("pmap", 5, traces)
  assert traces.count("jit") == 1, "the jitted step retraced"
  # Step 1 sees identical parameters: the two reductions differ only in summation order.
  for key in ("loss/total", "loss/task", "loss/intra", "loss/inter", "grad_norm"):
    assert jit_metrics[0][key] == pytest.approx(pmap_metrics[0][key], rel=2e-6), key
  # Later steps start from parameters that differ by float rounding (~1e-7), which the batch
  # whitening of the regularisers amplifies: hence the looser tolerance and the small lr.
  for a, b in zip(jit_metrics[1:], pmap_metrics[1:]):
    for key in ("loss/total", "loss/task", "loss/intra", "loss/inter", "grad_norm"):
      assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
  assert jit_metrics[0]["loss/total"] != pytest.approx(jit_metrics[-1]["loss/total"], rel=1e-3)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-6), jit_params,
               pmap_params)


def test_synthetic_trains_without_tensorflow(tmp_path):
  # sys.modules[name] = None is what an absent package looks like to both `import` (which
  # raises ModuleNotFoundError) and importlib.util.find_spec (which returns None). einops alone
  # reads any name in sys.modules as a loaded framework and would import it on its first call,
  # so its JAX backend is looked up once before the names are blocked (an absent TensorFlow is
  # not in sys.modules at all, and einops never tries it).
  script = f"""
import sys
import einops
import jax.numpy as jnp
einops.rearrange(jnp.zeros((1, 2)), 'a b -> b a')
for name in ('tensorflow', 'tensorflow_datasets'):
  sys.modules[name] = None
sys.path.insert(0, {REPO!r})
import clcr_jax
from experiments.configs import synthetic
config = synthetic.get_config('tiny')
config.train.num_epochs = 1
results = clcr_jax.train_and_evaluate(config, {str(tmp_path)!r})
assert sys.modules['tensorflow'] is None, 'tensorflow was imported'
print('ACC', results['test']['accuracy'])
"""
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "ACC" in out.stdout


def test_quickstart_notebook_runs(tmp_path):
  import nbclient
  import nbformat
  path = os.path.join(REPO, "experiments", "notebooks", "quickstart.ipynb")
  nb = nbformat.read(path, as_version=4)
  os.environ["CLCR_QUICKSTART_TINY"] = "1"
  os.environ["CLCR_QUICKSTART_WORKDIR"] = str(tmp_path / "run")
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  finally:
    del os.environ["CLCR_QUICKSTART_TINY"], os.environ["CLCR_QUICKSTART_WORKDIR"]
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "test accuracy" in outputs and "logged steps" in outputs
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f)["final_step"] == 8
