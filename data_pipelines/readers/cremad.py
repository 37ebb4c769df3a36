"""CREMA-D (audio-visual emotion recognition, 6 classes), registered as "cremad".

Layout under `config.data.root` (OGM-GE's):
  AudioWAV/<clip>.wav           16 kHz wavs, clip = <actor>_<sentence>_<EMO>_<level>
                                (or precomputed arrays <clip>.npy / <clip>.pkl, audio_format)
  Image-01-FPS/<clip>/*.jpg     1-fps frames (OGM-GE video_preprocessing.py)
  train.csv, test.csv           OGM-GE split lists, rows '<clip>,<EMO>', UTF-8 BOM allowed
`audio_dir` and `frames_dir` may contain '{split}' (e.g. MLA's 'visual/{split}_imgs/Image-01-FPS').

Splits (`split_format`; the lists are public but not shipped, copy them into the root):
  'ogm'      (default) GeWu-Lab/OGM-GE_CVPR2022 data/CREMAD/{train,test}.csv: 6698 / 744, random,
             not speaker-disjoint; PMR, DI-MML and ARL use the same test list.
  'mla'      Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation
             data/my_{train,test}_cre.txt: lines '<clip>.flv <Emotion>' (full names); another
             random 90/10 split (only 71 test clips in common with OGM-GE's).
  'speaker'  no list: the actors (first field of the clip name) of every clip in `audio_dir`
             (`frames_dir` for visual-only configs) are shuffled with
             np.random.RandomState(speaker_split_seed) and cut by `speaker_split_fractions` into
             train / valid / test, exactly TFDS crema_d's rule (seed 0, 0.7/0.1/0.2 gives TFDS's
             speaker assignment; TFDS also drops 4 clips its mirror lacks, 5144/738/1556).

Label map (`label_map`, the codes in class-index order): OGM-GE's NEU, HAP, SAD, FEA, DIS, ANG
for 'ogm' and 'speaker'; MLA's sorted names (ANG, DIS, FEA, HAP, NEU, SAD) for 'mla'. TFDS uses
NEU, HAP, SAD, ANG, FEA, DIS: set label_map to compare with it.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from data_pipelines import clip_reader
from data_pipelines.base import DataError, TaskSpec
from data_pipelines.registry import register

OGM_LABELS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
MLA_LABELS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
FULL_NAMES = {"Anger": "ANG", "Disgust": "DIS", "Fear": "FEA", "Happy": "HAP", "Neutral": "NEU",
              "Sad": "SAD"}
DEFAULT_LISTS = {"ogm": ("train.csv", "test.csv"), "mla": ("my_train_cre.txt", "my_test_cre.txt")}
SPLIT_FORMATS = ("ogm", "mla", "speaker")


@register("cremad")
class CremaDReader(clip_reader.ClipReader):
  """CREMA-D clips: 'audio' spectrogram + 'visual' frames, 6-way classification."""

  KNOWN_SPLIT_SIZES = {
      "ogm_ge_or_mla": {"train": 6698, "test": 744},
      "tfds_speaker": {"train": 5144, "valid": 738, "test": 1556},
  }
  DEFAULTS = dict(
      modalities=("audio", "visual"),
      split_format="ogm",             # 'ogm' | 'mla' | 'speaker'
      train_list="",                  # '' = the format's file (train.csv / my_train_cre.txt)
      test_list="",                   # '' = the format's file (test.csv / my_test_cre.txt)
      valid_list="",                  # '' = no validation split (ogm / mla)
      label_map=(),                   # codes in index order; () = the format's map
      speaker_split_seed=0,
      speaker_split_fractions=(0.7, 0.1, 0.2),
      audio_dir="AudioWAV",
      audio_format="wav",             # 'wav' | 'npy' | 'pkl'
      audio_feature="ogm_stft",       # 'ogm_stft' (257, 188) | 'pmr_spec' (257, 1004) | 'fbank'
      frames_dir="Image-01-FPS",
  )
  VISUAL = {"visual": clip_reader.VisualModality(("frames",))}

  def __init__(self, config):
    fmt = config.get("split_format", "ogm")
    if fmt not in SPLIT_FORMATS:
      raise ValueError(f"config.data.split_format must be one of {SPLIT_FORMATS}, found {fmt!r}")
    self.split_format = fmt
    self.label_map = tuple(config.get("label_map", ()) or
                           (MLA_LABELS if fmt == "mla" else OGM_LABELS))
    self._speaker_splits = None
    super().__init__(config)

  def task_spec(self) -> TaskSpec:
    return TaskSpec("classification", num_classes=len(self.label_map),
                    class_names=self.label_map)

  def _list_file(self, split: str) -> str:
    o = self.options
    name = {"train": o["train_list"], "test": o["test_list"], "valid": o["valid_list"]}[split]
    if not name and split != "valid":
      name = DEFAULT_LISTS[self.split_format][split == "test"]
    return self.path(name)

  def split_names(self) -> tuple[str, ...]:
    if self.split_format == "speaker":
      return ("train", "valid", "test")
    return ("train",) + (("valid",) if self.options["valid_list"] else ()) + ("test",)

  def list_files(self) -> list[str]:
    if self.split_format == "speaker":
      return []
    return [self._list_file(s) for s in self.split_names()]

  # -- split lists ---------------------------------------------------------------------------
  def _label(self, code: str, where: str) -> int:
    code = FULL_NAMES.get(code, code)
    if code not in self.label_map:
      raise DataError(f"{where}: label {code!r} not in the class list; expected one of "
                      f"{', '.join(self.label_map)}")
    return self.label_map.index(code)

  def _clip(self, name: str, label: int, split: str, where: str) -> clip_reader.Clip:
    o = self.options
    audio = (os.path.join(self.path(o["audio_dir"], split), f"{name}.{o['audio_format']}")
             if self.feature is not None else None)
    frames = {"frames": os.path.join(self.path(o["frames_dir"], split), name)} \
        if self.streams else {}
    return clip_reader.Clip(name, label, audio, frames, where)

  def _read_list(self, split: str) -> list[tuple[str, str, str]]:
    """(clip name, label text, where) of the split list's rows."""
    path = self._list_file(split)
    try:
      with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().splitlines()
    except FileNotFoundError:
      raise DataError(f"{path}: split list not found (split {split!r}, split_format "
                      f"{self.split_format!r}); copy it from the reference repository (see "
                      f"data_pipelines/readers/cremad.py)") from None
    rows = []
    for n, line in enumerate(lines, 1):
      if not line.strip():
        continue
      where = f"{path}:{n}"
      if self.split_format == "mla":
        fields = line.strip().rsplit(None, 1)
        if len(fields) != 2:
          raise DataError(f"{where}: expected '<clip>.flv <Emotion>', found {line!r}")
        rows.append((os.path.splitext(fields[0])[0], fields[1], where))
      else:
        fields = next(csv.reader([line]))
        if len(fields) != 2:
          raise DataError(f"{where}: expected 2 fields '<clip>,<EMO>', found {len(fields)}: "
                          f"{line!r}")
        rows.append((fields[0].strip(), fields[1].strip(), where))
    return rows

  def _speaker_rows(self, split: str) -> list[tuple[str, str, str]]:
    if self._speaker_splits is None:
      o = self.options
      folder, ext = ((self.path(o["audio_dir"]), "." + o["audio_format"])
                     if self.feature is not None else (self.path(o["frames_dir"]), ""))
      try:
        names = sorted(os.path.splitext(e.name)[0] if ext else e.name
                       for e in os.scandir(folder) if e.name.endswith(ext) or not ext)
      except FileNotFoundError:
        raise DataError(f"{folder}: not found; the speaker split lists the clips there") \
            from None
      clips = []
      for name in names:
        parts = name.split("_")
        if len(parts) != 4:
          raise DataError(f"{os.path.join(folder, name)}: expected a CREMA-D clip name "
                          f"<actor>_<sentence>_<EMO>_<level>, found {name!r}")
        clips.append((name, parts[0], parts[2]))
      actors = sorted({a for _, a, _ in clips})
      np.random.RandomState(int(o["speaker_split_seed"])).shuffle(actors)
      fractions = [float(p) for p in o["speaker_split_fractions"]]
      if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-8:
        raise ValueError(f"speaker_split_fractions must be 3 numbers summing to 1, found "
                         f"{fractions}")
      bounds = np.cumsum([0.0] + fractions)
      # TFDS's boundaries: int(cumulative fraction * number of actors), last one = all actors.
      cuts = [int(b * len(actors)) for b in bounds[:-1]] + [len(actors)]
      of_actor = {a: s for s, lo, hi in zip(("train", "valid", "test"), cuts[:-1], cuts[1:])
                  for a in actors[lo:hi]}
      self._speaker_splits = {s: [(n, e, f"{folder}/{n}") for n, a, e in clips
                                  if of_actor[a] == s] for s in ("train", "valid", "test")}
    return self._speaker_splits[split]

  def read_split(self, split: str) -> list[clip_reader.Clip]:
    rows = (self._speaker_rows(split) if self.split_format == "speaker"
            else self._read_list(split))
    if not rows:
      where = ("the speaker split (check speaker_split_fractions)"
               if self.split_format == "speaker" else self._list_file(split))
      raise DataError(f"split {split!r} of cremad is empty: expected at least one clip in "
                      f"{where}, found none")
    return [self._clip(name, self._label(code, where), split, where)
            for name, code, where in rows]
