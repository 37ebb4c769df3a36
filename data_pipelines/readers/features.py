"""Your own pre-extracted features as numpy arrays (registered as 'features'); no code to write.

Layout: under `config.data.root`, one entry per split (by default 'train', 'valid', 'test'):

    <root>/<split>.npz              numpy.savez(path, audio=..., video=..., label=...)
    <root>/<split>/<key>.npy        or one numpy.save file per array in a folder per split

Arrays in each split (N = rows of the split; the same keys, T and D in every split):

    <modality>           float [N, T, D]: a sequence of T frames of D features, or
                         float [N, D]:    one vector per row.
    <modality>_lengths   optional, int [N], only for [N, T, D] modalities: the real frames of each
                         row, 0 <= length <= T; the rest is padding (after the real frames, or
                         before them with padding_side='left'). Without it every frame is valid.
    label                int [N]      -> 'classification', num_classes = max label + 1 (all splits)
                         float [N]    -> 'regression'
                         int [N, S]   -> 'segment_classification', S labels per row

Every other key is a modality, taken in alphabetical order unless config.data.modalities lists
them. Batches hold `inputs[m]` float32 [T, D] (mask bool [T]) or [D] (mask bool [1], all True).
Files are read with numpy.load(allow_pickle=False): object arrays are refused, nothing executes.

config.data fields (name: type = default):
  name: 'features'.
  root: str (required).
  splits: tuple of str = ('train', 'valid', 'test'). Every split listed must exist.
  modalities: list of str | None = None. Which keys are modalities, in this order.
  task: 'auto' | 'classification' | 'regression' | 'segment_classification' = 'auto'. 'auto'
    reads it from the label dtype and rank as above; an explicit task converts integral float
    labels to int (logged) and refuses non-integral ones.
  num_classes: int | None = None. Checked against the labels when set.
  padding_side: 'right' | 'left' = 'right'. Where the padding sits in rows shorter than T.
"""
from __future__ import annotations

import logging
import os
import zipfile
from typing import Any

import numpy as np

from data_pipelines import base
from data_pipelines import sequence_masks as sm
from data_pipelines.base import DataError
from data_pipelines.registry import register

LABEL = "label"
LENGTHS_SUFFIX = "_lengths"


