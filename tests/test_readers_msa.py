"""MOSI / MOSEI readers on MMSA and MulT pickles written in the test run (docs/data.md, MOSI and
MOSEI)."""
import hashlib
import os
import pickle

import numpy as np
import pytest
from ml_collections import ConfigDict

import fixtures_msa as fx
from data_pipelines import pipeline
from data_pipelines import registry
from data_pipelines import safe_pickle
from data_pipelines.base import DataError
from data_pipelines.readers import mosi


def read(root=None, **config):
  config.setdefault("name", "mosi")
  if root is not None:
    config["root"] = str(root)
  return registry.get_reader(ConfigDict(config))


def all_rows(reader, split, global_batch_size=4):
  """Every valid row of `split` through pipeline.eval_batches, concatenated."""
  batches = list(pipeline.eval_batches(reader, split, global_batch_size=global_batch_size,
                                       backend="numpy"))
  keep = np.concatenate([b["valid"] for b in batches])
  cat = lambda get: np.concatenate([get(b) for b in batches])[keep]
  return {"inputs": {m: cat(lambda b, m=m: b["inputs"][m]) for m in batches[0]["inputs"]},
          "masks": {m: cat(lambda b, m=m: b["masks"][m]) for m in batches[0]["masks"]},
          "label": cat(lambda b: b["label"])}


def assert_matches(reader, expected):
  for split, exp in expected.items():
    got = all_rows(reader, split)
    for m in ("text", "audio", "vision"):
      np.testing.assert_array_equal(got["masks"][m], exp["masks"][m], err_msg=f"{split} {m}")
      np.testing.assert_array_equal(got["inputs"][m], exp["inputs"][m], err_msg=f"{split} {m}")
      assert got["inputs"][m].dtype == np.float32 and got["masks"][m].dtype == bool
    np.testing.assert_array_equal(got["label"], exp["label"])
    assert got["label"].dtype == np.float32 and got["label"].ndim == 1


# ---------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_mmsa_mosi(tmp_path, aligned, padding):
  _, expected = fx.write_mmsa(tmp_path / "Processed", aligned=aligned, padding=padding)
  reader = read(tmp_path, aligned=aligned)  # finds MMSA's Processed/ subfolder
  assert reader.splits == ("train", "valid", "test")
  assert reader.task.task == "regression"
  t_a, t_v = (50, 50) if aligned else (375, 500)
  specs = reader.modalities
  assert list(specs) == ["text", "audio", "vision"]
  assert specs["text"].shape == (50, 768) and specs["audio"].shape == (t_a, 5)
  assert specs["vision"].shape == (t_v, 20) and specs["audio"].mask_length == t_a
  assert specs["audio"].has_lengths == (not aligned)
  assert reader.padding["train"] == {"text": "right", "audio": padding, "vision": padding}
  assert_matches(reader, expected)
  if not aligned:  # the length-1 row keeps exactly its one real frame
    row1 = all_rows(reader, "train")["masks"]["audio"][1]
    assert row1.sum() == 1 and row1[-1 if padding == "left" else 0]
  batch = next(pipeline.train_batches(reader, "train", global_batch_size=4, seed=0,
                                      start_step=0, num_steps=1, backend="numpy"))
  assert batch["inputs"]["vision"].shape == (4, t_v, 20)
  assert batch["masks"]["audio"].shape == (4, t_a) and batch["label"].shape == (4,)


def test_mmsa_labels_keep_the_awkward_values(tmp_path):
  fx.write_mmsa(tmp_path, aligned=True)
  got = all_rows(read(tmp_path, aligned=True), "train")["label"]
  np.testing.assert_array_equal(got, np.float32([0.0, -3.0, 3.0, 2.5, -0.5, 1 / 3]))


def test_mmsa_text_bert(tmp_path):
  _, expected = fx.write_mmsa(tmp_path, aligned=False)
  reader = read(tmp_path, text_field="text_bert")
  assert reader.modalities["text"].shape == (3, 50)
  assert reader.modalities["text"].kind == "token_ids"
  got = all_rows(reader, "valid")
  np.testing.assert_array_equal(got["inputs"]["text"], expected["valid"]["text_bert"])
  np.testing.assert_array_equal(got["masks"]["text"], expected["valid"]["masks"]["text"])
  assert got["inputs"]["text"][0, 0, 0] == 101


def test_mmsa_written_by_numpy1(tmp_path):
  path, expected = fx.write_mmsa(tmp_path, aligned=False, numpy1_paths=True)
  with open(path, "rb") as f:
    assert b"numpy.core.multiarray" in f.read()
  assert_matches(read(tmp_path), expected)


