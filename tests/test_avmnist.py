"""AV-MNIST on the real MNIST / FSDD / pairing tables in ../shared/data (a subset, for speed).

Expected values are computed here independently of the reader: the pairing CSV and MNIST labels
are parsed with csv/gzip, PCA is refitted with scikit-learn, wavs are read with scipy, and the
spectrogram is rebuilt with the generator's own window search and scipy.signal.spectrogram.
"""
import csv
import gzip
import hashlib
import os

import numpy as np
import pytest
from ml_collections import ConfigDict

from data_pipelines import audio
from data_pipelines import audio_features
from data_pipelines import pipeline
from data_pipelines import registry
from data_pipelines.base import DataError

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
N_TRAIN, N_EVAL = 2000, 200

pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "mnist")),
                                reason=f"AV-MNIST source data not found in {ROOT}")


def make_reader(cache_dir, **extra):
  config = dict(name="avmnist", root=ROOT, cache_dir=str(cache_dir),
                max_train_examples=N_TRAIN, max_eval_examples=N_EVAL)
  config.update(extra)
  return registry.get_reader(ConfigDict(config))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("avmnist_cache")


@pytest.fixture(scope="module")
def reader(cache_dir):
  return make_reader(cache_dir)


@pytest.fixture(scope="module")
def table():
  """{split: list of CSV rows} in file order, cut to the reader's subset sizes."""
  out = {"train": [], "valid": [], "test": []}
  for name in ("pairs_train.csv", "pairs_test.csv"):
    with open(os.path.join(ROOT, "avmnist_pairs", name), newline="") as f:
      for row in csv.DictReader(f):
        out[row["multibench_split"]].append(row)
  return {"train": out["train"][:N_TRAIN], "valid": out["valid"][:N_EVAL],
          "test": out["test"][:N_EVAL]}


def idx_labels(name):
  with gzip.open(os.path.join(ROOT, "mnist", name)) as f:
    return np.frombuffer(f.read(), np.uint8, offset=8)


def train_pixels(indices):
  images, order = [], []
  for part in range(6):
    with np.load(os.path.join(ROOT, "mnist", f"train_images_part{part}.npz")) as z:
      images.append(z["images"])
      order.append(z["indices"])
  by_index = np.empty((60000, 28, 28), np.uint8)
  by_index[np.concatenate(order)] = np.concatenate(images)
  return by_index[np.asarray(indices)].reshape(len(indices), -1) / 255.0


def eval_rows(reader, split):
  batches = list(pipeline.eval_batches(reader, split, global_batch_size=64, backend="numpy"))
  keep = np.concatenate([b["valid"] for b in batches])
  return {"image": np.concatenate([b["inputs"]["image"] for b in batches])[keep],
          "audio": np.concatenate([b["inputs"]["audio"] for b in batches])[keep],
          "label": np.concatenate([b["label"] for b in batches])[keep]}


# ---------------------------------------------------------------------------------------------
def test_shapes_specs_and_batches(reader):
  assert reader.splits == ("train", "valid", "test")
  assert {s: reader.num_examples(s) for s in reader.splits} == {
      "train": N_TRAIN, "valid": N_EVAL, "test": N_EVAL}
  image, audio = reader.modalities["image"], reader.modalities["audio"]
  assert (image.shape, image.kind, image.mask_length) == ((4,), "vector", 1)
  assert (audio.shape, audio.kind, audio.mask_length) == ((112, 112), "spectrogram", 112)
  assert reader.task.task == "classification" and reader.task.num_classes == 10
  batch = next(pipeline.train_batches(reader, "train", global_batch_size=32, seed=0,
                                      start_step=0, num_steps=1, backend="numpy"))
  assert batch["inputs"]["image"].shape == (32, 4) and batch["inputs"]["image"].dtype == np.float32
  assert batch["inputs"]["audio"].shape == (32, 112, 112)
  assert batch["inputs"]["audio"].dtype == np.float32
  assert 0 <= batch["inputs"]["audio"].min() and batch["inputs"]["audio"].max() <= 1
  assert batch["masks"]["image"].shape == (32, 1) and batch["masks"]["audio"].shape == (32, 112)
  assert batch["masks"]["image"].all() and batch["masks"]["audio"].all()
  assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))


def test_labels_agree_with_pairing_table_and_mnist(reader, table):
  mnist = {"train": idx_labels("train-labels-idx1-ubyte.gz"),
           "test": idx_labels("t10k-labels-idx1-ubyte.gz")}
  mnist["valid"] = mnist["train"]
  for split, rows in table.items():
    indices, files = reader.pairs(split)
    np.testing.assert_array_equal(indices, [int(r["mnist_index"]) for r in rows])
    assert files == [r["fsdd_file"] for r in rows]
    labels = eval_rows(reader, split)["label"]
    np.testing.assert_array_equal(labels, [int(r["label"]) for r in rows])
    np.testing.assert_array_equal(labels, mnist[split][indices])
    assert all(f.startswith(f"{y}_") for f, y in zip(files, labels))
  assert all(f.split("_")[1] == "yweweler" for f in reader.pairs("test")[1])
  assert not any(f.split("_")[1] == "yweweler" for f in reader.pairs("train")[1])


