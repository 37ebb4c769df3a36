"""AVE (audio-visual events, 28 categories), registered as "ave"; two formats by `task`.

task='segment_classification' (default): the AVE-ECCV18 precomputed features
  (YapengTian/AVE-ECCV18; docs/data.md, AVE), files in root:
    audio_feature.h5   'avadataset' (4143, 10, 128)          VGGish per 1-s segment
    visual_feature.h5  'avadataset' (4143, 10, 7, 7, 512)    VGG-19 pool5 per segment (7.7 GB)
    labels.h5          'avadataset' (4143, 10, 29)           one-hot, index 28 = background
                       (PSP / AGM use the corrected right_labels.h5: set labels_file)
    {train,val,test}_order.h5  'order' (3339,) / (402,) / (402,)  rows of the split
  Batches: 'audio' float32 [10, 128] (kind 'sequence'), 'visual' float32 [10, 7, 7, 512] (kind
  'feature_map'), masks [10] all True, label int32 [10] over 29 classes (argmax of the one-hot).
  The files are opened once with h5py (metadata only) and a batch reads only its own rows
  (sorted, unique indices; never the whole file: the original loader read 7.7 GB into RAM).
  Spatial size and feature widths are taken from the files.

task='classification': the raw-video layout of OGM-GE / PMR / DI-MML / ARL (format B):
    trainSet.txt, valSet.txt, testSet.txt   'Category&VideoID&Quality&Start&End' lines
    Image-01-FPS-SE/<vid>/*.jpg             1-fps frames inside the event window
    Audio-1004-SE/<vid>.pkl                 (257, 1004) PMR spectrogram per video, unpickled
                                            through data_pipelines.safe_pickle (arrays only)
  Class index = order of first appearance in testSet.txt (PMR, DI-MML, ARL; `class_order`
  'sorted' gives OGM-GE's generic loader). A video id listed twice in a split is kept once
  ('keep_first', DI-MML) or dropped entirely ('drop_all', OGM-GE's AVDataset).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from data_pipelines import clip_reader
from data_pipelines.base import (DataError, DatasetReader, ModalitySpec, TaskSpec, check_array)
from data_pipelines.registry import register

AVE_CATEGORIES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle",
    "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar",
    "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat",
    "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin")
SEGMENT_CLASSES = AVE_CATEGORIES + ("background",)
TASKS = ("segment_classification", "classification")
KNOWN_SIZES = {"ave_eccv18": {"train": 3339, "valid": 402, "test": 402}}


@register("ave")
def make_ave_reader(config):
  """The AVE reader for `config.task` (a factory: the two tasks read different formats)."""
  task = config.get("task", "segment_classification")
  if task == "segment_classification":
    return AveFeatureReader(config)
  if task == "classification":
    return AveVideoReader(config)
  raise ValueError(f"config.data.task of 'ave' must be one of {TASKS}, found {task!r}")


def default_config(task: str = "segment_classification"):
  """All config fields of the AVE reader for `task`, with defaults (a ConfigDict)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  if task == "classification":
    return AveVideoReader.default_config()
  return ml_collections.ConfigDict(dict(AveFeatureReader.DEFAULTS, name="ave"))


