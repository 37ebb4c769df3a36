"""Checkpoints through orbax: the latest train state (for resume) and the best one (for test).

Layout under the workdir:
  checkpoints/latest/<step>/{state, meta}   full train state + loop bookkeeping (JSON)
  checkpoints/best/<step>/{state, meta}     the state selected on the validation metric
orbax writes each step to a temporary folder and renames it when complete, so a run killed at
any moment (even SIGKILL) leaves only whole checkpoints behind.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """`latest` keeps the newest state; `best` keeps the state with the best selection metric."""

  def __init__(self, workdir: str, asynchronous: bool = True):
    root = os.path.join(os.path.abspath(workdir), "checkpoints")
    # orbax names its cross-process barriers after the step ("async_write_complete.<step>"),
    # so two managers saving the same step at once on a multi-process run would wait at one
    # barrier twice and fail ("Barrier ... is already ongoing"); a prefix per manager keeps
    # their barriers apart.
    options = lambda name: ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=asynchronous,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=f"clcr_{name}"))
    self._managers = {
        name: ocp.CheckpointManager(os.path.join(root, name), options=options(name),
                                    item_names=("state", "meta"))
        for name in ("latest", "best")}

  def latest_step(self, which: str = "latest") -> int | None:
    return self._managers[which].latest_step()

  def save(self, which: str, step: int, state: Any, meta: dict[str, Any]) -> None:
    manager = self._managers[which]
    if step in manager.all_steps():
      return  # the same step of a deterministic run: already on disk
    if jax.process_count() == 1:
      # A replicated state is one copy per device; handing orbax the host copy avoids its
      # per-replica slicing (seconds per save on 8 devices) and gives the same bytes.
      state = jax.device_get(state)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)))

  def restore(self, which: str, abstract_state: Any, step: int | None = None):
    """(state, meta) of `step` (default: the newest) placed like `abstract_state`, or None."""
    manager = self._managers[which]
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def drop_after(self, which: str, step: int) -> None:
    """Deletes checkpoints newer than `step` (from the lost tail of an interrupted run)."""
    manager = self._managers[which]
    for s in manager.all_steps():
      if s > step:
        manager.delete(s)

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()


def abstract_like(tree: Any, sharding=None) -> Any:
  """ShapeDtypeStructs of `tree` (optionally with a sharding) for restoring into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
