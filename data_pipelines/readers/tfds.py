"""A prepared TFDS dataset (registered as 'tfds'): TFDS's own builders or `prepare --format=tfds`.

Nothing is downloaded at run time: prepare `data_dir` beforehand (`tfds build crema_d
--data_dir=DIR --file_format=array_record`, or `python -m data_pipelines.prepare <dataset>
--format=tfds --out=DIR`). Rows are read by index from ArrayRecord files
(`builder.as_data_source`), so the batches follow the same (seed, epoch, step) order as every
other reader (data_pipelines.sampling): each process reads only the rows of its contiguous slice
(the slicing of `tfds.split_for_jax_process`), and a resumed run asks for the rows of its step.
Datasets stored as TFRecord have no random access; the error says how to convert them.

config.data fields (name: type = default):
  name: 'tfds'.
  tfds_name: str (required). 'name[/config][:version]', e.g. 'crema_d', 'crema_d:1.0.0',
    'ucf101/ucf101_1_256:2.0.0'; without a version the newest prepared one is used.
  data_dir: str (required). The TFDS data folder holding `<name>/[<config>/]<version>/`.
  splits: {our split: TFDS split} | None = None. None: every TFDS split, 'validation' -> 'valid'.
  fields: {modality: feature path} | None = None. Paths into nested features use '/'
    ('inputs/audio'). None: the `inputs/<m>` of a dataset written by `prepare --format=tfds`.
  mask_fields: {modality: feature path} | None = None. bool [T_m] masks; None: `masks/<m>` when
    the dataset has it, else all True ([T] for [T, D] inputs, [1] for vectors and waveforms).
  label_field: str = 'label'.
  frontends: {modality: 'array' | 'waveform'} | None = None ('array' for every modality).
    'array': the feature as float32. 'waveform': integer PCM samples (TFDS `Audio`, e.g.
    crema_d's 16-bit 16 kHz 'audio') -> the spectrogram `audio_feature` of the clip readers
    (data_pipelines.audio), computed exactly as from a wav file of the same samples.
  waveform_rate: int = 16000. Sample rate of 'waveform' features. waveform_bits: int = 16.
  audio_feature: 'ogm_stft' | 'pmr_spec' | 'fbank' = 'ogm_stft'; audio_sample_rate: int = 0;
    stft_pad_mode: str = 'reflect' (the clip readers' fields of the same names).
  kinds: {modality: kind} | None = None. ModalitySpec kinds; None: those stored by `prepare`,
    'spectrogram' for waveforms, else 'vector' ([D]) / 'sequence' ([T, D]).
  task: '' | 'classification' | 'regression' | 'segment_classification' = ''. '': the stored
    fingerprint's, or classification for a ClassLabel / integer label, regression for float.
  num_classes: int = 0. 0: from the ClassLabel or the fingerprint.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Any, Mapping

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import base
from data_pipelines import tfds_store
from data_pipelines.base import DataError
from data_pipelines.registry import register

FRONTENDS = ("array", "waveform")
DEFAULTS: dict[str, Any] = dict(
    tfds_name="", data_dir="", splits=None, fields=None, mask_fields=None, label_field="label",
    frontends=None, waveform_rate=16000, waveform_bits=16, audio_feature="ogm_stft",
    audio_sample_rate=0, stft_pad_mode="reflect", kinds=None, task="", num_classes=0)


def _as_dict(value) -> dict[str, Any]:
  if value is None:
    return {}
  return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def _leaf_paths(features, prefix: str = "") -> dict[str, Any]:
  """'a/b' -> feature connector of every leaf of a FeaturesDict."""
  out = {}
  for key, feature in features.items():
    path = f"{prefix}{key}"
    inner = getattr(feature, "items", None)
    if inner is not None and type(feature).__name__ == "FeaturesDict":
      out.update(_leaf_paths(feature, path + "/"))
    else:
      out[path] = feature
  return out


def _get(example: Mapping[str, Any], path: str):
  for key in path.split("/"):
    example = example[key]
  return example


@register("tfds")
class TfdsReader(base.DatasetReader):
  """Reads rows of a prepared TFDS dataset by index (module docstring)."""

  def __init__(self, config):
    super().__init__(config)
    # Fields every config has (experiments/configs/common.py), used by train_lib, not here.
    common = {"name", "backend", "root", "train_split", "test_split", "valid_split"}
    unknown = sorted(set(config.keys()) - set(DEFAULTS) - common)
    if unknown:
      raise ValueError(f"config.data fields {unknown} are not fields of the 'tfds' reader; "
                       f"fields: {sorted(DEFAULTS)}")
    o = self.options = {k: config.get(k, v) for k, v in DEFAULTS.items()}
    if not o["tfds_name"]:
      raise ValueError("config.data.tfds_name must be set for config.data.name='tfds'")
    self.builder, self.folder = tfds_store.open_builder(o["tfds_name"], o["data_dir"])
    info = self.builder.info
    self.stored = tfds_store.read_fingerprint(self.folder)
    leaves = _leaf_paths(info.features)
    where = f"TFDS dataset {o['tfds_name']!r} ({self.folder})"

    available = list(info.splits)
    wanted = _as_dict(o["splits"]) or {("valid" if s == "validation" else s): s
                                       for s in available}
    rank = {"train": 0, "valid": 1, "test": 2}  # a ConfigDict sorts keys; keep this order
    wanted = dict(sorted(wanted.items(), key=lambda kv: (rank.get(kv[0], 3), kv[0])))
    for ours, theirs in wanted.items():
      if theirs not in available:
        raise DataError(f"{where}: no split {theirs!r} (for config.data.splits[{ours!r}]); "
                        f"splits: {available}")
    self._split_map = wanted
    self._sources = {ours: self._data_source(theirs, where) for ours, theirs in wanted.items()}

    stored_mods = (self.stored or {}).get("modalities", {})
    fields = _as_dict(o["fields"]) or {m: f"inputs/{m}" for m in stored_mods}
    if not fields:
      raise ValueError(f"{where} was not written by `prepare --format=tfds`: set "
                       f"config.data.fields {{modality: feature}}; features: {sorted(leaves)}")
    masks = _as_dict(o["mask_fields"]) or {m: f"masks/{m}" for m in fields
                                           if f"masks/{m}" in leaves}
    frontends = _as_dict(o["frontends"])
    for path in list(fields.values()) + list(masks.values()) + [o["label_field"]]:
      if path not in leaves:
        raise DataError(f"{where}: no feature {path!r}; features: {sorted(leaves)}")
    for m, fe in frontends.items():
      if m not in fields or fe not in FRONTENDS:
        raise ValueError(f"config.data.frontends[{m!r}]={fe!r}: expected a modality of "
                         f"config.data.fields ({sorted(fields)}) and one of {FRONTENDS}")
    self.fields, self.mask_fields = fields, masks
    self.frontends = {m: frontends.get(m, "array") for m in fields}
    self.feature = audio_lib.AudioFeature(
        kind=o["audio_feature"], sample_rate=int(o["audio_sample_rate"]) or None,
        stft_pad_mode=o["stft_pad_mode"])
    self._task = self._task_spec(info.features[o["label_field"].split("/")[0]]
                                 if "/" not in o["label_field"] else None, leaves)
    self._specs = self._modality_specs(leaves, stored_mods)
    logging.info("tfds reader: %s, splits %s, task %s, modalities %s", self.folder, wanted,
                 self._task, {m: s.shape for m, s in self._specs.items()})

  # -- opening -------------------------------------------------------------------------------
  def _data_source(self, split: str, where: str):
    try:
      return self.builder.as_data_source(split)
    except NotImplementedError as e:
      raise DataError(
          f"{where}: stored as {self.builder.info.file_format} without random access; the "
          "reader needs ArrayRecord (row-indexed sampling, exact resume). Rebuild with "
          "`tfds build ... --file_format=array_record` or convert with `tfds convert_format "
          f"--dataset_version_dir={self.folder} --out_file_format=array_record`") from e

  def _task_spec(self, label_feature, leaves) -> base.TaskSpec:
    o, stored = self.options, (self.stored or {}).get("task")
    task, num_classes = o["task"], int(o["num_classes"]) or None
    names = None
    if stored and not task:
      return base.TaskSpec(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in stored.items()})
    feature = leaves[o["label_field"]] if label_feature is None else label_feature
    if type(feature).__name__ == "ClassLabel":
      task = task or "classification"
      num_classes = num_classes or feature.num_classes
      names = tuple(feature.names)
    elif not task:
      task = "regression" if np.dtype(feature.np_dtype).kind == "f" else "classification"
    if task != "regression" and not num_classes:
      raise ValueError(f"config.data.num_classes must be set: label {o['label_field']!r} is "
                       f"{type(feature).__name__}, not a ClassLabel")
    return base.TaskSpec(task, num_classes=num_classes if task != "regression" else None,
                         class_names=names)

  def _modality_specs(self, leaves, stored_mods) -> dict[str, base.ModalitySpec]:
    kinds, specs = _as_dict(self.options["kinds"]), {}
    for m, path in self.fields.items():
      if m in stored_mods and m not in kinds:
        s = stored_mods[m]
        specs[m] = base.ModalitySpec(shape=tuple(s["shape"]), kind=s["kind"],
                                     mask_length=int(s["mask_length"]),
                                     has_lengths=bool(s["has_lengths"]))
        continue
      if self.frontends[m] == "waveform":
        shape = self.feature.shape
        specs[m] = base.ModalitySpec(shape=shape, kind=kinds.get(m, "spectrogram"),
                                     mask_length=shape[1])
        continue
      shape = tuple(leaves[path].shape)
      if None in shape:
        raise DataError(f"feature {path!r} has a variable shape {shape}; modality {m!r} needs a "
                        "fixed shape (or frontends[{m!r}]='waveform' for audio)")
      kind = kinds.get(m, {1: "vector", 2: "sequence"}.get(len(shape), "array"))
      mask_length = (leaves[self.mask_fields[m]].shape[0] if m in self.mask_fields
                     else (shape[0] if len(shape) == 2 else 1))
      specs[m] = base.ModalitySpec(shape=shape, kind=kind, mask_length=int(mask_length),
                                   has_lengths=m in self.mask_fields)
    return specs

  # -- DatasetReader -------------------------------------------------------------------------
  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._sources)

  @property
  def modalities(self) -> dict[str, base.ModalitySpec]:
    return dict(self._specs)

  @property
  def task(self) -> base.TaskSpec:
    return self._task

  @property
  def in_memory(self) -> bool:
    return False

  @property
  def files(self):
    return sorted(glob.glob(os.path.join(self.folder, "*.json")))

  def num_examples(self, split: str) -> int:
    if split not in self._sources:
      raise DataError(f"split {split!r} not found; available splits: {list(self._sources)}")
    return len(self._sources[split])

  def fingerprint(self, hash_files: bool = True) -> dict[str, Any]:
    info = super().fingerprint(hash_files)
    info["tfds"] = {"folder": self.folder, "splits": self._split_map}
    if self.stored is not None:
      info["source_fingerprint"] = self.stored  # what the raw files were when written
    return info

  def _input(self, m: str, value, where: str) -> np.ndarray:
    if self.frontends[m] == "waveform":
      x = np.asarray(value)
      if x.dtype.kind not in "iu" or x.ndim not in (1, 2):
        raise DataError(f"{where}: 'waveform' expects integer PCM [n] or [n, channels], "
                        f"found {x.dtype} {x.shape}")
      scale = float(1 << (int(self.options["waveform_bits"]) - 1))
      samples = (x.reshape(len(x), -1).T.astype(np.float32) / scale)
      return self.feature.from_samples(samples, int(self.options["waveform_rate"]), where)
    spec = self._specs[m]
    return base.check_array(np.asarray(value, np.float32), where=where, shape=spec.shape)

  def load_examples(self, split, indices, *, train, seeds=None):
    del train, seeds  # stored arrays and spectrograms carry no augmentation
    indices = np.asarray(indices, np.int64)
    source = self._sources[split]
    rows = source.__getitems__([int(i) for i in indices])
    inputs = {m: [] for m in self.fields}
    masks = {m: [] for m in self.fields}
    labels = []
    for i, row in zip(indices, rows):
      where = f"{self.folder} split {self._split_map[split]!r} row {int(i)}"
      for m, path in self.fields.items():
        inputs[m].append(self._input(m, _get(row, path), f"{where} feature {path!r}"))
        if m in self.mask_fields:
          masks[m].append(np.asarray(_get(row, self.mask_fields[m]), bool))
        else:
          masks[m].append(np.ones(self._specs[m].mask_length, bool))
      labels.append(np.asarray(_get(row, self.options["label_field"])))
    label = np.stack(labels)
    label = label.astype(np.float32 if self._task.task == "regression" else np.int32)
    return {"inputs": {m: np.stack(v) for m, v in inputs.items()},
            "masks": {m: np.stack(v) for m, v in masks.items()}, "label": label}