class AveFeatureReader(DatasetReader):
  """AVE-ECCV18 h5 features, per-segment labels; reads only the rows a batch needs."""

  KNOWN_SPLIT_SIZES = KNOWN_SIZES
  DEFAULTS = dict(
      task="segment_classification",
      root="",
      modalities=("audio", "visual"),
      audio_file="audio_feature.h5",
      visual_file="visual_feature.h5",
      labels_file="labels.h5",
      train_order="train_order.h5",
      valid_order="val_order.h5",
      test_order="test_order.h5",
      h5_key="avadataset",
      order_key="order",
  )

  def __init__(self, config):
    super().__init__(config)
    import h5py  # pylint: disable=import-outside-toplevel
    self._h5py = h5py
    o = self.options = clip_reader.resolve_options(config, self.DEFAULTS)
    self.modality_names = tuple(o["modalities"])
    if not self.modality_names or set(self.modality_names) - {"audio", "visual"}:
      raise ValueError(f"config.data.modalities={self.modality_names}: expected a non-empty "
                       f"subset of ('audio', 'visual')")
    self._paths = {m: os.path.join(o["root"], o[f"{m}_file"]) for m in self.modality_names}
    self._paths["label"] = os.path.join(o["root"], o["labels_file"])
    self._files: dict[str, Any] = {}
    self._shapes = {}
    for key, path in self._paths.items():
      ds = self._dataset(key)
      self._shapes[key] = tuple(ds.shape)
    n = self._shapes["label"][0]
    expect = {"audio": (n, 10, None), "visual": (n, 10, None, None, None),
              "label": (n, 10, len(SEGMENT_CLASSES))}
    for key, shape in self._shapes.items():
      want = expect[key]
      if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
        raise DataError(f"{self._paths[key]}['{o['h5_key']}']: expected shape "
                        f"{tuple('*' if w is None else w for w in want)}, found {shape}")
    self._orders = {}
    for split in ("train", "valid", "test"):
      path = os.path.join(o["root"], o[f"{split}_order"])
      try:
        with h5py.File(path, "r") as f:
          order = np.asarray(f[o["order_key"]][()]).reshape(-1)
      except (OSError, KeyError) as e:
        raise DataError(f"{path}: expected an h5 file with dataset '{o['order_key']}' "
                        f"(row indices of split {split!r}), found: {e}") from e
      if not np.issubdtype(order.dtype, np.integer):
        raise DataError(f"{path}: expected integer row indices, found dtype {order.dtype}")
      bad = order[(order < 0) | (order >= n)]
      if len(bad):
        raise DataError(f"{path}: split entry without a file row: index {int(bad[0])} outside "
                        f"the {n} rows of {self._paths['label']}")
      self._orders[split] = order.astype(np.int64)

  def _dataset(self, key: str):
    """The h5 dataset of 'audio' / 'visual' / 'label', opened on first use and kept open."""
    if key not in self._files:
      path = self._paths[key]
      try:
        self._files[key] = self._h5py.File(path, "r")
      except OSError as e:
        raise DataError(f"{path}: expected an HDF5 file, could not open it: {e}") from e
    f = self._files[key]
    if self.options["h5_key"] not in f:
      raise DataError(f"{self._paths[key]}: expected dataset '{self.options['h5_key']}', "
                      f"found keys {list(f.keys())}")
    return f[self.options["h5_key"]]

  @property
  def splits(self) -> tuple[str, ...]:
    return ("train", "valid", "test")

  @property
  def task(self) -> TaskSpec:
    return TaskSpec("segment_classification", num_classes=len(SEGMENT_CLASSES),
                    num_segments=10, class_names=SEGMENT_CLASSES)

  @property
  def in_memory(self) -> bool:
    return False

  @property
  def files(self):
    # The 7.7 GB visual file is left out of the SHA-256 list (its shape is in the fingerprint).
    o = self.options
    small = [self._paths[k] for k in ("audio", "label") if k in self._paths]
    return small + [os.path.join(o["root"], o[f"{s}_order"]) for s in self.splits]

  @property
  def modalities(self) -> dict[str, ModalitySpec]:
    kinds = {"audio": "sequence", "visual": "feature_map"}
    return {m: ModalitySpec(shape=self._shapes[m][1:], kind=kinds[m], mask_length=10)
            for m in self.modality_names}

  def num_examples(self, split: str) -> int:
    if split not in self._orders:
      raise DataError(f"split {split!r} not found; available splits: {list(self._orders)}")
    return len(self._orders[split])

  def _read_rows(self, key: str, rows: np.ndarray) -> np.ndarray:
    """Rows of one h5 dataset, reading each distinct row once, in file order."""
    unique, inverse = np.unique(rows, return_inverse=True)
    data = self._dataset(key)[unique]
    return data[inverse]

  def load_examples(self, split, indices, *, train, seeds=None):
    del train, seeds  # precomputed features: no augmentation
    rows = self._orders[split][np.asarray(indices, np.int64)]
    inputs = {}
    for m in self.modality_names:
      x = self._read_rows(m, rows)
      inputs[m] = check_array(x, where=f"{self._paths[m]} rows {rows.tolist()}",
                              finite=True).astype(np.float32)
    onehot = self._read_rows("label", rows)
    labels = onehot.argmax(-1).astype(np.int32)
    hot = onehot.max(-1)
    if (hot <= 0).any():
      r, s = map(int, np.argwhere(hot <= 0)[0])
      raise DataError(f"{self._paths['label']}: row {int(rows[r])} segment {s}: expected a "
                      f"one-hot label over {len(SEGMENT_CLASSES)} classes, found all zeros")
    masks = {m: np.ones((len(rows), 10), bool) for m in self.modality_names}
    return {"inputs": inputs, "masks": masks, "label": labels}

  def fingerprint(self, hash_files: bool = True):
    info = super().fingerprint(hash_files)
    info["h5_shapes"] = {k: list(v) for k, v in self._shapes.items()}
    return info


