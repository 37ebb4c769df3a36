"""Data parallelism: one step function, compiled by `jax.jit` with shardings or by `jax.pmap`.

jit (default, multi-host): a `Mesh` over all devices with one 'data' axis; each process turns
its host-local batch into a global `jax.Array` with `jax.make_array_from_process_local_data`;
the train state is replicated and donated.

pmap (`config.parallel.mode='pmap'`, single host): the same step function mapped over local
devices with axis 'batch'; losses reduce over that axis (see `losses.BatchAxis`) and gradients
are summed with psum, so both modes compute the same global-batch loss.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from clcr_jax import losses

PMAP_AXIS = "batch"


def make_mesh(mesh_shape) -> Mesh:
  """A Mesh over all devices with axis 'data'. mesh_shape (-1,) means every device."""
  devices = np.asarray(jax.devices())
  shape = tuple(mesh_shape)
  if len(shape) != 1:
    raise ValueError(f"config.parallel.mesh_shape must have one entry (the data axis), "
                     f"found {shape}")
  if shape[0] not in (-1, devices.size):
    raise ValueError(f"config.parallel.mesh_shape={shape} but there are {devices.size} "
                     f"devices; use (-1,) for all of them")
  return Mesh(devices.reshape(devices.size), ("data",))


def distributed_init_args(parallel_config) -> dict | None:
  """Keyword arguments for `jax.distributed.initialize` from `config.parallel`, or None when the
  run is single-process.

  The three launch fields go together: a process given only some of them would either guess the
  rest from a cluster it may not be on or join a job of the wrong size, so that fails here.
  None set means auto-detection (TPU pods, SLURM, Open MPI), as `initialize()` does alone.
  """
  given = {"coordinator_address": parallel_config.coordinator_address != "",
           "num_processes": parallel_config.num_processes != 0,
           "process_id": parallel_config.process_id != -1}
  if any(given.values()) and not all(given.values()):
    found = ", ".join(f"{k}={parallel_config[k]!r}" + ("" if given[k] else " (unset)")
                      for k in given)
    raise ValueError(
        "config.parallel.coordinator_address, num_processes and process_id are set together or "
        f"not at all (unset: JAX detects the cluster); found {found}")
  if not parallel_config.multihost:
    if any(given.values()):
      raise ValueError("config.parallel.coordinator_address/num_processes/process_id are set "
                       "but config.parallel.multihost=False; add "
                       "--config.parallel.multihost=True")
    return None
  if not any(given.values()):
    return {}
  address, n, pid = (parallel_config.coordinator_address, parallel_config.num_processes,
                     parallel_config.process_id)
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError("config.parallel.coordinator_address must be host:port (process 0's "
                     f"address, e.g. 10.0.0.1:1234), found {address!r}")
  if n < 1:
    raise ValueError(f"config.parallel.num_processes must be at least 1, found {n}")
  if not 0 <= pid < n:
    raise ValueError(f"config.parallel.process_id must be in [0, {n - 1}] "
                     f"(num_processes={n}), found {pid}")
  return {"coordinator_address": address, "num_processes": n, "process_id": pid}


def check_batch_size(global_batch_size: int, what: str = "train.batch_size") -> None:
  n = jax.device_count()
  if global_batch_size % n:
    raise ValueError(f"config.{what}={global_batch_size} is not divisible by the "
                     f"{n} devices; use a multiple of {n}")


class DataParallel:
  """Places states and batches and compiles step functions for one parallel mode.

  `train_step(state, batch, rng, axis)` and `eval_step(state, batch, axis)` are plain functions
  of pytrees; `axis` is the `losses.BatchAxis` the wrapper passes in.
  """

  def __init__(self, mode: str, mesh_shape=(-1,)):
    if mode not in ("jit", "pmap"):
      raise ValueError(f"config.parallel.mode must be 'jit' or 'pmap', found {mode!r}")
    if mode == "pmap" and jax.process_count() > 1:
      raise ValueError("parallel.mode='pmap' runs on one host; use 'jit' for multi-host runs")
    self.mode = mode
    self.mesh = make_mesh(mesh_shape)
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.axis = losses.BatchAxis(PMAP_AXIS if mode == "pmap" else None)

  @property
  def model_axis_name(self) -> str | None:
    """Axis name for cross-replica BatchNorm (pmap only; jit sees the global batch)."""
    return PMAP_AXIS if self.mode == "pmap" else None

  # -- placement ---------------------------------------------------------------------------
  def put_state(self, state):
    if self.mode == "jit":
      return jax.tree.map(self._replicate, state)
    n = jax.local_device_count()
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)
    return jax.pmap(lambda x: x)(stacked)

  def _replicate(self, x):
    """A global replicated array from a host value or an array of any placement; works with
    several processes, where `device_put` onto non-addressable devices does not."""
    if isinstance(x, jax.Array) and x.sharding == self.replicated:
      return x
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])

  def put_key(self, key):
    """The training RNG key where the compiled step expects it."""
    if self.mode == "pmap":
      return key
    data = self._replicate(jax.random.key_data(key))
    return jax.jit(jax.random.wrap_key_data, out_shardings=self.replicated)(data)

  def get_state(self, device_state):
    """The state as one replicated copy (what checkpoints hold)."""
    if self.mode == "jit":
      return device_state
    return jax.tree.map(lambda x: np.asarray(x[0]), device_state)

  def put_batch(self, local_batch):
    if self.mode == "jit":
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(x)),
          local_batch)
    n = jax.local_device_count()

    def split(x):
      x = np.asarray(x)
      if x.shape[0] % n:
        raise ValueError(f"host batch of {x.shape[0]} rows does not split over {n} devices")
      return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return jax.tree.map(split, local_batch)

  # -- compilation -------------------------------------------------------------------------
  def compile_train(self, train_step: Callable) -> Callable:
    """(state, batch, rng) -> (state, metrics); metrics are replicated scalars/arrays."""
    step = functools.partial(train_step, axis=self.axis)
    if self.mode == "jit":
      return jax.jit(step, in_shardings=(self.replicated, self.data_sharding, self.replicated),
                     out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))
    mapped = jax.pmap(step, axis_name=PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=(0,))

    def run(state, batch, rng):
      state, metrics = mapped(state, batch, rng)
      return state, jax.tree.map(lambda x: x[0], metrics)
    return run

  def compile_eval(self, eval_step: Callable) -> Callable:
    """(state, batch) -> outputs as host numpy arrays over this host's rows, in order."""
    step = functools.partial(eval_step, axis=self.axis)
    if self.mode == "jit":
      jitted = jax.jit(step, in_shardings=(self.replicated, self.data_sharding),
                       out_shardings=self.replicated)
      return lambda state, batch: jax.tree.map(np.asarray, jitted(state, batch))
    mapped = jax.pmap(step, axis_name=PMAP_AXIS, in_axes=(0, 0))

    def run(state, batch):
      out = jax.tree.map(np.asarray, mapped(state, batch))
      return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)
    return run

