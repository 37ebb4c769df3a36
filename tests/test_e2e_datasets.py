"""End to end: every benchmark config trains and evaluates on a fixture of its dataset's format.

For each experiments/configs/<benchmark>.py: the dataset's fixture is written into tmp_path in
the exact on-disk layout (the writers of tests/fixtures_msa.py and tests/fixtures_av.py, extended
here to at least one global batch of 8 training rows), the config is loaded with its `tiny` arg
and pointed at the fixture, capped at 2 steps with an evaluation after each, and run through
`clcr_jax.train_and_evaluate`. The run directory must then hold results.json with the dataset's
metric keys (finite), the selection rule the config documents, and data_fingerprint.json with
the fixture's split sizes. AV-MNIST also runs on the real data in ../shared/data (a subset), for
CLCR and late fusion.

Every distinct model shape costs one XLA compile (tens of seconds on CPU), so each dataset runs
exactly once here; config variants that need no training (aligned / MulT, split formats) are
checked by building their reader and resolving their model config only.
"""
from __future__ import annotations

import json
import math
import os
import pickle

import ml_collections
import numpy as np
import pytest

import clcr_jax
from clcr_jax import metrics as metrics_lib
from clcr_jax import train_lib
from data_pipelines import registry
from experiments.configs import ave
from experiments.configs import avmnist
from experiments.configs import cremad
from experiments.configs import features
from experiments.configs import kinetics_sounds
from experiments.configs import mosei
from experiments.configs import mosi
from experiments.configs import ucf101
import fixtures_av
import fixtures_msa

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
CLASSIFICATION_KEYS = ("accuracy", "macro_f1", "loss")
BATCH = 8  # one row per fake CPU device (tests/conftest.py)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def shrink(config: ml_collections.ConfigDict, root: str, **overrides) -> ml_collections.ConfigDict:
  """A benchmark config (loaded with `tiny`) pointed at `root`, 2 steps, eval after each."""
  config.data.root = str(root)
  config.train.batch_size = BATCH
  config.eval.batch_size = BATCH
  config.train.max_steps = 2
  config.eval.every_steps = 1
  config.train.log_every_steps = 1
  # The fixtures hold one batch per epoch; save 'latest' only at the end (orbax saves of a
  # replicated state on 8 fake CPU devices cost seconds each). 'best' still follows each eval.
  config.checkpoint.every_steps = 2
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def run(config, workdir, *, keys, select_split: str, select_metric: str,
        split_sizes: dict[str, int]) -> dict:
  """Trains `config` in `workdir` and checks the run directory; returns results.json."""
  results = clcr_jax.train_and_evaluate(config, str(workdir))
  path = os.path.join(workdir, "results.json")
  assert os.path.isfile(path)
  with open(path) as f:
    on_disk = json.load(f)
  assert on_disk == results
  assert results["dataset"] == config.data.name
  assert results["final_step"] == 2
  assert results["selection"]["split"] == select_split
  assert results["selection"]["metric"] == select_metric
  assert results["selection"]["on_test"] == (select_split == "test")
  assert results["selection"]["step"] in (1, 2)
  for split in {"test", select_split}:
    got = results[split]
    missing = set(keys) - set(got)
    assert not missing, f"{split}: missing metric keys {sorted(missing)}; found {sorted(got)}"
    for k, v in got.items():
      assert isinstance(v, float) and math.isfinite(v), f"{split}[{k!r}] = {v!r}"
  with open(os.path.join(workdir, "data_fingerprint.json")) as f:
    fingerprint = json.load(f)
  assert fingerprint["dataset"] == config.data.name
  assert fingerprint["split_sizes"] == split_sizes
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["root"] == str(config.data.root)
  return results


def resolved(config):
  """(reader, resolved model config) of a config: what train_and_evaluate builds first."""
  reader = registry.get_reader(config.data)
  return reader, train_lib.resolve_model_config(config.model, reader)