def test_mosei_twin_mmsa_and_mult(tmp_path):
  _, expected = fx.write_mmsa(tmp_path / "mmsa", aligned=False, dataset="mosei")
  reader = read(tmp_path / "mmsa", name="mosei")
  assert reader.modalities["audio"].shape == (500, 74)
  assert reader.modalities["vision"].shape == (500, 35)
  assert_matches(reader, expected)
  _, expected = fx.write_mult(tmp_path / "mult", dataset="mosei", aligned=True)
  reader = read(tmp_path / "mult", name="mosei", aligned=True, format="mult")
  assert reader.modalities["audio"].shape == (50, 74)
  assert_matches(reader, expected)


@pytest.mark.parametrize("aligned", [False, True])
def test_mult_mosi(tmp_path, aligned):
  path, expected = fx.write_mult(tmp_path, aligned=aligned)
  assert os.path.basename(path) == ("mosi_data.pkl" if aligned else "mosi_data_noalign.pkl")
  reader = read(tmp_path, aligned=aligned)  # format 'auto' falls back to the MulT name
  assert reader.fingerprint(hash_files=False)["format"] == "mult"
  assert reader.modalities["text"].shape == (50, 300)
  assert reader.padding["test"] == {"text": "left", "audio": "left", "vision": "left"}
  assert_matches(reader, expected)
  assert reader.example_ids("train") == expected["train"]["ids"]  # bytes decoded


def test_explicit_path_and_padding_override(tmp_path):
  path, expected = fx.write_mmsa(tmp_path / "x", aligned=True, padding="right")
  reader = read(path=path, padding_side="right", aligned=False)  # path wins over aligned
  assert_matches(reader, expected)


def test_fingerprint(tmp_path):
  path, _ = fx.write_mmsa(tmp_path, aligned=True)
  info = read(tmp_path, aligned=True).fingerprint()
  with open(path, "rb") as f:
    assert info["files"][path]["sha256"] == hashlib.sha256(f.read()).hexdigest()
  assert info["split_sizes"] == {"train": 6, "valid": 3, "test": 5}
  assert info["known_version"] is None and "match none" in info["warning"]
  assert info["known_file"] is None
  assert mosi.MosiReader.KNOWN_SPLIT_SIZES["CMU standard folds (MMSA, MulT)"] == {
      "train": 1284, "valid": 229, "test": 686}
  assert {"train": 16326, "valid": 1871, "test": 4659} in (
      mosi.MoseiReader.KNOWN_SPLIT_SIZES.values())

  class Tiny(mosi.MosiReader):
    KNOWN_SPLIT_SIZES = {"tiny": {"train": 6, "valid": 3, "test": 5}}
  info = Tiny(ConfigDict({"name": "mosi", "root": str(tmp_path), "aligned": True})).fingerprint()
  assert info["known_version"] == "tiny" and "warning" not in info


def test_nan_to_zero_option(tmp_path):
  def add_nan(data):
    data["train"]["vision"][2, 0, 3] = np.nan
  fx.write_mmsa(tmp_path, aligned=True, mutate=add_nan)
  reader = read(tmp_path, aligned=True, nan_to_zero=True)
  assert all_rows(reader, "train")["inputs"]["vision"][2, 0, 3] == 0


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _del(split, key):
  def f(data):
    del data[split][key]
  return f


def _set(split, key, fn):
  def f(data):
    data[split][key] = fn(data[split][key])
  return f


def _bump_length(data):
  data["train"]["audio_lengths"][3] = 400


def _both_sides(data):
  a = data["train"]["audio"]
  a[1, 0, 0] = a[1, -1, 0] = 1.0  # length-1 row with content at both ends


BAD_MMSA = [
    ("missing split", lambda d: d.pop("valid"), r"missing split\(s\) \['valid'\]"),
    ("missing key", _del("train", "vision"), r"\['train'\]: missing key 'vision'"),
    ("missing labels", _del("test", "regression_labels"), r"missing key 'regression_labels'"),
    ("wrong rank", _set("valid", "audio", lambda a: a[:, :, 0]),
     r"\['valid'\]\['audio'\]: expected a rank-3 array \[N, T, D\], found shape \(3, 375\)"),
    ("wrong width", _set("test", "audio", lambda a: np.concatenate([a, a[:, :, :1]], 2)),
     r"modality 'audio' has per-row shape \(375, 5\) in 'train'.*\(375, 6\) in 'test'"),
    ("label out of range", _set("train", "regression_labels", lambda y: y + 0.75),
     r"\['regression_labels'\]: row 2 has label 3.75, expected a finite value in \[-3.0, 3.0\]"),
    ("nan", _set("train", "vision", lambda v: np.where(np.arange(6)[:, None, None] == 2,
                                                         np.nan, v)),
     r"\['train'\]\['vision'\]: \d+ NaN/\+inf values, first in row 2; set "
     r"config.data.nan_to_zero"),
    ("length too long", _bump_length,
     r"\['audio_lengths'\]: row 3 has length 400, outside \[0, 375\]"),
    ("different N", _set("train", "vision", lambda v: v[:5]),
     r"\['train'\]: 'vision' has 5 rows but the labels have 6"),
    ("padding side unclear", _both_sides, r"cannot tell the padding side.*row 1 \(length 1 of "
                                          r"375\)"),
    ("text_bert not matching text", _set("train", "text_bert", lambda t: t[:, :, :40]),
     r"\['text_bert'\]: expected shape \(6, 3, 50\) to match 'text', found \(6, 3, 40\)"),
    ("string features", _set("train", "audio", lambda a: a.astype(str)),
     r"\['audio'\]: expected a numeric array, found dtype <U"),
]