def test_pca_is_fitted_on_the_train_rows_only(reader, table):
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  train = train_pixels([int(r["mnist_index"]) for r in table["train"]])
  valid = train_pixels([int(r["mnist_index"]) for r in table["valid"]])
  ref = PCA().fit(train)
  share = np.cumsum(ref.explained_variance_ratio_)
  k = reader.pca.components.shape[1]
  assert share[k - 1] >= 0.25 > share[k - 2]  # the fewest components reaching 25 %
  assert reader.pca.explained == pytest.approx(share[k - 1], abs=1e-5)
  np.testing.assert_allclose(reader.pca.mean, train.mean(axis=0), atol=1e-6)
  assert not np.allclose(reader.pca.mean, np.concatenate([train, valid]).mean(axis=0), atol=1e-4)
  overlap = np.abs(reader.pca.components.T @ ref.components_[:k].T)
  np.testing.assert_allclose(overlap, np.eye(k), atol=1e-3)
  # Valid rows are projected with the train fit (sign of each component may differ).
  expected = (valid - train.mean(axis=0)) @ ref.components_[:k].T
  np.testing.assert_allclose(np.abs(eval_rows(reader, "valid")["image"]), np.abs(expected),
                             atol=2e-3)


def mfas_window_search(num_samples, t_length=112):
  """The generator's double loop, verbatim in logic."""
  first = int(np.ceil(num_samples / t_length))
  for i in range(first - 1, num_samples):
    for j in range(i):
      if 113 * i - 112 * j > num_samples >= 112 * i - 111 * j:
        return i, j
  raise AssertionError("no window")


def test_window_search_closed_form_matches_the_generator_loop():
  for n in list(range(112, 2000, 7)) + list(range(2000, 20000, 97)):
    assert audio_features.mfas_segmentation(n) == mfas_window_search(n), n


def reference_db(path):
  """dB spectrogram [112 freq, 112 time] from scipy, following matplotlib's PSD conventions."""
  from scipy import signal  # pylint: disable=import-outside-toplevel
  from scipy.io import wavfile  # pylint: disable=import-outside-toplevel
  rate, pcm = wavfile.read(path)
  x = pcm.astype(np.float64) / 32768.0
  nperseg, noverlap = mfas_window_search(len(x))
  _, _, sxx = signal.spectrogram(x, fs=rate, window=np.hanning(nperseg), nperseg=nperseg,
                                 noverlap=noverlap, nfft=223, detrend=False,
                                 scaling="density", mode="psd")
  if nperseg % 2 == 0:  # matplotlib does not double the last bin for an even window
    sxx[-1] /= 2
  return 10 * np.log10(sxx)


def test_spectrogram_matches_an_independent_computation(reader):
  rows = eval_rows(reader, "test")["audio"]
  files = reader.pairs("test")[1]
  greys = np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 9),
                    [1, 240 / 255, 217 / 255, 189 / 255, 150 / 255, 115 / 255, 82 / 255,
                     37 / 255, 0])
  for i in (0, 7, 123):
    db = reference_db(os.path.join(ROOT, "fsdd", "recordings", files[i]))
    assert db.shape == (112, 112)
    z = np.flipud(db)  # the rendered image has the highest frequency on top
    level = np.clip(np.floor((z - z.min()) / (z.max() - z.min()) * 256), 0, 255).astype(int)
    expected = np.floor(greys[level] * 255) / 255
    # np.interp lands one grey level off matplotlib's table on two of 256 entries.
    np.testing.assert_allclose(rows[i], expected, atol=1.01 / 255)
    assert np.mean(np.abs(rows[i] - expected) < 1e-6) > 0.95


def test_spectrogram_pixels_equal_the_generators_matplotlib_rendering(reader):
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from scipy.io import wavfile  # pylint: disable=import-outside-toplevel
  rows = eval_rows(reader, "valid")["audio"]
  files = reader.pairs("valid")[1]
  for i in (0, 50):
    rate, pcm = wavfile.read(os.path.join(ROOT, "fsdd", "recordings", files[i]))
    x = pcm.astype(np.float32) / 32768.0
    nperseg, noverlap = mfas_window_search(len(x))
    fig, ax = plt.subplots(1, figsize=(1.12, 1.12), dpi=100)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
    ax.axis("off")
    ax.specgram(x=x, NFFT=nperseg, pad_to=223, noverlap=noverlap, Fs=rate, cmap="Greys")
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[:, :, 0].copy()
    plt.close(fig)
    np.testing.assert_array_equal(np.round(rows[i] * 255).astype(np.uint8), image)