# ---------------------------------------------------------------------------------------------
# MOSI / MOSEI (MMSA and MulT pickles)
# ---------------------------------------------------------------------------------------------
MSA_SIZES = {"train": BATCH, "valid": 3, "test": 5}
MSA_KEYS = metrics_lib.MMSA_KEYS + ("loss",)


def _grow_train(data):
  """MulT's writer has 6 labelled train rows; repeat two so one batch of 8 fits."""
  data["train"] = {k: np.concatenate([v, v[:BATCH - len(v)]]) for k, v in data["train"].items()}


def test_mosi_default_mmsa_unaligned(tmp_path):
  fixtures_msa.write_mmsa(tmp_path / "MOSI" / "Processed", aligned=False, padding="right",
                          dataset="mosi", sizes=MSA_SIZES)
  config = shrink(mosi.get_config("tiny"), tmp_path / "MOSI")
  assert (config.data.format, config.data.aligned, config.seed) == ("mmsa", False, 1111)
  results = run(config, tmp_path / "run", keys=MSA_KEYS, select_split="valid",
                select_metric="loss", split_sizes=MSA_SIZES)
  assert results["selection"]["mode"] == "min"
  assert results["seed"] == 1111


def test_mosei_mult_aligned(tmp_path):
  fixtures_msa.write_mult(tmp_path / "MOSEI", aligned=True, dataset="mosei",
                          sizes={"train": 6, "valid": 3, "test": 5}, mutate=_grow_train)
  config = shrink(mosei.get_config("tiny,format=mult,aligned"), tmp_path / "MOSEI")
  run(config, tmp_path / "run", keys=MSA_KEYS, select_split="valid", select_metric="loss",
      split_sizes=MSA_SIZES)
  with open(tmp_path / "run" / "data_fingerprint.json") as f:
    fingerprint = json.load(f)
  assert (fingerprint["format"], fingerprint["aligned"]) == ("mult", True)
  assert fingerprint["modalities"]["text"]["shape"] == [50, 300]  # GloVe


@pytest.mark.parametrize("dataset,arg,writer,file_aligned", [
    ("mosi", "", "mmsa", False),
    ("mosi", "aligned", "mmsa", True),
    ("mosi", "format=mult", "mult", False),
    ("mosi", "format=auto,aligned", "mult", True),
    ("mosei", "", "mmsa", False),
    ("mosei", "aligned", "mmsa", True),
])
def test_msa_variants_resolve(tmp_path, dataset, arg, writer, file_aligned):
  """Each data variant finds its file and yields the MSA model: three TCN sequence modalities."""
  if writer == "mmsa":
    path, _ = fixtures_msa.write_mmsa(tmp_path, aligned=file_aligned, dataset=dataset)
  else:
    path, _ = fixtures_msa.write_mult(tmp_path, aligned=file_aligned, dataset=dataset)
  get_config = {"mosi": mosi.get_config, "mosei": mosei.get_config}[dataset]
  config = get_config(arg or None)
  config.data.root = str(tmp_path)
  reader, model = resolved(config)
  assert reader.files == (path,)
  assert model.task == "regression" and (model.d, model.num_heads) == (128, 4)
  assert {m: (s.kind, s.backbone) for m, s in model.modalities.items()} == {
      m: ("sequence", "tcn") for m in ("text", "audio", "vision")}
  t_audio = reader.modalities["audio"].shape[0]
  assert t_audio == (50 if file_aligned else fixtures_msa.UNALIGNED_T[dataset]["audio"])
  assert reader.modalities["audio"].shape[1] == fixtures_msa.DIMS[dataset]["audio"]


# ---------------------------------------------------------------------------------------------
# generic features
# ---------------------------------------------------------------------------------------------
def test_features_classification(tmp_path):
  sizes = {"train": BATCH, "valid": 3, "test": 5}
  fixtures_msa.write_features(tmp_path / "features", layout="npz", label="int", sizes=sizes)
  config = shrink(features.get_config("tiny"), tmp_path / "features")
  assert config.data.root == str(tmp_path / "features")
  results = run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="valid",
                select_metric="accuracy", split_sizes=sizes)
  with open(tmp_path / "run" / "config.json") as f:
    model = json.load(f)["model"]
  assert model["task"] == "classification" and model["num_classes"] == 4
  assert sorted(model["modalities"]) == ["audio", "video"]
  assert 0.0 <= results["test"]["accuracy"] <= 1.0


