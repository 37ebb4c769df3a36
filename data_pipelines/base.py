"""The one interface every dataset reader implements.

A reader knows a dataset's on-disk layout and turns row indices of a split into host-local numpy
examples in the project's batch contract (design.md):

  {'inputs': {modality: float32[n, ...]}, 'masks': {modality: bool[n, T_m]}, 'label': [n, ...]}

Everything about ordering, sharding across hosts, batching, padding and prefetching lives in
`data_pipelines.pipeline`; a reader only answers "what are these rows".
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

TASKS = ("classification", "regression", "segment_classification")


class DataError(ValueError):
  """Bad input data: the message names the file, the key or row, and expected vs found."""


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """Per-example layout of one modality.

  Attributes:
    shape: shape of one example's input array, e.g. (T, D) for feature sequences, (D,) for
      vectors, (F, H, W, C) for frame clips, (n_freq, n_time) for spectrograms.
    kind: 'sequence' | 'vector' | 'video' | 'spectrogram' | 'feature_map'; tells the model which
      backbone layouts make sense.
    mask_length: T_m, the length of this modality's mask (tokens before the backbone).
    has_lengths: whether the source files carry true lengths (else masks are all True or derived).
  """
  shape: tuple[int, ...]
  kind: str
  mask_length: int
  has_lengths: bool = False


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What the label means. `num_classes` is None for regression; `num_segments` only for
  per-segment classification (labels int[n, S])."""
  task: str
  num_classes: int | None = None
  num_segments: int | None = None
  class_names: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, found {self.task!r}")


def sha256_of_file(path: str, chunk: int = 1 << 20) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


class DatasetReader(abc.ABC):
  """Base class of every registered reader.

  Subclasses are constructed from the `config.data` ConfigDict, check what they read (raising
  `DataError` with file, key, expected vs found) and implement the abstract members.

  Class attributes:
    KNOWN_SPLIT_SIZES: {version name: {split: size}} of published versions, for the fingerprint
      warning.
  """
  KNOWN_SPLIT_SIZES: Mapping[str, Mapping[str, int]] = {}

  def __init__(self, config):
    self.config = config

  # -- what the dataset is -------------------------------------------------------------------
  @property
  @abc.abstractmethod
  def splits(self) -> tuple[str, ...]:
    """Names of the available splits, e.g. ('train', 'valid', 'test')."""

  @property
  @abc.abstractmethod
  def modalities(self) -> dict[str, ModalitySpec]:
    """Modality name -> layout, in the model's modality order."""

  @property
  @abc.abstractmethod
  def task(self) -> TaskSpec:
    """Task type and label spec."""

  @abc.abstractmethod
  def num_examples(self, split: str) -> int:
    """Number of rows in `split`."""

  # -- reading rows --------------------------------------------------------------------------
  @abc.abstractmethod
  def load_examples(self, split: str, indices: np.ndarray, *, train: bool,
                    seeds: np.ndarray | None = None) -> dict[str, Any]:
    """Reads rows `indices` (int64[n]) of `split` as numpy arrays in the batch contract.

    Args:
      split: split name.
      indices: row indices into the split.
      train: True for training reads (random augmentation allowed), False for eval.
      seeds: uint32[n, 2] per-example seeds for augmentation, a pure function of
        (config seed, epoch, row), so a resumed run sees the same augmentation.
    Returns:
      {'inputs': {m: float32[n, *shape]}, 'masks': {m: bool[n, T_m]}, 'label': [n, ...]}
    """

  def tf_example_fn(self, split: str, *, train: bool) -> Callable | None:
    """Optional tf-native per-example decoder `(index int64[], seed int32[2]) -> dict of tensors`.

    Readers that decode files (JPEG frames, wav) return one so tf.data can decode in parallel;
    in-memory readers return None and the pipeline gathers rows through `load_examples`.
    """
    del split, train
    return None

  @property
  def files(self) -> Sequence[str]:
    """Files the reader read, for the fingerprint's SHA-256 list."""
    return ()

  @property
  def in_memory(self) -> bool:
    """True when `load_examples` is a cheap gather over arrays already in memory."""
    return True

  # -- fingerprint ---------------------------------------------------------------------------
  def fingerprint(self, hash_files: bool = True) -> dict[str, Any]:
    """Split sizes, per-modality shapes, length arrays, file hashes, known-version check."""
    sizes = {s: int(self.num_examples(s)) for s in self.splits}
    info: dict[str, Any] = {
        "dataset": self.config.get("name", type(self).__name__),
        "task": dataclasses.asdict(self.task),
        "split_sizes": sizes,
        "modalities": {m: dataclasses.asdict(spec) for m, spec in self.modalities.items()},
        "files": {},
    }
    if hash_files:
      for path in self.files:
        if os.path.isfile(path):
          info["files"][path] = {"sha256": sha256_of_file(path),
                                 "bytes": os.path.getsize(path)}
    matches = [name for name, known in self.KNOWN_SPLIT_SIZES.items()
               if all(sizes.get(s) == n for s, n in known.items())]
    info["known_version"] = matches[0] if matches else None
    if self.KNOWN_SPLIT_SIZES and not matches:
      known = "; ".join(f"{k}: {dict(v)}" for k, v in self.KNOWN_SPLIT_SIZES.items())
      info["warning"] = (f"split sizes {sizes} match none of the known versions of this "
                         f"dataset ({known})")
      logging.warning("Data fingerprint: %s", info["warning"])
    return info


