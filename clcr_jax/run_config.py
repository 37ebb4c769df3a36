"""A run directory's config.json: what it records, and reading it back.

config.json is the launch config with the values derived at launch (`train.total_steps`) set at
their dotted keys. Fields added to the project after a workdir was written are absent from its
config.json. Each was added with a default that kept the behaviour of the time, so an absent
field means that value (`absent_values`): the current default, or, for the defaults that have
changed since, the earlier one (`PAPER_FORM` of models/defaults.py and losses.py). Resuming
treats an absent field at that value as no difference, and loading fills it in.
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
from clcr_jax.models import defaults as model_defaults


def absent_values() -> dict[str, Any]:
  """What a model, loss or modulation field absent from a record means, flattened as 'model.d'."""
  tree = {"model": models.default_config().to_dict(), "loss": losses.default_config().to_dict(),
          "train": {"modulation": "none", "ogm_ge": modulation.default_config().to_dict()}}
  flat = traverse_util.flatten_dict(json.loads(json.dumps(metrics_lib.json_safe(tree))), sep=".")
  flat.update({f"model.{k}": v for k, v in model_defaults.PAPER_FORM.items()})
  flat.update({f"loss.{k}": v for k, v in losses.PAPER_FORM.items()})
  return flat


def record(config: ml_collections.ConfigDict, derived: dict[str, Any]) -> dict[str, Any]:
  """What config.json records: `config` with `derived` ({'train.total_steps': 1200}) set at its
  dotted keys. Written to the workdir, never stored back into the config."""
  flat = traverse_util.flatten_dict(config.to_dict(), keep_empty_nodes=True, sep=".")
  return traverse_util.unflatten_dict({**flat, **derived}, sep=".")


def read(workdir: str) -> ml_collections.ConfigDict:
  """`workdir`'s config.json as a config, with the fields it predates at `absent_values`."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a clcr_jax run directory")
  with open(path) as f:
    saved = traverse_util.flatten_dict(json.load(f), keep_empty_nodes=True, sep=".")
  # A default whose parent the record already has as a leaf (a field that changed type) is not
  # filled: the record wins.
  missing = {k: v for k, v in absent_values().items()
             if k not in saved and not any(k.startswith(p + ".") for p in saved)}
  return ml_collections.ConfigDict(traverse_util.unflatten_dict({**saved, **missing}, sep="."))
