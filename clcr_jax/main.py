"""Command line: python -m clcr_jax.main --config=experiments/configs/<name>.py[:arg] --workdir=DIR

Overrides: --config.train.learning_rate=0.01 (the config is locked: a mistyped key fails here,
with the valid keys named).
"""
from __future__ import annotations

import logging as std_logging
import os
import runpy
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


def check_overrides(argv) -> None:
  """Fails fast, naming the valid keys, when a --config.a.b=v override names no config field.

  (The locked ConfigDict would raise too, but deep in flag parsing with only a guess.)
  """
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return
  path, _, arg = spec.partition(":")
  namespace = runpy.run_path(path)
  config = namespace["get_config"](arg) if arg else namespace["get_config"]()
  for a in argv:
    if not a.startswith("--config."):
      continue
    keys = a[len("--config."):].split("=", 1)[0].split(".")
    node, where = config, "config"
    for key in keys:
      if not hasattr(node, "keys") or key not in node:
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a block)"
        raise SystemExit(f"error: {a}: {where} has no field {key!r}. "
                         f"Valid fields of {where}: {valid}")
      node, where = node[key], f"{where}.{key}"


class _OnlyOrbaxWarnings:
  """Keeps orbax's per-save INFO chatter out of the console; its warnings still show."""

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  del argv
  config = _CONFIG.value
  std_logging.getLogger("absl").addFilter(_OnlyOrbaxWarnings())
  import jax  # pylint: disable=import-outside-toplevel
  # Relaunches (resume after preemption, sweeps) reuse compiled programs from disk.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "clcr_jax", "xla"))
  from clcr_jax import parallel  # pylint: disable=import-outside-toplevel
  init_args = parallel.distributed_init_args(config.parallel)
  if init_args is None and "JAX_COORDINATOR_ADDRESS" in os.environ:
    init_args = {}  # a launcher that sets JAX's variables wants a distributed run
  if init_args is not None:
    jax.distributed.initialize(**init_args)
  logging.info("JAX %s on %d devices (%d processes): %s", jax.__version__, jax.device_count(),
               jax.process_count(), jax.devices()[0].device_kind)
  import clcr_jax  # pylint: disable=import-outside-toplevel
  clcr_jax.train_and_evaluate(config, _WORKDIR.value)


def run():
  """Console-script entry point (`clcr-train`)."""
  _config_path_on_sys_path(sys.argv)
  check_overrides(sys.argv[1:])
  app.run(main)


if __name__ == "__main__":
  run()