def test_features_requires_a_root():
  config = features.get_config()
  with pytest.raises(ValueError, match="config.data.root must be set"):
    registry.get_reader(config.data)


# ---------------------------------------------------------------------------------------------
# AV-MNIST on the real data in ../shared/data (a subset)
# ---------------------------------------------------------------------------------------------
needs_avmnist = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                   reason=f"AV-MNIST source data not found in {SHARED_DATA}")


@pytest.fixture(scope="module")
def avmnist_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("avmnist_cache"))


@needs_avmnist
@pytest.mark.parametrize("model,modalities", [("clcr", "image+audio"),
                                               ("late_fusion", "image+audio"),
                                               ("late_fusion", "image")])
def test_avmnist_real_data(tmp_path, avmnist_cache, model, modalities):
  config = avmnist.get_config(f"tiny,modalities={modalities}")
  assert sorted(config.model.modalities) == sorted(modalities.split("+"))
  assert config.data.root == SHARED_DATA
  config = shrink(config, SHARED_DATA, **{"model.name": model, "data.cache_dir": avmnist_cache,
                                          "data.max_train_examples": 512,
                                          "data.max_eval_examples": 64,
                                          "eval.batch_size": 32})
  results = run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="valid",
                select_metric="accuracy",
                split_sizes={"train": 512, "valid": 64, "test": 64})
  assert results["model"] == model
  assert 0.0 <= results["test"]["accuracy"] <= 1.0
  if model == "clcr":
    assert {"omega/level0", "beta/audio", "beta/image"} <= set(results["test"])
  with open(tmp_path / "run" / "config.json") as f:
    assert sorted(json.load(f)["model"]["modalities"]) == sorted(modalities.split("+"))


# ---------------------------------------------------------------------------------------------
# CREMA-D (OGM-GE layout)
# ---------------------------------------------------------------------------------------------
CREMAD_EXTRA = {"1008_IEO_ANG_HI": 2.2, "1009_TIE_FEA_XX": 1.4}


def make_cremad(root) -> None:
  """fixtures_av.make_cremad (6 train / 2 test clips) plus 2 train clips: 8 = one batch."""
  fixtures_av.make_cremad(str(root))
  for i, (clip, seconds) in enumerate(CREMAD_EXTRA.items()):
    fixtures_av.write_wav(os.path.join(root, "AudioWAV", clip + ".wav"), seconds,
                          freq=900 + 50 * i, seed=40 + i)
    for f in range(2):
      fixtures_av.write_jpeg(os.path.join(root, "Image-01-FPS", clip, f"{f:05d}.jpg"), 32, 40,
                             seed=4000 + 10 * i + f)
  with open(os.path.join(root, "train.csv"), "a", encoding="utf-8") as f:
    f.writelines(f"{c},{c.split('_')[2]}\n" for c in CREMAD_EXTRA)


def test_cremad_default_selects_on_test(tmp_path):
  make_cremad(tmp_path / "CREMA-D")
  config = shrink(cremad.get_config("tiny"), tmp_path / "CREMA-D")
  assert config.data.split_format == "ogm" and config.eval.select_on == "test"
  run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="test",
      select_metric="accuracy", split_sizes={"train": 8, "test": 2})


