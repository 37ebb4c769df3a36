"""The clip cache: the on-disk format that `python -m data_pipelines.prepare` writes, its
reader (`CachedSource`, used by `clip_reader.ClipReader`) and its writer (`write_split`).

Format, per split, in `<out>/<split>/`:
  meta.json             format version, the reader signature the cache was built for (dataset,
                        audio feature parameters, frame streams), clip ids in row order.
  audio.npy             float32 [N, n_freq, n_time]: the decoded audio feature of every clip.
  <stream>.bin          the clips' frame files, byte for byte (JPEG/PNG stay encoded).
  <stream>.index.npy    int64 [total_frames, 2]: (offset, length) of each frame in the .bin.
  <stream>.offsets.npy  int64 [N + 1]: first frame of each clip (frames in sorted-name order).

Why this format rather than TFRecord shards: the project's sampling is row-indexed (the rows of
step s are a pure function of (seed, epoch, step), which makes resume exact), so the cache must
give O(1) random access to row i; TFRecords are sequential and would need shuffle buffers.
`.npy` + a byte blob are memory-mapped: the OS page cache keeps hot epochs in RAM, nothing is
loaded up front, and the numpy backend reads them without TensorFlow. What the cache saves per
example is the expensive, GIL-bound part: wav parsing, resampling and the STFT/fbank in numpy,
plus the directory listings and the many small-file opens. Frames stay JPEG: decoded pixels
would be 10-40x larger (UCF101 RGB+flow ~1 TB), while TensorFlow decodes JPEGs in parallel
without the GIL; keeping the original bytes also keeps random crops identical to the raw path.
A split is written to `<split>.tmp` and renamed when complete, so a killed run leaves no
half-written cache that a reader could pick up.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Sequence

import numpy as np

from data_pipelines.base import DataError

FORMAT = "clcr-clip-cache"
VERSION = 1


class CacheMismatch(Exception):
  """The cache exists but was built for another config (or is incomplete)."""


class CachedSource:
  """Clips of one split read from a cache directory (same interface as clip_reader.RawSource)."""

  def __init__(self, directory: str, signature: dict[str, Any], clips: Sequence, *,
               subset_ok: bool = False):
    self.directory = directory
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.isfile(meta_path):
      raise CacheMismatch(f"{directory} has no meta.json (incomplete cache)")
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
      raise CacheMismatch(f"{meta_path}: expected format {FORMAT} v{VERSION}, found "
                          f"{meta.get('format')} v{meta.get('version')}")
    built = meta["signature"]
    signature = json.loads(json.dumps(signature))  # compare as stored (tuples become lists)
    if built["dataset"] != signature["dataset"]:
      raise CacheMismatch(f"{meta_path}: built for dataset {built['dataset']!r}, this reader is "
                          f"{signature['dataset']!r}")
    if signature["audio"] is not None and built["audio"] != signature["audio"]:
      raise CacheMismatch(f"{meta_path}: audio built with {built['audio']}, the config asks for "
                          f"{signature['audio']}")
    missing = [s for s in signature["streams"] if s not in built["streams"]]
    if missing:
      raise CacheMismatch(f"{meta_path}: frame streams {missing} not in the cache "
                          f"(has {built['streams']})")
    ids = meta["clip_ids"]
    by_id = {c.clip_id: c for c in clips}
    wanted = [c.clip_id for c in clips]
    if ids != wanted:
      in_order = [c for c in wanted if c in set(ids)] == ids
      if not (subset_ok and in_order and all(i in by_id for i in ids)):
        extra = sorted(set(ids) - set(wanted))[:3]
        lost = sorted(set(wanted) - set(ids))[:3]
        raise CacheMismatch(f"{meta_path}: clip list differs from the split list ({len(ids)} vs "
                            f"{len(wanted)} clips; only in cache e.g. {extra}, only in the list "
                            f"e.g. {lost})")
    self.clips = [by_id[i] for i in ids]
    self._audio = (np.load(os.path.join(directory, "audio.npy"), mmap_mode="r")
                   if built["audio"] is not None else None)
    self._blob, self._index, self._offsets = {}, {}, {}
    for s in signature["streams"]:
      base = os.path.join(directory, s)
      self._blob[s] = np.memmap(base + ".bin", dtype=np.uint8, mode="r") \
          if os.path.getsize(base + ".bin") else np.zeros(0, np.uint8)
      self._index[s] = np.load(base + ".index.npy")
      self._offsets[s] = np.load(base + ".offsets.npy")
    self.files = [meta_path]

  def num_frames(self, stream: str) -> np.ndarray:
    return np.diff(self._offsets[stream])

  def frame_path(self, stream: str, i: int, p: int) -> str:
    return (f"{os.path.join(self.directory, stream)}.bin[clip {self.clips[i].clip_id!r}, "
            f"frame {p}]")

  def audio(self, i: int) -> np.ndarray:
    return np.array(self._audio[i])

  def frames(self, stream: str, i: int, positions: Sequence[int]) -> list[bytes]:
    rows = self._index[stream][self._offsets[stream][i] + np.asarray(positions, np.int64)]
    return [self._blob[stream][o:o + n].tobytes() for o, n in rows]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _looks_like_image(data: bytes) -> bool:
  """Cheap integrity check: JPEG start and end markers, or the PNG signature."""
  if data[:2] == b"\xff\xd8":
    return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
  return data[:8] == b"\x89PNG\r\n\x1a\n"


_WORKER_SOURCE = None


def _read_clip(i: int):
  """Worker: one clip's audio feature and all its frames (files read once, in sorted order)."""
  source, streams, has_audio = _WORKER_SOURCE
  spec = source.audio(i) if has_audio else None
  frames = {}
  for s in streams:
    data = source.frames(s, i, range(int(source.num_frames(s)[i])))
    for p, d in enumerate(data):
      if not _looks_like_image(d):
        raise DataError(f"{source.frame_path(s, i, p)}: unreadable frame: expected a complete "
                        f"JPEG (FFD8...FFD9) or PNG file, found {len(d)} bytes starting "
                        f"{d[:4].hex()}")
    frames[s] = data
  return spec, frames


