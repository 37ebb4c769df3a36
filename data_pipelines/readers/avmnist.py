"""AV-MNIST (registered as 'avmnist'), built from MNIST, FSDD and the pairing tables.

Files under `config.data.root` (the layout of ../shared/data; see the READMEs there):

    mnist/t10k-images-idx3-ubyte.gz, mnist/t10k-labels-idx1-ubyte.gz   test images and labels
    mnist/train-labels-idx1-ubyte.gz, mnist/train_images_part{0..5}.npz train labels and images
    fsdd/recordings/{digit}_{speaker}_{take}.wav                        spoken digits
    avmnist_pairs/pairs_train.csv, avmnist_pairs/pairs_test.csv         image <-> recording

Splits follow the tables' `multibench_split` column, as MultiBench does: train = MNIST train
0-54,999, valid = 55,000-59,999, test = the MNIST test set (speaker yweweler's recordings).

Recipe (slyviacassell/_MFAS datasets/avmnist_gen.py, which MultiBench's files come from):
  * image: PCA of the 784 pixels (scaled to [0, 1]) keeping `pca_variance` (25 %) of the
    variance; the input is the vector of PCA coefficients, float32 [k], kind 'vector', mask [1].
    On the full train split k = 4 (28.3 % of the variance); on the first 2,000 rows also 4.
    Deviations from the generator, which fitted one PCA on all 60,000 train images and another
    on the 10,000 test images, and saved the 784-pixel centred reconstruction from the first
    k - 1 components (its argmax stops one short: 3 components, < 25 % of the variance): we fit
    once, on the rows of the train split this reader serves (after `max_train_examples`), so
    valid and test never inform it; keep the fewest components reaching the target; and return
    the k coefficients. The generator's image is a fixed linear map of them,
    `coefficients @ pca.components.T` (k - 1 columns there), mean not added back.
  * audio: the generator's 112 x 112 spectrogram of the paired recording, float32 [112 freq,
    112 time], kind 'spectrogram', mask [112] all True; see `data_pipelines.audio_features` for
    the exact steps. No ESC-50 noise (the generator's default noise power is 0).
  * label: the digit, int32, 10 classes.

Spectrograms are computed once per recording and cached as
`<cache_dir>/<recipe hash>/<wav name>-<wav sha256[:16]>.npy`, so a changed recipe or recording
never reuses a stale file; writes are atomic (safe with several processes on one cache).

config.data fields (name: type = default):
  name: 'avmnist'.
  root: str = '<repo>/../shared/data'.
  cache_dir: str = '~/.cache/clcr_jax/avmnist'. '' disables the cache.
  max_train_examples: int | None = None. Keep the first n train rows (for CI and smoke tests).
  max_eval_examples: int | None = None. Keep the first n rows of valid and of test.
  pca_variance: float = 0.25. Fraction of the train pixel variance the PCA keeps.
  audio_render: 'mfas' | 'db' = 'mfas'. 'mfas' reproduces the generator's 8-bit greyscale
    image divided by 255 (high power = dark = low value, top row = highest frequency); 'db'
    gives min-max scaled dB in [0, 1] (high power = 1, row 0 = 0 Hz).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import zipfile
from typing import Any

import numpy as np

from data_pipelines import audio
from data_pipelines import audio_features
from data_pipelines import base
from data_pipelines.base import DataError
from data_pipelines.registry import register

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ROOT = os.path.join(REPO_ROOT, "..", "shared", "data")
DEFAULT_CACHE = os.path.join("~", ".cache", "clcr_jax", "avmnist")
NUM_CLASSES = 10
PAIR_COLUMNS = ("mnist_index", "label", "fsdd_file", "multibench_split")
RECIPE_VERSION = "mfas-avmnist-audio-v1"


# ---------------------------------------------------------------------------------------------
# MNIST and the pairing tables
# ---------------------------------------------------------------------------------------------
def read_idx(path: str, magic: int) -> np.ndarray:
  """uint8 array of an MNIST idx file (.gz): magic 2049 labels [N], 2051 images [N, 28, 28]."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found") from e
  except OSError as e:
    raise DataError(f"{path}: not a gzip file ({e})") from e
  ndim = magic - 2048
  header = 4 + 4 * ndim
  if len(data) < header or int.from_bytes(data[:4], "big") != magic:
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    raise DataError(f"{path}: expected idx magic number {magic}, found {found}")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  if len(data) - header != int(np.prod(shape)):
    raise DataError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes), file has "
                    f"{len(data) - header} bytes of data")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_mnist_train(folder: str, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """uint8 [60000, 28, 28] from train_images_part*.npz, checked against the official labels."""
  parts = sorted(f for f in os.listdir(folder)
                 if f.startswith("train_images_part") and f.endswith(".npz"))
  if not parts:
    raise DataError(f"{folder}: no train_images_part*.npz files")
  images, indices, files = [], [], []
  for name in parts:
    path = os.path.join(folder, name)
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
      raise DataError(f"{path}: cannot read as .npz without pickle ({e})") from e
    for key in ("images", "labels", "indices"):
      if key not in arrays:
        raise DataError(f"{path}: missing key {key!r}; found keys {sorted(arrays)}")
    img = base.check_array(arrays["images"], where=f"{path}['images']", shape=(None, 28, 28))
    idx = base.check_array(arrays["indices"], where=f"{path}['indices']", shape=(len(img),))
    lab = base.check_array(arrays["labels"], where=f"{path}['labels']", shape=(len(img),))
    bad = np.flatnonzero((idx < 0) | (idx >= len(labels)))
    if len(bad):
      raise DataError(f"{path}['indices']: row {int(bad[0])} is {int(idx[bad[0]])}, outside "
                      f"[0, {len(labels)})")
    if not np.array_equal(lab, labels[idx]):
      r = int(np.flatnonzero(lab != labels[idx])[0])
      raise DataError(f"{path}['labels']: row {r} (MNIST index {int(idx[r])}) is "
                      f"{int(lab[r])}, but train-labels-idx1-ubyte.gz says {int(labels[idx[r]])}")
    images.append(img)
    indices.append(idx)
    files.append(path)
  order = np.concatenate(indices)
  if not np.array_equal(np.sort(order), np.arange(len(labels))):
    raise DataError(f"{folder}: train_images_part*.npz indices do not cover MNIST train 0.."
                    f"{len(labels) - 1} exactly once ({len(order)} rows)")
  out = np.empty((len(labels), 28, 28), np.uint8)
  out[order] = np.concatenate(images)
  return out, files


@dataclasses.dataclass
class _Pairs:
  mnist_index: np.ndarray  # int64 [n]
  label: np.ndarray        # int32 [n]
  fsdd_file: list[str]
  split: np.ndarray        # str [n]


def read_pairs(path: str, allowed_splits: set[str], mnist_labels: np.ndarray) -> _Pairs:
  """Reads a pairing table and checks every row against MNIST and the recording's name."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found") from e
  if not rows:
    raise DataError(f"{path}: empty file")
  header = rows[0]
  missing = [c for c in PAIR_COLUMNS if c not in header]
  if missing:
    raise DataError(f"{path}: missing column(s) {missing}; found header {header}")
  col = {c: header.index(c) for c in PAIR_COLUMNS}
  index, label, files, split = [], [], [], []
  for line, row in enumerate(rows[1:], start=2):
    try:
      i, y = int(row[col["mnist_index"]]), int(row[col["label"]])
      name, s = row[col["fsdd_file"]], row[col["multibench_split"]]
    except (ValueError, IndexError) as e:
      raise DataError(f"{path} line {line}: cannot parse {row} ({e})") from e
    if not 0 <= i < len(mnist_labels):
      raise DataError(f"{path} line {line}: mnist_index {i} outside [0, {len(mnist_labels)})")
    if not 0 <= y < NUM_CLASSES or y != mnist_labels[i]:
      raise DataError(f"{path} line {line}: label {y}, but MNIST image {i} is a "
                      f"{int(mnist_labels[i])}")
    if not name.split("_", 1)[0] == str(y):
      raise DataError(f"{path} line {line}: recording {name!r} is not a spoken {y}")
    if s not in allowed_splits:
      raise DataError(f"{path} line {line}: multibench_split {s!r}, expected one of "
                      f"{sorted(allowed_splits)}")
    index.append(i)
    label.append(y)
    files.append(name)
    split.append(s)
  return _Pairs(np.asarray(index, np.int64), np.asarray(label, np.int32), files,
                np.asarray(split))


# ---------------------------------------------------------------------------------------------
# image PCA
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pca:
  mean: np.ndarray        # float64 [784]
  components: np.ndarray  # float64 [784, k], orthonormal columns, by decreasing variance
  explained: float        # fraction of the fit set's variance the k components keep

  def transform(self, x: np.ndarray) -> np.ndarray:
    """float32 [n, k] coefficients of x float32 [n, 784]."""
    # x @ W - mean @ W: no [n, 784] float64 temporary.
    shift = (self.mean @ self.components).astype(np.float32)
    return x.astype(np.float32) @ self.components.astype(np.float32) - shift


def fit_pca(x: np.ndarray, variance: float, chunk: int = 8192) -> Pca:
  """PCA of x [n, d] keeping the fewest leading components whose variance share >= `variance`."""
  x = np.asarray(x)
  mean = x.mean(axis=0, dtype=np.float64)
  cov = np.zeros((x.shape[1], x.shape[1]))
  for start in range(0, len(x), chunk):
    # float32 products of centred chunks (fast sgemm), summed in float64 across chunks.
    xc = (x[start:start + chunk] - mean.astype(x.dtype)).astype(np.float32)
    cov += xc.T @ xc
  eigval, eigvec = np.linalg.eigh(cov)
  eigval, eigvec = np.clip(eigval[::-1], 0, None), eigvec[:, ::-1]
  share = np.cumsum(eigval) / eigval.sum()
  k = int(np.searchsorted(share, variance - 1e-12) + 1)
  comps = eigvec[:, :k]
  # Fix each eigenvector's sign (largest entry positive) so coefficients are reproducible.
  comps = comps * np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(k)])
  return Pca(mean, comps, float(share[k - 1]))


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Split:
  image: np.ndarray      # float32 [n, k]
  recording: np.ndarray  # int64 [n], row of the audio table
  label: np.ndarray      # int32 [n]
  mnist_index: np.ndarray
  fsdd_file: list[str]


@register("avmnist")
class AvMnistReader(base.DatasetReader):
  """AV-MNIST in memory: PCA image vectors per row, one spectrogram per distinct recording."""
  KNOWN_SPLIT_SIZES = {"MultiBench AV-MNIST": {"train": 55000, "valid": 5000, "test": 10000}}

  def __init__(self, config):
    super().__init__(config)
    self.root = os.path.abspath(os.path.expanduser(config.get("root", "") or DEFAULT_ROOT))
    cache = config.get("cache_dir", None)
    self.cache_dir = os.path.expanduser(DEFAULT_CACHE if cache is None else cache)
    self.audio_render = config.get("audio_render", None) or "mfas"
    if self.audio_render not in ("mfas", "db"):
      raise ValueError(f"config.data.audio_render must be 'mfas' or 'db', "
                       f"found {self.audio_render!r}")
    variance = float(config.get("pca_variance", None) or 0.25)
    if not 0 < variance <= 1:
      raise ValueError(f"config.data.pca_variance must be in (0, 1], found {variance}")
    max_train = config.get("max_train_examples", None)
    max_eval = config.get("max_eval_examples", None)
    mnist, pairs_dir = os.path.join(self.root, "mnist"), os.path.join(self.root, "avmnist_pairs")
    if not os.path.isdir(self.root):
      raise DataError(f"config.data.root={self.root!r}: folder not found")
    self._files: list[str] = []

    test_images = base.check_array(
        self._idx(os.path.join(mnist, "t10k-images-idx3-ubyte.gz"), 2051),
        where=os.path.join(mnist, "t10k-images-idx3-ubyte.gz"), shape=(None, 28, 28))
    test_labels = self._idx(os.path.join(mnist, "t10k-labels-idx1-ubyte.gz"), 2049)
    train_labels = self._idx(os.path.join(mnist, "train-labels-idx1-ubyte.gz"), 2049)
    if len(test_images) != len(test_labels):
      raise DataError(f"{mnist}: {len(test_images)} test images but {len(test_labels)} labels")
    train_images, part_files = read_mnist_train(mnist, train_labels)
    self._files += part_files
    pairs_train = self._pairs(os.path.join(pairs_dir, "pairs_train.csv"), {"train", "valid"},
                              train_labels)
    pairs_test = self._pairs(os.path.join(pairs_dir, "pairs_test.csv"), {"test"}, test_labels)

    # Rows per split, in table order, then the optional CI subsets.
    chosen: dict[str, tuple[_Pairs, np.ndarray, np.ndarray]] = {}
    for split, pairs, images, limit in (("train", pairs_train, train_images, max_train),
                                        ("valid", pairs_train, train_images, max_eval),
                                        ("test", pairs_test, test_images, max_eval)):
      rows = np.flatnonzero(pairs.split == split)
      if limit is not None:
        if int(limit) < len(rows):
          logging.info("avmnist: keeping the first %d of %d %s rows", int(limit), len(rows),
                       split)
        rows = rows[:int(limit)]
      if not len(rows):
        raise DataError(f"{pairs_dir}: no rows in split {split!r}")
      chosen[split] = (pairs, rows, images)

    pixels = {split: (images[pairs.mnist_index[rows]].reshape(-1, 784).astype(np.float32)
                      / np.float32(255)) for split, (pairs, rows, images) in chosen.items()}
    self.pca = fit_pca(pixels["train"], variance)
    self.pca_fit_rows = len(chosen["train"][1])
    logging.info("avmnist: image PCA on %d train rows keeps %d components (%.1f %% of variance)",
                 self.pca_fit_rows, self.pca.components.shape[1], 100 * self.pca.explained)

    recordings = sorted({pairs.fsdd_file[r] for pairs, rows, _ in chosen.values() for r in rows})
    self.recordings = recordings
    self.cache_stats = {"computed": 0, "cached": 0}
    self._audio = self._spectrograms(recordings)
    slot = {name: i for i, name in enumerate(recordings)}
    self._splits: dict[str, _Split] = {}
    for split, (pairs, rows, _) in chosen.items():
      files = [pairs.fsdd_file[r] for r in rows]
      self._splits[split] = _Split(
          image=self.pca.transform(pixels.pop(split)),
          recording=np.asarray([slot[f] for f in files], np.int64),
          label=pairs.label[rows], mnist_index=pairs.mnist_index[rows], fsdd_file=files)

  # -- reading helpers ---------------------------------------------------------------------------
  def _idx(self, path: str, magic: int) -> np.ndarray:
    self._files.append(path)
    return read_idx(path, magic)

  def _pairs(self, path: str, splits: set[str], labels: np.ndarray) -> _Pairs:
    self._files.append(path)
    return read_pairs(path, splits, labels)

  def _recipe_hash(self) -> str:
    recipe = {"version": RECIPE_VERSION, "render": self.audio_render,
              "shape": [audio_features.F_LENGTH, audio_features.T_LENGTH],
              "nfft": audio_features.NFFT}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

  def _spectrograms(self, recordings: list[str]) -> np.ndarray:
    """[R, 112, 112] table (uint8 for 'mfas', float32 for 'db'), through the cache."""
    folder = os.path.join(self.root, "fsdd", "recordings")
    cache = os.path.join(self.cache_dir, self._recipe_hash()) if self.cache_dir else ""
    if cache:
      try:
        os.makedirs(cache, exist_ok=True)
      except OSError as e:
        logging.warning("avmnist: cannot create cache %s (%s); computing without it", cache, e)
        cache = ""
    dtype = np.uint8 if self.audio_render == "mfas" else np.float32
    table = np.empty((len(recordings), audio_features.F_LENGTH, audio_features.T_LENGTH), dtype)
    for i, name in enumerate(recordings):
      path = os.path.join(folder, name)
      self._files.append(path)
      try:
        with open(path, "rb") as f:
          data = f.read()
      except FileNotFoundError as e:
        raise DataError(f"{path}: file not found (named in the pairing table)") from e
      cached = (os.path.join(cache, f"{name[:-4]}-{hashlib.sha256(data).hexdigest()[:16]}.npy")
                if cache else "")
      if cached and os.path.isfile(cached):
        spec = np.load(cached, allow_pickle=False)
        if spec.shape == table.shape[1:] and spec.dtype == dtype:
          table[i] = spec
          self.cache_stats["cached"] += 1
          continue
        logging.warning("avmnist: ignoring malformed cache file %s", cached)
      samples, rate = audio.read_wav(path, data)
      # The spectrogram is of one signal [L]: a multi-channel recording is averaged.
      samples = samples[0] if len(samples) == 1 else samples.T.mean(axis=1)
      table[i] = audio_features.avmnist_spectrogram(samples, rate, self.audio_render, where=path)
      self.cache_stats["computed"] += 1
      if cached:
        tmp = f"{cached}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
          np.save(f, table[i])
        os.replace(tmp, cached)  # atomic: concurrent readers never see half a file
    logging.info("avmnist: spectrograms of %d recordings (%d computed, %d from %s)",
                 len(recordings), self.cache_stats["computed"], self.cache_stats["cached"],
                 cache or "no cache")
    return table

  # -- DatasetReader -----------------------------------------------------------------------------
  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._splits)

  @property
  def modalities(self) -> dict[str, base.ModalitySpec]:
    k = self.pca.components.shape[1]
    f, t = audio_features.F_LENGTH, audio_features.T_LENGTH
    return {"image": base.ModalitySpec(shape=(k,), kind="vector", mask_length=1),
            "audio": base.ModalitySpec(shape=(f, t), kind="spectrogram", mask_length=t)}

  @property
  def task(self) -> base.TaskSpec:
    return base.TaskSpec("classification", num_classes=NUM_CLASSES,
                         class_names=tuple(str(d) for d in range(NUM_CLASSES)))

  def num_examples(self, split: str) -> int:
    return len(self._split(split).label)

  def _split(self, split: str) -> _Split:
    if split not in self._splits:
      raise DataError(f"split {split!r} not found; available splits: {list(self._splits)}")
    return self._splits[split]

  def load_examples(self, split, indices, *, train, seeds=None) -> dict[str, Any]:
    del train, seeds  # fixed features: no augmentation
    s = self._split(split)
    idx = np.asarray(indices, np.int64)
    audio = self._audio[s.recording[idx]]
    if audio.dtype == np.uint8:
      audio = audio.astype(np.float32) / np.float32(255.0)
    n = len(idx)
    return {"inputs": {"image": s.image[idx], "audio": audio},
            "masks": {"image": np.ones((n, 1), bool),
                      "audio": np.ones((n, audio_features.T_LENGTH), bool)},
            "label": s.label[idx]}

  def pairs(self, split: str) -> tuple[np.ndarray, list[str]]:
    """(MNIST indices int64 [n], FSDD file names) of the rows of `split`, in row order."""
    s = self._split(split)
    return s.mnist_index.copy(), list(s.fsdd_file)

  @property
  def files(self):
    return tuple(self._files)
