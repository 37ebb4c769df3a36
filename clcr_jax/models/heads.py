"""Prediction heads f_theta (docs/model.md, Heads: MLP(2d -> d -> out) with GELU and dropout).

`hidden=0` makes the head one Linear layer (the output layers of MulT, MBT, MISA's last layer
and OGM-GE's concatenation classifier), named 'linear' so a caller can read its kernel.

  classification:          [B, 2d]    -> logits [B, C]
  regression (MOSI/MOSEI): [B, 2d]    -> value  [B]
  segment_classification:  [B, S, 2d] -> logits [B, S, C]   (AVE localisation)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clcr_jax.models import layers

Dtype = Any
TASKS = ("classification", "regression", "segment_classification")


class TaskHead(nn.Module):
  task: str
  num_classes: int = 0
  hidden: int = 128            # 0: one Linear layer
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, representation, *, train: bool):
    if self.task not in TASKS:
      raise ValueError(f"config.model.task must be one of {TASKS}, found {self.task!r}")
    if self.task != "regression" and self.num_classes < 2:
      raise ValueError(f"task {self.task!r} needs config.model.num_classes >= 2, "
                       f"found {self.num_classes}")
    out = 1 if self.task == "regression" else self.num_classes
    expected_rank = 3 if self.task == "segment_classification" else 2
    if representation.ndim != expected_rank:
      raise ValueError(f"task {self.task!r} expects a rank-{expected_rank} representation, "
                       f"found shape {representation.shape}")
    if self.hidden:
      y = layers.MLP(self.hidden, out, self.dropout, self.dtype, self.param_dtype,
                     name="mlp")(representation, train=train)
    else:
      y = nn.Dense(out, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="linear")(representation)
    y = y.astype(jnp.float32)  # losses and metrics run in float32
    return y[..., 0] if self.task == "regression" else y
