"""What the benchmark sweeps share: the config of each dataset, its seeds, the sweep argument.

A benchmark sweep takes `FILE.py:dataset=<name>[,seeds=...][,epochs=N][,<config arg>...]`:
  dataset   synthetic (default) | mosi | mosei | avmnist | cremad | kinetics_sounds | ave |
            ucf101 | features: the config experiments/configs/<dataset>.py
  seeds     '1111-1115' (a range) or '0+1+2'. Default: MMSA's 1111-1115 for MOSI / MOSEI
            (reported as mean and population std, as MMSA does), seed 0 for the audio-visual
            sets (the OGM-GE default the paper follows, docs/model.md, Optimisation), 0-2 for
            synthetic
  epochs    train.num_epochs of every run (0: the config's own)
Every other item goes to the config's own argument, e.g. `dataset=mosi,aligned,format=mult` or
`dataset=cremad,tiny`.
"""
from __future__ import annotations

from experiments import sweep as sweep_lib

DATASETS = ("synthetic", "mosi", "mosei", "avmnist", "cremad", "kinetics_sounds", "ave",
            "ucf101", "features")
MSA_SEEDS = (1111, 1112, 1113, 1114, 1115)


def default_seeds(dataset: str) -> tuple[int, ...]:
  if dataset in ("mosi", "mosei"):
    return MSA_SEEDS
  if dataset == "synthetic":
    return (0, 1, 2)
  return (0,)


def parse(arg: str | None) -> tuple[str, tuple[int, ...], dict, str]:
  """-> (dataset, seeds, overrides for every run, config spec 'experiments/configs/x.py[:arg]')."""
  dataset, seeds, epochs, rest = "synthetic", None, 0, []
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key == "dataset":
      dataset = value
    elif key == "seeds":
      seeds = sweep_lib.parse_seeds(value)
    elif key == "epochs":
      epochs = int(value)
    else:
      rest.append(item)
  if dataset not in DATASETS:
    raise ValueError(f"dataset={dataset!r}: expected one of {DATASETS}")
  overrides = {"train.num_epochs": epochs} if epochs > 0 else {}
  spec = f"experiments/configs/{dataset}.py" + (":" + ",".join(rest) if rest else "")
  return dataset, seeds or default_seeds(dataset), overrides, spec
