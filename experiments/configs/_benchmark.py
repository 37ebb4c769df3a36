"""Helpers shared by the benchmark configs (mosi.py, cremad.py, ...). Not a config file itself.

* `data_root(name)`: the default `config.data.root` of a benchmark, ../shared/data/<name> beside
  the repository (override with --config.data.root=...).
* `set_data(config, name, fields)`: `config.data` = the reader's own fields with their defaults,
  so every reader option can be overridden on the command line (the config is locked at launch).
* `select_on(...)`: the model-selection split of the audio-visual configs (valid when the split
  files provide one; otherwise 'test', the OGM-GE protocol, which train_lib also warns about).
* `scale_down(config)`: the `tiny` setting of every benchmark config (a CPU smoke run: d = 16,
  2 heads, ResNet base width 4, 32 x 32 frames, batch 8).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from experiments.configs import common

MODELS = ("clcr", "late_fusion", "flat_attention", "mult", "mbt", "misa")


def data_root(name: str) -> str:
  return os.path.join(common.SHARED_DATA, name)


def set_data(config: ml_collections.ConfigDict, name: str,
             fields: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Adds the reader's fields to `config.data`; a None default becomes a typed placeholder."""
  for key, value in fields.items():
    if key == "name":
      continue
    if isinstance(value, config_dict.FieldReference):
      config.data[key] = value
    elif value is None:
      raise ValueError(f"set_data: give the type of {key!r} as a placeholder, not None")
    else:
      config.data[key] = tuple(value) if isinstance(value, list) else value
  config.data.name = name
  return config


def check_model(name: str) -> str:
  if name not in MODELS:
    raise ValueError(f"model={name!r}: expected one of {MODELS}")
  return name


def select_on(requested: str, has_valid: bool, dataset: str) -> str:
  """'auto' -> 'valid' if the dataset's split files give a validation split, else 'test'."""
  if requested not in ("auto", "valid", "test"):
    raise ValueError(f"select_on={requested!r}: expected 'auto', 'valid' or 'test'")
  if requested == "valid" and not has_valid:
    raise ValueError(f"select_on=valid but this {dataset} setting has no validation split; "
                     "give one (see the config's docstring) or use select_on=test")
  if requested == "auto":
    return "valid" if has_valid else "test"
  return requested


def av_model(config: ml_collections.ConfigDict,
             modalities: Mapping[str, tuple[str, str]]) -> ml_collections.ConfigDict:
  """docs/model.md (Backbones, Widths) for the audio-visual sets: d = 512, 8 heads, one backbone
  per modality."""
  config.model.d = 512
  config.model.num_heads = 8
  config.model.resnet.base_width = 64  # a standard ResNet-18, trained from scratch (OGM-GE)
  config.model.modalities = ml_collections.ConfigDict(
      {m: ml_collections.ConfigDict({"kind": kind, "backbone": backbone})
       for m, (kind, backbone) in modalities.items()})
  return config


def scale_down(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `tiny` arg: the same pipeline and model family at a size that trains in seconds on CPU."""
  config.model.d = 16
  config.model.num_heads = 2
  config.model.resnet.base_width = 4
  if "image_size" in config.data:
    config.data.image_size = 32
  if "num_frames" in config.data:
    config.data.num_frames = 2
  config.train.batch_size = 8
  config.eval.batch_size = 8
  config.train.num_epochs = 2
  config.train.log_every_steps = 1
  return config
