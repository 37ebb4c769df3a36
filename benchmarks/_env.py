"""Process environment the benchmarks set before JAX is imported.

NPROC (read by XLA:CPU for its intra-op thread-pool size, default = the CPU count): on a 2-core
machine jaxlib 0.10's batched LAPACK kernels (the QR of the Stiefel bases, `lapack_sorgqr_ffi`
via `ParallelBatchMap`) can deadlock when two of them run concurrently and each holds one of the
pool's two threads while waiting for sub-tasks queued behind the other. Observed reliably once
PyTorch's OpenMP pool is active in the same process. A pool of at least 4 threads avoids it.
XLA_PYTHON_CLIENT_PREALLOCATE=false lets PyTorch share the GPU with JAX in one process.
"""
from __future__ import annotations

import os


def configure(device: str = "cpu") -> None:
  if "jax" in __import__("sys").modules:
    return  # too late to change the runtime's settings; keep whatever is in force
  os.environ.setdefault("NPROC", str(max(4, 2 * (os.cpu_count() or 1))))
  if device == "gpu":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
