"""Padding masks of zero-padded feature sequences, shared by the sequence readers (readers/mosi.py,
readers/features.py): pure numpy functions of arrays x [n, T, ...], lengths int [n] and masks
bool [n, T] (True on real frames).

Padding sits on one side of every row, 'left' or 'right'. It is read from per-row lengths
when a file stores them (`read_lengths`, `lengths_to_mask`, `side_from_lengths`) and
otherwise from the run of all-zero frames at the padded end (`mask_from_zero_frames`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines.base import DataError


def read_lengths(lengths: Any, *, n: int, max_len: int, where: str) -> np.ndarray:
  """Validates a length array: int64 [n], 0 <= length <= max_len, else DataError."""
  try:
    arr = np.asarray(lengths)
  except (TypeError, ValueError) as e:
    raise DataError(f"{where}: expected an integer array of lengths, found {type(lengths)}") from e
  if arr.ndim != 1 or len(arr) != n:
    raise DataError(f"{where}: expected shape ({n},) (one length per row), found {arr.shape}")
  if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and
                                     not np.all(np.isfinite(arr) & (arr == np.round(arr)))):
    raise DataError(f"{where}: expected integer lengths, found dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  bad = np.flatnonzero((arr < 0) | (arr > max_len))
  if len(bad):
    r = int(bad[0])
    raise DataError(f"{where}: row {r} has length {int(arr[r])}, outside [0, {max_len}] (the "
                    f"padded array has {max_len} frames); {len(bad)} such rows")
  return arr


def lengths_to_mask(lengths: np.ndarray, max_len: int, side: str) -> np.ndarray:
  """bool [n, max_len]: True on the `lengths` real frames, padding on `side` ('left'/'right')."""
  t = np.arange(max_len)[None, :]
  if side == "left":
    return t >= (max_len - lengths)[:, None]
  return t < lengths[:, None]


def side_from_lengths(x: np.ndarray, lengths: np.ndarray, *, where: str) -> str:
  """'left' or 'right': the side whose out-of-length frames are all zero in every row.

  Rows where both sides qualify (e.g. full length) do not vote; if every row qualifies for both,
  'right' is returned. Raises DataError when no side fits every row.
  """
  t_max = x.shape[1]
  content = np.any(x.reshape(x.shape[0], t_max, -1) != 0, axis=2)  # [n, T]
  right_ok = ~np.any(content & ~lengths_to_mask(lengths, t_max, "right"), axis=1)
  left_ok = ~np.any(content & ~lengths_to_mask(lengths, t_max, "left"), axis=1)
  if right_ok.all():
    return "right"
  if left_ok.all():
    return "left"
  both = np.flatnonzero(~right_ok & ~left_ok)
  if len(both):
    r = int(both[0])
    detail = (f"row {r} (length {int(lengths[r])} of {t_max}) has nonzero frames outside its "
              "length whichever side is the padding")
  else:
    detail = (f"row {int(np.flatnonzero(~right_ok)[0])} fits only left padding and row "
              f"{int(np.flatnonzero(~left_ok)[0])} only right padding")
  raise DataError(f"{where}: cannot tell the padding side from the lengths: {detail}; set "
                  "config.data.padding_side='left' or 'right' to trust the lengths")


def count_masked_content(x: np.ndarray, mask: np.ndarray) -> int:
  """Rows of x [n, T, ...] with a nonzero frame where `mask` [n, T] is False."""
  content = np.any(x.reshape(x.shape[0], x.shape[1], -1) != 0, axis=2)
  return int(np.sum(np.any(content & ~mask, axis=1)))


def zero_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(leading, trailing) int64 [n]: all-zero frames at the start / end of each row of [n, T, ...].

  An all-zero row counts T for both.
  """
  t_max = x.shape[1]
  content = np.any(x.reshape(x.shape[0], t_max, -1) != 0, axis=2)
  has = content.any(axis=1)
  lead = np.where(has, np.argmax(content, axis=1), t_max)
  trail = np.where(has, np.argmax(content[:, ::-1], axis=1), t_max)
  return lead.astype(np.int64), trail.astype(np.int64)


def mask_from_zero_frames(x: np.ndarray, side: str, default_side: str) -> tuple[np.ndarray, str,
                                                                                  dict[str, int]]:
  """Masks padding = the all-zero frames at the padded end of each row.

  Args:
    x: [n, T, D] features.
    side: 'auto', 'left' or 'right'.
    default_side: the side 'auto' picks when the rows do not decide.
  Returns:
    (bool [n, T] mask, side used, counts for the log).
  """
  t_max = x.shape[1]
  lead, trail = zero_runs(x)
  votes = {"left": int(np.sum(lead > trail)), "right": int(np.sum(trail > lead))}
  if side == "auto":
    if votes["left"] == votes["right"]:
      side = default_side
    else:
      side = max(votes, key=votes.get)
  pad = lead if side == "left" else trail
  mask = lengths_to_mask(t_max - pad, t_max, side)
  counts = dict(votes, empty_rows=int(np.sum(pad == t_max)), padded_rows=int(np.sum(pad > 0)))
  return mask, side, counts


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------
