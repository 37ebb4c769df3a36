"""Which rows go into which batch: a pure function of (seed, epoch, step, process).

Resume and bitwise reproducibility rest on this: a run restarted at step s asks for the rows of
step s and gets exactly what the uninterrupted run got, with no iterator state to save.

Layout: each process owns a contiguous slice of the split (the same slicing as
`tfds.split_for_jax_process`); every epoch it walks a fresh permutation of its slice, seeded by
(seed, epoch, process_index); the tail that does not fill a batch is dropped in training.
Evaluation walks the slice in order and pads the last batch with `valid=False` rows so every
process runs the same number of eval batches.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def host_slice(num_examples: int, process_index: int, process_count: int) -> np.ndarray:
  """Row indices owned by one process: contiguous, disjoint, covering the split."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  bounds = np.linspace(0, num_examples, process_count + 1).round().astype(np.int64)
  return np.arange(bounds[process_index], bounds[process_index + 1], dtype=np.int64)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the number of "
                     f"processes ({process_count})")
  return global_batch_size // process_count


def _mix(*words: np.ndarray) -> np.ndarray:
  """A splitmix64-style hash of uint64 words: cheap, vectorised, stable across numpy versions."""
  h = np.uint64(0x9E3779B97F4A7C15)
  with np.errstate(over="ignore"):
    for w in words:
      h = (h ^ np.asarray(w, np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
      h ^= h >> np.uint64(31)
      h *= np.uint64(0x94D049BB133111EB)
      h ^= h >> np.uint64(29)
  return h


def example_seeds(seed: int, epoch: int, rows: np.ndarray) -> np.ndarray:
  """uint32[n, 2] augmentation seeds for rows of one epoch (for tf.random.stateless_* ops)."""
  rows = np.asarray(rows, np.uint64)
  h = _mix(np.uint64(seed), np.uint64(epoch), rows)
  return np.stack([(h >> np.uint64(32)).astype(np.uint32),
                   (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)], axis=-1)


@dataclasses.dataclass(frozen=True)
class TrainOrder:
  """The training order of one process over one split."""
  num_examples: int
  global_batch_size: int
  seed: int
  process_index: int = 0
  process_count: int = 1

  @property
  def batch_size(self) -> int:
    return local_batch_size(self.global_batch_size, self.process_count)

  @property
  def rows(self) -> np.ndarray:
    return host_slice(self.num_examples, self.process_index, self.process_count)

  @property
  def steps_per_epoch(self) -> int:
    # Every process must run the same number of steps, so count with the smallest slice.
    smallest = self.num_examples // self.process_count
    steps = smallest // self.batch_size
    if steps == 0:
      raise ValueError(f"the training split has {self.num_examples} rows, fewer than one global "
                       f"batch of {self.global_batch_size}; lower train.batch_size")
    return steps

  def permutation(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch, self.process_index])
    return rng.permutation(len(self.rows))

  def step_rows(self, step: int) -> tuple[int, np.ndarray]:
    """(epoch, int64[local batch] row indices) of global step `step`."""
    epoch, within = divmod(step, self.steps_per_epoch)
    perm = self.permutation(epoch)
    take = perm[within * self.batch_size:(within + 1) * self.batch_size]
    return epoch, self.rows[take]


@dataclasses.dataclass(frozen=True)
class EvalOrder:
  """In-order, padded evaluation batches of one process."""
  num_examples: int
  global_batch_size: int
  process_index: int = 0
  process_count: int = 1

  @property
  def batch_size(self) -> int:
    return local_batch_size(self.global_batch_size, self.process_count)

  @property
  def num_batches(self) -> int:
    largest = -(-self.num_examples // self.process_count)
    return max(1, -(-largest // self.batch_size))

  def batch_rows(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64[batch] rows, bool[batch] valid) of eval batch b; padding repeats a real row."""
    rows = host_slice(self.num_examples, self.process_index, self.process_count)
    take = rows[b * self.batch_size:(b + 1) * self.batch_size]
    valid = np.zeros(self.batch_size, bool)
    valid[:len(take)] = True
    filler = rows[:1] if len(rows) else np.zeros(1, np.int64)
    padded = np.concatenate([take, np.repeat(filler, self.batch_size - len(take))])
    return padded.astype(np.int64), valid
