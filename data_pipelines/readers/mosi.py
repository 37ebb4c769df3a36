"""CMU-MOSI and CMU-MOSEI from MMSA or MulT pickles (registered as 'mosi' and 'mosei').

Both datasets share one implementation; they differ only in file names, known split sizes and
published checksums. See docs/data.md, MOSI and MOSEI, for the two formats.

config.data fields (name: type = default):
  name: 'mosi' | 'mosei'.
  root: str = ''. Folder holding the pickle; `root/Processed/` is searched too (MMSA's layout).
  path: str = ''. Explicit pickle file; when set, `root`, `format` lookup and `aligned` lookup
    are skipped and the format is read from the file's keys.
  format: 'auto' | 'mmsa' | 'mult' = 'auto'. 'auto' looks for the MMSA file first, then MulT's.
  aligned: bool = False. Picks `aligned_50.pkl` / `unaligned_50.pkl` (MMSA) or
    `{mosi,mosei_senti}_data.pkl` / `..._data_noalign.pkl` (MulT).
  text_field: 'text' | 'text_bert' = 'text'. MMSA only: 'text' gives BERT features [50, 768];
    'text_bert' gives the tokenizer rows [3, 50] (input ids, attention mask, segment ids as
    float32, exact for ids < 2**24) for a model that fine-tunes BERT.
  padding_side: 'auto' | 'left' | 'right' = 'auto'. Where sequences are zero-padded; 'auto'
    detects it per split and modality (below).
  nan_to_zero: bool = False. NaN/+inf in features raise DataError unless this is True, in which
    case they become 0 with a logged count. (-inf always becomes 0, as in MMSA and MulT.)

Output: modalities 'text', 'audio', 'vision' (float32 [T, D], kind 'sequence'; 'text' with
text_field='text_bert' is float32 [3, T], kind 'token_ids'); task regression; label float32 [N]
(MMSA `regression_labels`, MulT `labels` (N, 1, 1) flattened); splits 'train', 'valid', 'test'.

Masks (bool [T]):
  * MMSA files with `audio_lengths`/`vision_lengths`: the lengths, placed on the padding side.
    'auto' picks the side whose out-of-length frames are all zero in every row; if neither side
    is all zero, a DataError names the row (set `padding_side` to trust the lengths anyway).
  * text, when the file has `text_bert`: row 1 of `text_bert` (the BERT attention mask); BERT
    features are not zero at padded tokens, so zeros cannot tell padding there.
  * otherwise (MMSA aligned, all of MulT): no lengths exist, so padding is read from the frames:
    the run of all-zero frames at the padded end is masked out. 'auto' takes the end where the
    rows have the longer zero runs (majority over rows; ties: 'left' for MulT, whose authors
    left-pad, and 'right' for MMSA, as MMSA-FET pads). Zero frames inside a sequence stay valid;
    an all-zero row gets an all-False mask and is counted in the log.

Pickles are loaded only through `data_pipelines.safe_pickle` (numpy arrays and builtins only).
MulT `id` rows (video id, start, end; bytes in MOSI) are decoded to 'vid$_$start$_$end' strings,
available through `example_ids(split)`.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from data_pipelines import base
from data_pipelines import safe_pickle
from data_pipelines import sequence_masks as sm
from data_pipelines.base import DataError
from data_pipelines.registry import register

SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
LABEL_RANGE = (-3.0, 3.0)


def _option(config, key: str, default, allowed=None):
  value = config.get(key, default)
  if value is None:
    value = default
  if allowed is not None and value not in allowed:
    raise ValueError(f"config.data.{key} must be one of {allowed}, found {value!r}")
  return value


class _MsaReader(base.InMemoryReader):
  """MMSA / MulT pickle reader; subclasses fix the dataset's file names and known versions."""
  DATASET = "MSA"
  MULT_FILES: dict[bool, str] = {}
  KNOWN_SHA256: dict[str, str] = {}

  def __init__(self, config):
    super().__init__(config)
    self._format = _option(config, "format", "auto", ("auto", "mmsa", "mult"))
    self._aligned = bool(_option(config, "aligned", False))
    self._text_field = _option(config, "text_field", "text", ("text", "text_bert"))
    self._padding_side = _option(config, "padding_side", "auto", ("auto", "left", "right"))
    self._nan_to_zero = bool(_option(config, "nan_to_zero", False))
    self._path = self._resolve_path(config)
    raw = safe_pickle.load(self._path)
    if not isinstance(raw, dict):
      raise DataError(f"{self._path}: expected a dict with keys {list(SPLITS)}, "
                      f"found {type(raw).__name__}")
    missing = [s for s in SPLITS if s not in raw]
    if missing:
      raise DataError(f"{self._path}: missing split(s) {missing}; expected keys {list(SPLITS)}, "
                      f"found {sorted(map(str, raw))}")
    self._format = self._detect_format(raw)
    if self._format == "mult" and self._text_field != "text":
      raise ValueError("config.data.text_field='text_bert' needs an MMSA pickle; MulT pickles "
                       f"hold GloVe vectors only ({self._path})")
    self._ids: dict[str, list[str]] = {}
    self.padding: dict[str, dict[str, str]] = {}
    for split in SPLITS:
      self._arrays[split] = self._read_split(raw, split)
      raw[split] = None  # frees the split's other arrays before the next one is converted
    self._check_across_splits()
    self._task = base.TaskSpec("regression")
    self._kinds = {m: "sequence" for m in MODALITIES}
    if self._text_field == "text_bert":
      self._kinds["text"] = "token_ids"

  # -- locating and recognising the file -----------------------------------------------------
  def _candidates(self, root: str) -> list[str]:
    mmsa = "aligned_50.pkl" if self._aligned else "unaligned_50.pkl"
    names = []
    if self._format in ("auto", "mmsa"):
      names += [mmsa, os.path.join("Processed", mmsa)]
    if self._format in ("auto", "mult"):
      names += [self.MULT_FILES[self._aligned]]
    return [os.path.join(root, n) for n in names]

  def _resolve_path(self, config) -> str:
    path = os.path.expanduser(config.get("path", "") or "")
    if path:
      if not os.path.isfile(path):
        raise DataError(f"config.data.path={path!r}: file not found")
      return path
    root = os.path.expanduser(config.get("root", "") or "")
    if not root:
      raise ValueError(f"config.data.root (or config.data.path) must be set for {self.DATASET}")
    tried = self._candidates(root)
    for p in tried:
      if os.path.isfile(p):
        return p
    raise DataError(f"no {self.DATASET} pickle found (format={self._format!r}, "
                    f"aligned={self._aligned}); looked for: {', '.join(tried)}")

  def _detect_format(self, raw: dict) -> str:
    keys = raw["train"].keys() if isinstance(raw["train"], dict) else ()
    found = "mmsa" if "regression_labels" in keys else "mult" if "labels" in keys else None
    if found is None:
      raise DataError(f"{self._path}['train']: missing key 'regression_labels' (MMSA) or "
                      f"'labels' (MulT); found keys {sorted(map(str, keys))}")
    if self._format != "auto" and found != self._format:
      raise DataError(f"{self._path}: config.data.format={self._format!r} but the file looks "
                      f"like a {found!r} pickle")
    return found

  # -- one split -----------------------------------------------------------------------------
  def _get(self, d: dict, key: str, where: str):
    if key not in d:
      raise DataError(f"{where}: missing key {key!r}; found keys {sorted(map(str, d))}")
    return d[key]

  def _features(self, d: dict, key: str, where: str) -> np.ndarray:
    """float32 [N, T, D] with -inf -> 0 (logged) and NaN/+inf refused unless nan_to_zero."""
    x = np.asarray(self._get(d, key, where))
    where = f"{where}[{key!r}]"
    if x.dtype.kind not in "fiub":
      raise DataError(f"{where}: expected a numeric array, found dtype {x.dtype}")
    if x.ndim != 3:
      raise DataError(f"{where}: expected a rank-3 array [N, T, D], found shape {x.shape}")
    if x.dtype != np.float32:
      logging.info("%s: casting %s to float32", where, x.dtype)
      x = x.astype(np.float32)
    # In place: the unpickled arrays are ours and dropped after conversion; MOSEI is big.
    neg_inf = np.isneginf(x)
    if neg_inf.any():
      logging.info("%s: replaced %d -inf values by 0", where, int(neg_inf.sum()))
      x[neg_inf] = 0
    bad = ~np.isfinite(x)
    if bad.any():
      row = int(np.argwhere(bad)[0][0])
      if not self._nan_to_zero:
        raise DataError(f"{where}: {int(bad.sum())} NaN/+inf values, first in row {row}; "
                        "set config.data.nan_to_zero=True to replace them by 0")
      logging.warning("%s: replaced %d NaN/+inf values by 0 (nan_to_zero)", where, int(bad.sum()))
      x[bad] = 0
    return x

  def _labels(self, d: dict, key: str, where: str) -> np.ndarray:
    where_key = f"{where}[{key!r}]"
    y = np.asarray(self._get(d, key, where))
    if y.dtype.kind not in "fiu":
      raise DataError(f"{where_key}: expected numeric labels, found dtype {y.dtype}")
    if y.ndim == 0 or y.size != y.shape[0]:
      raise DataError(f"{where_key}: expected one label per row, shape (N,), (N, 1) or "
                      f"(N, 1, 1); found {y.shape}")
    if y.dtype != np.float32 or y.ndim != 1:
      logging.info("%s: %s %s labels read as float32 (%d,)", where_key, y.dtype, y.shape, len(y))
    y = y.reshape(-1).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(y) | (y < LABEL_RANGE[0]) | (y > LABEL_RANGE[1]))
    if len(bad):
      r = int(bad[0])
      raise DataError(f"{where_key}: row {r} has label {y[r]}, expected a finite value in "
                      f"{list(LABEL_RANGE)}; {len(bad)} such rows")
    return y

  def _read_split(self, raw: dict, split: str) -> dict[str, Any]:
    where = f"{self._path}[{split!r}]"
    d = raw[split]
    if not isinstance(d, dict):
      raise DataError(f"{where}: expected a dict of arrays, found {type(d).__name__}")
    mmsa = self._format == "mmsa"
    label = self._labels(d, "regression_labels" if mmsa else "labels", where)
    n = len(label)
    inputs, masks, sides = {}, {}, {}
    default_side = "right" if mmsa else "left"
    for m in MODALITIES:
      key = self._text_field if m == "text" else m
      x = self._features(d, key, where)
      if len(x) != n:
        raise DataError(f"{where}: {key!r} has {len(x)} rows but the labels have {n}; every "
                        "modality must have one row per label")
      if key == "text_bert":
        masks[m], sides[m] = self._bert_mask(x, f"{where}['text_bert']"), "right"
        self._has_lengths[m] = True
      elif m == "text" and mmsa and "text_bert" in d:
        bert = self._features(d, "text_bert", where)
        if bert.shape[0] != n or bert.shape[1:] != (3, x.shape[1]):
          raise DataError(f"{where}['text_bert']: expected shape ({n}, 3, {x.shape[1]}) to match "
                          f"'text', found {bert.shape}")
        masks[m], sides[m] = self._bert_mask(bert, f"{where}['text_bert']"), "right"
        self._has_lengths[m] = True
      elif mmsa and f"{m}_lengths" in d:
        lkey = f"{m}_lengths"
        lengths = sm.read_lengths(d[lkey], n=n, max_len=x.shape[1], where=f"{where}[{lkey!r}]")
        side = self._padding_side
        if side == "auto":
          side = sm.side_from_lengths(x, lengths, where=f"{where}[{m!r}] with {lkey!r}")
        masks[m], sides[m] = sm.lengths_to_mask(lengths, x.shape[1], side), side
        hidden = sm.count_masked_content(x, masks[m])
        if hidden:
          logging.warning("%s[%r]: %d rows have nonzero frames outside %r (padding_side=%s); "
                          "the mask hides them", where, m, hidden, lkey, side)
        self._has_lengths[m] = True
      else:
        masks[m], sides[m], counts = sm.mask_from_zero_frames(x, self._padding_side, default_side)
        logging.info("%s[%r]: no lengths; masks from all-zero frames, padding side %s (%s)",
                     where, m, sides[m], counts)
      empty = int(np.sum(~masks[m].any(axis=1)))
      if empty:
        logging.warning("%s[%r]: %d rows have no valid frame (all-False mask)", where, m, empty)
      inputs[m] = x
    self.padding[split] = sides
    self._ids[split] = self._decode_ids(d.get("id"), n, where)
    return {"inputs": inputs, "masks": masks, "label": label}

  def _bert_mask(self, bert: np.ndarray, where: str) -> np.ndarray:
    if bert.shape[1] != 3:
      raise DataError(f"{where}: expected shape (N, 3, T) (input ids, attention mask, segment "
                      f"ids), found {bert.shape}")
    if not np.all(bert == np.round(bert)):
      raise DataError(f"{where}: expected integer-valued token ids and masks")
    att = bert[:, 1, :]
    if not np.all((att == 0) | (att == 1)):
      r = int(np.argwhere((att != 0) & (att != 1))[0][0])
      raise DataError(f"{where}: row 1 (attention mask) must be 0/1; row {r} is not")
    return att > 0

  def _decode_ids(self, ids, n: int, where: str) -> list[str]:
    if ids is None:
      return [str(i) for i in range(n)]
    arr = np.asarray(ids)
    if len(arr) != n:
      raise DataError(f"{where}['id']: expected {n} rows, found {len(arr)}")

    def text(v) -> str:
      if isinstance(v, (bytes, np.bytes_)):
        try:
          return bytes(v).decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(f"{where}['id']: undecodable bytes {bytes(v)[:40]!r}") from e
      return str(v)
    if arr.ndim == 1:
      return [text(v) for v in arr]
    return ["$_$".join(text(v) for v in row) for row in arr.reshape(n, -1)]

  def _check_across_splits(self) -> None:
    for m in MODALITIES:
      shapes = {s: self._arrays[s]["inputs"][m].shape[1:] for s in SPLITS}
      if len(set(shapes.values())) > 1:
        raise DataError(f"{self._path}: modality {m!r} has per-row shape "
                        + ", ".join(f"{v} in {s!r}" for s, v in shapes.items())
                        + "; every split must share T and D")

  # -- extras ----------------------------------------------------------------------------------
  def example_ids(self, split: str) -> list[str]:
    """Row ids of `split` ('<video_id>$_$<clip_id>' in MMSA, 'vid$_$start$_$end' in MulT)."""
    return list(self._ids[split])

  @property
  def files(self):
    return (self._path,)

  def fingerprint(self, hash_files: bool = True) -> dict[str, Any]:
    info = super().fingerprint(hash_files)
    info.update(format=self._format, aligned=self._aligned, text_field=self._text_field,
                padding=self.padding)
    if hash_files:
      sha = info["files"][self._path]["sha256"]
      info["known_file"] = self.KNOWN_SHA256.get(sha)
    logging.info("Data fingerprint: %s", {k: v for k, v in info.items() if k != "task"})
    return info


