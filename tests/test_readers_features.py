"""The generic 'features' reader: .npz and .npy-folder layouts, inferred and overridden tasks."""
import os

import numpy as np
import pytest
from ml_collections import ConfigDict

import fixtures_msa as fx
from data_pipelines import pipeline
from data_pipelines import registry
from data_pipelines.base import DataError


def read(root, **config):
  return registry.get_reader(ConfigDict(dict(name="features", root=str(root), **config)))


def all_rows(reader, split):
  batches = list(pipeline.eval_batches(reader, split, global_batch_size=4, backend="numpy"))
  keep = np.concatenate([b["valid"] for b in batches])
  out = {f"inputs/{m}": np.concatenate([b["inputs"][m] for b in batches])[keep]
         for m in batches[0]["inputs"]}
  out.update({f"masks/{m}": np.concatenate([b["masks"][m] for b in batches])[keep]
              for m in batches[0]["masks"]})
  out["label"] = np.concatenate([b["label"] for b in batches])[keep]
  return out


@pytest.mark.parametrize("layout", ["npz", "npy"])
def test_sequence_and_vector_modalities_classification(tmp_path, layout):
  written = fx.write_features(tmp_path, layout=layout)
  if layout == "npy":
    assert os.path.isfile(tmp_path / "train" / "audio_lengths.npy")
  reader = read(tmp_path)
  assert list(reader.modalities) == ["audio", "video"]  # alphabetical
  audio, video = reader.modalities["audio"], reader.modalities["video"]
  assert (audio.shape, audio.kind, audio.mask_length, audio.has_lengths) == ((7, 3), "sequence",
                                                                              7, True)
  assert (video.shape, video.kind, video.mask_length) == ((4,), "vector", 1)
  assert reader.task.task == "classification" and reader.task.num_classes == 4
  for split, arrays in written.items():
    got = all_rows(reader, split)
    np.testing.assert_array_equal(got["inputs/audio"], arrays["audio"])
    np.testing.assert_array_equal(got["inputs/video"], arrays["video"])
    np.testing.assert_array_equal(got["masks/audio"],
                                  fx.mask_of(arrays["audio_lengths"], 7, "right"))
    assert got["masks/video"].shape == (len(arrays["label"]), 1) and got["masks/video"].all()
    np.testing.assert_array_equal(got["label"], arrays["label"])
    assert got["label"].dtype == np.int32 and got["inputs/audio"].dtype == np.float32
  assert all_rows(reader, "train")["masks/audio"][1].sum() == 1  # the length-1 row
  assert len(reader.files) == (3 if layout == "npz" else 12)  # 4 keys x 3 splits


def test_npz_and_npy_layouts_give_identical_batches(tmp_path):
  fx.write_features(tmp_path / "a", layout="npz", seed=7)
  fx.write_features(tmp_path / "b", layout="npy", seed=7)
  a, b = read(tmp_path / "a"), read(tmp_path / "b")
  kw = dict(global_batch_size=2, seed=1, start_step=0, num_steps=5, backend="numpy")
  for x, y in zip(pipeline.train_batches(a, "train", **kw), pipeline.train_batches(b, "train",
                                                                                   **kw)):
    for m in ("audio", "video"):
      np.testing.assert_array_equal(x["inputs"][m], y["inputs"][m])
      np.testing.assert_array_equal(x["masks"][m], y["masks"][m])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_float_labels_mean_regression(tmp_path):
  written = fx.write_features(tmp_path, label="float")
  reader = read(tmp_path)
  assert reader.task.task == "regression" and reader.task.num_classes is None
  got = all_rows(reader, "valid")["label"]
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, written["valid"]["label"].astype(np.float32))


def test_int_matrix_labels_mean_segment_classification(tmp_path):
  written = fx.write_features(tmp_path, label="segments")
  reader = read(tmp_path)
  assert reader.task.task == "segment_classification"
  assert reader.task.num_segments == 3
  assert reader.task.num_classes == max(int(a["label"].max()) for a in written.values()) + 1
  batch = next(pipeline.train_batches(reader, "train", global_batch_size=2, seed=0, start_step=0,
                                      num_steps=1, backend="numpy"))
  assert batch["label"].shape == (2, 3) and batch["label"].dtype == np.int32


def test_config_overrides(tmp_path):
  written = fx.write_features(tmp_path)
  reader = read(tmp_path, modalities=["video"], num_classes=10)
  assert list(reader.modalities) == ["video"] and reader.task.num_classes == 10
  reader = read(tmp_path, modalities=["video", "audio"], task="regression")
  assert list(reader.modalities) == ["video", "audio"]
  assert reader.task.task == "regression"
  np.testing.assert_array_equal(all_rows(reader, "test")["label"],
                                written["test"]["label"].astype(np.float32))
  reader = read(tmp_path, splits=("train", "test"))
  assert reader.splits == ("train", "test")


