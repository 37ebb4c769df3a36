"""Where a run's numbers go: metrics.jsonl, TensorBoard event files, and the console.

The TensorBoard writer encodes the event protocol buffers itself (a few fixed fields: wall time,
step, scalar summaries) so that it needs neither TensorFlow nor tensorboard installed: the GPU
and TPU images often have neither, and the events still open in any TensorBoard.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
import time
from typing import Any, Mapping

import numpy as np

# -- TFRecord framing with masked CRC-32C -------------------------------------------------------
_CRC_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data +
          struct.pack("<I", _masked_crc(data)))


# -- protobuf wire format for tensorflow.Event / Summary ----------------------------------------
def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
  return _varint((number << 3) | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
  return _field(number, 2, _varint(len(data)) + data)


def encode_event(wall_time: float, step: int, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
  """Event{wall_time=1 (double), step=2 (int64), file_version=3, summary=5{value=1{tag=1,
  simple_value=2 (float)}}}."""
  msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step & (2**64 - 1)))
  if file_version is not None:
    msg += _bytes_field(3, file_version.encode())
  if scalars:
    summary = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
        for tag, value in scalars.items())
    msg += _bytes_field(5, summary)
  return msg


class TensorBoardWriter:
  """Appends scalar events to `logdir/events.out.tfevents.<time>.<host>`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "ab")
    self._file.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
    self._file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    finite = {k: float(v) for k, v in scalars.items() if v is not None}
    if finite:
      self._file.write(tfrecord(encode_event(time.time(), step, finite)))
      self._file.flush()

  def close(self) -> None:
    self._file.close()


class JsonlWriter:
  """One JSON object per line: {"step": s, "split": ..., metric: value, ...}."""

  def __init__(self, path: str, truncate_after_step: int | None = None):
    self.path = path
    if truncate_after_step is not None and os.path.exists(path):
      # A resumed run redoes the steps after its checkpoint: drop what it will write again.
      with open(path) as f:
        keep = [l for l in f if l.strip() and json.loads(l)["step"] <= truncate_after_step]
      with open(path, "w") as f:
        f.writelines(keep)
    self._file = open(path, "a")

  def write(self, step: int, split: str, values: Mapping[str, Any]) -> None:
    record = {"step": int(step), "split": split}
    record.update({k: _plain(v) for k, v in values.items()})
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _plain(v):
  if isinstance(v, (np.floating, float)):
    return None if not math.isfinite(float(v)) else float(v)
  if isinstance(v, (np.integer, int)):
    return int(v)
  if isinstance(v, np.ndarray):
    return [_plain(x) for x in v.tolist()] if v.ndim else _plain(v.item())
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  return v


class MetricWriter:
  """Writes to metrics.jsonl and TensorBoard (on process 0 only), logs a progress line."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      self._jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step)
      if tensorboard:
        self._tb = TensorBoardWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(step, split, values)
    if self._tb is not None:
      scalars = {f"{split}/{k}": _plain(v) for k, v in values.items()
                 if np.ndim(v) == 0 and isinstance(_plain(v), (int, float))}
      self._tb.write_scalars(step, scalars)

  def close(self) -> None:
    for w in (self._jsonl, self._tb):
      if w is not None:
        w.close()


class Progress:
  """Console progress: step, epoch, loss, steps/s and ETA."""

  def __init__(self, total_steps: int, steps_per_epoch: int, start_step: int):
    self.total, self.per_epoch = total_steps, steps_per_epoch
    self._t0, self._s0 = time.time(), start_step

  def line(self, step: int, loss: float) -> str:
    elapsed = time.time() - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    return (f"step {step}/{self.total} (epoch {step / self.per_epoch:.2f}) loss {loss:.4f} | "
            f"{rate:.2f} steps/s | ETA {format_seconds(eta)}")

  def log(self, step: int, loss: float) -> None:
    logging.info("%s", self.line(step, loss))


def format_seconds(s: float) -> str:
  if not math.isfinite(s):
    return "?"
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")