@register("mosi")
class MosiReader(_MsaReader):
  DATASET = "CMU-MOSI"
  MULT_FILES = {True: "mosi_data.pkl", False: "mosi_data_noalign.pkl"}
  KNOWN_SPLIT_SIZES = {
      "CMU standard folds (MMSA, MulT)": {"train": 1284, "valid": 229, "test": 686},
      "CMU SDK re-extraction": {"train": 1283, "valid": 214, "test": 686},
  }
  # thuiar/MMSA README (commit a94e65d).
  KNOWN_SHA256 = {
      "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524":
          "MMSA MOSI/Processed/unaligned_50.pkl",
      "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9":
          "MMSA MOSI/Processed/aligned_50.pkl",
  }


@register("mosei")
class MoseiReader(_MsaReader):
  DATASET = "CMU-MOSEI"
  MULT_FILES = {True: "mosei_senti_data.pkl", False: "mosei_senti_data_noalign.pkl"}
  KNOWN_SPLIT_SIZES = {
      "MMSA / MulT": {"train": 16326, "valid": 1871, "test": 4659},
      "CMU SDK re-extraction, aligned": {"train": 16327, "valid": 1871, "test": 4662},
      "CMU SDK re-extraction, unaligned": {"train": 16322, "valid": 1871, "test": 4659},
  }
  KNOWN_SHA256 = {
      "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f":
          "MMSA MOSEI/Processed/unaligned_50.pkl",
      "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791":
          "MMSA MOSEI/Processed/aligned_50.pkl",
  }