def test_integral_float_labels_become_classes_when_asked(tmp_path):
  def as_float(split, arrays):
    arrays["label"] = arrays["label"].astype(np.float64)
  fx.write_features(tmp_path, mutate=as_float)
  reader = read(tmp_path, task="classification")
  assert reader.task.num_classes == 4
  assert all_rows(reader, "train")["label"].dtype == np.int32


def test_left_padding_option(tmp_path):
  written = fx.write_features(tmp_path)
  got = all_rows(read(tmp_path, padding_side="left"), "train")["masks/audio"]
  np.testing.assert_array_equal(got, fx.mask_of(written["train"]["audio_lengths"], 7, "left"))


def test_sequence_without_lengths_is_all_valid(tmp_path):
  def drop(split, arrays):
    del arrays["audio_lengths"]
  fx.write_features(tmp_path, mutate=drop)
  reader = read(tmp_path)
  assert not reader.modalities["audio"].has_lengths
  assert all_rows(reader, "train")["masks/audio"].all()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def in_split(which, fn):
  def mutate(split, arrays):
    if split == which:
      fn(arrays)
  return mutate


def _setitem(key, fn):
  def f(arrays):
    arrays[key] = fn(arrays[key])
  return f


BAD = [
    ("missing label", in_split("valid", lambda a: a.pop("label")),
     r"valid.npz: missing key 'label'; found keys \['audio', 'audio_lengths', 'video'\]"),
    ("wrong rank", in_split("train", _setitem("audio", lambda x: x[..., None])),
     r"train.npz\['audio'\]: expected \[N, T, D\] or \[N, D\], found shape \(6, 7, 3, 1\)"),
    ("wrong width", in_split("test", _setitem("video", lambda x: x[:, :3])),
     r"key 'video' has per-row shape \(4,\) in .*train.npz, .*\(3,\) in .*test.npz"),
    ("different N", in_split("train", _setitem("video", lambda x: x[:4])),
     r"train.npz\['video'\]: 4 rows, but 'label' has 6"),
    ("nan", in_split("valid", _setitem("audio", lambda x: np.where(
        np.arange(3)[:, None, None] == 1, np.nan, x))),
     r"valid.npz\['audio'\]: \d+ non-finite values \(NaN/Inf\), first in row 1"),
    ("negative label", in_split("test", _setitem("label", lambda y: y - 1)),
     r"test.npz\['label'\]: row 0 has label -1, outside \[0, 4\)"),
    ("length too long", in_split("train", _setitem("audio_lengths", lambda n: n + 1)),
     r"train.npz\['audio_lengths'\]: row 0 has length 8, outside \[0, 7\]"),
    ("lengths for a vector", in_split("train", lambda a: a.update(video_lengths=np.ones(6, int))),
     r"train.npz\['video_lengths'\]: lengths given for 'video', whose shape \(6, 4\) is \[N, D\]"),
    ("nan label", in_split("train", _setitem("label", lambda y: np.where(
        np.arange(6) == 4, np.nan, y.astype(float)))),
     r"train.npz\['label'\]: row 4 has a NaN/inf label"),
    ("modality missing in a split", in_split("test", lambda a: a.pop("video")),
     r"test.npz \(split 'test'\): missing key 'video' \(present in 'train'\)"),
    ("string features", in_split("valid", _setitem("video", lambda x: x.astype(str))),
     r"valid.npz\['video'\]: expected numeric features, found dtype <U"),
]


@pytest.mark.parametrize("case,mutate,message", BAD, ids=[c[0] for c in BAD])
def test_bad_input(tmp_path, case, mutate, message):
  del case
  fx.write_features(tmp_path, mutate=mutate)
  with pytest.raises(DataError, match=message):
    read(tmp_path)


def test_label_out_of_range_for_configured_classes(tmp_path):
  fx.write_features(tmp_path)
  with pytest.raises(DataError, match=r"train.npz\['label'\]: row 3 has label 3, outside "
                                      r"\[0, 3\) \(num_classes=3\)"):
    read(tmp_path, num_classes=3)


def test_non_integral_labels_refused_for_classification(tmp_path):
  fx.write_features(tmp_path, label="float")
  with pytest.raises(DataError, match=r"task 'classification' needs integer labels; row 0"):
    read(tmp_path, task="classification")


def test_missing_split_and_missing_modality(tmp_path):
  fx.write_features(tmp_path, sizes={"train": 6, "test": 5})
  with pytest.raises(DataError, match=r"split 'valid' not found: expected .*valid.npz or a "
                                      r"folder .*valid/"):
    read(tmp_path)
  with pytest.raises(DataError, match=r"missing key 'text' \(listed in config.data.modalities\)"):
    read(tmp_path, splits=("train", "test"), modalities=["audio", "text"])
  with pytest.raises(DataError, match="folder not found"):
    read(tmp_path / "nowhere")


def test_object_arrays_are_refused(tmp_path):
  fx.write_features(tmp_path, layout="npy")
  np.save(tmp_path / "train" / "video.npy", np.array([{"a": 1}] * 6, dtype=object),
          allow_pickle=True)
  with pytest.raises(DataError, match=r"train/video.npy: cannot read as .npy without pickle"):
    read(tmp_path)
