"""Batch iterators: numpy == tf.data, resume at step k, multi-host slicing and eval padding.

Readers are real ones over fixtures written in the test run: the generic 'features' reader
(whose 'video' column 0 holds the row number, so rows can be identified in a batch) and an MMSA
pickle.
"""
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict

import fixtures_msa as fx
from data_pipelines import pipeline
from data_pipelines import registry
from data_pipelines import sampling


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _leaves(tree[k], f"{prefix}/{k}")
  else:
    yield prefix, np.asarray(tree)


def assert_batches_equal(a, b):
  la, lb = dict(_leaves(a)), dict(_leaves(b))
  assert la.keys() == lb.keys()
  for k in la:
    assert la[k].dtype == lb[k].dtype, k
    np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


def row_ids(batch):
  return batch["inputs"]["video"][:, 0].astype(int)


@pytest.fixture(scope="module")
def features_reader(tmp_path_factory):
  root = tmp_path_factory.mktemp("features")
  fx.write_features(root, sizes={"train": 11, "valid": 7, "test": 5})
  return registry.get_reader(ConfigDict({"name": "features", "root": str(root)}))


@pytest.fixture(scope="module")
def mmsa_reader(tmp_path_factory):
  root = tmp_path_factory.mktemp("mmsa")
  fx.write_mmsa(root, aligned=False, padding="left")
  return registry.get_reader(ConfigDict({"name": "mosi", "root": str(root)}))


@pytest.mark.parametrize("which", ["features_reader", "mmsa_reader"])
def test_numpy_and_tf_give_the_same_batches(which, request):
  reader = request.getfixturevalue(which)
  kw = dict(global_batch_size=2, seed=3, start_step=0, num_steps=7)  # > 1 epoch
  np_train = list(pipeline.train_batches(reader, "train", backend="numpy", **kw))
  tf_train = list(pipeline.train_batches(reader, "train", backend="tf", **kw))
  assert len(np_train) == len(tf_train) == 7
  for a, b in zip(np_train, tf_train):
    assert_batches_equal(a, b)
  np_eval = list(pipeline.eval_batches(reader, "test", global_batch_size=4, backend="numpy"))
  tf_eval = list(pipeline.eval_batches(reader, "test", global_batch_size=4, backend="tf"))
  assert len(np_eval) == len(tf_eval) == 2
  for a, b in zip(np_eval, tf_eval):
    assert_batches_equal(a, b)


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_restart_at_step_k_continues_the_same_stream(features_reader, backend):
  kw = dict(global_batch_size=4, seed=11, num_steps=9, backend=backend)
  full = list(pipeline.train_batches(features_reader, "train", start_step=0, **kw))
  resumed = list(pipeline.train_batches(features_reader, "train", start_step=5, **kw))
  assert len(resumed) == 4
  for a, b in zip(full[5:], resumed):
    assert_batches_equal(a, b)
  # The stream is not trivially constant: epochs reshuffle.
  assert not np.array_equal(row_ids(full[0]), row_ids(full[2]))


def test_train_epoch_has_no_repeats_and_epochs_differ(features_reader):
  order = sampling.TrainOrder(11, 4, seed=5)
  assert order.steps_per_epoch == 2
  batches = list(pipeline.train_batches(features_reader, "train", global_batch_size=4, seed=5,
                                        start_step=0, num_steps=4, backend="numpy"))
  for b in batches:
    assert b["valid"].all() and b["inputs"]["video"].shape == (4, 4)
  epoch0 = np.concatenate([row_ids(b) for b in batches[:2]])
  epoch1 = np.concatenate([row_ids(b) for b in batches[2:]])
  assert len(set(epoch0)) == 8 and len(set(epoch1)) == 8
  assert not np.array_equal(epoch0, epoch1)


def test_two_processes_train_on_disjoint_slices_that_cover_the_split(features_reader):
  n = features_reader.num_examples("train")
  slices = [sampling.host_slice(n, p, 2) for p in range(2)]
  assert not set(slices[0]) & set(slices[1])
  assert sorted(np.concatenate(slices)) == list(range(n))
  seen = []
  for p in range(2):
    batches = list(pipeline.train_batches(
        features_reader, "train", global_batch_size=4, seed=0, start_step=0, num_steps=2,
        process_index=p, process_count=2, backend="numpy"))
    assert all(b["inputs"]["audio"].shape == (2, 7, 3) for b in batches)  # local batch 4 / 2
    rows = np.concatenate([row_ids(b) for b in batches])
    assert set(rows) <= set(slices[p]) and len(set(rows)) == len(rows)  # one epoch, no repeats
    seen.append(set(rows))
  assert not seen[0] & seen[1]


