"""checkpointing.py owns the checkpoint layout: save / restore / load_variables round trips, the
kinds, and clear errors for a workdir without checkpoints."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from clcr_jax import checkpointing


def _state(step: int, batch_stats: bool = True):
  rng = np.random.default_rng(step)
  return {"params": {"dense": {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
                               "bias": np.full(4, step, np.float32)}},
          "batch_stats": {"bn": {"mean": rng.normal(size=4).astype(np.float32)}}
                         if batch_stats else {},
          "opt_state": {"mu": np.ones(3, np.float32)}, "step": np.asarray(step, np.int32)}


def test_save_restore_and_load_variables_round_trip(tmp_path):
  workdir = str(tmp_path)
  checkpointer = checkpointing.Checkpointer(workdir, asynchronous=False)
  assert checkpointer.restore("latest", checkpointing.abstract_like(_state(0))) is None
  for step in (1, 2, 3):
    checkpointer.save("latest", step, _state(step), {"best_value": None, "best_step": None})
  checkpointer.save("best", 2, _state(2), {"best_value": 0.5, "best_step": 2})
  checkpointer.wait()

  state, meta = checkpointer.restore("latest", checkpointing.abstract_like(_state(0)))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), _state(3))
  assert meta == {"best_value": None, "best_step": None}
  checkpointer.close()

  assert checkpointing.has_checkpoint(workdir, "latest")
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir, "latest"))) == ["3"]  # keep 1
  state, meta, step = checkpointing.load_state(workdir, "best")
  assert step == 2 and meta == {"best_value": 0.5, "best_step": 2}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), _state(2))
  variables, step = checkpointing.load_variables(workdir)  # default: 'best'
  assert step == 2 and sorted(variables) == ["batch_stats", "params"]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               _state(2)["params"])
  variables, step = checkpointing.load_variables(workdir, "latest")
  assert step == 3 and float(np.asarray(variables["params"]["dense"]["bias"])[0]) == 3.0


def test_model_variables_leave_out_empty_batch_stats():
  assert sorted(checkpointing.model_variables(_state(1, batch_stats=False))) == ["params"]
  assert sorted(checkpointing.model_variables(_state(1))) == ["batch_stats", "params"]


def test_no_checkpoint_is_a_clear_error_naming_the_workdir(tmp_path):
  missing = tmp_path / "never_trained"
  with pytest.raises(FileNotFoundError, match=f"no 'best' checkpoint in .*{missing}"):
    checkpointing.load_variables(str(missing))
  assert not missing.exists()  # reading does not create the layout
  # An interrupted first save leaves only orbax's temporary folder: still no checkpoint.
  os.makedirs(os.path.join(checkpointing.checkpoint_dir(str(tmp_path), "latest"),
                           "1.orbax-checkpoint-tmp-0"))
  assert not checkpointing.has_checkpoint(str(tmp_path), "latest")
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    checkpointing.load_state(str(tmp_path), "latest")
  with pytest.raises(ValueError, match=r"one of \('latest', 'best'\), found 'newest'"):
    checkpointing.load_variables(str(tmp_path), "newest")
