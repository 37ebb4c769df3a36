"""Input-pipeline throughput on a CREMA-D-shaped fixture: raw files vs the `prepare` cache.

    python benchmarks/input_pipeline.py [--clips 256] [--batch 32] [--epochs 3] [--size 224]

Builds, in a temporary folder, the OGM-GE CREMA-D layout with `--clips` clips (3-s 16 kHz wavs,
3 JPEG frames of 224 x 224 each), then times `pipeline.train_batches` (tf.data backend, the
default OGM-GE spectrogram + 3 frames with random resized crop) from the raw files and from the
cache written by `data_pipelines.prepare`, for audio + frames and for audio alone (where the
cache's saving, the wav decode + resample + STFT, is not hidden behind the frame transforms).
The first batch (tracing, warm-up) is not timed. Reports examples/s and examples/s per CPU core
(os.cpu_count()). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines import pipeline, prepare, registry  # pylint: disable=wrong-import-position


def make_fixture(root: str, clips: int, size: int) -> None:
  """CREMA-D layout: AudioWAV/<clip>.wav (3 s), Image-01-FPS/<clip>/0000k.jpg, train/test.csv."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  emotions = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
  names = [f"{1001 + i % 91}_S{i:03d}_{emotions[i % 6]}_XX" for i in range(clips)]
  os.makedirs(os.path.join(root, "AudioWAV"))
  t = np.arange(3 * 16000) / 16000
  yy, xx = np.mgrid[0:size, 0:size] / size
  for i, name in enumerate(names):
    x = 0.3 * np.sin(2 * np.pi * (200 + i) * t) + 0.05 * rng.standard_normal(len(t))
    with wave.open(os.path.join(root, "AudioWAV", name + ".wav"), "wb") as f:
      f.setnchannels(1)
      f.setsampwidth(2)
      f.setframerate(16000)
      f.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    folder = os.path.join(root, "Image-01-FPS", name)
    os.makedirs(folder)
    for k in range(3):
      img = np.stack([128 + 100 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + c * yy + k))
                      for c in range(3)], -1)
      img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(os.path.join(folder, f"{k:05d}.jpg"), quality=90)
  with open(os.path.join(root, "train.csv"), "w", encoding="utf-8-sig") as f:
    f.writelines(f"{n},{n.split('_')[2]}\n" for n in names)
  with open(os.path.join(root, "test.csv"), "w", encoding="utf-8-sig") as f:
    f.writelines(f"{n},{n.split('_')[2]}\n" for n in names[:8])


def throughput(reader, batch: int, steps: int) -> float:
  """Examples/s of training batches, after one untimed warm-up batch."""
  it = pipeline.train_batches(reader, "train", global_batch_size=batch, seed=0, start_step=0,
                              num_steps=steps + 1)
  next(it)
  start = time.perf_counter()
  n = sum(len(b["label"]) for b in it)
  return n / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clips", type=int, default=256)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--size", type=int, default=224)
  args = parser.parse_args()
  import ml_collections  # pylint: disable=import-outside-toplevel
  cores = os.cpu_count() or 1
  steps = args.epochs * (args.clips // args.batch)
  with tempfile.TemporaryDirectory() as root:
    start = time.perf_counter()
    make_fixture(root, args.clips, args.size)
    print(f"fixture: {args.clips} clips, 3 s wav + 3 JPEG {args.size}x{args.size} each "
          f"({time.perf_counter() - start:.1f} s to write); batch {args.batch}, {steps} steps; "
          f"{cores} CPU cores")
    start = time.perf_counter()
    prepare.prepare("cremad", root, None, (), {"image_size": args.size}, workers=cores,
                    progress=False)
    prep = time.perf_counter() - start
    print(f"prepare: {prep:.1f} s for {args.clips} train + 8 test clips "
          f"({(args.clips + 8) / prep:.0f} clips/s with {cores} workers)")
    for modalities in [("audio", "visual"), ("audio",)]:
      fields = dict(name="cremad", root=root, image_size=args.size, num_frames=3,
                    modalities=modalities)
      readers = {
          "raw files": registry.get_reader(ml_collections.ConfigDict(dict(fields, cache="off"))),
          "prepare cache": registry.get_reader(
              ml_collections.ConfigDict(dict(fields, cache="require")))}
      # Alternate and repeat so the page cache and warm-up treat both sides alike.
      results = {name: [] for name in readers}
      for _ in range(2):
        for name, reader in readers.items():
          results[name].append(throughput(reader, args.batch, steps))
      print(f"modalities {'+'.join(modalities)}:")
      for name, values in results.items():
        best = max(values)
        print(f"  {name:14s} {best:8.1f} examples/s   {best / cores:7.1f} examples/s/core   "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
  main()
