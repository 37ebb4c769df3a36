"""Prepared TFDS datasets: open one read-only (never downloading), and write a reader's splits.

Opening: `open_builder(tfds_name, data_dir)` reads `<data_dir>/<name>[/<config>]/<version>/`
with `tfds.builder_from_directory`, so no builder code runs and nothing is downloaded; a missing
dataset, config or version raises a DataError that names it and lists what `data_dir` holds.

Writing (`python -m data_pipelines.prepare <dataset> --format=tfds --out=DIR`): every split of
a registered reader, example by example through `reader.load_examples(train=False)`, stored with
`tfds.dataset_builders.store_as_tfds_dataset` as ArrayRecord (random access, which the row-indexed
sampling needs) with shuffling disabled, so row i of the TFDS split is row i of the reader's.
Features: `inputs/<m>` float32 [*shape], `masks/<m>` bool [T_m], `label`. The reader's data
fingerprint (split sizes, task, modality specs, source file hashes) is stored beside
dataset_info.json as `clcr_fingerprint.json`; the 'tfds' reader takes the task and the
modality kinds from it. Clip readers (frames augmented per step) are refused for now: their
stored eval-time arrays would lose the training augmentation.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from data_pipelines import clip_cache
from data_pipelines.base import DataError

FINGERPRINT_FILE = "clcr_fingerprint.json"


def import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("config.data.name='tfds' and --format=tfds need tensorflow-datasets; "
                      "pip install 'clcr_jax[tf]'") from e
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  pipeline.tensorflow_or_none()  # hide the GPUs from TensorFlow before TFDS initialises it
  return tfds


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                and not d.startswith(".") and d != "downloads") if os.path.isdir(path) else []


def _is_version(name: str) -> bool:
  parts = name.split(".")
  return len(parts) == 3 and all(p.isdigit() for p in parts)


def resolve_dir(tfds_name: str, data_dir: str) -> str:
  """`name[/config][:version]` -> the prepared version folder; DataError naming what exists."""
  if not data_dir:
    raise ValueError("config.data.data_dir must be set for config.data.name='tfds' (the folder "
                     "given to `tfds build --data_dir`; nothing is downloaded at run time)")
  data_dir = os.path.expanduser(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(f"config.data.data_dir={data_dir!r}: folder not found")
  name, _, version = tfds_name.partition(":")
  name, _, config = name.partition("/")
  top = os.path.join(data_dir, name)
  if not os.path.isdir(top):
    raise DataError(f"TFDS dataset {name!r} not found in {data_dir}; it holds: "
                    f"{_subdirs(data_dir) or 'nothing'} (prepare it first, e.g. `tfds build "
                    f"{name} --data_dir={data_dir} --file_format=array_record`)")
  base = top
  configs = [d for d in _subdirs(top) if not _is_version(d)]
  if config:
    base = os.path.join(top, config)
    if not os.path.isdir(base):
      raise DataError(f"TFDS dataset {name!r} has no config {config!r} in {data_dir}; configs "
                      f"there: {configs or 'none'}")
  elif configs and not any(_is_version(d) for d in _subdirs(top)):
    raise DataError(f"TFDS dataset {name!r} in {data_dir} has configs {configs}; name one, "
                    f"e.g. tfds_name='{name}/{configs[0]}'")
  versions = sorted((d for d in _subdirs(base) if _is_version(d)),
                    key=lambda v: tuple(int(p) for p in v.split(".")))
  if version:
    if version not in versions:
      raise DataError(f"TFDS dataset {tfds_name.partition(':')[0]!r} has no version "
                      f"{version!r} in {base}; versions there: {versions or 'none'}")
  elif not versions:
    raise DataError(f"{base}: no prepared version folder (x.y.z)")
  else:
    version = versions[-1]
  folder = os.path.join(base, version)
  if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
    raise DataError(f"{folder}: no dataset_info.json; the dataset is not fully prepared")
  return folder


def open_builder(tfds_name: str, data_dir: str):
  """(read-only builder, its folder) of a prepared dataset."""
  tfds = import_tfds()
  folder = resolve_dir(tfds_name, data_dir)
  return tfds.builder_from_directory(folder), folder


def read_fingerprint(folder: str) -> dict[str, Any] | None:
  path = os.path.join(folder, FINGERPRINT_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _features(tfds, reader, split: str):
  probe = reader.load_examples(split, np.zeros(1, np.int64), train=False)
  tensor = lambda x: tfds.features.Tensor(shape=x.shape[1:], dtype=x.dtype)
  return tfds.features.FeaturesDict({
      "inputs": {m: tensor(x) for m, x in probe["inputs"].items()},
      "masks": {m: tensor(x) for m, x in probe["masks"].items()},
      "label": tensor(np.asarray(probe["label"])),
  })


def _examples(reader, split: str, bar, chunk: int = 64):
  n = reader.num_examples(split)
  for start in range(0, n, chunk):
    rows = np.arange(start, min(n, start + chunk), dtype=np.int64)
    batch = reader.load_examples(split, rows, train=False)
    for j, i in enumerate(rows):
      yield int(i), {"inputs": {m: x[j] for m, x in batch["inputs"].items()},
                     "masks": {m: x[j] for m, x in batch["masks"].items()},
                     "label": np.asarray(batch["label"])[j]}
      if bar:
        bar.update()


def write_tfds(reader, out: str, splits: Sequence[str] = (), name: str | None = None,
               version: str = "1.0.0", progress: bool = True) -> str:
  """Stores `splits` (default: all) of `reader` under `out`; returns the version folder."""
  if not reader.in_memory:
    raise ValueError(f"{type(reader).__name__} decodes and augments clips per training step; "
                     "storing its eval-time arrays as TFDS would drop the training augmentation. "
                     "Use `python -m data_pipelines.prepare` (the clip cache) for clip readers")
  tfds = import_tfds()
  splits = tuple(splits or reader.splits)
  name = name or f"clcr_{reader.config.get('name')}"
  total = sum(reader.num_examples(s) for s in splits)
  bar = clip_cache.Progress(total, f"{name} -> tfds", unit="examples") if progress else None
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version=version, features=_features(tfds, reader, splits[0]),
      split_datasets={s: _examples(reader, s, bar) for s in splits}, data_dir=out,
      file_format="array_record", disable_shuffling=True,
      description=f"{reader.config.get('name')} written by data_pipelines.prepare")
  folder = os.fspath(builder.data_dir)
  with open(os.path.join(folder, FINGERPRINT_FILE), "w") as f:
    json.dump(reader.fingerprint(), f, indent=1)
  return folder
