"""clcr_jax: a JAX/Flax implementation of CLCR (Cross-Level Co-Representation, CVPR 2026).

Public API:
  CLCR, build_model, default_config   the model (clcr_jax.models)
  train_and_evaluate(config, workdir) train, select on validation, test; resumes a workdir
  load(workdir)                       a trained run as a predictor
"""
from clcr_jax.models import CLCR, build_model, default_config

__version__ = "0.1.0"


def train_and_evaluate(config, workdir):
  """See clcr_jax.train_lib.train_and_evaluate."""
  from clcr_jax import train_lib  # pylint: disable=import-outside-toplevel
  return train_lib.train_and_evaluate(config, workdir)


def load(workdir, which: str = "best"):
  """See clcr_jax.inference.load."""
  from clcr_jax import inference  # pylint: disable=import-outside-toplevel
  return inference.load(workdir, which)


__all__ = ["CLCR", "build_model", "default_config", "train_and_evaluate", "load"]
