"""Dropout: four 16-bit uniforms per Threefry hash (clcr_jax.models.dropout) against flax's.

`python -m benchmarks.dropout_cost [--config mosi] [--rounds 3]` builds the harness's JAX train
step twice in one process, once as the model is and once with `flax.linen.Dropout` (one float32
uniform, i.e. one hash, per element) patched in, then times them in alternating rounds. It also
times one dropout mask alone at the shape of the MOSI exchange's messages.
"""
from __future__ import annotations

import argparse
import sys
import time
from unittest import mock

from benchmarks import _env

_env.configure("cpu")

import flax.linen as nn  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import configs  # pylint: disable=wrong-import-position
from benchmarks import jax_impl  # pylint: disable=wrong-import-position
from clcr_jax.models import dropout as dropout_lib  # pylint: disable=wrong-import-position


def _median_s(fn, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def mask_only(repeats: int) -> str:
  shape, rate = (3, 64, 500, 64), 0.1  # levels x batch x vision tokens x d_shared
  x = jax.random.normal(jax.random.key(0), shape)
  ours = jax.jit(lambda k, x: dropout_lib.dropout(k, x, rate))
  theirs = jax.jit(lambda k, x: nn.Dropout(rate, deterministic=False).apply({}, x, rngs={"dropout": k}))
  t_ours = _median_s(lambda: ours(jax.random.key(1), x), repeats)
  t_theirs = _median_s(lambda: theirs(jax.random.key(1), x), repeats)
  return (f"one mask {shape}: flax {t_theirs * 1e3:.1f} ms, clcr_jax {t_ours * 1e3:.1f} ms "
          f"({t_theirs / t_ours:.2f}x)")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="mosi")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="train steps timed per round")
  args = parser.parse_args(argv)
  print(mask_only(repeats=5), flush=True)
  bench = configs.get(args.config, "cpu")
  batch = configs.make_batch(bench)
  impls = {"clcr_jax dropout": jax_impl.JaxImpl("ours", bench, batch, "cpu")}
  with mock.patch.object(dropout_lib, "Dropout", nn.Dropout):
    impls["flax dropout"] = jax_impl.JaxImpl("flax", bench, batch, "cpu")
    impls["flax dropout"].compile()  # traced while the patch is active
  impls["clcr_jax dropout"].compile()
  times = {name: [] for name in impls}
  for impl in impls.values():
    impl.train(1)
  for r in range(args.rounds):
    order = list(impls) if r % 2 == 0 else list(reversed(impls))
    for name in order:
      start = time.perf_counter()
      impls[name].train(args.steps)
      times[name].append((time.perf_counter() - start) / args.steps)
  ratios = [f / o for f, o in zip(times["flax dropout"], times["clcr_jax dropout"])]
  for name, ts in times.items():
    print(f"{args.config} train step, {name}: median {np.median(ts):.2f} s "
          f"(min {min(ts):.2f}, max {max(ts):.2f}) over {args.rounds} rounds of {args.steps}")
  print(f"speed-up of the step: median {np.median(ratios):.3f}x "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
