"""Writers of tiny on-disk fixtures in the exact layouts of docs/data.md (MOSI and MOSEI, Test
fixtures).

Each writer takes a folder (pytest's tmp_path), writes seeded numpy data in one format and returns
what a correct reader must produce from it, so tests compare against values computed here, not
against the reader's own logic.

  write_mmsa      MMSA pickle (aligned_50.pkl / unaligned_50.pkl), MOSI or MOSEI dims,
                  left- or right-padded, optionally pickled with numpy < 2 module paths
  write_mult      MulT pickle (mosi_data[_noalign].pkl, mosei_senti_data[_noalign].pkl)
  write_features  generic features: <split>.npz or <split>/<key>.npy
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

SIZES = {"train": 6, "valid": 3, "test": 5}
# Labels with the awkward values of docs/data.md, Test fixtures (exact zero, both ends, .5
# boundaries, thirds).
LABELS = {"train": [0.0, -3.0, 3.0, 2.5, -0.5, 1 / 3],
          "valid": [1.5, -1.5, 0.0],
          "test": [-2.5, 0.5, -1 / 3, 2.0, -2.0]}
DIMS = {"mosi": {"audio": 5, "vision": 20}, "mosei": {"audio": 74, "vision": 35}}
UNALIGNED_T = {"mosi": {"audio": 375, "vision": 500}, "mosei": {"audio": 500, "vision": 500}}
TEXT_T = 50


def lengths_for(n: int, t_max: int, rng: np.random.Generator, shortest: int = 1) -> np.ndarray:
  """int64 [n]: row 0 full length, row 1 `shortest`, the rest random in between."""
  out = rng.integers(max(shortest, 2), t_max, size=n)
  out[0] = t_max
  if n > 1:
    out[1] = shortest
  return out.astype(np.int64)


def mask_of(lengths: np.ndarray, t_max: int, side: str) -> np.ndarray:
  """bool [n, t_max], computed independently of the reader's helper."""
  mask = np.zeros((len(lengths), t_max), bool)
  for i, n in enumerate(lengths):
    if n:
      if side == "right":
        mask[i, :n] = True
      else:
        mask[i, t_max - n:] = True
  return mask


def padded(rng: np.random.Generator, lengths: np.ndarray, t_max: int, dim: int,
           side: str) -> np.ndarray:
  """float32 [n, t_max, dim]: normal values on the real frames, exact zeros on the padding."""
  x = rng.normal(size=(len(lengths), t_max, dim)).astype(np.float32)
  x[~mask_of(lengths, t_max, side)] = 0.0
  return x


def _mmsa_split(rng, split: str, n: int, *, dataset: str, aligned: bool, padding: str):
  labels = np.asarray(LABELS[split][:n] + [0.25] * max(0, n - len(LABELS[split])), np.float32)
  text_len = lengths_for(n, TEXT_T, rng, shortest=2)
  ids = np.zeros((n, 3, TEXT_T), np.float32)
  for i, k in enumerate(text_len):
    ids[i, 0, :k] = np.concatenate([[101], rng.integers(1000, 29000, size=k - 2), [102]])
    ids[i, 1, :k] = 1
  # BERT features are not zero on padded tokens: masks must come from text_bert.
  text = rng.normal(size=(n, TEXT_T, 768)).astype(np.float32)
  d = {"raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
       "id": [f"vid{split}{i // 2}$_${i}" for i in range(n)],
       "text": text, "text_bert": ids,
       "annotations": ["Positive" if y > 0 else "Negative" if y < 0 else "Neutral"
                       for y in labels],
       "classification_labels": np.sign(labels).astype(np.float32) + 1,
       "regression_labels": labels}
  expect_masks = {"text": mask_of(text_len, TEXT_T, "right")}
  for m in ("audio", "vision"):
    t_max = TEXT_T if aligned else UNALIGNED_T[dataset][m]
    lengths = text_len if aligned else lengths_for(n, t_max, rng)
    d[m] = padded(rng, lengths, t_max, DIMS[dataset][m], padding)
    expect_masks[m] = mask_of(lengths, t_max, padding)
    if not aligned:
      d[f"{m}_lengths"] = [int(v) for v in lengths]  # MMSA stores plain lists
  d["audio"][0, -1 if padding == "left" else 0, 0] = -np.inf  # a real frame of a full row
  expect_inputs = {"text": text.copy(), "audio": np.nan_to_num(d["audio"], neginf=0.0),
                   "vision": d["vision"].copy()}
  return d, {"inputs": expect_inputs, "masks": expect_masks, "label": labels,
             "text_bert": ids, "ids": list(d["id"])}


