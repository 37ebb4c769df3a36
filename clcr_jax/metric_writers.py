"""Where a run's numbers go: metrics.jsonl, TensorBoard event files, and the console.

The event files are written with tensorboard's own record writer and event protocol buffers
(`tensorboard.summary.writer.record_writer`, `tensorboard.compat.proto`), which need no
TensorFlow. tensorboard's `EventFileWriter` is not used: it creates its file through
`tensorboard.compat.tf`, which imports TensorFlow whenever TensorFlow is installed, and this
library never imports TensorFlow (README.md, "TensorBoard").
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from typing import Any, Callable, Mapping

import numpy as np


class TensorBoardWriter:
  """Appends scalar events to `logdir/events.out.tfevents.<time>.<host>.<pid>`."""

  def __init__(self, logdir: str):
    try:
      # Imported here so that a broken install fails when the run starts, with the way out.
      from tensorboard.compat.proto import event_pb2, summary_pb2
      from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as e:
      raise ImportError(
          "TensorBoard logging needs the tensorboard package, a dependency of clcr_jax "
          "(pip install 'tensorboard>=2.16'); or turn it off with "
          "--config.logging.tensorboard=False (metrics.jsonl is written either way)") from e
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._records = RecordWriter(open(self.path, "ab"))
    self._append(self._event(wall_time=time.time(), step=0, file_version="brain.Event:2"))

  def _append(self, event) -> None:
    # Flushed at once, so that a killed run keeps every event it logged.
    self._records.write(event.SerializeToString())
    self._records.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [self._summary.Value(tag=k, simple_value=float(v))
              for k, v in scalars.items() if v is not None]
    if values:
      self._append(self._event(wall_time=time.time(), step=int(step),
                               summary=self._summary(value=values)))

  def close(self) -> None:
    self._records.close()


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
  """A console progress line for `total` units of work: done/total, rate and ETA.

  `line(done, note)` reads e.g. 'step 40/200 (epoch 2.00) loss 0.6931 | 12.50 steps/s | ETA
  13s' (training) or, with `per_unit=True` for slow units, 'runs finished 3/8 | 2m05s/run |
  ETA 10m25s'. The rate counts the units done since construction (`start` of them were done
  before, e.g. by the run being resumed), so a resumed run's ETA is not skewed by them.
  `unit` is singular; the rate in units per second adds an 's'.
  """

  def __init__(self, total: int, unit: str, *, label: str | None = None, start: int = 0,
               per_unit: bool = False, log: Callable[[str], None] | None = None):
    self.total, self.unit, self.label = total, unit, label or unit
    self.per_unit = per_unit
    self._log = log or (lambda text: logging.info("%s", text))
    self._t0, self._start = time.time(), start

  def line(self, done: int, note: str = "") -> str:
    elapsed = time.time() - self._t0
    rate = (done - self._start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    if self.per_unit:
      seconds = 1 / rate if rate > 0 else math.nan
      speed = (f"{seconds:.1f}s" if seconds < 60 else format_seconds(seconds)) + f"/{self.unit}"
    else:
      speed = f"{rate:.2f} {self.unit}s/s"
    note = f" {note}" if note else ""
    return f"{self.label} {done}/{self.total}{note} | {speed} | ETA {format_seconds(eta)}"

  def log(self, done: int, note: str = "") -> None:
    self._log(self.line(done, note))


def format_seconds(s: float) -> str:
  if not math.isfinite(s):
    return "?"
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")
