"""`train_and_evaluate(config, workdir)`: the one training loop behind the CLI, notebooks, sweeps.

Order of business (big_vision style): resume first from the workdir's latest checkpoint, else
initialise; train with one compiled step (jit with shardings, or pmap); evaluate on the
validation split every `eval.every_steps` and keep the best checkpoint by the selection metric;
finally evaluate the selected checkpoint on the test split and write `results.json`.

Reproducibility: the data order is a pure function of (seed, epoch, step) and the step's RNG is
`fold_in(seed key, step)`, so a run killed at any point and restarted with the same command ends
with bitwise-identical parameters and metrics on CPU.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any

from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from clcr_jax import checkpointing
from clcr_jax import evaluate
from clcr_jax import losses
from clcr_jax import metric_writers
from clcr_jax import metrics as metrics_lib
from clcr_jax import models
from clcr_jax import modulation
from clcr_jax import optim
from clcr_jax import parallel
from clcr_jax import run_config
from clcr_jax.models import bert as bert_lib
from data_pipelines import pipeline
from data_pipelines import registry

# ---------------------------------------------------------------------------------------------
# Configuration resolved against the dataset
# ---------------------------------------------------------------------------------------------
def resolve_model_config(model_config, reader) -> ml_collections.ConfigDict:
  """Fills the model fields left to the data ('auto' task, 0 classes, no modalities) and checks
  the explicit ones against the reader. Returns an unlocked copy."""
  cfg = ml_collections.ConfigDict(model_config.to_dict())
  task, specs = reader.task, reader.modalities
  name = reader.config.get("name", "?")
  if cfg.task == "auto":
    cfg.task = task.task
  elif cfg.task != task.task:
    raise ValueError(f"config.model.task={cfg.task!r} but dataset {name!r} is "
                     f"{task.task!r}; set config.model.task='auto' or {task.task!r}")
  if task.num_classes:
    if cfg.num_classes == 0:
      cfg.num_classes = task.num_classes
    elif cfg.num_classes != task.num_classes:
      raise ValueError(f"config.model.num_classes={cfg.num_classes} but dataset {name!r} has "
                       f"{task.num_classes} classes")
  if task.num_segments and cfg.num_segments == 0:
    cfg.num_segments = task.num_segments
  if not cfg.modalities:
    cfg.modalities = ml_collections.ConfigDict(
        {m: models.modality(s.kind) for m, s in specs.items()})
  unknown = sorted(set(cfg.modalities.keys()) - set(specs))
  if unknown:
    raise ValueError(f"config.model.modalities names {unknown}, which dataset {name!r} does not "
                     f"have; its modalities are {sorted(specs)}")
  for m in cfg.modalities.keys():
    if cfg.modalities[m].kind != specs[m].kind:
      raise ValueError(f"config.model.modalities.{m}.kind={cfg.modalities[m].kind!r} but "
                       f"dataset {name!r} provides {m!r} as {specs[m].kind!r} "
                       f"with per-example shape {specs[m].shape}")
  bert_lib.resolve_config(cfg)  # BERT sizes from config.model.bert.path's config.json
  return cfg


# ---------------------------------------------------------------------------------------------
# The step functions (pure; `parallel.DataParallel` compiles them for jit or pmap)
# ---------------------------------------------------------------------------------------------
def make_train_step(model, tx, schedule, config, steps_per_epoch: int = 0):
  """The step function. `steps_per_epoch` is needed by train.modulation (its epoch window)."""
  loss_config, task = config.loss, config.model.task
  modalities = tuple(config.model.modalities.keys())

  def train_step(state, batch, rng, axis: losses.BatchAxis):
    rng = jax.random.fold_in(rng, state["step"])
    # Before the per-device fold: the modulation noise must be the same on every device.
    modulation_key = jax.random.fold_in(rng, 0x6F676D)
    if axis.name:  # distinct dropout masks per device
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis.name))

    def loss_fn(params):
      variables = checkpointing.model_variables(dict(state, params=params))
      (prediction, aux), updated = model.apply(
          variables, batch["inputs"], batch["masks"], train=True, rngs={"dropout": rng},
          mutable=["batch_stats"])
      total, terms = losses.total_loss(prediction, aux, batch, loss_config, task, axis,
                                       config.model)
      return total, (terms, aux, updated)

    (_, (terms, aux, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    grads, terms = axis.sum(grads), axis.sum(terms)
    grads, modulation_metrics = modulation.apply(config.train, grads, aux, batch, modulation_key,
                                                 state["step"], steps_per_epoch, axis)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_state = {"params": optax.apply_updates(state["params"], updates),
                 "batch_stats": updated.get("batch_stats", state["batch_stats"]),
                 "opt_state": opt_state, "step": state["step"] + 1}
    out = {f"loss/{k}": v for k, v in terms.items()}
    out["grad_norm"] = optax.tree.norm(grads)
    out["learning_rate"] = schedule(state["step"])
    out.update(modulation_metrics)
    out.update(evaluate.step_diagnostics(aux, batch["valid"], axis, modalities))
    return new_state, out
  return train_step


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
class _Preemption:
  """Turns SIGTERM into a decision, taken between steps, to checkpoint and exit.

  With several processes the decision must be common: the save is collective, so a process that
  stops alone waits in it for peers that have stepped on, and both hang. A preemption notice
  reaches hosts at different steps, so every `check_every` steps, the same steps on all of them,
  the processes all-gather their flags and stop together when any one is set. One process
  decides from its own flag at every step.
  """

  def __init__(self, check_every: int):
    if check_every < 1:
      raise ValueError("config.checkpoint.preemption_check_every_steps must be at least 1, "
                       f"found {check_every}")
    self.check_every = check_every
    self.requested = False
    self.by_processes: list[int] = []
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint after the current step, then exiting")
    self.requested = True

  def stop_after(self, step: int) -> bool:
    """Whether to checkpoint `step` and exit; the same answer on every process."""
    if jax.process_count() == 1:
      self.by_processes = [0] if self.requested else []
      return self.requested
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    self.by_processes = [int(p) for p in np.flatnonzero(flags)]
    return bool(self.by_processes)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _every(every_steps: int, steps_per_epoch: int) -> int:
  return every_steps if every_steps > 0 else steps_per_epoch


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(metrics_lib.json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
  os.replace(tmp, path)


# Config fields a resumed run must share with the run that wrote the workdir: the ones that
# decide the parameters' shapes, the data order or the objective. Epoch count, evaluation and
# logging may change (e.g. to train longer).
_RUN_IDENTITY = ("seed", "model.", "loss.", "data.name", "data.generator", "data.train_split",
                 "train.batch_size", "train.optimizer", "train.modulation", "train.ogm_ge.")
# Where the pretrained BERT lies is not part of the run: its weights are read only to initialise
# a fresh state, and a resumed run restores its own, so the directory may move between launches.
# What it holds still counts: the sizes read from it (model.bert.hidden_size, ...) stay checked.
_NOT_RUN_IDENTITY = ("model.bert.path",)


def _check_resumable(workdir: str, record: dict[str, Any]) -> None:
  """Refuses to resume a workdir whose checkpoints come from a different run (config.json)."""
  path = os.path.join(workdir, "config.json")
  if not (os.path.exists(path) and checkpointing.has_checkpoint(workdir, "latest")):
    return
  with open(path) as f:
    saved = traverse_util.flatten_dict(json.load(f), sep=".")
  now = traverse_util.flatten_dict(
      json.loads(json.dumps(metrics_lib.json_safe(record))), sep=".")
  keys = sorted(k for k in set(saved) | set(now)
                if any(k == p or (p.endswith(".") and k.startswith(p)) for p in _RUN_IDENTITY)
                and k not in _NOT_RUN_IDENTITY)
  # A field added to the project after the workdir was written is absent from its config.json;
  # at the value it meant then (run_config.absent_values) it selects the behaviour the run had,
  # so it is no difference.
  defaults = run_config.absent_values()
  same = lambda k: saved.get(k) == now.get(k) or (
      k not in saved and k in defaults and defaults[k] == now.get(k))
  diff = [f"{k}: {saved.get(k, '<absent>')!r} in the workdir, {now.get(k, '<absent>')!r} now"
          for k in keys if not same(k)]
  if diff:
    raise ValueError(
        f"{workdir} holds checkpoints of a different run ({path}); resuming it with this config "
        "would mix two runs. Differences:\n  " + "\n  ".join(diff[:20]) +
        ("\n  ..." if len(diff) > 20 else "") + "\nUse another --workdir, or delete this one.")


def _fetch(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
  return [(s, jax.device_get(m)) for s, m in pending]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a run) and returns results.json's dict."""
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  # -- data ------------------------------------------------------------------------------------
  reader = registry.get_reader(config.data)
  fingerprint = reader.fingerprint()
  if is_main:
    _write_json(os.path.join(workdir, "data_fingerprint.json"), fingerprint)
  logging.info("Data fingerprint: %s", json.dumps(metrics_lib.json_safe(
      {k: fingerprint[k] for k in ("dataset", "split_sizes", "known_version")})))
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy we may complete
  config.model = resolve_model_config(config.model, reader)
  modulation.check_config(config)
  task = config.model.task
  select_split, select_metric, select_mode = evaluate.selection_rule(config.eval, task)
  for split in {config.data.train_split, select_split}:
    if split not in reader.splits:
      raise ValueError(f"split {split!r} (config.data.train_split / config.eval.select_on) is "
                       f"not in dataset {config.data.name!r}, which has {list(reader.splits)}")
  if select_split == config.data.test_split:
    logging.warning("=" * 78 + "\nMODEL SELECTION ON THE TEST SPLIT (config.eval.select_on="
                    "%r): test numbers are optimistic. Use only to reproduce peers (OGM-GE, MLA, "
                    "ARL) that select on test.\n" + "=" * 78, select_split)

  parallel.check_batch_size(config.train.batch_size)
  eval_batch_size = evaluate.batch_size(config)
  parallel.check_batch_size(eval_batch_size, "eval.batch_size")
  dp = parallel.DataParallel(config.parallel.mode, tuple(config.parallel.mesh_shape))
  steps_per_epoch = pipeline.steps_per_epoch(reader, config.data.train_split,
                                             global_batch_size=config.train.batch_size,
                                             process_count=jax.process_count())
  total_steps = optim.total_steps(config.train, steps_per_epoch)
  eval_every = _every(config.eval.every_steps, steps_per_epoch)
  ckpt_every = _every(config.checkpoint.every_steps, steps_per_epoch)
  log_every = max(1, config.train.log_every_steps)
  record = run_config.record(config, {"train.total_steps": total_steps,
                               "eval.batch_size": eval_batch_size})
  _check_resumable(workdir, record)
  if is_main:
    _write_json(os.path.join(workdir, "config.json"), record)

  # -- model, optimiser, state -----------------------------------------------------------------
  model = models.build_model(config.model, axis_name=dp.model_axis_name)
  init_model = models.build_model(config.model)
  tx = optim.make_optimizer(config.train, steps_per_epoch, config.model)
  schedule = optim.make_schedule(config.train, steps_per_epoch)
  sample = pipeline.example_batch(reader, config.data.train_split)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))

  def init_state():
    variables = init_model.init({"params": init_key, "dropout": init_key}, sample["inputs"],
                                sample["masks"], train=False)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  abstract = jax.eval_shape(init_state)
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint.asynchronous)
  restored = checkpointer.restore("latest", checkpointing.abstract_like(abstract, dp.replicated))
  if restored is not None:
    state, meta = restored
    start_step = int(state["step"])
    checkpointer.drop_after("best", start_step)
    logging.info("Resumed from %s at step %d", checkpointing.checkpoint_dir(workdir, "latest"),
                 start_step)
  else:
    state = jax.jit(init_state, out_shardings=dp.replicated)()
    if bert_lib.uses_bert(config.model) and config.model.bert.path:
      # Pretrained weights enter after the compiled init (not as constants inside it), as host
      # arrays that dp.put_state replicates below. The optimiser state (zeros) is the same.
      state = dict(state, params=bert_lib.insert_pretrained(state["params"], config.model))
      logging.info("BERT backbone initialised from %s", config.model.bert.path)
    meta = {"best_value": None, "best_step": None}
    start_step = 0
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("Initialised %s with %d parameters", config.model.name, n_params)

  results_path = os.path.join(workdir, "results.json")
  if start_step >= total_steps and os.path.exists(results_path):
    logging.info("%s already finished (step %d); not retraining", workdir, start_step)
    checkpointer.close()
    with open(results_path) as f:
      return json.load(f)

  train_fn = dp.compile_train(make_train_step(model, tx, schedule, config, steps_per_epoch))
  eval_fn = dp.compile_eval(evaluate.make_eval_step(model))
  evaluator = evaluate.Evaluator(config, reader,
                                 lambda state, batch: eval_fn(state, dp.put_batch(batch)),
                                 jax.process_index(), jax.process_count())
  writer = metric_writers.MetricWriter(workdir, enabled=is_main,
                                       tensorboard=config.logging.tensorboard,
                                       resume_step=start_step if restored else None)
  progress = metric_writers.Progress(total_steps, "step", start=start_step)
  device_state = dp.put_state(state)
  del state
  rng = dp.put_key(train_key)

  def flush(pending, step):
    """Fetches pending step metrics; stops the run on a non-finite loss."""
    fetched = _fetch(pending)
    pending.clear()
    for s, m in fetched:
      # The loss is computed before the update; a finite loss with a non-finite gradient
      # still leaves non-finite parameters behind, so both are checked.
      if not (np.isfinite(m["loss/total"]) and np.isfinite(m["grad_norm"])):
        raise FloatingPointError(
            f"non-finite loss ({m['loss/total']}) or gradient norm ({m['grad_norm']}) at step "
            f"{s}; stopping. The last good "
            f"checkpoint is step {checkpointer.latest_step()} in "
            f"{checkpointing.checkpoint_dir(workdir, 'latest')}; "
            f"lower train.learning_rate or enable train.grad_clip_norm")
    if fetched:
      means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
      means["epoch"] = step / steps_per_epoch
      writer.write(step, "train", means)
      progress.log(step, f"(epoch {means['epoch']:.2f}) loss {means['loss/total']:.4f}")

  def save_latest(step):
    checkpointer.save("latest", step, dp.get_state(device_state), meta)

  # -- train -----------------------------------------------------------------------------------
  batches = pipeline.train_batches(
      reader, config.data.train_split, global_batch_size=config.train.batch_size,
      seed=config.seed, start_step=start_step, num_steps=total_steps,
      process_index=jax.process_index(), process_count=jax.process_count(),
      backend=config.data.backend)
  pending: list[tuple[int, dict]] = []
  t_start = time.time()
  try:
    with _Preemption(config.checkpoint.preemption_check_every_steps) as preemption:
      # Logged once the SIGTERM handler is in place: from here a signal checkpoints the run.
      logging.info("Training steps %d to %d", start_step + 1, total_steps)
      for step in range(start_step + 1, total_steps + 1):
        batch = next(batches)
        device_state, step_metrics = train_fn(device_state, dp.put_batch(batch), rng)
        pending.append((step, step_metrics))
        is_eval = step % eval_every == 0 or step == total_steps
        is_ckpt = step % ckpt_every == 0 or step == total_steps
        if step % log_every == 0 or is_eval or is_ckpt:
          flush(pending, step)
        if is_eval:
          result = evaluator(device_state, select_split)
          writer.write(step, select_split, result)
          logging.info("eval %s at step %d: %s", select_split, step,
                       {k: round(v, 4) for k, v in result.items()
                        if isinstance(v, float) and "/" not in k})
          if evaluate.is_better(result.get(select_metric), meta["best_value"], select_mode):
            meta = {"best_value": float(result[select_metric]), "best_step": step}
            checkpointer.save("best", step, dp.get_state(device_state), meta)
        # Decided after the evaluation, so that a signal during it stops the run at this step.
        stop = preemption.stop_after(step)
        if is_ckpt or stop:
          flush(pending, step)  # the resumed run's log continues after this step
          save_latest(step)
        if stop:
          checkpointer.wait()
          logging.warning("Checkpointed step %d after SIGTERM to process(es) %s; exiting",
                          step, preemption.by_processes)
          raise SystemExit(143)
  finally:
    # However the loop ends (done, NaN, SIGTERM, Ctrl-C), checkpoints in flight are completed.
    checkpointer.wait()
  logging.info("Training took %s", metric_writers.format_seconds(time.time() - t_start))

  # -- final: evaluate the selected checkpoint ---------------------------------------------------
  if meta["best_step"] is None:
    raise FloatingPointError(f"no evaluation of {select_split!r} gave a finite "
                             f"{select_metric!r}; nothing to select")
  best_state, _ = checkpointer.restore("best", checkpointing.abstract_like(abstract,
                                                                          dp.replicated))
  best_device_state = dp.put_state(best_state)
  results = {
      "selection": {"split": select_split, "metric": select_metric, "mode": select_mode,
                    "step": meta["best_step"], "value": meta["best_value"],
                    "on_test": select_split == config.data.test_split},
      "final_step": total_steps,
      "model": config.model.name,
      "dataset": config.data.name,
      "seed": config.seed,
  }
  for split in (select_split, config.data.test_split):
    if split in reader.splits:
      results[split] = evaluator(best_device_state, split)
      writer.write(meta["best_step"], f"selected_{split}", results[split])
  if config.data.test_split not in reader.splits:
    results["test_note"] = f"dataset has no {config.data.test_split!r} split"
  writer.close()
  checkpointer.close()
  if is_main:
    _write_json(results_path, results)
  logging.info("Results (checkpoint of step %d, selected on %s %s): %s", meta["best_step"],
               select_split, select_metric, json.dumps(metrics_lib.json_safe(
                   results.get(config.data.test_split, {}))))
  return metrics_lib.json_safe(results)
