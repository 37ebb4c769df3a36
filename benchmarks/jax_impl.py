"""The clcr_jax side of the harness: the real train step (train_lib.make_train_step, compiled by
parallel.DataParallel with a donated state) and eval step, on a device-resident batch."""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from clcr_jax import losses
from clcr_jax import models
from clcr_jax import optim
from clcr_jax import parallel
from clcr_jax import evaluate
from clcr_jax import train_lib


def cost_flops(compiled) -> float | None:
  """FLOPs from XLA's cost analysis of a Lowered or Compiled computation (None if unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def plan_bytes(compiled) -> int | None:
  """XLA's memory plan: arguments + outputs + temporaries - aliased (donated) bytes."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def device_peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


class JaxImpl:
  """One JAX variant (model config overrides) of one benchmark."""

  def __init__(self, name: str, bench, host_batch, device: str):
    self.name, self.bench, self.device = name, bench, device
    self.config = bench.config
    self.info: dict[str, Any] = {}
    cfg = self.config
    self.dp = parallel.DataParallel("jit")
    model = models.build_model(cfg.model)
    tx = optim.make_optimizer(cfg.train, cfg.train.steps_per_epoch, cfg.model)
    schedule = optim.make_schedule(cfg.train, cfg.train.steps_per_epoch)
    self.batch = self.dp.put_batch(host_batch)
    init_key, self.rng = jax.random.split(jax.random.key(0))

    def init_state(inputs, masks):
      variables = model.init({"params": init_key, "dropout": init_key}, inputs, masks,
                             train=False)
      return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
              "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}
    start = time.perf_counter()
    state = jax.jit(init_state)(self.batch["inputs"], self.batch["masks"])
    jax.block_until_ready(state)
    self.info["init_s"] = time.perf_counter() - start
    self.variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    self.variables = jax.tree.map(np.asarray, self.variables)  # host copy for torch
    self.state = self.dp.put_state(state)
    self.train_fn = self.dp.compile_train(train_lib.make_train_step(model, tx, schedule, cfg))
    # Model FLOPs are counted on a twin with plain einsum attention: XLA's cost analysis counts
    # a while loop's body once (the blockwise CPU attention) and a cuDNN call not at all.
    twin = cfg.model.copy_and_resolve_references()
    twin.attention = "einsum"
    self.flops_fn = self.dp.compile_train(train_lib.make_train_step(
        models.build_model(twin), tx, schedule, cfg))
    eval_step = evaluate.make_eval_step(model)
    self.eval_fn = jax.jit(lambda state, batch: eval_step(state, batch, losses.BatchAxis()))

  def compile(self) -> None:
    start = time.perf_counter()
    lowered = self.train_fn.lower(self.state, self.batch, self.rng)
    self.info["lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    self.train_compiled = lowered.compile()
    self.info["compile_s"] = time.perf_counter() - start
    self.info["train_flops"] = cost_flops(self.flops_fn.lower(self.state, self.batch, self.rng))
    self.info["train_plan_bytes"] = plan_bytes(self.train_compiled)
    start = time.perf_counter()
    self.eval_compiled = self.eval_fn.lower(self.state, self.batch).compile()
    self.info["eval_compile_s"] = time.perf_counter() - start
    self.info["eval_flops"] = cost_flops(self.eval_compiled)

  def train(self, steps: int) -> None:
    state = self.state
    for _ in range(steps):
      state, _ = self.train_compiled(state, self.batch, self.rng)
    jax.block_until_ready(state)
    self.state = state

  def evaluate(self, steps: int) -> None:
    out = None
    for _ in range(steps):
      out = self.eval_compiled(self.state, self.batch)
    jax.block_until_ready(out)

  def warm_up(self) -> None:
    """Compiles, then runs the first steps (their time and memory are recorded)."""
    self.compile()
    sampler = timing.PeakRSS()
    with sampler:
      self.info["first_train_s"] = timing.timed(lambda: self.train(1))
    self.info["train_rss_growth"] = sampler.peak_growth
    self.train(1)
    self.info["first_eval_s"] = timing.timed(lambda: self.evaluate(1))
    self.evaluate(1)
    if self.device == "gpu":
      self.info["peak_bytes"] = device_peak_bytes()
    loss = None
    return loss
