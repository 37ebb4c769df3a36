"""The audio-visual readers on tiny fixtures in each exact layout, through train_batches /
eval_batches: shapes, labels, cache equivalence, deterministic augmentation, bad input."""
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import fixtures_av
from data_pipelines import audio, pipeline, prepare, registry, sampling
from data_pipelines.base import DataError

tf = pytest.importorskip("tensorflow")
SIZE = 32  # image_size in every test


def config(**fields):
  return ml_collections.ConfigDict(dict(fields, image_size=SIZE))


def train(reader, split="train", steps=2, batch=2, seed=0, start=0, backend="auto"):
  return list(pipeline.train_batches(reader, split, global_batch_size=batch, seed=seed,
                                     start_step=start, num_steps=steps, backend=backend))


def evaluate(reader, split="test", batch=2, backend="auto"):
  return list(pipeline.eval_batches(reader, split, global_batch_size=batch, backend=backend))


def assert_batches_equal(a, b, atol=0.0):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for m in x["inputs"]:
      np.testing.assert_allclose(x["inputs"][m], y["inputs"][m], rtol=0, atol=atol)
      np.testing.assert_array_equal(x["masks"][m], y["masks"][m])
    np.testing.assert_array_equal(x["label"], y["label"])
    np.testing.assert_array_equal(x["valid"], y["valid"])


