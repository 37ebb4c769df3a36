"""Reader "synthetic": the embedded benchmark of `data_pipelines.synthetic`, generated in memory.

config.data fields:
  generator: 'default' (label = 4 * global + 2 * window + local, 8 classes) or 'variant'
    (label = 8 * global + 4 * window + 2 * cue + parity, 16 classes: cross-modal parity of three
    pairwise-shared events, a cue private to one modality, level-specific factors); default
    'default'
  num_train, num_valid, num_test: split sizes (default 4096 / 1024 / 1024)
  data_seed: seed of the examples (each split gets its own stream)
  event_amplitude, window_amplitude, global_amplitude, nuisance_amplitude, noise: signal levels
    (reader defaults: the generator's spec defaults)
  cue_amplitude: the private cue's level (generator 'variant' only)

The reader keeps the true factors of every split in `reader.factors[split]` and names the label
bits, most significant first, in `reader.label_factors` (for clcr_jax.analyze.leakage_probes).
"""
from __future__ import annotations

from data_pipelines import base
from data_pipelines import registry
from data_pipelines import synthetic

GENERATORS = ("default", "variant")
_SIGNALS = ("event_amplitude", "window_amplitude", "global_amplitude", "nuisance_amplitude",
            "noise")


def _generator(config) -> str:
  generator = config.get("generator", "default")
  if generator not in GENERATORS:
    raise base.DataError(f"config.data.generator must be one of {GENERATORS}, "
                         f"found {generator!r}")
  return generator


def spec_from_config(config) -> synthetic.SyntheticSpec | synthetic.VariantSpec:
  """The generator's spec: its defaults, overridden by the config.data fields that are set."""
  if _generator(config) == "variant":
    cls, names = synthetic.VariantSpec, _SIGNALS + ("cue_amplitude",)
  else:
    cls, names = synthetic.SyntheticSpec, _SIGNALS
  defaults = cls()
  return cls(**{k: config.get(k, getattr(defaults, k)) for k in names})


@registry.register("synthetic")
class SyntheticReader(base.InMemoryReader):

  def __init__(self, config):
    super().__init__(config)
    spec = spec_from_config(config)
    variant = isinstance(spec, synthetic.VariantSpec)
    generate = synthetic.generate_variant if variant else synthetic.generate
    seed = config.get("data_seed", 0)
    sizes = {"train": config.get("num_train", 4096), "valid": config.get("num_valid", 1024),
             "test": config.get("num_test", 1024)}
    self.factors = {}
    for i, (split, n) in enumerate(sizes.items()):
      if n < 1:
        raise base.DataError(f"config.data.num_{split} must be >= 1, found {n}")
      data = generate(spec, n, seed=seed * 1000 + i)
      self.factors[split] = data.pop("factors")
      self._arrays[split] = data
    if variant:
      self.label_factors = synthetic.VARIANT_LABEL_BITS
      num_classes = synthetic.VARIANT_NUM_CLASSES
    else:
      self.label_factors = synthetic.DEFAULT_LABEL_BITS
      num_classes = synthetic.NUM_CLASSES
    bits = len(self.label_factors)
    # e.g. 'g1w0l1' (default) or 'g1w0c1x0' (variant): the first letter of each bit's name.
    letters = [{"parity": "x"}.get(name, name[0]) for name in self.label_factors]
    self._task = base.TaskSpec("classification", num_classes=num_classes, class_names=tuple(
        "".join(f"{letter}{(c >> (bits - 1 - b)) & 1}" for b, letter in enumerate(letters))
        for c in range(num_classes)))
