"""Tiny audio-visual fixtures in each dataset's exact on-disk layout (docs/data.md).

Everything is generated from seeded numpy inside the test run: sine + noise wavs, small JPEG
frames, HDF5 feature files, split lists. Each `make_*` returns a dict describing what it wrote
(clip ids per split, expected labels) so tests can check batches against it.
"""
from __future__ import annotations

import os
import pickle
import wave

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# file writers
# ---------------------------------------------------------------------------------------------


def write_wav(path: str, seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0,
              channels: int = 1) -> np.ndarray:
  """16-bit PCM sine + noise; returns the int16 samples written ([n] or [n, channels])."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * rate))) / rate
  x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
  if channels > 1:
    x = np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], axis=1)
  pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with wave.open(path, "wb") as f:
    f.setnchannels(channels)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.tobytes())
  return pcm


def write_jpeg(path: str, height: int = 32, width: int = 32, seed: int = 0,
               gray: bool = False, quality: int = 90) -> None:
  """A smooth random image (gradients + blobs; JPEG-friendly) as a JPEG file."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
  channels = 1 if gray else 3
  img = np.stack([128 + 100 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx
                                                   + rng.uniform(0.5, 2) * yy + rng.uniform()))
                  for _ in range(channels)], axis=-1)
  img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(img[..., 0] if gray else img).save(path, quality=quality)


# ---------------------------------------------------------------------------------------------
# CREMA-D (OGM-GE layout)
# ---------------------------------------------------------------------------------------------
CREMAD_CLIPS = {
    # clip: (seconds, frames); the 1.2 s clips exercise the 3-s tiling path
    "1001_DFA_HAP_XX": (1.2, 3), "1001_IEO_SAD_HI": (2.0, 2), "1002_DFA_NEU_XX": (3.5, 3),
    "1003_TIE_ANG_XX": (1.6, 1), "1004_IWL_FEA_XX": (2.4, 3), "1005_MTI_DIS_XX": (1.3, 2),
    "1006_ITS_HAP_LO": (2.8, 3), "1007_WSI_NEU_XX": (1.5, 2),
}
CREMAD_TEST = ("1002_DFA_NEU_XX", "1006_ITS_HAP_LO")
OGM = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def make_cremad(root: str, image_size: int = 32, mla: bool = False) -> dict:
  """OGM-GE CREMA-D layout: AudioWAV/, Image-01-FPS/, train.csv (with BOM), test.csv."""
  splits = {"train": [c for c in CREMAD_CLIPS if c not in CREMAD_TEST],
            "test": list(CREMAD_TEST)}
  for i, (clip, (seconds, n_frames)) in enumerate(CREMAD_CLIPS.items()):
    write_wav(os.path.join(root, "AudioWAV", clip + ".wav"), seconds, freq=300 + 100 * i, seed=i)
    for f in range(n_frames):
      write_jpeg(os.path.join(root, "Image-01-FPS", clip, f"{f:05d}.jpg"), image_size,
                 image_size + 8, seed=100 * i + f)
  for split, clips in splits.items():
    with open(os.path.join(root, f"{split}.csv"), "w", encoding="utf-8-sig") as f:
      f.writelines(f"{c},{c.split('_')[2]}\n" for c in clips)
  if mla:
    full = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral",
            "SAD": "Sad"}
    for split, clips in splits.items():
      with open(os.path.join(root, f"my_{split}_cre.txt"), "w") as f:
        f.writelines(f"{c}.flv {full[c.split('_')[2]]}\n" for c in clips)
  labels = {s: [OGM.index(c.split("_")[2]) for c in clips] for s, clips in splits.items()}
  return {"splits": splits, "labels": labels}


# ---------------------------------------------------------------------------------------------
# Kinetics-Sounds (OGM-GE comma lists + manifest)
# ---------------------------------------------------------------------------------------------
KS_CLASSES = [f"class_{i:02d}" for i in range(31)]
KS_CLIPS = {"abcdefghijk_000010_000020": 3, "ABCDEFGHIJK_000030_000040": 17,
            "a1b2c3d4e5f_000000_000010": 30, "zyxwvutsrqp_000005_000015": 0}