def check_array(array: np.ndarray, *, where: str, rank: int | None = None,
                shape: Sequence[int | None] | None = None, finite: bool = False) -> np.ndarray:
  """Validates an array read from disk; raises DataError naming `where` and expected vs found.

  `shape` entries of None match any size.
  """
  array = np.asarray(array)
  if rank is not None and array.ndim != rank:
    raise DataError(f"{where}: expected a rank-{rank} array, found shape {array.shape}")
  if shape is not None:
    if array.ndim != len(shape) or any(e is not None and e != f
                                       for e, f in zip(shape, array.shape)):
      want = tuple("*" if e is None else e for e in shape)
      raise DataError(f"{where}: expected shape {want}, found {array.shape}")
  if finite and np.issubdtype(array.dtype, np.floating):
    bad = ~np.isfinite(array)
    if bad.any():
      row = int(np.argwhere(bad)[0][0])
      raise DataError(f"{where}: {int(bad.sum())} non-finite values (NaN/Inf), first in row {row}")
  return array


class InMemoryReader(DatasetReader):
  """A reader whose splits are numpy arrays in memory; subclasses fill `self._arrays`.

  `self._arrays[split]` = {'inputs': {m: [N, ...]}, 'masks': {m: bool[N, T_m]}, 'label': [N, ...]}.
  Subclasses set `self._task` (a TaskSpec) and may set `self._kinds` {m: kind} and
  `self._has_lengths` {m: bool}.
  """

  def __init__(self, config):
    super().__init__(config)
    self._arrays: dict[str, dict[str, Any]] = {}
    self._task: TaskSpec | None = None
    self._kinds: dict[str, str] = {}
    self._has_lengths: dict[str, bool] = {}

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._arrays)

  @property
  def task(self) -> TaskSpec:
    assert self._task is not None, "reader did not set its task"
    return self._task

  @property
  def modalities(self) -> dict[str, ModalitySpec]:
    first = next(iter(self._arrays.values()))
    specs = {}
    for m, x in first["inputs"].items():
      kind = self._kinds.get(m, {2: "vector", 3: "sequence"}.get(x.ndim, "array"))
      specs[m] = ModalitySpec(shape=tuple(x.shape[1:]), kind=kind,
                              mask_length=int(first["masks"][m].shape[1]),
                              has_lengths=self._has_lengths.get(m, False))
    return specs

  def num_examples(self, split: str) -> int:
    if split not in self._arrays:
      raise DataError(f"split {split!r} not found; available splits: {list(self._arrays)}")
    return int(len(self._arrays[split]["label"]))

  def load_examples(self, split, indices, *, train, seeds=None):
    del train, seeds  # in-memory features have no augmentation
    arrays = self._arrays[split]
    take = lambda x: np.take(x, indices, axis=0)
    return {"inputs": {m: take(x) for m, x in arrays["inputs"].items()},
            "masks": {m: take(x) for m, x in arrays["masks"].items()},
            "label": take(arrays["label"])}