def _load_split(root: str, split: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """{key: array} of one split and {key: file it came from}."""
  npz, folder = os.path.join(root, f"{split}.npz"), os.path.join(root, split)
  if os.path.isfile(npz):
    try:
      with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
      raise DataError(f"{npz}: cannot read as .npz without pickle ({e})") from e
    return arrays, {k: npz for k in arrays}
  if os.path.isdir(folder):
    arrays, sources = {}, {}
    for fname in sorted(os.listdir(folder)):
      if not fname.endswith(".npy"):
        continue
      path = os.path.join(folder, fname)
      try:
        arrays[fname[:-4]] = np.load(path, allow_pickle=False)
      except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read as .npy without pickle ({e})") from e
      sources[fname[:-4]] = path
    if not arrays:
      raise DataError(f"{folder}: no <key>.npy files in the split folder")
    return arrays, sources
  raise DataError(f"split {split!r} not found: expected {npz} or a folder {folder}/ of .npy files")


@register("features")
class FeaturesReader(base.InMemoryReader):
  """In-memory reader of the layout in the module docstring."""

  def __init__(self, config):
    super().__init__(config)
    root = os.path.expanduser(config.get("root", "") or "")
    if not root:
      raise ValueError("config.data.root must be set for the 'features' reader")
    if not os.path.isdir(root):
      raise DataError(f"config.data.root={root!r}: folder not found")
    split_names = tuple(config.get("splits", None) or ("train", "valid", "test"))
    task = config.get("task", None) or "auto"
    if task != "auto" and task not in base.TASKS:
      raise ValueError(f"config.data.task must be 'auto' or one of {base.TASKS}, found {task!r}")
    side = config.get("padding_side", None) or "right"
    if side not in ("left", "right"):
      raise ValueError(f"config.data.padding_side must be 'left' or 'right', found {side!r}")
    num_classes = config.get("num_classes", None)

    raw = {}
    self._files: list[str] = []
    for split in split_names:
      arrays, sources = _load_split(root, split)
      raw[split] = (arrays, sources)
      self._files += sorted(set(sources.values()))
    modalities = self._pick_modalities(raw, split_names[0], config.get("modalities", None))
    labels = {s: self._label(*raw[s]) for s in split_names}
    task, num_classes = self._infer_task(labels, task, num_classes, raw)
    for split in split_names:
      arrays, sources = raw[split]
      self._arrays[split] = self._read_split(arrays, sources, modalities, labels[split], side)
    self._check_across_splits(raw, modalities)
    num_segments = labels[split_names[0]].shape[1] if task == "segment_classification" else None
    self._task = base.TaskSpec(task, num_classes=num_classes, num_segments=num_segments)
    logging.info("features reader: %s, task %s, modalities %s", root, self._task,
                 {m: s.shape for m, s in self.modalities.items()})

  # -- keys ------------------------------------------------------------------------------------
  @staticmethod
  def _pick_modalities(raw, first_split: str, requested) -> list[str]:
    arrays, sources = raw[first_split]
    found = sorted(k for k in arrays if k != LABEL and not k.endswith(LENGTHS_SUFFIX))
    modalities = list(requested) if requested else found
    because = "listed in config.data.modalities" if requested else f"present in {first_split!r}"
    for split, (arrays_s, sources_s) in raw.items():
      for m in modalities:
        if m not in arrays_s:
          where = next(iter(sources_s.values()))
          raise DataError(f"{where} (split {split!r}): missing key {m!r} ({because}); found "
                          f"keys {sorted(arrays_s)}")
    ignored = sorted(set(found) - set(modalities))
    if ignored:
      logging.info("features reader: ignoring keys %s (not in config.data.modalities)", ignored)
    if not modalities:
      raise DataError(f"{next(iter(sources.values()))}: no modality arrays; found keys "
                      f"{sorted(arrays)} (expected <modality>, optional <modality>_lengths, "
                      "and 'label')")
    return modalities

  # -- labels and task -----------------------------------------------------------------------
  @staticmethod
  def _label(arrays, sources) -> np.ndarray:
    if LABEL not in arrays:
      where = next(iter(set(sources.values())))
      raise DataError(f"{where}: missing key 'label'; found keys {sorted(arrays)}")
    y = arrays[LABEL]
    where = f"{sources[LABEL]}['label']"
    if y.dtype.kind not in "biuf" or y.ndim not in (1, 2):
      raise DataError(f"{where}: expected int [N], float [N] or int [N, S] labels, found "
                      f"dtype {y.dtype} shape {y.shape}")
    if y.dtype.kind == "f":
      bad = np.flatnonzero(~np.isfinite(y).reshape(len(y), -1).all(axis=1))
      if len(bad):
        raise DataError(f"{where}: row {int(bad[0])} has a NaN/inf label; {len(bad)} such rows")
    return y

  def _infer_task(self, labels, task, num_classes, raw):
    first = next(iter(labels.values()))
    if task == "auto":
      if first.dtype.kind == "f":
        task = "regression"
      else:
        task = "classification" if first.ndim == 1 else "segment_classification"
    want_rank = 2 if task == "segment_classification" else 1
    for split, y in labels.items():
      where = f"{raw[split][1][LABEL]}['label']"
      if y.ndim != want_rank:
        raise DataError(f"{where}: task {task!r} needs labels of rank {want_rank}, found shape "
                        f"{y.shape}")
      if task == "regression":
        if y.dtype != np.float32:
          logging.info("%s: casting labels %s to float32", where, y.dtype)
        labels[split] = y.astype(np.float32)
        continue
      if y.dtype.kind == "f":
        frac = np.flatnonzero((y != np.round(y)).reshape(len(y), -1).any(axis=1))
        if len(frac):
          raise DataError(f"{where}: task {task!r} needs integer labels; row {int(frac[0])} "
                          f"is {y[frac[0]]}")
        logging.info("%s: float labels are integral; converting to int32 for %s", where, task)
      labels[split] = y.astype(np.int64)
    if task == "regression":
      return task, None
    if num_classes is None:
      num_classes = max((int(y.max()) for y in labels.values() if y.size), default=0) + 1
    for split, y in labels.items():
      bad = np.flatnonzero(((y < 0) | (y >= num_classes)).reshape(len(y), -1).any(axis=1))
      if len(bad):
        r = int(bad[0])
        raise DataError(f"{raw[split][1][LABEL]}['label']: row {r} has label {y[r]}, outside "
                        f"[0, {num_classes}) (num_classes={num_classes}); {len(bad)} such rows")
      labels[split] = y.astype(np.int32)
    return task, int(num_classes)

  # -- features --------------------------------------------------------------------------------
  def _read_split(self, arrays, sources, modalities, label, side) -> dict[str, Any]:
    n = len(label)
    inputs, masks = {}, {}
    for m in modalities:
      where = f"{sources[m]}[{m!r}]"
      x = arrays[m]
      if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numeric features, found dtype {x.dtype}")
      if x.ndim not in (2, 3):
        raise DataError(f"{where}: expected [N, T, D] or [N, D], found shape {x.shape}")
      if len(x) != n:
        raise DataError(f"{where}: {len(x)} rows, but 'label' has {n}; every modality needs one "
                        "row per label")
      if x.dtype != np.float32:
        logging.info("%s: casting %s to float32", where, x.dtype)
      x = base.check_array(x.astype(np.float32), where=where, finite=True)
      lkey = m + LENGTHS_SUFFIX
      if x.ndim == 2:
        if lkey in arrays:
          raise DataError(f"{sources[lkey]}[{lkey!r}]: lengths given for {m!r}, whose shape "
                          f"{x.shape} is [N, D] (no time axis)")
        masks[m] = np.ones((n, 1), bool)
      elif lkey in arrays:
        lengths = sm.read_lengths(arrays[lkey], n=n, max_len=x.shape[1],
                               where=f"{sources[lkey]}[{lkey!r}]")
        masks[m] = sm.lengths_to_mask(lengths, x.shape[1], side)
        self._has_lengths[m] = True
      else:
        masks[m] = np.ones(x.shape[:2], bool)
      inputs[m] = x
    for k in arrays:
      if k.endswith(LENGTHS_SUFFIX) and k[:-len(LENGTHS_SUFFIX)] not in arrays:
        logging.warning("%s: %r has no matching modality %r; ignored", sources[k], k,
                        k[:-len(LENGTHS_SUFFIX)])
    return {"inputs": inputs, "masks": masks, "label": label}

  def _check_across_splits(self, raw, modalities) -> None:
    for key in list(modalities) + [LABEL]:
      shapes = {s: (a["label"] if key == LABEL else a["inputs"][key]).shape[1:]
                for s, a in self._arrays.items()}
      if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{shape} in {raw[s][1][key]}" for s, shape in shapes.items())
        raise DataError(f"key {key!r} has per-row shape {detail}; every split must agree")

  @property
  def files(self):
    return tuple(self._files)
