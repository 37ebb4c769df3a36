"""The PyTorch side of the harness: the reference CLCR in eager mode or under torch.compile.

Train step = zero_grad, forward + total_loss (under torch.autocast for bfloat16), backward,
SGD step; eval = forward under no_grad. Parameters are copied from the JAX initialisation so both
frameworks run the same numbers.
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Any

import numpy as np
import torch

from benchmarks import timing
from benchmarks import torch_reference


class TorchImpl:

  def __init__(self, name: str, bench, host_batch, variables, device: str, dtype: str,
               compile_mode: str | None = None):
    self.name, self.bench = name, bench
    self.device = torch.device("cuda" if device == "gpu" else "cpu")
    self.cuda = device == "gpu"
    self.dtype = dtype
    self.info: dict[str, Any] = {}
    cfg = bench.config
    model = torch_reference.CLCR(cfg.model, bench.torch_shapes())
    n = torch_reference.load_flax_variables(model, variables)
    self.info["params"] = n
    self.model = model.to(self.device)
    self.opt = torch_reference.make_optimizer(self.model, cfg.train.learning_rate,
                                              cfg.train.momentum, cfg.train.weight_decay)
    to = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
    self.batch = {k: ({m: to(x) for m, x in v.items()} if isinstance(v, dict) else to(v))
                  for k, v in host_batch.items()}
    loss_config, task = cfg.loss, cfg.model.task

    def autocast():
      if dtype == "bfloat16":
        return torch.autocast(self.device.type, dtype=torch.bfloat16)
      return contextlib.nullcontext()

    def loss_fn(batch):
      with autocast():
        prediction, aux = self.model(batch["inputs"], batch["masks"])
        return torch_reference.total_loss(prediction, aux, batch, loss_config, task)[0]

    def eval_fn(batch):
      with autocast():
        return self.model(batch["inputs"], batch["masks"])[0]
    if compile_mode:
      # Every benchmark shape is fixed. With automatic dynamic shapes, code that runs at two
      # shapes (the audio and the visual ResNet's blocks) is recompiled symbolically, which
      # inductor 2.13 fails on for CREMA-D on CPU ("cannot determine truth value of Relational").
      compile_fn = functools.partial(
          torch.compile, dynamic=False, mode=None if compile_mode == "default" else compile_mode)
      loss_fn, eval_fn = compile_fn(loss_fn), compile_fn(eval_fn)
    self.loss_fn, self.eval_fn = loss_fn, eval_fn

  def sync(self):
    if self.cuda:
      torch.cuda.synchronize()

  def train(self, steps: int) -> None:
    self.model.train()
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      loss = self.loss_fn(self.batch)
      loss.backward()
      self.opt.step()
    self.sync()

  def evaluate(self, steps: int) -> None:
    self.model.eval()
    with torch.no_grad():
      for _ in range(steps):
        self.eval_fn(self.batch)
    self.sync()

  def warm_up(self) -> None:
    if self.cuda:
      torch.cuda.reset_peak_memory_stats()
    sampler = timing.PeakRSS()
    with sampler:
      self.info["first_train_s"] = timing.timed(lambda: self.train(1))
    self.info["train_rss_growth"] = sampler.peak_growth
    if self.cuda:
      self.info["peak_bytes"] = torch.cuda.max_memory_allocated()
    self.train(1)
    self.info["first_eval_s"] = timing.timed(lambda: self.evaluate(1))
    self.evaluate(1)
