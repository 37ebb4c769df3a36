"""A trained run as a predictor: `clcr_jax.load(workdir)`.

    predictor = clcr_jax.load("runs/synthetic")          # the selected ("best") checkpoint
    prediction, aux = predictor(batch["inputs"], batch["masks"])
    predictor.evaluate("test")                           # metrics on a split of the run's data

The checkpoint is read through `checkpointing.load_variables` and evaluated by
`evaluate.Evaluator`, the loop and metrics the training run used for results.json.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections

from clcr_jax import checkpointing
from clcr_jax import evaluate
from clcr_jax import models
from clcr_jax import run_config
from data_pipelines import registry

_BATCH_KEYS = ("inputs", "masks", "label", "valid")  # what the eval outputs read of a batch


@dataclasses.dataclass
class Predictor:
  """The model of a run with the variables of one checkpoint."""
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  step: int
  workdir: str
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

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
    return registry.get_reader(self.config.data)

  def _predict_fn(self, detail: bool, summaries: bool):
    """fn(variables, batch) -> per-example outputs (`evaluate.batch_outputs`), compiled once
    per (detail, summaries)."""
    key = (detail, summaries)
    if key not in self._compiled:
      compiled = jax.jit(evaluate.make_predict_fn(self.model, detail, summaries))
      self._compiled[key] = lambda v, batch: compiled(v, {k: batch[k] for k in _BATCH_KEYS})
    return self._compiled[key]

  def outputs(self, split: str = "test", reader=None, transform=None, backend=None,
              detail: bool = False, summaries: bool = False) -> dict[str, Any]:
    """Per-example outputs over `split` (`evaluate.Evaluator.outputs`): prediction, label,
    valid, the model's weights and participation; with `detail` the per-level token counts
    and budget ratios, with `summaries` the pooled summaries (see `evaluate.batch_outputs`)."""
    evaluator = evaluate.Evaluator(self.config, reader or self.reader(),
                                   self._predict_fn(detail, summaries))
    return evaluator.outputs(self.variables, split, transform, backend)

  def evaluate(self, split: str = "test", reader=None) -> dict[str, Any]:
    """The run's metrics on `split`, as train_and_evaluate computes them for results.json."""
    return evaluate.summarise(self.outputs(split, reader), self.config)


def load(workdir: str, which: str = "best") -> Predictor:
  """Loads `workdir`'s config and its `which` ('best' or 'latest') checkpoint."""
  workdir = os.path.abspath(workdir)
  config = run_config.read(workdir)
  variables, step = checkpointing.load_variables(workdir, which)
  return Predictor(config, variables, step, workdir)
