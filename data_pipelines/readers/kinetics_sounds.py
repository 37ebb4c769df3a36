"""Kinetics-Sounds (audio-visual action recognition, 31 classes), registered as "kinetics_sounds".

Kinetics-Sounds is rebuilt by every group from Kinetics-400 YouTube clips, so the reader takes
the split lists and the class list from the user's root (docs/data.md, Kinetics-Sounds):

  classes.txt          one class name per line, class index = line order (required; 31 lines by
                       default, `num_classes`). OGM-GE ships no names, only integer labels.
  split lists          `train_list` / `test_list` (/ `valid_list`), in either format
                       (`list_format`, 'auto' tells them apart):
    'ogm'       GeWu-Lab/OGM-GE_CVPR2022 data/KineticSound/my_{train,test}.txt (14799 / 2597):
                lines '<youtube_id>_<start:06d>_<end:06d>,10,<label int>'; the clip's audio is
                <audio_dir>/<id>.<audio_format> and its frames <frames_dir>/<id>/.
    'manifest'  CSV with the header 'clip_id,label,audio_path,frames_dir'; label = a class name
                or an integer index; paths relative to root (or absolute).
  audio                fbank arrays (1024, 128) .npy as OGM-GE's process_audio.py writes them
                       (already normalised; exposed as [128 mel, 1024 time]), or wav files from
                       which the same Kaldi fbank is computed, normalised with `fbank_norm`
                       (OGM-GE's AudioSet statistics by default).
  frames               1-fps JPEGs frame_00001.jpg .. (10 for a 10-s clip).
`audio_dir` and `frames_dir` may contain '{split}' (ARL / MLA keep one folder per split).
"""
from __future__ import annotations

import csv
import os

from data_pipelines import clip_reader
from data_pipelines.base import DataError, TaskSpec
from data_pipelines.registry import register

LIST_FORMATS = ("auto", "ogm", "manifest")
MANIFEST_HEADER = ["clip_id", "label", "audio_path", "frames_dir"]


@register("kinetics_sounds")
class KineticsSoundsReader(clip_reader.ClipReader):
  """Kinetics-Sounds clips: 'audio' fbank (or spectrogram) + 'visual' frames."""

  KNOWN_SPLIT_SIZES = {
      "ogm_ge": {"train": 14799, "test": 2597},
      "adamml": {"train": 22521, "test": 1532},
  }
  DEFAULTS = dict(
      modalities=("audio", "visual"),
      train_list="my_train.txt",
      test_list="my_test.txt",
      valid_list="",                  # '' = no validation split
      list_format="auto",             # 'auto' | 'ogm' | 'manifest'
      class_list="classes.txt",
      num_classes=31,
      audio_dir="audio",              # for 'ogm' lists
      frames_dir="frames",            # for 'ogm' lists
      audio_format="npy",             # 'npy' (fbank arrays) | 'wav' | 'pkl'
      audio_feature="fbank",          # 'fbank' (128, 1024) | 'ogm_stft' | 'pmr_spec'
      fbank_norm=(-4.503877, 5.141276),
  )
  VISUAL = {"visual": clip_reader.VisualModality(("frames",))}

  def __init__(self, config):
    root = config.get("root", "")
    self._class_file = os.path.join(root, config.get("class_list", self.DEFAULTS["class_list"]))
    self.class_names = self._read_classes(int(config.get("num_classes", 31)))
    super().__init__(config)

  def _read_classes(self, num_classes: int) -> tuple[str, ...]:
    try:
      with open(self._class_file, encoding="utf-8-sig") as f:
        names = tuple(line.strip() for line in f if line.strip())
    except FileNotFoundError:
      raise DataError(f"{self._class_file}: class list not found; Kinetics-Sounds needs one "
                      f"class name per line ({num_classes} lines; config.data.class_list)") \
          from None
    if len(names) != num_classes:
      raise DataError(f"{self._class_file}: expected {num_classes} class names "
                      f"(config.data.num_classes), found {len(names)}")
    if len(set(names)) != len(names):
      raise DataError(f"{self._class_file}: duplicated class names")
    return names

  def task_spec(self) -> TaskSpec:
    return TaskSpec("classification", num_classes=len(self.class_names),
                    class_names=self.class_names)

  def _list_file(self, split: str) -> str:
    return self.path(self.options[f"{split}_list"])

  def split_names(self) -> tuple[str, ...]:
    return ("train",) + (("valid",) if self.options["valid_list"] else ()) + ("test",)

  def list_files(self) -> list[str]:
    return [self._class_file] + [self._list_file(s) for s in self.split_names()]

  def _label(self, text: str, where: str) -> int:
    if text in self.class_names:
      return self.class_names.index(text)
    try:
      label = int(text)
    except ValueError:
      label = None
    if label is None or not 0 <= label < len(self.class_names):
      raise DataError(f"{where}: label {text!r} not in the class list {self._class_file} "
                      f"(expected a class name or an index in [0, {len(self.class_names)}))")
    return label

  def _clip(self, clip_id, label, audio, frames, where) -> clip_reader.Clip:
    return clip_reader.Clip(clip_id, label, audio if self.feature is not None else None,
                            {"frames": frames} if self.streams else {}, where)

  def read_split(self, split: str) -> list[clip_reader.Clip]:
    path = self._list_file(split)
    try:
      with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f), 1) if any(x.strip() for x in r)]
    except FileNotFoundError:
      raise DataError(f"{path}: split list not found (split {split!r})") from None
    if not rows:
      raise DataError(f"{path}: empty split list: expected at least one clip, found none")
    fmt = self.options["list_format"]
    if fmt not in LIST_FORMATS:
      raise ValueError(f"config.data.list_format must be one of {LIST_FORMATS}, found {fmt!r}")
    if fmt == "auto":
      fmt = "manifest" if [x.strip() for x in rows[0][1]] == MANIFEST_HEADER else "ogm"
    o, clips = self.options, []
    if fmt == "manifest":
      if [x.strip() for x in rows[0][1]] != MANIFEST_HEADER:
        raise DataError(f"{path}:1: expected the header {','.join(MANIFEST_HEADER)}, found "
                        f"{','.join(rows[0][1])}")
      for n, row in rows[1:]:
        where = f"{path}:{n}"
        if len(row) != 4:
          raise DataError(f"{where}: expected 4 fields {MANIFEST_HEADER}, found {len(row)}")
        clip_id, label, audio, frames = (x.strip() for x in row)
        clips.append(self._clip(clip_id, self._label(label, where), self.path(audio, split),
                                self.path(frames, split), where))
    else:
      audio_dir, frames_dir = self.path(o["audio_dir"], split), self.path(o["frames_dir"], split)
      for n, row in rows:
        where = f"{path}:{n}"
        if len(row) != 3:
          raise DataError(f"{where}: expected '<id>,<duration>,<label>', found {','.join(row)!r}")
        clip_id, label = row[0].strip(), row[2].strip()
        clips.append(self._clip(clip_id, self._label(label, where),
                                os.path.join(audio_dir, f"{clip_id}.{o['audio_format']}"),
                                os.path.join(frames_dir, clip_id), where))
    return clips