class Progress:
  """A one-line progress bar on stderr: count, rate, ETA."""

  def __init__(self, total: int, label: str, unit: str = "clips"):
    self.total, self.label, self.start, self.done = total, label, time.time(), 0
    self.unit = unit

  def update(self, n: int = 1) -> None:
    self.done += n
    if self.done == self.total or self.done % 16 == 0:
      elapsed = max(time.time() - self.start, 1e-9)
      rate = self.done / elapsed
      eta = (self.total - self.done) / max(rate, 1e-9)
      width = 30
      filled = int(width * self.done / max(self.total, 1))
      sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                       f"{self.done}/{self.total} {rate:.1f} {self.unit}/s ETA {eta:.0f}s ")
      if self.done == self.total:
        sys.stderr.write("\n")
      sys.stderr.flush()


def write_split(reader, split: str, out_dir: str, workers: int = 1, progress: bool = True) -> str:
  """Writes the cache of one split of a clip reader that reads raw files; returns its folder."""
  global _WORKER_SOURCE
  source = reader.source(split)
  if isinstance(source, CachedSource):
    raise ValueError("write_split needs a reader on the raw files (config.data.cache='off')")
  signature = reader.cache_signature()
  final = os.path.join(out_dir, split)
  tmp = final + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  n = reader.num_examples(split)
  audio_mm = None
  if reader.feature is not None:
    audio_mm = np.lib.format.open_memmap(os.path.join(tmp, "audio.npy"), mode="w+",
                                         dtype=np.float32, shape=(n,) + reader.feature.shape)
  blobs = {s: open(os.path.join(tmp, s + ".bin"), "wb") for s in reader.streams}
  index = {s: [] for s in reader.streams}
  offsets = {s: [0] for s in reader.streams}
  cursor = {s: 0 for s in reader.streams}
  bar = Progress(n, f"{reader.config.get('name')}/{split}") if progress else None
  _WORKER_SOURCE = (source, reader.streams, reader.feature is not None)
  try:
    if workers > 1:
      pool = multiprocessing.get_context("fork").Pool(workers)
      results = pool.imap(_read_clip, range(n), chunksize=4)
    else:
      pool, results = None, map(_read_clip, range(n))
    for i, (spec, frames) in enumerate(results):
      if audio_mm is not None:
        audio_mm[i] = spec
      for s, data in frames.items():
        for d in data:
          blobs[s].write(d)
          index[s].append((cursor[s], len(d)))
          cursor[s] += len(d)
        offsets[s].append(len(index[s]))
      if bar:
        bar.update()
    if pool is not None:
      pool.close()
      pool.join()
  finally:
    _WORKER_SOURCE = None
    for f in blobs.values():
      f.close()
  if audio_mm is not None:
    audio_mm.flush()
    del audio_mm
  for s in reader.streams:
    np.save(os.path.join(tmp, s + ".index.npy"), np.array(index[s], np.int64).reshape(-1, 2))
    np.save(os.path.join(tmp, s + ".offsets.npy"), np.array(offsets[s], np.int64))
  meta = {"format": FORMAT, "version": VERSION, "signature": signature,
          "clip_ids": reader.clip_ids(split), "root": os.path.abspath(reader.options["root"]),
          "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
  with open(os.path.join(tmp, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  return final