KS_TEST = ("zyxwvutsrqp_000005_000015",)


def make_ks(root: str, image_size: int = 32, frames: int = 10, wav: bool = False) -> dict:
  """KS: frames/<id>/frame_00001.jpg.., audio/<id>.npy (1024, 128) fbank (and .wav if `wav`),
  my_train.txt / my_test.txt (OGM-GE '<id>,10,<label>'), classes.txt (31 lines), and
  manifest_{train,test}.csv ('clip_id,label,audio_path,frames_dir')."""
  rng = np.random.default_rng(7)
  splits = {"train": [c for c in KS_CLIPS if c not in KS_TEST], "test": list(KS_TEST)}
  fbanks = {}
  for i, clip in enumerate(KS_CLIPS):
    fbanks[clip] = rng.normal(-5, 3, (1024, 128)).astype(np.float32)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    np.save(os.path.join(root, "audio", clip + ".npy"), fbanks[clip])
    if wav:
      write_wav(os.path.join(root, "audio", clip + ".wav"), 2.0 + i, freq=500 + 50 * i, seed=i)
    for f in range(frames):
      write_jpeg(os.path.join(root, "frames", clip, f"frame_{f + 1:05d}.jpg"), image_size,
                 image_size, seed=1000 * i + f)
  with open(os.path.join(root, "classes.txt"), "w") as f:
    f.writelines(c + "\n" for c in KS_CLASSES)
  for split, clips in splits.items():
    with open(os.path.join(root, f"my_{split}.txt"), "w") as f:
      f.writelines(f"{c},10,{KS_CLIPS[c]}\n" for c in clips)
    with open(os.path.join(root, f"manifest_{split}.csv"), "w") as f:
      f.write("clip_id,label,audio_path,frames_dir\n")
      f.writelines(f"{c},{KS_CLASSES[KS_CLIPS[c]]},audio/{c}.npy,frames/{c}\n" for c in clips)
  labels = {s: [KS_CLIPS[c] for c in clips] for s, clips in splits.items()}
  return {"splits": splits, "labels": labels, "fbanks": fbanks}


# ---------------------------------------------------------------------------------------------
# AVE: AVE-ECCV18 h5 features, and the raw-video classification layout
# ---------------------------------------------------------------------------------------------
def make_ave_h5(root: str, n: int = 6, spatial: int = 7) -> dict:
  """audio_feature.h5 (n, 10, 128), visual_feature.h5 (n, 10, s, s, 512), labels.h5
  (n, 10, 29) one-hot with background (28) segments, {train,val,test}_order.h5."""
  import h5py  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  os.makedirs(root, exist_ok=True)
  audio = rng.normal(size=(n, 10, 128)).astype(np.float32)
  visual = rng.normal(size=(n, 10, spatial, spatial, 512)).astype(np.float32)
  seg = rng.integers(0, 28, (n, 1)).repeat(10, axis=1)
  seg[:, :2] = 28  # background at the start of every video
  seg[0, 7:] = 28
  labels = np.eye(29, dtype=np.float32)[seg]
  for name, data in [("audio_feature.h5", audio), ("visual_feature.h5", visual),
                     ("labels.h5", labels)]:
    with h5py.File(os.path.join(root, name), "w") as f:
      f.create_dataset("avadataset", data=data)
  orders = {"train": np.arange(0, n - 2), "valid": np.array([n - 2]), "test": np.array([n - 1])}
  for split, file in [("train", "train_order.h5"), ("valid", "val_order.h5"),
                      ("test", "test_order.h5")]:
    with h5py.File(os.path.join(root, file), "w") as f:
      f.create_dataset("order", data=orders[split].astype(np.int64))
  return {"audio": audio, "visual": visual, "segments": seg, "orders": orders}