def test_db_render(reader):
  path = os.path.join(ROOT, "fsdd", "recordings", reader.pairs("train")[1][0])
  samples, rate = audio.read_wav(path)
  got = audio_features.avmnist_spectrogram(samples[0], rate, "db")
  db = reference_db(path)
  np.testing.assert_allclose(got, (db - db.min()) / (db.max() - db.min()), atol=1e-5)


def test_cache_is_reused(reader, cache_dir, monkeypatch):
  assert reader.cache_stats["computed"] + reader.cache_stats["cached"] == len(reader.recordings)
  files = [f for _, _, fs in os.walk(cache_dir) for f in fs if f.endswith(".npy")]
  assert len(files) == len(reader.recordings)

  def fail(*args, **kwargs):
    raise AssertionError("spectrogram recomputed despite the cache")
  monkeypatch.setattr(audio_features, "avmnist_spectrogram", fail)
  again = make_reader(cache_dir)
  assert again.cache_stats == {"computed": 0, "cached": len(reader.recordings)}
  for split in ("train", "test"):
    rows = np.arange(0, reader.num_examples(split), 7)
    a = reader.load_examples(split, rows, train=False)
    b = again.load_examples(split, rows, train=False)
    np.testing.assert_array_equal(a["inputs"]["audio"], b["inputs"]["audio"])
    np.testing.assert_array_equal(a["inputs"]["image"], b["inputs"]["image"])


def test_fingerprint_hashes_what_was_read(reader):
  info = reader.fingerprint()
  pairs = os.path.join(reader.root, "avmnist_pairs", "pairs_test.csv")
  with open(pairs, "rb") as f:
    assert info["files"][pairs]["sha256"] == hashlib.sha256(f.read()).hexdigest()
  assert len(info["files"]) == 4 + 6 + 2 - 1 + len(reader.recordings)  # idx x3, parts, csv x2
  assert info["known_version"] is None and "55000" in info["warning"]  # a subset


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def small_root(tmp_path, edit_train=None):
  """A root linking the real mnist/ and fsdd/, with short pairing tables (5 train, 2 valid,
  2 test rows) that `edit_train(rows)` may corrupt."""
  os.symlink(os.path.join(ROOT, "mnist"), tmp_path / "mnist")
  os.symlink(os.path.join(ROOT, "fsdd"), tmp_path / "fsdd")
  os.makedirs(tmp_path / "avmnist_pairs")
  for name, keep in (("pairs_train.csv", lambda i: i < 5 or 55000 <= i < 55002),
                     ("pairs_test.csv", lambda i: i < 2)):
    with open(os.path.join(ROOT, "avmnist_pairs", name), newline="") as f:
      rows = list(csv.reader(f))
    rows = rows[:1] + [r for r in rows[1:] if keep(int(r[0]))]
    if edit_train and name == "pairs_train.csv":
      edit_train(rows)
    with open(tmp_path / "avmnist_pairs" / name, "w", newline="") as f:
      csv.writer(f).writerows(rows)
  return tmp_path


def test_small_root_loads(tmp_path):
  reader = make_reader(tmp_path / "cache", root=str(small_root(tmp_path)))
  assert {s: reader.num_examples(s) for s in reader.splits} == {"train": 5, "valid": 2, "test": 2}


def _set_cell(line, col, value):
  def edit(rows):
    rows[line - 1][col] = value
  return edit


@pytest.mark.parametrize("edit,message", [
    (_set_cell(3, 1, "7"), r"pairs_train.csv line 3: label 7, but MNIST image 1 is a 0"),
    (_set_cell(2, 2, "4_jackson_0.wav"), r"pairs_train.csv line 2: recording '4_jackson_0.wav' "
                                         r"is not a spoken 5"),
    (_set_cell(4, 4, "dev"), r"pairs_train.csv line 4: multibench_split 'dev', expected one of "
                             r"\['train', 'valid'\]"),
    (_set_cell(2, 0, "70000"), r"pairs_train.csv line 2: mnist_index 70000 outside \[0, 60000\)"),
    (_set_cell(2, 2, "5_nobody_0.wav"), r"5_nobody_0.wav: file not found \(named in the pairing"),
    (lambda rows: [r.pop(2) for r in rows],
     r"pairs_train.csv: missing column\(s\) \['fsdd_file'\]"),
])
def test_bad_pairing_tables(tmp_path, edit, message):
  root = small_root(tmp_path, edit)
  with pytest.raises(DataError, match=message):
    make_reader(tmp_path / "cache", root=str(root))


def test_missing_files(tmp_path):
  with pytest.raises(DataError, match="folder not found"):
    make_reader(tmp_path / "cache", root=str(tmp_path / "nowhere"))
  os.makedirs(tmp_path / "empty" / "mnist")
  with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: file not found"):
    make_reader(tmp_path / "cache", root=str(tmp_path / "empty"))
  junk = tmp_path / "junk.wav"
  junk.write_bytes(b"RIFF....not a wav")
  with pytest.raises(DataError, match=r"junk.wav: unreadable wav"):
    audio.read_wav(str(junk))
