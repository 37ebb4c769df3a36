"""Command line: python -m clcr_jax.main --config=experiments/configs/<name>.py[:arg] --workdir=DIR

Overrides: --config.train.learning_rate=0.01 (the config is locked: a mistyped key fails here,
with the valid keys named).
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds a run).")
flags.mark_flags_as_required(["config", "workdir"])


def _config_path_on_sys_path(argv) -> None:
  """Config files import `experiments.configs.common`: put their repository on sys.path."""
  for a in argv:
    if a.startswith("--config="):
      path = os.path.abspath(a.split("=", 1)[1].split(":", 1)[0])
      root = os.path.dirname(os.path.dirname(os.path.dirname(path)))
      if os.path.isdir(os.path.join(root, "experiments")) and root not in sys.path:
        sys.path.insert(0, root)


def main(argv):
  del argv
  config = _CONFIG.value
  import jax  # pylint: disable=import-outside-toplevel
  if config.parallel.multihost or "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize()
  logging.info("JAX %s on %d devices (%d processes): %s", jax.__version__, jax.device_count(),
               jax.process_count(), jax.devices()[0].device_kind)
  import clcr_jax  # pylint: disable=import-outside-toplevel
  clcr_jax.train_and_evaluate(config, _WORKDIR.value)


def run():
  """Console-script entry point (`clcr-train`)."""
  _config_path_on_sys_path(sys.argv)
  app.run(main)


if __name__ == "__main__":
  run()
