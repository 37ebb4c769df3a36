"""One process of the two-process multi-host test (tests/test_multihost.py).

  python tests/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_DIR WORKDIR

Initialises JAX's distributed runtime (jax.distributed.initialize with a local coordinator; CPU
collectives through gloo, the default of jax 0.10.2), then
  A. runs the first `STEP_CHECK_STEPS` steps of train_lib's train step over the global mesh,
     each process feeding its own slice of the data (out/steps_<pid>.json), and
  B. runs train_and_evaluate on the same config in WORKDIR (out/results_<pid>.json, or
     out/error_<pid>.txt with the traceback).
The test compares both with one process that runs the same steps on 8 devices.

The helpers below (tiny_config, build, local_batches) are shared with that single-process
reference, so both sides build the state and the step function the same way train_lib does.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
STEP_CHECK_STEPS = 3


def tiny_config():
  """The tests' tiny synthetic config (tests/test_train.py's), logging every step."""
  from experiments.configs import synthetic  # pylint: disable=import-outside-toplevel
  config = synthetic.get_config("tiny")
  config.data.backend = "numpy"
  config.train.log_every_steps = 1       # host-side only: the compiled step is unchanged
  config.eval.every_steps = 8            # one evaluation and one checkpoint, at the end
  config.checkpoint.every_steps = 8
  return config


def build(config):
  """(config, reader, dp, model, state, rng, train_fn) as train_and_evaluate builds them."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from clcr_jax import models, optim, parallel, train_lib  # pylint: disable=import-outside-toplevel
  from data_pipelines import registry, sampling  # pylint: disable=import-outside-toplevel

  reader = registry.get_reader(config.data)
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = train_lib.resolve_model_config(config.model, reader)
  dp = parallel.DataParallel("jit")
  steps_per_epoch = sampling.TrainOrder(reader.num_examples("train"), config.train.batch_size,
                                        config.seed, jax.process_index(),
                                        jax.process_count()).steps_per_epoch
  model = models.build_model(config.model)
  tx = optim.make_optimizer(config.train, steps_per_epoch)
  schedule = optim.make_schedule(config.train, steps_per_epoch)
  sample = reader.load_examples("train", np.zeros(1, np.int64), train=False)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))

  def init_state():
    variables = model.init({"params": init_key, "dropout": init_key}, sample["inputs"],
                           sample["masks"], train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}

  state = jax.jit(init_state, out_shardings=dp.replicated)()
  # A global replicated key without device_put (see test_multihost.py for why).
  rng = jax.jit(lambda: train_key, out_shardings=dp.replicated)()
  train_fn = dp.compile_train(train_lib.make_train_step(model, tx, schedule, config))
  return config, reader, dp, model, state, rng, train_fn


def local_batches(reader, config, num_steps: int, process_index: int, process_count: int):
  """Process `process_index`'s batches of steps 1..num_steps, as train_and_evaluate reads them."""
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  it = pipeline.train_batches(reader, config.data.train_split,
                              global_batch_size=config.train.batch_size, seed=config.seed,
                              start_step=0, num_steps=num_steps, process_index=process_index,
                              process_count=process_count, backend="numpy")
  return [next(it) for _ in range(num_steps)]


def valid_labels():
  """The labels of the tiny config's validation split, in row order."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from data_pipelines import registry  # pylint: disable=import-outside-toplevel
  reader = registry.get_reader(tiny_config().data)
  rows = np.arange(reader.num_examples("valid"))
  return reader.load_examples("valid", rows, train=False)["label"]


def main(argv):
  coordinator, num_processes, process_id, out, workdir = argv[1:6]
  num_processes, process_id = int(num_processes), int(process_id)
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=120)
  topology = {"process_count": jax.process_count(), "process_index": jax.process_index(),
              "device_count": jax.device_count(), "local_device_count": jax.local_device_count()}
  with open(os.path.join(out, f"topology_{process_id}.json"), "w") as f:
    json.dump(topology, f)

  # A: the train step over the global mesh, each process feeding its own rows.
  from clcr_jax import evaluate  # pylint: disable=import-outside-toplevel
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  # XLA's gloo rendezvous gives up after 30 s: compile first, then meet at a barrier of the
  # distributed runtime, so a process that compiles slowly does not time the other one out.
  barrier = ocp.multihost.get_barrier_sync_fn()
  config = tiny_config()
  resolved, reader, dp, model, state, rng, train_fn = build(config)
  batches = [dp.put_batch(b) for b in local_batches(reader, resolved, STEP_CHECK_STEPS,
                                                     process_id, num_processes)]
  compiled = train_fn.lower(state, batches[0], rng).compile()
  barrier(key="train_step_compiled", timeout_ms=600_000)
  losses = []
  for batch in batches:
    state, metrics = compiled(state, batch, rng)
    losses.append(float(jax.device_get(metrics["loss/total"])))
  # One evaluation batch (the cross-process gather of the outputs), which also puts the eval
  # step in the compilation cache for B.
  eval_fn = dp.compile_eval(evaluate.make_eval_step(model))
  eval_batch = next(pipeline.eval_batches(reader, "valid",
                                          global_batch_size=resolved.train.batch_size,
                                          process_index=process_id,
                                          process_count=num_processes, backend="numpy"))
  barrier(key="before_eval", timeout_ms=600_000)
  outputs = eval_fn(state, dp.put_batch(eval_batch))
  with open(os.path.join(out, f"steps_{process_id}.json"), "w") as f:
    json.dump({"loss/total": losses, "eval_rows": int(outputs["valid"].shape[0]),
               "eval_labels": outputs["label"].tolist()}, f)
  del state
  barrier(key="before_train_and_evaluate", timeout_ms=600_000)

  # B: the whole training loop.
  import clcr_jax  # pylint: disable=import-outside-toplevel
  run_and_record(lambda: clcr_jax.train_and_evaluate(config, workdir), out,
                 f"results_{process_id}.json", process_id)
  return 0


def run_and_record(fn, out: str, name: str, process_id: int) -> None:
  """Writes fn()'s JSON result to out/name, or its traceback to out/error_<pid>.txt and exits."""
  try:
    result = fn()
  except Exception:  # pylint: disable=broad-except
    with open(os.path.join(out, f"error_{process_id}.txt"), "w") as f:
      f.write(traceback.format_exc())
    # Leave the distributed runtime without waiting for a peer that may be gone.
    os._exit(3)  # pylint: disable=protected-access
  with open(os.path.join(out, name), "w") as f:
    json.dump(result, f, sort_keys=True)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
