"""A trained run as a predictor: `clcr_jax.load(workdir)`.

    predictor = clcr_jax.load("runs/synthetic")          # the selected ("best") checkpoint
    prediction, aux = predictor(batch["inputs"], batch["masks"])
    predictor.evaluate("test")                           # metrics on a split of the run's data
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from clcr_jax import models


@dataclasses.dataclass
class Predictor:
  """The model of a run with the variables of one checkpoint."""
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  step: int
  workdir: str

  @functools.cached_property
  def model(self):
    return models.build_model(self.config.model)

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda v, x, m: self.model.apply(v, x, m, train=False))

  def __call__(self, inputs, masks):
    """(prediction, aux) for host or device arrays in the batch contract."""
    return self._apply(self.variables, inputs, masks)

  def reader(self):
    from data_pipelines import registry  # pylint: disable=import-outside-toplevel
    return registry.get_reader(self.config.data)

  def evaluate(self, split: str = "test", reader=None) -> dict[str, Any]:
    """The run's metrics on `split`, computed like train_and_evaluate does."""
    from clcr_jax import train_lib  # pylint: disable=import-outside-toplevel
    from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
    reader = reader or self.reader()
    chunks = []
    for batch in pipeline.eval_batches(reader, split,
                                       global_batch_size=self.config.eval.batch_size,
                                       backend=self.config.data.backend):
      prediction, aux = self(batch["inputs"], batch["masks"])
      out = {"prediction": np.asarray(prediction), "label": batch["label"],
             "valid": batch["valid"]}
      out.update({k: np.asarray(aux[k]) for k in ("omega", "beta", "eta") if k in aux})
      chunks.append(out)
    outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return train_lib.summarise_eval(outputs, self.config,
                                    tuple(self.config.model.modalities.keys()))


def load(workdir: str, which: str = "best") -> Predictor:
  """Loads `workdir`'s config and its `which` ('best' or 'latest') checkpoint."""
  workdir = os.path.abspath(workdir)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: {workdir} is not a clcr_jax run directory")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  directory = os.path.join(workdir, "checkpoints", which)
  manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory} (which must be 'best' or 'latest')")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  state = restored["state"]
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return Predictor(config, variables, int(step), workdir)