@pytest.mark.parametrize("case,mutate,message", BAD_MMSA, ids=[c[0] for c in BAD_MMSA])
def test_bad_mmsa_input(tmp_path, case, mutate, message):
  del case
  path, _ = fx.write_mmsa(tmp_path, aligned=False, mutate=mutate)
  with pytest.raises(DataError, match=message) as info:
    read(tmp_path)
  assert path in str(info.value) or "per-row shape" in str(info.value)


BAD_MULT = [
    ("labels shape", _set("train", "labels", lambda y: np.repeat(y, 2, axis=1)),
     r"\['labels'\]: expected one label per row.*found \(6, 2, 1\)"),
    ("different N", _set("valid", "audio", lambda a: a[:2]),
     r"\['valid'\]: 'audio' has 2 rows but the labels have 3"),
    ("missing key", _del("test", "text"), r"\['test'\]: missing key 'text'"),
]


@pytest.mark.parametrize("case,mutate,message", BAD_MULT, ids=[c[0] for c in BAD_MULT])
def test_bad_mult_input(tmp_path, case, mutate, message):
  del case
  path, _ = fx.write_mult(tmp_path, mutate=mutate)
  with pytest.raises(DataError, match=message) as info:
    read(tmp_path)
  assert path in str(info.value)


def test_missing_file_lists_what_was_tried(tmp_path):
  with pytest.raises(DataError, match=r"no CMU-MOSI pickle found.*unaligned_50.pkl.*"
                                      r"Processed.*mosi_data_noalign.pkl"):
    read(tmp_path)
  with pytest.raises(DataError, match="file not found"):
    read(path=str(tmp_path / "nope.pkl"))


def test_format_mismatch_and_bad_options(tmp_path):
  path, _ = fx.write_mmsa(tmp_path, aligned=True)
  with pytest.raises(DataError, match=r"format='mult' but the file looks like a 'mmsa'"):
    read(path=path, format="mult")
  with pytest.raises(ValueError, match="text_field must be one of"):
    read(tmp_path, aligned=True, text_field="glove")
  mult_path, _ = fx.write_mult(tmp_path / "m")
  with pytest.raises(ValueError, match="text_bert.*needs an MMSA pickle"):
    read(path=mult_path, text_field="text_bert")


# ---------------------------------------------------------------------------------------------
# the restricted unpickler
# ---------------------------------------------------------------------------------------------
class Payload:
  """Any class instance: unpickling it would import and call this module."""

  def __init__(self):
    self.x = 1


class SystemCall:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class EvalCall:
  def __reduce__(self):
    return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("make,refused", [
    (lambda marker: Payload(), r"'test_readers_msa.Payload'"),
    (lambda marker: SystemCall(marker), r"'(posix|nt|os)\.system'"),
    (lambda marker: EvalCall(), r"'builtins.eval'"),
])
def test_pickle_with_code_is_refused_without_running_it(tmp_path, make, refused):
  marker = tmp_path / "executed"
  path = tmp_path / "unaligned_50.pkl"
  with open(path, "wb") as f:
    pickle.dump({"train": {"audio": make(marker)}, "valid": {}, "test": {}}, f)
  with pytest.raises(DataError, match=f"{path}: refused to unpickle global {refused}"):
    read(tmp_path)
  assert not marker.exists()


def test_safe_pickle_round_trips_numpy_and_builtins(tmp_path):
  obj = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "s": np.float32(1.5),
         "o": np.array(["x", "y"], dtype=object), "b": np.array([b"ab", b"c"]),
         "l": [1, 2.0, "x", b"y", (1, 2), {3}], "i": np.int64(3)}
  for protocol in (2, 4, 5):
    path = tmp_path / f"p{protocol}.pkl"
    with open(path, "wb") as f:
      pickle.dump(obj, f, protocol=protocol)
    out = safe_pickle.load(str(path))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["l"] == obj["l"] and out["s"] == obj["s"] and list(out["o"]) == ["x", "y"]
  with open(tmp_path / "junk.pkl", "wb") as f:
    f.write(b"not a pickle")
  with pytest.raises(DataError, match="junk.pkl: not a readable pickle"):
    safe_pickle.load(str(tmp_path / "junk.pkl"))