class AveVideoReader(clip_reader.ClipReader):
  """AVE raw-video classification: 'audio' (257, 1004) spectrogram pkl + 'visual' frames."""

  DEFAULTS = dict(
      task="classification",
      modalities=("audio", "visual"),
      train_list="trainSet.txt",
      valid_list="valSet.txt",
      test_list="testSet.txt",
      class_order="test_first_appearance",  # | 'sorted'
      class_names=(),                       # explicit order; overrides class_order
      num_classes=28,
      duplicates="keep_first",              # | 'drop_all'
      frames_dir="Image-01-FPS-SE",
      audio_dir="Audio-1004-SE",
      audio_format="pkl",
      audio_feature="pmr_spec",
  )
  VISUAL = {"visual": clip_reader.VisualModality(("frames",))}
  registered_name = "ave"

  def __init__(self, config):
    self._dropped: dict[str, int] = {}
    super().__init__(config)

  def _rows(self, split: str) -> list[tuple[str, str, str]]:
    """(category, video id, where) of a '&' list, header line skipped."""
    path = self.path(self.options[f"{split}_list"])
    try:
      with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    except FileNotFoundError:
      raise DataError(f"{path}: split list not found (split {split!r})") from None
    rows = []
    for n, line in enumerate(lines, 1):
      if not line.strip():
        continue
      fields = line.split("&")
      if len(fields) != 5:
        raise DataError(f"{path}:{n}: expected 'Category&VideoID&Quality&StartTime&EndTime', "
                        f"found {len(fields)} fields: {line!r}")
      if fields[0] == "Category":
        continue
      rows.append((fields[0], fields[1], f"{path}:{n}"))
    return rows

  def task_spec(self) -> TaskSpec:
    o = self.options
    names = tuple(o["class_names"])
    if not names:
      seen = list(dict.fromkeys(c for c, _, _ in self._rows("test")))
      if o["class_order"] == "sorted":
        seen = sorted(seen)
      elif o["class_order"] != "test_first_appearance":
        raise ValueError(f"config.data.class_order must be 'test_first_appearance' or "
                         f"'sorted', found {o['class_order']!r}")
      names = tuple(seen)
    if len(names) != int(o["num_classes"]):
      raise DataError(f"{self.path(o['test_list'])}: expected {o['num_classes']} classes "
                      f"(config.data.num_classes), found {len(names)}: {names}")
    self.class_names = names
    return TaskSpec("classification", num_classes=len(names), class_names=names)

  def split_names(self) -> tuple[str, ...]:
    return ("train", "valid", "test")

  def list_files(self) -> list[str]:
    return [self.path(self.options[f"{s}_list"]) for s in self.split_names()]

  def read_split(self, split: str) -> list[clip_reader.Clip]:
    o, rows = self.options, self._rows(split)
    counts: dict[str, int] = {}
    for _, vid, _ in rows:
      counts[vid] = counts.get(vid, 0) + 1
    if o["duplicates"] not in ("keep_first", "drop_all"):
      raise ValueError(f"config.data.duplicates must be 'keep_first' or 'drop_all', found "
                       f"{o['duplicates']!r}")
    clips, seen = [], set()
    for category, vid, where in rows:
      if vid in seen or (o["duplicates"] == "drop_all" and counts[vid] > 1):
        continue
      seen.add(vid)
      if category not in self.class_names:
        raise DataError(f"{where}: label {category!r} not in the class list "
                        f"({len(self.class_names)} classes from "
                        f"{'class_names' if o['class_names'] else o['test_list']})")
      audio = (os.path.join(self.path(o["audio_dir"], split), f"{vid}.{o['audio_format']}")
               if self.feature is not None else None)
      frames = {"frames": os.path.join(self.path(o["frames_dir"], split), vid)} \
          if self.streams else {}
      clips.append(clip_reader.Clip(vid, self.class_names.index(category), audio, frames, where))
    self._dropped[split] = len(rows) - len(clips)
    if self._dropped[split]:
      logging.info("ave %s: %d duplicated list lines dropped (%s)", split, self._dropped[split],
                   o["duplicates"])
    return clips

  def fingerprint(self, hash_files: bool = True):
    # Split sizes after dropping duplicates are not published, so there is no known-size check.
    info = super().fingerprint(hash_files)
    info["duplicates_dropped"] = dict(self._dropped)
    return info