@pytest.fixture(scope="module", name="cremad")
def _cremad(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cremad"))
  return root, fixtures_av.make_cremad(root, mla=True)


@pytest.fixture(scope="module", name="ucf")
def _ucf(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ucf"))
  return root, fixtures_av.make_ucf(root)


@pytest.fixture(scope="module", name="ks")
def _ks(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ks"))
  return root, fixtures_av.make_ks(root, wav=True)


def test_registered_names():
  assert {"cremad", "kinetics_sounds", "ave", "ucf101"} <= set(registry.names())


# ---------------------------------------------------------------------------------------------
# CREMA-D
# ---------------------------------------------------------------------------------------------
def test_cremad_batches_shapes_labels_and_masks(cremad):
  root, info = cremad
  reader = registry.get_reader(config(name="cremad", root=root))
  assert reader.splits == ("train", "test") and reader.task.num_classes == 6
  assert reader.modalities["audio"].shape == (257, 188)
  assert reader.modalities["audio"].kind == "spectrogram"
  assert reader.modalities["visual"].shape == (3, SIZE, SIZE, 3)
  batches = train(reader, steps=3)
  for b in batches:
    assert b["inputs"]["audio"].shape == (2, 257, 188) and b["inputs"]["audio"].dtype == np.float32
    assert b["inputs"]["visual"].shape == (2, 3, SIZE, SIZE, 3)
    assert b["masks"]["audio"].shape == (2, 188) and b["masks"]["audio"].all()
    assert b["label"].dtype == np.int32 and b["valid"].all()
  # Eval walks the split in order; the labels are OGM-GE's map of the csv codes.
  ev = evaluate(reader, batch=4)
  assert ev[0]["label"][:2].tolist() == info["labels"]["test"]
  np.testing.assert_array_equal(ev[0]["valid"], [True, True, False, False])
  # The spectrogram is the OGM-GE one of the wav.
  clip = reader.clip_ids("test")[0]
  want = audio.AudioFeature("ogm_stft").from_wav(os.path.join(root, "AudioWAV", clip + ".wav"))
  np.testing.assert_array_equal(ev[0]["inputs"]["audio"][0], want)
  # A 1-frame clip fills 3 slots with its frame; only the first is unmasked.
  one = reader.clip_ids("train").index("1003_TIE_ANG_XX")
  b = reader.load_examples("train", np.array([one]), train=False)
  np.testing.assert_array_equal(b["masks"]["visual"][0], [True, False, False])
  np.testing.assert_array_equal(b["inputs"]["visual"][0, 0], b["inputs"]["visual"][0, 2])


def test_cremad_mla_lists_and_label_map(cremad):
  root, _ = cremad
  reader = registry.get_reader(config(name="cremad", root=root, split_format="mla",
                                      modalities=("audio",)))
  assert reader.task.class_names == ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
  labels = [reader.task.class_names[i] for i in reader.load_examples(
      "test", np.arange(2), train=False)["label"]]
  assert labels == [c.split("_")[2] for c in fixtures_av.CREMAD_TEST]


def test_cremad_speaker_split_is_disjoint_and_follows_the_tfds_rule(cremad):
  root, _ = cremad
  reader = registry.get_reader(config(name="cremad", root=root, split_format="speaker",
                                      modalities=("audio",),
                                      speaker_split_fractions=(0.5, 0.25, 0.25)))
  actors = {s: {c.split("_")[0] for c in reader.clip_ids(s)} for s in reader.splits}
  assert not (actors["train"] & actors["valid"] or actors["train"] & actors["test"]
              or actors["valid"] & actors["test"])
  everyone = sorted({c.split("_")[0] for c in fixtures_av.CREMAD_CLIPS})
  np.random.RandomState(0).shuffle(everyone)  # TFDS crema_d: shuffle, then int(p * n) cuts
  # 7 actors: cuts int(0.5 * 7) = 3 and int(0.75 * 7) = 5.
  assert actors["train"] == set(everyone[:3]) and actors["valid"] == set(everyone[3:5])
  assert actors["test"] == set(everyone[5:])
  assert sum(reader.num_examples(s) for s in reader.splits) == len(fixtures_av.CREMAD_CLIPS)


def test_audio_only_reader_and_numpy_backend_agree_with_tf(cremad):
  root, _ = cremad
  reader = registry.get_reader(config(name="cremad", root=root))
  assert_batches_equal(train(reader, backend="numpy"), train(reader, backend="tf"), atol=1e-5)
  assert_batches_equal(evaluate(reader, backend="numpy"), evaluate(reader, backend="tf"),
                       atol=1e-5)


def test_readers_import_and_read_audio_without_tensorflow(cremad):
  root, _ = cremad
  code = (
      "import sys; sys.modules['tensorflow'] = None\n"
      "import ml_collections, numpy as np\n"
      "import data_pipelines.readers.cremad, data_pipelines.readers.ucf101\n"
      "import data_pipelines.readers.kinetics_sounds, data_pipelines.readers.ave\n"
      "from data_pipelines import registry, pipeline\n"
      f"r = registry.get_reader(ml_collections.ConfigDict(dict(name='cremad', root={root!r}, "
      "modalities=('audio',))))\n"
      "b = next(iter(pipeline.eval_batches(r, 'test', global_batch_size=2, backend='numpy')))\n"
      "assert b['inputs']['audio'].shape == (2, 257, 188)\n"
      f"r = registry.get_reader(ml_collections.ConfigDict(dict(name='cremad', root={root!r})))\n"
      "try:\n"
      "  r.load_examples('test', np.arange(1), train=False)\n"
      "except ImportError as e:\n"
      "  assert 'TensorFlow' in str(e); print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# determinism and the cache
# ---------------------------------------------------------------------------------------------
def test_same_step_same_batch_different_steps_differ(cremad):
  root, _ = cremad
  reader = registry.get_reader(config(name="cremad", root=root, modalities=("visual",)))
  first = train(reader, steps=3, seed=4)
  again = train(reader, steps=3, seed=4)
  assert_batches_equal(first, again)
  resumed = train(reader, steps=3, seed=4, start=2)  # a restarted run asks for step 2 alone
  assert_batches_equal(first[2:], resumed)
  assert not np.allclose(first[0]["inputs"]["visual"], first[1]["inputs"]["visual"])
  # The same rows in another epoch get other seeds, hence other frames, crops and flips.
  rows = np.array([0, 1])
  epoch0, epoch1 = (reader.load_examples("train", rows, train=True,
                                         seeds=sampling.example_seeds(4, e, rows))
                    for e in (0, 1))
  assert not np.allclose(epoch0["inputs"]["visual"], epoch1["inputs"]["visual"])


@pytest.mark.parametrize("name,fixture,extra", [
    ("cremad", "cremad", {}),
    ("ucf101", "ucf", {}),
    ("kinetics_sounds", "ks", {"audio_format": "wav"}),  # fbank computed, then cached
])
def test_prepare_cache_gives_the_raw_batches(name, fixture, extra, request, tmp_path):
  root, _ = request.getfixturevalue(fixture)
  out = str(tmp_path / "cache")
  done = prepare.prepare(name, root, out, overrides=extra, progress=False)
  assert set(done) == {"train", "test"}
  raw = registry.get_reader(config(name=name, root=root, cache="off", **extra))
  cached = registry.get_reader(config(name=name, root=root, cache="require", cache_dir=out,
                                      **extra))
  assert type(cached.source("train")).__name__ == "CachedSource"
  assert_batches_equal(train(raw, steps=3, seed=3), train(cached, steps=3, seed=3))
  assert_batches_equal(evaluate(raw), evaluate(cached))


def test_cache_is_checked_against_the_config(cremad, tmp_path):
  root, _ = cremad
  out = str(tmp_path / "cache")
  assert prepare.main(["cremad", "--root", root, "--out", out, "--splits", "test",
                       "--workers", "1", "--set", "modalities=('audio',)"]) == 0
  assert os.path.isfile(os.path.join(out, "test", "meta.json"))
  assert not os.path.exists(os.path.join(out, "train"))  # only the asked split
  with pytest.raises(DataError, match=r"cache='require' but .*train does not exist"):
    registry.get_reader(config(name="cremad", root=root, cache_dir=out, cache="require",
                               modalities=("audio",)))
  prepare.prepare("cremad", root, out, ["train"], {"modalities": ("audio",)}, progress=False)
  other = dict(name="cremad", root=root, cache_dir=out, audio_feature="fbank")
  with pytest.raises(DataError, match="audio built with"):
    registry.get_reader(config(cache="require", **other))
  reader = registry.get_reader(config(cache="auto", **other))  # falls back to the raw files
  assert type(reader.source("test")).__name__ == "RawSource"
  with pytest.raises(DataError, match=r"frame streams \['frames'\] not in the cache"):
    registry.get_reader(config(name="cremad", root=root, cache_dir=out, cache="require"))
  with pytest.raises(ValueError, match="not config fields"):
    prepare.prepare("cremad", root, out, overrides={"num_frame": 2})


# ---------------------------------------------------------------------------------------------
# Kinetics-Sounds
# ---------------------------------------------------------------------------------------------
def test_ks_ogm_list_and_manifest_agree(ks):
  root, info = ks
  ogm = registry.get_reader(config(name="kinetics_sounds", root=root))
  man = registry.get_reader(config(name="kinetics_sounds", root=root,
                                   train_list="manifest_train.csv",
                                   test_list="manifest_test.csv"))
  assert ogm.task.num_classes == 31 and ogm.modalities["audio"].shape == (128, 1024)
  assert_batches_equal(train(ogm, seed=1), train(man, seed=1))
  b = evaluate(ogm, batch=1)[0]
  assert b["label"].tolist() == info["labels"]["test"]
  np.testing.assert_array_equal(b["inputs"]["audio"][0], info["fbanks"][fixtures_av.KS_TEST[0]].T)
  assert b["inputs"]["visual"].shape == (1, 3, SIZE, SIZE, 3) and b["masks"]["visual"].all()


def test_ks_wav_audio_is_the_normalised_fbank(ks):
  root, _ = ks
  reader = registry.get_reader(config(name="kinetics_sounds", root=root, audio_format="wav",
                                      modalities=("audio",)))
  got = evaluate(reader, batch=1)[0]["inputs"]["audio"][0]
  x, rate = audio.read_wav(os.path.join(root, "audio", fixtures_av.KS_TEST[0] + ".wav"))
  fb = audio.pad_or_cut(audio.kaldi_fbank(x - x.mean(), rate), 1024)
  np.testing.assert_allclose(got, ((fb + 4.503877) / (2 * 5.141276)).T, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# AVE
# ---------------------------------------------------------------------------------------------
def test_ave_h5_batches_and_reads_only_the_batch_rows(tmp_path, monkeypatch):
  import h5py  # pylint: disable=import-outside-toplevel
  root = str(tmp_path)
  info = fixtures_av.make_ave_h5(root)
  reader = registry.get_reader(config(name="ave", root=root))
  assert reader.task.task == "segment_classification" and reader.task.num_classes == 29
  assert reader.modalities["visual"].shape == (10, 7, 7, 512)
  assert reader.modalities["visual"].kind == "feature_map"
  assert reader.modalities["audio"].kind == "sequence"
  assert {s: reader.num_examples(s) for s in reader.splits} == {"train": 4, "valid": 1,
                                                                "test": 1}
  reads = []
  original = h5py.Dataset.__getitem__

  def counting(self, key):
    out = original(self, key)
    reads.append((os.path.basename(self.file.filename), np.shape(out)))
    return out
  monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
  batches = train(reader, steps=2, batch=2, backend="numpy")
  visual_reads = [shape for name, shape in reads if name == "visual_feature.h5"]
  assert visual_reads == [(2, 10, 7, 7, 512)] * 2  # one read of the batch's 2 rows per step
  assert sum(np.prod(s) for _, s in reads) == 2 * 2 * 10 * (128 + 7 * 7 * 512 + 29)
  rows = info["orders"]["train"]
  for b in batches:
    assert b["label"].shape == (2, 10) and b["masks"]["visual"].shape == (2, 10)
    for r in range(2):
      match = [i for i in rows if np.array_equal(info["audio"][i], b["inputs"]["audio"][r])]
      assert len(match) == 1
      np.testing.assert_array_equal(b["label"][r], info["segments"][match[0]])
      np.testing.assert_array_equal(b["inputs"]["visual"][r], info["visual"][match[0]])
  monkeypatch.undo()
  tf_batches = train(reader, steps=2, batch=2, backend="tf")
  assert_batches_equal(batches, tf_batches)
  ev = evaluate(reader, "test", batch=2)
  np.testing.assert_array_equal(ev[0]["label"][0], info["segments"][info["orders"]["test"][0]])


def test_ave_h5_bad_inputs(tmp_path):
  import h5py  # pylint: disable=import-outside-toplevel
  root = str(tmp_path)
  fixtures_av.make_ave_h5(root)
  with h5py.File(os.path.join(root, "test_order.h5"), "w") as f:
    f.create_dataset("order", data=np.array([99], np.int64))
  with pytest.raises(DataError, match=r"test_order.h5: split entry without a file row: index 99"):
    registry.get_reader(config(name="ave", root=root))
  fixtures_av.make_ave_h5(root)
  with h5py.File(os.path.join(root, "labels.h5"), "w") as f:
    f.create_dataset("avadataset", data=np.zeros((6, 10, 28), np.float32))
  with pytest.raises(DataError, match=r"labels.h5\['avadataset'\]: expected shape \(6, 10, 29\)"):
    registry.get_reader(config(name="ave", root=root))


def test_ave_video_classification_layout(tmp_path):
  root = str(tmp_path)
  info = fixtures_av.make_ave_raw(root)
  reader = registry.get_reader(config(name="ave", root=root, task="classification",
                                      num_classes=4))
  assert reader.task.class_names == ("Bark", "Church bell", "Flute",
                                     "Male speech, man speaking")
  assert reader.clip_ids("train") == info["train_ids"]  # the duplicated id is kept once
  assert reader.modalities["audio"].shape == (257, 1004)
  b = evaluate(reader, "train", batch=4)[0]
  assert b["label"][:3].tolist() == info["train_labels"]
  assert b["inputs"]["audio"].shape == (4, 257, 1004)
  assert b["inputs"]["visual"].shape == (4, 3, SIZE, SIZE, 3)
  drop = registry.get_reader(config(name="ave", root=root, task="classification",
                                    num_classes=4, duplicates="drop_all"))
  assert drop.clip_ids("train") == info["train_ids"][1:]
  with pytest.raises(DataError, match=r"expected 28 classes .* found 4"):
    registry.get_reader(config(name="ave", root=root, task="classification"))


# ---------------------------------------------------------------------------------------------
# UCF101
# ---------------------------------------------------------------------------------------------
def test_ucf101_rgb_and_flow(ucf):
  root, info = ucf
  reader = registry.get_reader(config(name="ucf101", root=root))
  assert reader.task.class_names == tuple(fixtures_av.UCF_CLASSES)
  assert reader.clip_ids("train")[1] == "v_HandStandPushups_g08_c01"
  assert reader.modalities["flow"].shape == (3, SIZE, SIZE, 2)
  for b in train(reader, steps=2):
    assert b["inputs"]["rgb"].shape == (2, 3, SIZE, SIZE, 3)
    assert b["inputs"]["flow"].shape == (2, 3, SIZE, SIZE, 2)
  ev = evaluate(reader)
  assert ev[0]["label"].tolist() == info["labels"]["test"]
  # Flow is (u, v) of the sampled positions, normalised with (0.1307, 0.3081).
  src = reader.source("test")
  pos, _ = np.array([1, 5, 8]), None  # eval centres of 11 flow frames in 3 segments: [0,3,7,11]
  raw = [tf.io.decode_jpeg(src.frames(s, 0, pos)[1]).numpy() for s in ("flow_u", "flow_v")]
  want = tf.image.resize(np.concatenate(raw, -1)[None].astype(np.float32), [SIZE, SIZE],
                         antialias=True).numpy()[0]
  np.testing.assert_allclose(ev[0]["inputs"]["flow"][0, 1], (want / 255 - 0.1307) / 0.3081,
                             atol=1e-4)


def test_ucf101_label_number_must_match_classind(ucf, tmp_path):
  root, _ = ucf
  bad = str(tmp_path / "ucf")
  shutil.copytree(root, bad)
  path = os.path.join(bad, "ucfTrainTestlist", "trainlist01.txt")
  with open(path, "a") as f:
    f.write("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 2\n")
  with pytest.raises(DataError, match=r"trainlist01.txt:3: label 2 disagrees with classInd"):
    registry.get_reader(config(name="ucf101", root=bad))


# ---------------------------------------------------------------------------------------------
# bad input: each case raises its DataError naming the file / entry
# ---------------------------------------------------------------------------------------------
@pytest.fixture(name="broken")
def _broken(cremad, tmp_path):
  root = str(tmp_path / "cremad")
  shutil.copytree(cremad[0], root)
  return root


def test_unreadable_frame_through_tf_data(broken):
  frame = os.path.join(broken, "Image-01-FPS", "1001_DFA_HAP_XX", "00001.jpg")
  with open(frame, "wb") as f:
    f.write(b"\xff\xd8 this is not really a jpeg")
  reader = registry.get_reader(config(name="cremad", root=broken))
  with pytest.raises(DataError, match=r"1001_DFA_HAP_XX/00001.jpg: unreadable frame: expected a "
                                      r"JPEG/PNG image, found 28 bytes"):
    train(reader, steps=3)
  with pytest.raises(DataError, match="00001.jpg: unreadable frame"):
    evaluate(registry.get_reader(config(name="cremad", root=broken, test_list="train.csv")),
             batch=2, backend="numpy")


def test_unreadable_wav_through_tf_data(broken):
  with open(os.path.join(broken, "AudioWAV", "1002_DFA_NEU_XX.wav"), "wb") as f:
    f.write(b"garbage")
  reader = registry.get_reader(config(name="cremad", root=broken))
  with pytest.raises(DataError, match=r"1002_DFA_NEU_XX.wav: unreadable wav"):
    evaluate(reader)


def test_clip_without_frames(broken):
  folder = os.path.join(broken, "Image-01-FPS", "1005_MTI_DIS_XX")
  for name in os.listdir(folder):
    os.remove(os.path.join(folder, name))
  with pytest.raises(DataError, match=r"train.csv:5: clip without frames: expected at least one"):
    registry.get_reader(config(name="cremad", root=broken))


def test_label_not_in_class_list(broken, ks):
  with open(os.path.join(broken, "test.csv"), "a", encoding="utf-8") as f:
    f.write("1007_WSI_NEU_XX,CAL\n")
  with pytest.raises(DataError, match=r"test.csv:3: label 'CAL' not in the class list; expected "
                                      r"one of NEU, HAP"):
    registry.get_reader(config(name="cremad", root=broken))
  root, _ = ks
  with open(os.path.join(root, "bad_train.txt"), "w") as f:
    f.write("abcdefghijk_000010_000020,10,3\nABCDEFGHIJK_000030_000040,10,31\n")
  with pytest.raises(DataError, match=r"bad_train.txt:2: label '31' not in the class list"):
    registry.get_reader(config(name="kinetics_sounds", root=root, train_list="bad_train.txt"))


def test_split_entry_without_a_file(broken):
  os.remove(os.path.join(broken, "AudioWAV", "1003_TIE_ANG_XX.wav"))
  with pytest.raises(DataError, match=r"train.csv:3: split entry without a file: expected audio "
                                      r"file .*1003_TIE_ANG_XX.wav, not found"):
    registry.get_reader(config(name="cremad", root=broken))
  reader = registry.get_reader(config(name="cremad", root=broken, skip_missing=True))
  assert "1003_TIE_ANG_XX" not in reader.clip_ids("train") and reader.num_examples("train") == 5
  with pytest.raises(DataError, match=r"missing.csv: split list not found"):
    registry.get_reader(config(name="cremad", root=broken, train_list="missing.csv"))
