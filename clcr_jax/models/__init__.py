"""CLCR model modules (Flax Linen) and `build_model`."""
from __future__ import annotations

import ml_collections

from clcr_jax.models.baselines import FlatAttention, LateFusion
from clcr_jax.models.clcr import CLCR
from clcr_jax.models.defaults import default_config, modality
from clcr_jax.models.mbt import MBT
from clcr_jax.models.misa import MISA
from clcr_jax.models.mult import MulT

MODELS = {"clcr": CLCR, "late_fusion": LateFusion, "flat_attention": FlatAttention,
          "mult": MulT, "mbt": MBT, "misa": MISA}


def build_model(model_config, axis_name: str | None = None):
  """The Flax module named by `model_config.name` (a key of MODELS).

  A model with a `check_config` (the baselines) checks there that it applies to the configured
  modalities and task, so a mismatch fails at launch with the model's name.

  Args:
    model_config: the `config.model` block (ConfigDict or FrozenConfigDict).
    axis_name: pmap axis for cross-replica BatchNorm statistics; None under jit.
  """
  if model_config.name not in MODELS:
    raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, "
                     f"found {model_config.name!r}")
  frozen = ml_collections.FrozenConfigDict(model_config)
  if not frozen.modalities:
    raise ValueError("config.model.modalities is empty: name at least one modality")
  cls = MODELS[model_config.name]
  if hasattr(cls, "check_config"):
    cls.check_config(frozen)
  return cls(frozen, axis_name=axis_name)


__all__ = ["CLCR", "LateFusion", "FlatAttention", "MulT", "MBT", "MISA", "build_model",
           "default_config", "modality"]
