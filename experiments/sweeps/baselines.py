"""CLCR next to the field's baselines on the same backbones, data, loop and seeds.

  python -m experiments.sweep experiments/sweeps/baselines.py:dataset=cremad \\
      --workdir_root=runs/sweeps/baselines_cremad

One sweep per dataset, so its summary.md is that dataset's table. Points (model.name):
  clcr | late_fusion (pooled deep levels, concatenated, MLP head) | flat_attention (one
  cross-modal attention over all tokens) | mult (MulT, Tsai et al. 2019) | mbt (attention
  bottlenecks, Nagrani et al. 2021) | misa (Hazarika et al. 2020) | late fusion with a linear
  head, and the same with OGM-GE (Peng et al. 2022, train.modulation='ogm_ge').
Only the points that apply to the dataset's modalities and task are run: MulT, MBT and MISA need
two or more modalities and one label per example (not AVE's segment_classification); the two
linear-head points (OGM-GE and its unmodulated control) need exactly two modalities. The
modalities are the config's, or the dataset's own when the config leaves them to the reader.
Argument: see experiments/sweeps/_datasets.py.
"""
from __future__ import annotations

import importlib

from experiments.sweeps import _datasets

LINEAR = {"model.name": "late_fusion", "model.fusion_head": "linear"}
POINTS = [
    ("CLCR", {"model.name": "clcr"}),
    ("late fusion", {"model.name": "late_fusion"}),
    ("flat attention", {"model.name": "flat_attention"}),
    ("MulT", {"model.name": "mult"}),
    ("MBT", {"model.name": "mbt"}),
    ("MISA", {"model.name": "misa"}),
    ("late fusion, linear head", dict(LINEAR)),
    ("OGM-GE (late fusion, linear head)", dict(LINEAR, **{"train.modulation": "ogm_ge"})),
]
UTTERANCE_MODELS = ("mult", "mbt", "misa")
# Datasets whose config leaves the modalities to the reader: the reader's modalities.
READER_MODALITIES = {"synthetic": ("audio", "text", "vision"),
                     "mosi": ("audio", "text", "vision"), "mosei": ("audio", "text", "vision")}


def applies(overrides: dict, modalities, task: str) -> bool:
  """Whether a point can run on data with these modalities (None: unknown) and task."""
  if overrides.get("model.fusion_head") == "linear":
    return modalities is not None and len(modalities) == 2
  if overrides["model.name"] in UTTERANCE_MODELS:
    return task != "segment_classification" and (modalities is None or len(modalities) >= 2)
  return True


def get_sweep(arg=None):
  dataset, seeds, overrides, config = _datasets.parse(arg)
  _, _, config_arg = config.partition(":")
  base = importlib.import_module(f"experiments.configs.{dataset}").get_config(config_arg or None)
  modalities = tuple(sorted(base.model.modalities)) or READER_MODALITIES.get(dataset)
  points = [p for p in POINTS if applies(p[1], modalities, base.model.task)]
  left_out = [label for label, o in POINTS if not applies(o, modalities, base.model.task)]
  description = "CLCR vs the baselines on the same backbones."
  if left_out:
    description += (f" Not applicable here (modalities {list(modalities or ['?'])}, task "
                    f"{base.model.task!r}): {', '.join(left_out)}.")
  return dict(name=f"baselines_{dataset}", config=config, overrides=overrides, seeds=seeds,
              points=points, description=description)
