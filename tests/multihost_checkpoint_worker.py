"""One process of the two-process checkpoint test (tests/test_multihost.py).

  python tests/multihost_checkpoint_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_DIR WORKDIR

Saves a replicated state to both of clcr_jax.checkpointing's managers ("latest" and "best") at
the same steps, back to back and asynchronously, as train_and_evaluate does when the newest
checkpoint is also the best one, then restores both. Writes out/checkpoints_<pid>.json, or
out/error_<pid>.txt with the traceback.
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
NUM_SAVES = 6


def save_and_restore(workdir: str) -> dict:
  """{"latest"|"best": what was restored} after NUM_SAVES saves to both managers."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from clcr_jax import checkpointing, parallel  # pylint: disable=import-outside-toplevel
  dp = parallel.DataParallel("jit")
  checkpointer = checkpointing.Checkpointer(workdir)
  for step in range(1, NUM_SAVES + 1):
    state = jax.jit(lambda s=step: {"w": jnp.full((32, 16), float(s)),
                                    "step": jnp.asarray(s, jnp.int32)},
                    out_shardings=dp.replicated)()
    checkpointer.save("latest", step, state, {"step": step})
    checkpointer.save("best", step, state, {"step": step})
  checkpointer.wait()
  restored = {}
  for which in ("latest", "best"):
    got, meta = checkpointer.restore(which, checkpointing.abstract_like(state, dp.replicated))
    local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), got)
    restored[which] = {"meta": meta, "w_mean": float(local["w"].mean()),
                       "step": int(local["step"]),
                       "latest_step": checkpointer.latest_step(which)}
  checkpointer.close()
  return restored


def main(argv):
  coordinator, num_processes, process_id, out, workdir = argv[1:6]
  process_id = int(process_id)
  import jax  # pylint: disable=import-outside-toplevel
  from multihost_worker import run_and_record  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes=int(num_processes),
                             process_id=process_id, initialization_timeout=120)
  run_and_record(lambda: save_and_restore(workdir), out, f"checkpoints_{process_id}.json",
                 process_id)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