def test_cremad_validation_variants(tmp_path):
  root = tmp_path / "CREMA-D"
  make_cremad(root)
  config = cremad.get_config("split=speaker")
  config.data.root = str(root)
  reader, model = resolved(config)
  assert config.eval.select_on == "valid" and reader.splits == ("train", "valid", "test")
  assert sum(reader.num_examples(s) for s in reader.splits) == 8 + len(CREMAD_EXTRA)
  assert (model.d, model.num_heads, model.resnet.base_width) == (512, 8, 64)
  assert {m: (s.kind, s.backbone) for m, s in model.modalities.items()} == {
      "audio": ("spectrogram", "resnet18"), "visual": ("video", "resnet18")}
  assert reader.modalities["audio"].shape == (257, 188)  # OGM-GE spectrogram
  assert reader.modalities["visual"].shape == (3, 224, 224, 3)

  with open(root / "valid.csv", "w", encoding="utf-8-sig") as f:
    f.write("1002_DFA_NEU_XX,NEU\n")
  config = cremad.get_config("valid_list=valid.csv")
  config.data.root = str(root)
  reader, _ = resolved(config)
  assert config.eval.select_on == "valid" and reader.num_examples("valid") == 1
  with pytest.raises(ValueError, match="no validation split"):
    cremad.get_config("select_on=valid")


# ---------------------------------------------------------------------------------------------
# Kinetics-Sounds (OGM-GE comma lists)
# ---------------------------------------------------------------------------------------------
KS_EXTRA = {f"extra{i:04d}xx_0000{i}0_0000{i + 1}0": 5 * i for i in range(1, 6)}


def make_ks(root) -> None:
  """fixtures_av.make_ks (3 train / 1 test clips, 3 frames each) plus 5 train clips."""
  fixtures_av.make_ks(str(root), frames=3)
  rng = np.random.default_rng(17)
  for i, clip in enumerate(KS_EXTRA):
    np.save(os.path.join(root, "audio", clip + ".npy"),
            rng.normal(-5, 3, (1024, 128)).astype(np.float32))
    for f in range(3):
      fixtures_av.write_jpeg(os.path.join(root, "frames", clip, f"frame_{f + 1:05d}.jpg"), 32, 32,
                             seed=6000 + 10 * i + f)
  with open(os.path.join(root, "my_train.txt"), "a") as f:
    f.writelines(f"{c},10,{label}\n" for c, label in KS_EXTRA.items())


def test_kinetics_sounds_default_selects_on_test(tmp_path):
  make_ks(tmp_path / "ks")
  config = shrink(kinetics_sounds.get_config("tiny"), tmp_path / "ks")
  assert config.eval.select_on == "test"
  results = run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="test",
                select_metric="accuracy", split_sizes={"train": 8, "test": 1})
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["model"]["num_classes"] == 31
  assert results["test"]["accuracy"] in (0.0, 1.0)


def test_kinetics_sounds_valid_list(tmp_path):
  make_ks(tmp_path / "ks")
  with open(tmp_path / "ks" / "my_valid.txt", "w") as f:
    f.write(f"{fixtures_av.KS_TEST[0]},10,0\n")
  config = kinetics_sounds.get_config("valid_list=my_valid.txt")
  config.data.root = str(tmp_path / "ks")
  reader, model = resolved(config)
  assert config.eval.select_on == "valid" and reader.splits == ("train", "valid", "test")
  assert reader.modalities["audio"].shape == (128, 1024)  # OGM-GE fbank, [mel, time]
  assert model.num_classes == 31


# ---------------------------------------------------------------------------------------------
# AVE: 28-way video classification (default) and per-segment localisation
# ---------------------------------------------------------------------------------------------
AVE_EXTRA = [("Bark", "extraBark01"), ("Flute", "extraFlute1"), ("Church bell", "extraBell01"),
             ("Male speech, man speaking", "extraSpeech"), ("Bark", "extraBark02")]