AVE_VIDEOS = [("Church bell", "RUhOCu3LNXM"), ("Male speech, man speaking", "MH3m4AwEcRY"),
              ("Bark", "-zBQTHjfbH8"), ("Church bell", "RUhOCu3LNXM"),  # duplicate id
              ("Flute", "Ppq3Am7F3Bw")]


def make_ave_raw(root: str, image_size: int = 32) -> dict:
  """AVE classification layout: {train,val,test}Set.txt ('&' lines), Image-01-FPS-SE/<vid>/
  3 frames, Audio-1004-SE/<vid>.pkl (257, 1004) float32."""
  rng = np.random.default_rng(11)
  for i, (_, vid) in enumerate(AVE_VIDEOS):
    with open(os.path.join(_mk(root, "Audio-1004-SE"), vid + ".pkl"), "wb") as f:
      pickle.dump(rng.normal(size=(257, 1004)).astype(np.float32), f)
    for k in range(3):
      write_jpeg(os.path.join(root, "Image-01-FPS-SE", vid, f"{k:05d}.jpg"), image_size,
                 image_size, seed=500 + 10 * i + k)
  lines = [f"{c}&{v}&good&0&10\n" for c, v in AVE_VIDEOS]
  with open(os.path.join(root, "trainSet.txt"), "w") as f:
    f.writelines(lines[:4])  # includes the duplicated id
  with open(os.path.join(root, "valSet.txt"), "w") as f:
    f.writelines(lines[4:])
  with open(os.path.join(root, "testSet.txt"), "w") as f:
    f.writelines([lines[2], lines[0], lines[4], lines[1]])
  # class order = first appearance in testSet.txt: Bark, Church bell, Flute, Male speech
  return {"train_ids": ["RUhOCu3LNXM", "MH3m4AwEcRY", "-zBQTHjfbH8"], "train_labels": [1, 3, 0]}


def _mk(root: str, sub: str) -> str:
  path = os.path.join(root, sub)
  os.makedirs(path, exist_ok=True)
  return path


# ---------------------------------------------------------------------------------------------
# UCF101 (Feichtenhofer jpegs_256 + tvl1_flow, official split lists)
# ---------------------------------------------------------------------------------------------
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups"]
UCF_VIDEOS = {"train": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                        "HandstandPushups/v_HandStandPushups_g08_c01.avi"],
              "test": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                       "HandstandPushups/v_HandStandPushups_g01_c02.avi"]}


def make_ucf(root: str, image_size: int = 32, frames: int = 12) -> dict:
  """jpegs_256/v_X/frame000001.jpg.. (RGB), tvl1_flow/{u,v}/v_X/frame000001.jpg.. (gray,
  one frame fewer), ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt."""
  lists = _mk(root, "ucfTrainTestlist")
  with open(os.path.join(lists, "classInd.txt"), "w") as f:
    f.writelines(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES))
  with open(os.path.join(lists, "trainlist01.txt"), "w") as f:
    f.writelines(f"{v} {UCF_CLASSES.index(v.split('/')[0]) + 1}\n" for v in UCF_VIDEOS["train"])
  with open(os.path.join(lists, "testlist01.txt"), "w") as f:
    f.writelines(f"{v}\n" for v in UCF_VIDEOS["test"])
  for i, v in enumerate(UCF_VIDEOS["train"] + UCF_VIDEOS["test"]):
    vid = os.path.splitext(v.split("/")[1])[0]
    for k in range(frames):
      write_jpeg(os.path.join(root, "jpegs_256", vid, f"frame{k + 1:06d}.jpg"), image_size,
                 image_size + 8, seed=2000 + 50 * i + k)
    for k in range(frames - 1):
      for d in ("u", "v"):
        write_jpeg(os.path.join(root, "tvl1_flow", d, vid, f"frame{k + 1:06d}.jpg"),
                   image_size, image_size + 8, seed=3000 + 50 * i + k + (d == "v"), gray=True)
  labels = {s: [UCF_CLASSES.index(v.split("/")[0]) for v in vs] for s, vs in UCF_VIDEOS.items()}
  return {"labels": labels}
