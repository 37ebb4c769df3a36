"""Where the JAX train step spends its time: XLA ops from a profiler trace, grouped by model part.

    python -m benchmarks.profile_step [--config mosi] [--batch 0] [--steps 2] [--top 15]
        [--set attention=einsum ...]

Compiles the harness's train step (benchmarks/jax_impl.py), traces `--steps` steps with
jax.profiler, and sums the duration of every XLA op by the Flax module path in its metadata
(attention, the backbone/encoder, bases, budget, ...). Ops run concurrently on XLA:CPU's thread
pool, so the column sums can exceed the wall time; read them as shares. Ops without an op_name
in the compiled HLO (most inside the blockwise attention's lax.map bodies, and layout copies
XLA inserts) are listed as "(no op metadata)".
"""
from __future__ import annotations

import argparse
import ast
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time

from benchmarks import _env

_env.configure("cpu")

import jax  # pylint: disable=wrong-import-position

from benchmarks import configs  # pylint: disable=wrong-import-position
from benchmarks import jax_impl  # pylint: disable=wrong-import-position

GROUPS = (("attention", "attention"), ("token budget", "budget"), ("Stiefel bases", "bases"),
          ("backbone / encoder", "encoder"), ("backbone / encoder", "backbone"),
          ("hierarchy projection", "semantic_hierarchy"), ("dropout", "Dropout"),
          ("exchange FFN", "ffn"), ("InterCAD", "inter_cad"), ("losses", "loss"),
          ("optimizer", "optax"))


def group_of(op_name: str) -> str:
  for label, needle in GROUPS:
    if needle in op_name:
      return label
  return "other"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="mosi")
  parser.add_argument("--batch", type=int, default=0)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--set", action="append", default=[], help="model override key=value")
  args = parser.parse_args(argv)
  overrides = {}
  for item in args.set:
    key, _, value = item.partition("=")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  bench = configs.get(args.config, "cpu", args.batch, overrides)
  impl = jax_impl.JaxImpl("jax", bench, configs.make_batch(bench), "cpu")
  impl.compile()
  impl.train(1)
  start = time.perf_counter()
  impl.train(args.steps)
  step_s = (time.perf_counter() - start) / args.steps
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      impl.train(args.steps)
    path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  hlo = impl.train_compiled.as_text()
  op_names = dict(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", hlo,
                             re.MULTILINE))
  by_op = collections.Counter()
  for e in events:
    name = e["name"]
    if name.startswith("$") or "Thunk" in name or "ThreadPool" in name:
      continue
    by_op[name] += e["dur"] / 1e3 / args.steps
  groups = collections.Counter()
  for name, ms in by_op.items():
    groups[group_of(op_names[name]) if name in op_names else "(no op metadata)"] += ms
  total = sum(groups.values())
  print(f"{bench.description}; batch {bench.batch_size}")
  print(f"train step: {step_s * 1e3:.0f} ms wall; XLA op time summed over threads "
        f"{total:.0f} ms\n")
  print("| part | op ms / step | share |\n|---|---|---|")
  for label, ms in groups.most_common():
    print(f"| {label} | {ms:.0f} | {ms / total:.0%} |")
  print(f"\ntop {args.top} ops:")
  for name, ms in by_op.most_common(args.top):
    print(f"  {ms:8.1f} ms  {name:28s} {op_names.get(name, '(no op metadata)')[:90]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
