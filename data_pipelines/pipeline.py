"""Host-local batch iterators over a reader: tf.data when TensorFlow is importable, numpy if not.

Both paths ask `sampling` for the rows of each step and read them through the same reader, so
they yield identical batches; tf.data adds parallel decoding and prefetching. TensorFlow is
imported lazily here and nowhere in `clcr_jax`.

Batches follow the contract of design.md:
  {'inputs': {m: [b, ...]}, 'masks': {m: bool[b, T_m]}, 'label': [b, ...], 'valid': bool[b]}
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator

import numpy as np

from data_pipelines import sampling


def tensorflow_or_none():
  """Returns the tensorflow module with its GPUs hidden (JAX owns them), or None if absent."""
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # already initialised; it then already runs where it runs
    pass
  return tf


def resolve_backend(requested: str, reader) -> str:
  """'tf' or 'numpy' from config.data.backend in {'auto', 'tf', 'numpy'}."""
  if requested not in ("auto", "tf", "numpy"):
    raise ValueError(f"config.data.backend must be 'auto', 'tf' or 'numpy', found {requested!r}")
  # Only probe for TensorFlow when it may be used: importing it costs seconds and memory.
  has_tf = requested != "numpy" and tensorflow_or_none() is not None
  if requested == "tf" and not has_tf:
    raise ImportError("config.data.backend='tf' but TensorFlow is not installed; "
                      "pip install 'clcr_jax[tf]' or set config.data.backend='numpy'")
  if requested == "numpy" and not reader.in_memory and reader.tf_example_fn("train", train=True):
    logging.warning("data.backend='numpy' on a file-decoding reader: decoding runs in one thread")
  if requested == "auto":
    return "tf" if has_tf else "numpy"
  return requested


def _with_valid(batch: dict[str, Any], valid: np.ndarray) -> dict[str, Any]:
  batch = dict(batch)
  batch["valid"] = valid
  return batch


# ---------------------------------------------------------------------------------------------
# numpy path
# ---------------------------------------------------------------------------------------------
def _background(it: Iterator, depth: int) -> Iterator:
  """Runs `it` in a thread, `depth` items ahead, so reading overlaps the device step."""
  if depth <= 0:
    yield from it
    return
  q: queue.Queue = queue.Queue(maxsize=depth)
  done = object()
  stop = threading.Event()

  def put(item) -> bool:
    # A consumer that stops early never drains the queue; wake up to notice `stop`.
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def fill():
    try:
      for item in it:
        if not put(item):
          return
      put(done)
    except BaseException as e:  # pylint: disable=broad-except
      put(e)

  threading.Thread(target=fill, daemon=True).start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:  # runs when the consumer finishes, breaks out, or drops the iterator
    stop.set()


def _numpy_train(reader, split, order: sampling.TrainOrder, start_step, num_steps):
  for step in range(start_step, num_steps):
    epoch, rows = order.step_rows(step)
    batch = reader.load_examples(split, rows, train=True,
                                 seeds=sampling.example_seeds(order.seed, epoch, rows))
    yield _with_valid(batch, np.ones(len(rows), bool))


def _numpy_eval(reader, split, order: sampling.EvalOrder):
  for b in range(order.num_batches):
    rows, valid = order.batch_rows(b)
    yield _with_valid(reader.load_examples(split, rows, train=False), valid)


# ---------------------------------------------------------------------------------------------
# tf.data path
# ---------------------------------------------------------------------------------------------
def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    out = []
    for k in sorted(tree):
      out += _flatten(tree[k], prefix + (k,))
    return out
  return [(prefix, tree)]


def _unflatten(paths, leaves):
  tree: dict = {}
  for path, leaf in zip(paths, leaves):
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = leaf
  return tree


def _tf_batches(tf, reader, split, train: bool, rows_of, count: int, batch_size: int,
                seed: int | None):
  """tf.data over `count` batches; `rows_of(i) -> (rows, valid, seeds)` gives batch i."""
  probe = reader.load_examples(split, np.zeros(1, np.int64), train=train,
                               seeds=np.zeros((1, 2), np.uint32) if train else None)
  paths, leaves = zip(*_flatten(probe))
  dtypes = [tf.as_dtype(np.asarray(x).dtype) for x in leaves]

  def plan(i):
    rows, valid, seeds = rows_of(int(i))
    return rows.astype(np.int64), valid, seeds.astype(np.int32)

  def planned(i):
    rows, valid, seeds = tf.numpy_function(plan, [i], [tf.int64, tf.bool, tf.int32])
    rows.set_shape([batch_size])
    valid.set_shape([batch_size])
    seeds.set_shape([batch_size, 2])
    return rows, valid, seeds

  ds = tf.data.Dataset.range(count).map(planned)
  example_fn = reader.tf_example_fn(split, train=train)
  if example_fn is not None:
    # Decode example by example in parallel, then batch.
    def decode(rows, valid, seeds):
      examples = tf.data.Dataset.from_tensor_slices((rows, seeds)).map(
          example_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      return tf.data.Dataset.zip((examples, tf.data.Dataset.from_tensor_slices(valid)))
    ds = ds.flat_map(decode).batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda ex, valid: dict(ex, valid=valid))
  else:
    def gather(rows, seeds):
      batch = reader.load_examples(split, rows, train=train,
                                   seeds=seeds.astype(np.uint32) if train else None)
      return [np.asarray(leaf) for _, leaf in _flatten(batch)]

    def read(rows, valid, seeds):
      out = tf.numpy_function(gather, [rows, seeds], dtypes)
      for t, leaf in zip(out, leaves):
        t.set_shape((batch_size,) + np.asarray(leaf).shape[1:])
      batch = _unflatten(paths, out)
      batch["valid"] = valid
      return batch
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  # tf.data.Options has no seed field (TF 2.21); all randomness comes from the per-example
  # stateless seeds, so `seed` needs no tf.data setting.
  del seed
  batches = ds.with_options(options).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  return _explained(tf, batches, reader, split, train, rows_of)


def _explained(tf, batches, reader, split, train, rows_of):
  """Yields `batches`; a TensorFlow error inside batch i is re-raised as the reader's own error.

  Decoding inside tf.data loses which file was bad (a JPEG decode or a py-function failure
  surfaces as a bare InvalidArgumentError). Re-reading the failing batch through
  `reader.load_examples` runs the same rows on the numpy side, where readers raise a DataError
  naming the file, expected vs found. If that read succeeds, the original error is re-raised.
  """
  i = 0
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except tf.errors.OpError:
      rows, _, seeds = rows_of(i)
      reader.load_examples(split, rows, train=train,
                           seeds=seeds.astype(np.uint32) if train else None)
      raise
    yield batch
    i += 1


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def train_batches(reader, split: str, *, global_batch_size: int, seed: int, start_step: int,
                  num_steps: int, process_index: int = 0, process_count: int = 1,
                  backend: str = "auto", prefetch: int = 2) -> Iterator[dict[str, Any]]:
  """Host-local training batches for steps [start_step, num_steps), a pure function of the step.

  The batch of step s holds this process's rows of global batch s (see `sampling`); every row
  is `valid`.
  """
  order = sampling.TrainOrder(reader.num_examples(split), global_batch_size, seed,
                              process_index, process_count)
  order.steps_per_epoch  # pylint: disable=pointless-statement  (fails early on tiny splits)
  backend = resolve_backend(backend, reader)
  if backend == "numpy":
    return _background(_numpy_train(reader, split, order, start_step, num_steps), prefetch)

  def rows_of(i):
    epoch, rows = order.step_rows(start_step + i)
    return rows, np.ones(len(rows), bool), sampling.example_seeds(seed, epoch, rows)
  return _tf_batches(tensorflow_or_none(), reader, split, True, rows_of,
                     max(0, num_steps - start_step), order.batch_size, seed)


def eval_batches(reader, split: str, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, backend: str = "auto",
                 prefetch: int = 2) -> Iterator[dict[str, Any]]:
  """Every row of this process's slice of `split` once, in order; the last batch is padded with
  `valid=False` rows so that all processes run the same number of batches."""
  order = sampling.EvalOrder(reader.num_examples(split), global_batch_size, process_index,
                             process_count)
  backend = resolve_backend(backend, reader)
  if backend == "numpy":
    return _background(_numpy_eval(reader, split, order), prefetch)

  def rows_of(i):
    rows, valid = order.batch_rows(i)
    return rows, valid, np.zeros((len(rows), 2), np.uint32)
  return _tf_batches(tensorflow_or_none(), reader, split, False, rows_of, order.num_batches,
                     order.batch_size, None)


def steps_per_epoch(reader, split: str, *, global_batch_size: int, process_count: int = 1) -> int:
  """Training steps in one epoch of `split`: the batches `train_batches` yields per epoch, the
  same on every process (counted on the smallest host slice). Raises ValueError when the split
  holds less than one global batch."""
  return sampling.TrainOrder(reader.num_examples(split), global_batch_size, 0, 0,
                             process_count).steps_per_epoch


def example_batch(reader, split: str) -> dict[str, Any]:
  """The first row of `split`, unaugmented, as a batch of one ({'inputs': {m: [1, ...]},
  'masks': {m: bool[1, T_m]}, 'label': [1, ...], 'valid': bool[1]}): shapes and dtypes for
  initialising a model."""
  return _with_valid(reader.load_examples(split, np.zeros(1, np.int64), train=False),
                     np.ones(1, bool))


def num_eval_batches(reader, split: str, global_batch_size: int, process_count: int = 1) -> int:
  return sampling.EvalOrder(reader.num_examples(split), global_batch_size, 0,
                            process_count).num_batches