@pytest.mark.parametrize("process_count,global_batch", [(1, 3), (2, 8)])
def test_steps_per_epoch_is_the_number_of_batches_of_one_epoch(features_reader, process_count,
                                                               global_batch):
  steps = pipeline.steps_per_epoch(features_reader, "train", global_batch_size=global_batch,
                                   process_count=process_count)
  for p in range(process_count):
    batches = list(pipeline.train_batches(
        features_reader, "train", global_batch_size=global_batch, seed=3, start_step=0,
        num_steps=steps + 1, process_index=p, process_count=process_count, backend="numpy"))
    first_epoch = np.concatenate([row_ids(b) for b in batches[:steps]])
    assert len(set(first_epoch)) == len(first_epoch)  # no row twice within the epoch
    # The epoch leaves fewer rows unseen than a batch holds, so the next batch, the first of
    # epoch 2, must repeat a row: one more step would not have fitted in the epoch.
    assert set(row_ids(batches[steps])) & set(first_epoch)


def test_example_batch_is_the_first_row_in_the_batch_layout(features_reader):
  batch = pipeline.example_batch(features_reader, "train")
  assert_batches_equal({k: v for k, v in batch.items() if k != "valid"},
                       features_reader.load_examples("train", np.arange(1), train=False))
  assert batch["valid"].tolist() == [True] and row_ids(batch).tolist() == [0]


@pytest.mark.parametrize("split,global_batch", [("train", 4), ("valid", 2), ("test", 8)])
def test_eval_padding_equal_batch_counts_and_exact_coverage(features_reader, split, global_batch):
  n = features_reader.num_examples(split)
  counts, covered = [], []
  for p in range(2):
    batches = list(pipeline.eval_batches(features_reader, split, global_batch_size=global_batch,
                                         process_index=p, process_count=2, backend="numpy"))
    counts.append(len(batches))
    assert pipeline.num_eval_batches(features_reader, split, global_batch, 2) == len(batches)
    for b in batches:
      assert b["valid"].shape == (global_batch // 2,)
      assert b["label"].shape == (global_batch // 2,)
      covered += list(row_ids(b)[b["valid"]])
  assert counts[0] == counts[1]
  assert sorted(covered) == list(range(n))  # every row exactly once across processes


def test_eval_batches_in_order_with_padding_flags(features_reader):
  batches = list(pipeline.eval_batches(features_reader, "valid", global_batch_size=4,
                                       backend="numpy"))
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(valid, [True] * 7 + [False])
  np.testing.assert_array_equal(np.concatenate([row_ids(b) for b in batches])[:7], range(7))


def test_abandoned_numpy_iterator_stops_its_thread(features_reader):
  import threading  # pylint: disable=import-outside-toplevel
  before = threading.active_count()
  it = pipeline.train_batches(features_reader, "train", global_batch_size=2, seed=0,
                              start_step=0, num_steps=10_000, backend="numpy", prefetch=2)
  next(it)
  it.close()
  for _ in range(50):
    if threading.active_count() <= before:
      break
    threading.Event().wait(0.05)
  assert threading.active_count() <= before


def test_readers_and_numpy_pipeline_work_without_importing_tensorflow(tmp_path):
  fx.write_features(tmp_path)
  code = f"""
import sys
from ml_collections import ConfigDict
from data_pipelines import pipeline, registry
assert set(registry.names()) >= {{'avmnist', 'features', 'mosei', 'mosi'}}
reader = registry.get_reader(ConfigDict({{'name': 'features', 'root': {str(tmp_path)!r}}}))
batch = next(pipeline.train_batches(reader, 'train', global_batch_size=2, seed=0, start_step=0,
                                    num_steps=1, backend='numpy'))
assert batch['inputs']['audio'].shape == (2, 7, 3)
assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).parents[1]), check=False)
  assert result.returncode == 0, result.stderr
