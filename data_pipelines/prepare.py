"""Builds the clip cache (decode a clip dataset's audio once, pack its frames) or a TFDS copy.

    python -m data_pipelines.prepare cremad --root /data/CREMA-D [--out DIR] [--splits train,test]
        [--set audio_feature=fbank --set num_frames=3 ...] [--workers 2]
    python -m data_pipelines.prepare mosi --root /data/MOSI --format=tfds --out DIR

`--format=tfds` instead stores the reader's splits as a TFDS dataset (ArrayRecord) for pods; see
`data_pipelines.tfds_store` and the 'tfds' reader (config.data.tfds_name='clcr_<dataset>').

The readers (`clip_reader.ClipReader`) use the cache when `config.data.cache` is 'auto' (default:
when `<cache_dir>/<split>` exists and matches the config) or 'require'. `--out` defaults to
`<root>/clcr_cache`, where 'auto' looks.

The format, its reader (`CachedSource`) and its writer (`write_split`) live in
`data_pipelines.clip_cache`.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Any, Sequence

from data_pipelines import clip_cache
from data_pipelines import registry
from data_pipelines.base import DataError


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def build_reader(dataset: str, root: str, overrides: dict[str, Any]):
  """The registered reader `dataset` on the raw files of `root` (cache off)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  fields = dict(overrides, name=dataset, root=root, cache="off")
  reader = registry.get_reader(ml_collections.ConfigDict(fields))
  unknown = sorted(set(overrides) - set(getattr(reader, "options", overrides)))
  if unknown:
    raise ValueError(f"--set {unknown}: not config fields of reader {dataset!r}; fields: "
                     f"{sorted(reader.options)}")
  return reader


def prepare(dataset: str, root: str, out: str | None = None, splits: Sequence[str] = (),
            overrides: dict[str, Any] | None = None, workers: int = 1,
            progress: bool = True) -> dict[str, str]:
  """Builds the cache of `splits` (default: all); returns {split: folder}."""
  reader = build_reader(dataset, root, overrides or {})
  if not hasattr(reader, "streams"):
    raise ValueError(f"{dataset} with this config reads precomputed features "
                     f"({type(reader).__name__}); there is nothing to prepare")
  out = out or os.path.join(root, "clcr_cache")
  return {s: clip_cache.write_split(reader, s, out, workers, progress)
          for s in (splits or reader.splits)}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_pipelines.prepare",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("dataset", help="registered reader name, e.g. cremad, kinetics_sounds, "
                      "ave (with --set task=classification), ucf101")
  parser.add_argument("--root", required=True, help="dataset root (config.data.root)")
  parser.add_argument("--out", default=None, help="cache folder (default <root>/clcr_cache)")
  parser.add_argument("--splits", default="", help="comma-separated splits (default: all)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="reader config field, e.g. --set audio_feature=fbank (repeatable)")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--format", choices=("cache", "tfds"), default="cache",
                      help="cache: the clip cache (default); tfds: a TFDS dataset in --out")
  parser.add_argument("--name", default=None,
                      help="TFDS dataset name for --format=tfds (default clcr_<dataset>)")
  args = parser.parse_args(argv)
  if args.format == "tfds" and not args.out:
    parser.error("--format=tfds needs --out (the TFDS data_dir to write)")
  overrides = {}
  for item in args.set:
    key, sep, value = item.partition("=")
    if not sep:
      parser.error(f"--set expects KEY=VALUE, found {item!r}")
    overrides[key.strip()] = _parse_value(value.strip())
  splits = [s for s in args.splits.split(",") if s]
  try:
    if args.format == "tfds":
      return _main_tfds(args, splits, overrides)
    done = prepare(args.dataset, args.root, args.out, splits, overrides, args.workers)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for split, folder in done.items():
    print(f"{split}: {folder}")
  print("use it with config.data.cache='auto' (default) and config.data.cache_dir=<--out> when "
        "--out is not <root>/clcr_cache")
  return 0


def _main_tfds(args, splits, overrides) -> int:
  import ml_collections  # pylint: disable=import-outside-toplevel
  from data_pipelines import tfds_store  # pylint: disable=import-outside-toplevel
  fields = dict(overrides, name=args.dataset, root=args.root)
  reader = registry.get_reader(ml_collections.ConfigDict(fields))
  folder = tfds_store.write_tfds(reader, args.out, splits, name=args.name)
  name = os.path.basename(os.path.dirname(folder))
  print(f"{folder}\nuse it with config.data.name='tfds', config.data.tfds_name={name!r}, "
        f"config.data.data_dir={os.path.abspath(args.out)!r}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