def make_ave_raw(root) -> None:
  """fixtures_av.make_ave_raw (3 distinct train videos, 4 classes) plus 5 train videos."""
  fixtures_av.make_ave_raw(str(root))
  rng = np.random.default_rng(19)
  for i, (_, vid) in enumerate(AVE_EXTRA):
    with open(os.path.join(root, "Audio-1004-SE", vid + ".pkl"), "wb") as f:
      pickle.dump(rng.normal(size=(257, 1004)).astype(np.float32), f)
    for k in range(3):
      fixtures_av.write_jpeg(os.path.join(root, "Image-01-FPS-SE", vid, f"{k:05d}.jpg"), 32, 32,
                             seed=7000 + 10 * i + k)
  with open(os.path.join(root, "trainSet.txt"), "a") as f:
    f.writelines(f"{c}&{v}&good&0&10\n" for c, v in AVE_EXTRA)


def test_ave_default_is_video_classification(tmp_path):
  make_ave_raw(tmp_path / "AVE")
  config = ave.get_config("tiny")
  assert config.model.task == "classification" and config.data.task == "classification"
  # The fixture's testSet.txt names 4 of the 28 categories.
  config = shrink(config, tmp_path / "AVE", **{"data.num_classes": 4, "model.num_classes": 4})
  run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="valid",
      select_metric="accuracy", split_sizes={"train": 8, "valid": 1, "test": 4})


def test_ave_segment_localisation(tmp_path):
  fixtures_av.make_ave_h5(str(tmp_path / "AVE"), n=12, spatial=2)
  config = shrink(ave.get_config("task=segment_classification,tiny"), tmp_path / "AVE")
  results = run(config, tmp_path / "run", keys=("segment_accuracy", "loss"),
                select_split="valid", select_metric="segment_accuracy",
                split_sizes={"train": 10, "valid": 1, "test": 1})
  assert results["selection"]["mode"] == "max"
  with open(tmp_path / "run" / "config.json") as f:
    model = json.load(f)["model"]
  assert (model["task"], model["num_classes"], model["num_segments"]) == (
      "segment_classification", 29, 10)


# ---------------------------------------------------------------------------------------------
# UCF101 (RGB + TV-L1 flow)
# ---------------------------------------------------------------------------------------------
UCF_EXTRA = ([f"ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c0{k}.avi" for k in range(1, 4)]
             + [f"HandstandPushups/v_HandStandPushups_g09_c0{k}.avi" for k in range(1, 4)])


def make_ucf(root) -> None:
  """fixtures_av.make_ucf (2 train / 2 test videos) plus 6 train videos of 4 RGB frames."""
  fixtures_av.make_ucf(str(root), frames=4)
  for i, entry in enumerate(UCF_EXTRA):
    vid = os.path.splitext(entry.split("/")[1])[0]
    for k in range(4):
      fixtures_av.write_jpeg(os.path.join(root, "jpegs_256", vid, f"frame{k + 1:06d}.jpg"), 32,
                             40, seed=8000 + 10 * i + k)
    for k in range(3):
      for d in ("u", "v"):
        fixtures_av.write_jpeg(os.path.join(root, "tvl1_flow", d, vid, f"frame{k + 1:06d}.jpg"),
                               32, 40, seed=9000 + 10 * i + k + (d == "v"), gray=True)
  with open(os.path.join(root, "ucfTrainTestlist", "trainlist01.txt"), "a") as f:
    f.writelines(f"{v} {fixtures_av.UCF_CLASSES.index(v.split('/')[0]) + 1}\n" for v in UCF_EXTRA)


def test_ucf101_rgb_flow_selects_on_test(tmp_path):
  make_ucf(tmp_path / "UCF101")
  config = shrink(ucf101.get_config("tiny"), tmp_path / "UCF101",
                  **{"model.num_classes": len(fixtures_av.UCF_CLASSES)})
  assert config.eval.select_on == "test"
  run(config, tmp_path / "run", keys=CLASSIFICATION_KEYS, select_split="test",
      select_metric="accuracy", split_sizes={"train": 8, "test": 2})
  with open(tmp_path / "run" / "data_fingerprint.json") as f:
    shapes = {m: s["shape"] for m, s in json.load(f)["modalities"].items()}
  assert shapes == {"rgb": [2, 32, 32, 3], "flow": [2, 32, 32, 2]}