def write_mmsa(folder, *, aligned: bool, padding: str = "right", dataset: str = "mosi",
               sizes: dict[str, int] | None = None, seed: int = 0, numpy1_paths: bool = False,
               mutate=None) -> tuple[str, dict[str, Any]]:
  """Writes <folder>/{aligned,unaligned}_50.pkl; returns (path, {split: expected arrays}).

  `numpy1_paths` writes the module names numpy < 2 used (`numpy.core.multiarray`), as in the
  published files. `mutate(data)` may corrupt the dict before it is written.
  """
  rng = np.random.default_rng(seed)
  sizes = sizes or (SIZES if dataset == "mosi" else {"train": 2, "valid": 2, "test": 2})
  data, expected = {}, {}
  for split, n in sizes.items():
    data[split], expected[split] = _mmsa_split(rng, split, n, dataset=dataset, aligned=aligned,
                                               padding=padding)
  if mutate is not None:
    mutate(data)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, "aligned_50.pkl" if aligned else "unaligned_50.pkl")
  if numpy1_paths:
    # Protocol 2 names globals as text lines, so the module path can be rewritten in place.
    raw = pickle.dumps(data, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in raw
  else:
    raw = pickle.dumps(data, protocol=4)
  with open(path, "wb") as f:
    f.write(raw)
  return path, expected


MULT_FILES = {("mosi", True): "mosi_data.pkl", ("mosi", False): "mosi_data_noalign.pkl",
              ("mosei", True): "mosei_senti_data.pkl",
              ("mosei", False): "mosei_senti_data_noalign.pkl"}


def write_mult(folder, *, aligned: bool = False, dataset: str = "mosi",
               sizes: dict[str, int] | None = None, seed: int = 1,
               mutate=None) -> tuple[str, dict[str, Any]]:
  """Writes a MulT pickle (left-padded zeros, labels (N, 1, 1), bytes ids); returns expectations."""
  rng = np.random.default_rng(seed)
  sizes = sizes or (SIZES if dataset == "mosi" else {"train": 2, "valid": 2, "test": 2})
  data, expected = {}, {}
  for split, n in sizes.items():
    labels = np.asarray(LABELS[split][:n], np.float32)
    d, masks = {}, {}
    text_len = lengths_for(n, TEXT_T, rng)
    d["text"] = padded(rng, text_len, TEXT_T, 300, "left")
    masks["text"] = mask_of(text_len, TEXT_T, "left")
    for m in ("audio", "vision"):
      t_max = TEXT_T if aligned else UNALIGNED_T[dataset][m]
      lengths = text_len if aligned else lengths_for(n, t_max, rng)
      d[m] = padded(rng, lengths, t_max, DIMS[dataset][m], "left")
      masks[m] = mask_of(lengths, t_max, "left")
    d["audio"][0, -1, 1] = -np.inf
    inputs = {m: np.nan_to_num(d[m], neginf=0.0) for m in ("text", "audio", "vision")}
    d["labels"] = labels.reshape(n, 1, 1)
    d["id"] = np.array([[f"v{split}{i}".encode(), f"{i}.0".encode(), f"{i + 1}.5".encode()]
                        for i in range(n)])
    data[split] = d
    expected[split] = {"inputs": inputs, "masks": masks, "label": labels,
                       "ids": [f"v{split}{i}$_${i}.0$_${i + 1}.5" for i in range(n)]}
  if mutate is not None:
    mutate(data)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, MULT_FILES[(dataset, aligned)])
  with open(path, "wb") as f:
    pickle.dump(data, f, protocol=4)
  return path, expected


def features_split(rng, n: int, *, label: str = "int", t_max: int = 7, row_offset: int = 0,
                   num_segments: int = 3) -> dict[str, np.ndarray]:
  """One split of generic features: 'audio' [n, 7, 3] + lengths, 'video' [n, 4] (column 0 is
  the row number plus `row_offset`, so tests can tell rows apart), and a label."""
  lengths = lengths_for(n, t_max, rng)
  video = rng.normal(size=(n, 4)).astype(np.float32)
  video[:, 0] = np.arange(n) + row_offset
  arrays = {"audio": padded(rng, lengths, t_max, 3, "right"), "audio_lengths": lengths,
            "video": video}
  if label == "int":
    arrays["label"] = (np.arange(n) % 4).astype(np.int64)
  elif label == "float":
    arrays["label"] = rng.normal(size=n).astype(np.float64)
  elif label == "segments":
    arrays["label"] = rng.integers(0, 5, size=(n, num_segments))
  return arrays


def write_features(root, *, layout: str = "npz", label: str = "int",
                   sizes: dict[str, int] | None = None, seed: int = 2,
                   mutate=None) -> dict[str, dict[str, np.ndarray]]:
  """Writes <root>/<split>.npz (layout='npz') or <root>/<split>/<key>.npy ('npy'); returns the
  arrays written, per split."""
  rng = np.random.default_rng(seed)
  sizes = sizes or SIZES
  out = {}
  for split, n in sizes.items():
    arrays = features_split(rng, n, label=label)
    if mutate is not None:
      mutate(split, arrays)
    os.makedirs(root, exist_ok=True)
    if layout == "npz":
      np.savez(os.path.join(root, f"{split}.npz"), **arrays)
    else:
      os.makedirs(os.path.join(root, split), exist_ok=True)
      for key, value in arrays.items():
        np.save(os.path.join(root, split, f"{key}.npy"), value)
    out[split] = arrays
  return out
