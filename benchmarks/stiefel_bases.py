"""The Stiefel bases' gradient: closed-form QR derivative against autodiff through Gram-Schmidt.

`python -m benchmarks.stiefel_bases` times jax.grad of all of one model's bases (levels x
(shared + one private per modality), vmapped as IntraCED does) both ways in one process, and
prints XLA's memory plan for each. The autodiff variant is the scan in
`intra_ced._gram_schmidt` differentiated directly, which stores Q once per column.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import intra_ced

# (name, d, d_shared, bases per level): the benchmark configurations' widths.
SHAPES = (("mosi", 128, 64, 4), ("cremad", 512, 256, 3))


def _time(compiled, w, repeats: int) -> float:
  compiled(w).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    compiled(w).block_until_ready()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--levels", type=int, default=3)
  args = parser.parse_args(argv)
  print("| configuration | bases | closed form: ms, plan MiB | scan autodiff: ms, plan MiB "
        "| speed-up |")
  print("|---|---|---|---|---|")
  for name, d, k, count in SHAPES:
    shape = (count, args.levels, d, k)
    w = jax.random.normal(jax.random.key(0), shape)
    c = jax.random.normal(jax.random.key(1), shape)
    variants = {
        "closed": intra_ced.orthonormal_columns,
        "scan": lambda x: intra_ced._gram_schmidt(x)[0],  # pylint: disable=protected-access
    }
    row = {}
    for label, fn in variants.items():
      loss = lambda w, fn=fn: jnp.sum(c * jax.vmap(jax.vmap(fn))(w))
      compiled = jax.jit(jax.grad(loss)).lower(w).compile()
      row[label] = (_time(compiled, w, args.repeats),
                    compiled.memory_analysis().temp_size_in_bytes / 2**20)
    print(f"| {name} | {count} x {args.levels} levels, [{d}, {k}] | "
          f"{row['closed'][0] * 1e3:.1f}, {row['closed'][1]:.1f} | "
          f"{row['scan'][0] * 1e3:.1f}, {row['scan'][1]:.1f} | "
          f"{row['scan'][0] / row['closed'][0]:.0f}x |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
