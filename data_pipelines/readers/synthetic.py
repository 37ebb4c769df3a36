"""Reader "synthetic": the embedded benchmark of `data_pipelines.synthetic`, generated in memory.

config.data fields:
  num_train, num_valid, num_test: split sizes (default 4096 / 1024 / 1024)
  data_seed: seed of the examples (each split gets its own stream)
  event_amplitude, window_amplitude, global_amplitude, nuisance_amplitude, noise: signal levels
"""
from __future__ import annotations

from data_pipelines import base
from data_pipelines import registry
from data_pipelines import synthetic


def spec_from_config(config) -> synthetic.SyntheticSpec:
  return synthetic.SyntheticSpec(
      event_amplitude=config.get("event_amplitude", 1.5),
      window_amplitude=config.get("window_amplitude", 1.0),
      global_amplitude=config.get("global_amplitude", 0.25),
      nuisance_amplitude=config.get("nuisance_amplitude", 2.0),
      noise=config.get("noise", 1.0))


@registry.register("synthetic")
class SyntheticReader(base.InMemoryReader):

  def __init__(self, config):
    super().__init__(config)
    spec = spec_from_config(config)
    seed = config.get("data_seed", 0)
    sizes = {"train": config.get("num_train", 4096), "valid": config.get("num_valid", 1024),
             "test": config.get("num_test", 1024)}
    self.factors = {}
    for i, (split, n) in enumerate(sizes.items()):
      if n < 1:
        raise base.DataError(f"config.data.num_{split} must be >= 1, found {n}")
      data = synthetic.generate(spec, n, seed=seed * 1000 + i)
      self.factors[split] = data.pop("factors")
      self._arrays[split] = data
    self._task = base.TaskSpec("classification", num_classes=synthetic.NUM_CLASSES,
                               class_names=tuple(f"g{c // 4}w{(c // 2) % 2}l{c % 2}"
                                                 for c in range(synthetic.NUM_CLASSES)))
