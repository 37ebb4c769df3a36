"""The 'tfds' reader and `prepare --format=tfds` on TFDS datasets built in a temporary data_dir."""
import json
import os
import wave

import numpy as np
import pytest
from ml_collections import ConfigDict

import fixtures_msa as fx
from data_pipelines import audio as audio_lib
from data_pipelines import pipeline
from data_pipelines import prepare
from data_pipelines import registry
from data_pipelines.base import DataError

tfds = pytest.importorskip("tensorflow_datasets")

# tensorflow_datasets/audio/crema_d.py (TFDS 4.9.10), CremaD._info: the exact FeaturesDict.
CREMA_D_LABELS = ("NEU", "HAP", "SAD", "ANG", "FEA", "DIS")


def crema_d_features():
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Audio(file_format="wav", sample_rate=16000),
      "label": tfds.features.ClassLabel(names=list(CREMA_D_LABELS)),
      "speaker_id": np.str_,
  })


def reader(**fields):
  return registry.get_reader(ConfigDict(fields))


def batches(r, split, *, train, process_index=0, process_count=1):
  kw = dict(global_batch_size=4, process_index=process_index, process_count=process_count,
            backend="numpy", prefetch=0)
  if train:
    return list(pipeline.train_batches(r, split, seed=3, start_step=0, num_steps=5, **kw))
  return list(pipeline.eval_batches(r, split, **kw))


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    flat = lambda t: {"/".join(k): v for k, v in pipeline._flatten(t)}  # pylint: disable=protected-access
    fx_, fy = flat(x), flat(y)
    assert sorted(fx_) == sorted(fy)
    for k in fx_:
      assert fx_[k].dtype == fy[k].dtype, k
      np.testing.assert_array_equal(fx_[k], fy[k], err_msg=k)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """(raw reader config, tfds data_dir) for the features (AV) and mosi (MSA) fixtures."""
  base = tmp_path_factory.mktemp("tfds")
  fx.write_features(str(base / "features"))
  fx.write_mmsa(str(base / "mosi"), aligned=False)
  out = str(base / "data_dir")
  made = {}
  for name in ("features", "mosi"):
    assert prepare.main([name, "--root", str(base / name), "--format=tfds", "--out", out]) == 0
    made[name] = {"name": name, "root": str(base / name)}
  return made, out


@pytest.mark.parametrize("dataset", ["features", "mosi"])
@pytest.mark.parametrize("process_count", [1, 2])
def test_tfds_batches_equal_the_raw_reader_bit_for_bit(written, dataset, process_count):
  made, out = written
  raw = reader(**made[dataset])
  back = reader(name="tfds", tfds_name=f"clcr_{dataset}", data_dir=out)
  assert back.splits == raw.splits
  assert back.modalities == raw.modalities and back.task == raw.task
  for split in raw.splits:
    assert back.num_examples(split) == raw.num_examples(split)
  for p in range(process_count):
    for train, split in ((True, "train"), (False, "test"), (False, "valid")):
      assert_same_batches(batches(back, split, train=train, process_index=p,
                                  process_count=process_count),
                          batches(raw, split, train=train, process_index=p,
                                  process_count=process_count))
  fp = back.fingerprint()
  assert fp["source_fingerprint"]["split_sizes"] == raw.fingerprint()["split_sizes"]


def test_resume_reads_the_same_rows(written):
  _, out = written
  back = reader(name="tfds", tfds_name="clcr_mosi", data_dir=out)
  kw = dict(global_batch_size=4, seed=3, num_steps=6, backend="numpy", prefetch=0)
  full = list(pipeline.train_batches(back, "train", start_step=0, **kw))
  resumed = list(pipeline.train_batches(back, "train", start_step=4, **kw))
  assert_same_batches(full[4:], resumed)


def test_fingerprint_is_stored_beside_dataset_info(written):
  _, out = written
  folder = os.path.join(out, "clcr_mosi", "1.0.0")
  with open(os.path.join(folder, "clcr_fingerprint.json")) as f:
    stored = json.load(f)
  assert stored["dataset"] == "mosi" and stored["files"]
  assert os.path.isfile(os.path.join(folder, "dataset_info.json"))
  assert any(n.endswith("array_record-00000-of-00001") for n in os.listdir(folder))


