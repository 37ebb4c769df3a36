"""A run directory's config.json: what it records, and reading it back.

config.json is the launch config with the values derived at launch (`train.total_steps`) set at
their dotted keys. Fields added to the project after a workdir was written are absent from its
config.json; at their project default they select the behaviour the run had, so resuming treats
them as no difference and loading fills them in.
"""
from __future__ import annotations

import json
import os
from typing import Any

from flax import traverse_util
import ml_collections

from clcr_jax import losses
from clcr_jax import metrics as metrics_lib
from clcr_jax import models
from clcr_jax import modulation


def project_defaults() -> dict[str, Any]:
  """The defaults of the model, loss and modulation fields, flattened as 'model.d'."""
  tree = {"model": models.default_config().to_dict(), "loss": losses.default_config().to_dict(),
          "train": {"modulation": "none", "ogm_ge": modulation.default_config().to_dict()}}
  return traverse_util.flatten_dict(json.loads(json.dumps(metrics_lib.json_safe(tree))), sep=".")


def record(config: ml_collections.ConfigDict, derived: dict[str, Any]) -> dict[str, Any]:
  """What config.json records: `config` with `derived` ({'train.total_steps': 1200}) set at its
  dotted keys. Written to the workdir, never stored back into the config."""
  flat = traverse_util.flatten_dict(config.to_dict(), keep_empty_nodes=True, sep=".")
  return traverse_util.unflatten_dict({**flat, **derived}, sep=".")


def read(workdir: str) -> ml_collections.ConfigDict:
  """`workdir`'s config.json as a config, with the fields it predates at their defaults."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a clcr_jax run directory")
  with open(path) as f:
    saved = traverse_util.flatten_dict(json.load(f), keep_empty_nodes=True, sep=".")
  # A default whose parent the record already has as a leaf (a field that changed type) is not
  # filled: the record wins.
  missing = {k: v for k, v in project_defaults().items()
             if k not in saved and not any(k.startswith(p + ".") for p in saved)}
  return ml_collections.ConfigDict(traverse_util.unflatten_dict({**saved, **missing}, sep="."))
