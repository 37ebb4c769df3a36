"""Checkpoints through orbax: the latest train state (for resume) and the best one (for test).

This module is the only one that knows the layout under the workdir:
  checkpoints/latest/<step>/{state, meta}   full train state + loop bookkeeping (JSON)
  checkpoints/best/<step>/{state, meta}     the state selected on the validation metric
The train state is {'params', 'batch_stats', 'opt_state', 'step'}; `model_variables` turns it
into what `model.apply` takes. Readers outside the training loop (`clcr_jax.load`, tests,
sweeps) go through `load_variables` / `load_state` / `has_checkpoint`.
orbax writes each step to a temporary folder and renames it when complete, so a run killed at
any moment (even SIGKILL) leaves only whole checkpoints behind.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

KINDS = ("latest", "best")
_ITEMS = ("state", "meta")


def checkpoint_dir(workdir: str, which: str) -> str:
  """WORKDIR/checkpoints/<which>, the folder of one kind's step folders."""
  if which not in KINDS:
    raise ValueError(f"checkpoint kind must be one of {KINDS}, found {which!r}")
  return os.path.join(os.path.abspath(workdir), "checkpoints", which)


def has_checkpoint(workdir: str, which: str = "latest") -> bool:
  """Whether `workdir` holds a complete `which` checkpoint (a step folder; orbax's temporary
  folders of an interrupted save do not count)."""
  directory = checkpoint_dir(workdir, which)
  return os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory))


def model_variables(state: dict[str, Any]) -> dict[str, Any]:
  """The `model.apply` variables of a train state: params, and batch_stats when it has any."""
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return variables


def load_state(workdir: str, which: str = "best") -> tuple[dict[str, Any], dict[str, Any], int]:
  """(train state, meta, step) of `workdir`'s newest `which` checkpoint, as saved (host arrays,
  no sharding): for inference and inspection, not for resuming (see `Checkpointer.restore`).

  Raises FileNotFoundError naming the workdir when it has no such checkpoint.
  """
  directory = checkpoint_dir(workdir, which)
  if not has_checkpoint(workdir, which):
    raise FileNotFoundError(
        f"no {which!r} checkpoint in {directory}: {os.path.abspath(workdir)} is not a trained "
        f"clcr_jax run directory, or its run has not reached a checkpoint yet (kinds: {KINDS})")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False, read_only=True),
      item_names=_ITEMS)
  try:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  return restored["state"], dict(restored["meta"]), int(step)


def load_variables(workdir: str, which: str = "best") -> tuple[dict[str, Any], int]:
  """(model variables, step) of `workdir`'s newest `which` ('best' or 'latest') checkpoint."""
  state, _, step = load_state(workdir, which)
  return model_variables(state), step


class Checkpointer:
  """`latest` keeps the newest state; `best` keeps the state with the best selection metric."""

  def __init__(self, workdir: str, asynchronous: bool = True):
    # orbax names its cross-process barriers after the step ("async_write_complete.<step>"),
    # so two managers saving the same step at once on a multi-process run would wait at one
    # barrier twice and fail ("Barrier ... is already ongoing"); a prefix per manager keeps
    # their barriers apart.
    options = lambda name: ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=asynchronous,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=f"clcr_{name}"))
    self._managers = {
        name: ocp.CheckpointManager(checkpoint_dir(workdir, name), options=options(name),
                                    item_names=_ITEMS)
        for name in KINDS}

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
