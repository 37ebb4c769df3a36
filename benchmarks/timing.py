"""Timing and memory helpers of the benchmark harness (framework-agnostic)."""
from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable, Sequence


def rss_bytes() -> int:
  """Resident set size of this process (Linux /proc; 0 elsewhere)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError):
    return 0


class PeakRSS:
  """Context manager: the largest RSS growth over the value at entry, sampled every 2 ms.

  A CPU stand-in for an allocator's peak statistic: run it around the first execution of a
  step, when its working memory is first touched.
  """

  def __init__(self, interval_s: float = 0.002):
    self.interval_s = interval_s
    self.peak_growth = 0
    self._stop = threading.Event()

  def _sample(self):
    while not self._stop.is_set():
      self.peak_growth = max(self.peak_growth, rss_bytes() - self._start)
      time.sleep(self.interval_s)

  def __enter__(self):
    self._start = rss_bytes()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_growth = max(self.peak_growth, rss_bytes() - self._start)


def timed(fn: Callable[[], None]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
  """'median (min–max)' of a sample."""
  if not values:
    return "—"
  if len(values) == 1:
    return fmt.format(values[0])
  return (fmt.format(statistics.median(values)) + " (" + fmt.format(min(values)) + "–"
          + fmt.format(max(values)) + ")")


def human_bytes(n) -> str:
  if n is None:
    return "—"
  for unit in ("B", "KiB", "MiB", "GiB"):
    if abs(n) < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
    n /= 1024
  return str(n)