def test_missing_dataset_version_split_and_feature_are_named(written):
  _, out = written
  with pytest.raises(DataError, match=r"'nope' not found .*clcr_features.*clcr_mosi"):
    reader(name="tfds", tfds_name="nope", data_dir=out)
  with pytest.raises(DataError, match=r"no version '9.9.9'.*\['1.0.0'\]"):
    reader(name="tfds", tfds_name="clcr_mosi:9.9.9", data_dir=out)
  with pytest.raises(DataError, match=r"no split 'validation'.*'train'"):
    reader(name="tfds", tfds_name="clcr_mosi", data_dir=out,
           splits={"valid": "validation"})
  with pytest.raises(DataError, match=r"no feature 'inputs/rgb'.*inputs/audio"):
    reader(name="tfds", tfds_name="clcr_mosi", data_dir=out, fields={"rgb": "inputs/rgb"})
  with pytest.raises(ValueError, match="not fields of the 'tfds' reader"):
    reader(name="tfds", tfds_name="clcr_mosi", data_dir=out, tfds_nmae="x")


def _write_wav(path, samples, rate):
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(samples.astype("<i2").tobytes())


def test_crema_d_feature_spec_reads_as_the_clip_readers_spectrogram(tmp_path):
  rng = np.random.default_rng(0)
  waves = [(rng.normal(size=n) * 3000).astype(np.int16) for n in (16000, 24000, 8000, 20000)]

  def examples(rows):
    for i in rows:
      yield i, {"audio": waves[i].astype(np.int64), "label": i % 6, "speaker_id": f"10{i:02d}"}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="crema_d", version="1.0.0", features=crema_d_features(),
      split_datasets={"train": examples([0, 1]), "validation": examples([2]),
                      "test": examples([3])},
      data_dir=str(tmp_path), file_format="array_record", disable_shuffling=True)
  back = reader(name="tfds", tfds_name="crema_d", data_dir=str(tmp_path),
                fields={"audio": "audio"}, frontends={"audio": "waveform"})
  assert back.splits == ("train", "valid", "test")
  assert back.task.num_classes == 6 and back.task.class_names == CREMA_D_LABELS
  spec = back.modalities["audio"]
  assert spec.kind == "spectrogram" and spec.shape == (257, 188)
  got = back.load_examples("train", np.array([1, 0]), train=False)
  for j, i in enumerate((1, 0)):
    path = str(tmp_path / f"{i}.wav")
    _write_wav(path, waves[i], 16000)
    np.testing.assert_array_equal(got["inputs"]["audio"][j], audio_lib.AudioFeature().from_wav(path))
  np.testing.assert_array_equal(got["label"], [1, 0])
  assert got["masks"]["audio"].shape == (2, 188) and got["masks"]["audio"].all()


def test_tfrecord_dataset_is_refused_with_how_to_convert(tmp_path):
  def examples():
    for i in range(3):
      yield i, {"x": np.full(2, i, np.float32), "label": i}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="rec", version="1.0.0", data_dir=str(tmp_path), file_format="tfrecord",
      features=tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(2,),
                                                                     dtype=np.float32),
                                           "label": tfds.features.ClassLabel(num_classes=3)}),
      split_datasets={"train": examples()})
  with pytest.raises(DataError, match="array_record"):
    reader(name="tfds", tfds_name="rec", data_dir=str(tmp_path), fields={"x": "x"})


def test_cremad_config_source_tfds_reads_crema_d(tmp_path):
  from experiments.configs import cremad  # pylint: disable=import-outside-toplevel
  def examples(n):
    for i in range(n):
      yield i, {"audio": np.arange(8000, dtype=np.int64) % 300, "label": i % 6,
                "speaker_id": f"10{i:02d}"}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="crema_d", version="1.0.0", features=crema_d_features(), data_dir=str(tmp_path),
      split_datasets={"train": examples(4), "validation": examples(2), "test": examples(2)},
      file_format="array_record", disable_shuffling=True)
  config = cremad.get_config("source=tfds,tiny")
  config.data.data_dir = str(tmp_path)
  r = registry.get_reader(config.data)
  assert r.splits == ("train", "valid", "test") and list(r.modalities) == ["audio"]
  assert config.eval.select_on == "valid" and list(config.model.modalities) == ["audio"]
  batch = batches(r, "train", train=True)[0]
  assert batch["inputs"]["audio"].shape == (4, 257, 188)
