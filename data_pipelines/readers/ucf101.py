"""UCF101 RGB + optical flow (101-way action recognition), registered as "ucf101".

Layout under `config.data.root` (the Feichtenhofer "two-stream fusion" release):
  jpegs_256/v_<name>/frame000001.jpg ...            RGB frames (25 fps, 256 px)
  tvl1_flow/u/v_<name>/frame000001.jpg ...          TV-L1 x flow, 8-bit grayscale JPEG
  tvl1_flow/v/v_<name>/frame000001.jpg ...          TV-L1 y flow
  ucfTrainTestlist/classInd.txt                     '1 ApplyEyeMakeup' (1-based -> 0-based)
  ucfTrainTestlist/trainlist0N.txt                  'ApplyEyeMakeup/v_..._g08_c01.avi 1'
  ucfTrainTestlist/testlist0N.txt                   'ApplyEyeMakeup/v_..._g01_c01.avi'
The label is the class of the entry's folder (checked against the number on train lines).
classInd and the folders say 'HandstandPushups' while the videos are named 'v_HandStandPushups_';
both spellings are accepted for the class and for the frame folders (as TFDS patches it).

Modalities: 'rgb' float32 [F, H, W, 3] (ImageNet normalisation) and 'flow' float32 [F, H, W, 2]
((u, v) of the same position stacked as channels, normalised with (0.1307, 0.3081)). Both are
sampled at the same F positions, spread over min(#rgb, #flow) frames (TV-L1 gives one flow frame
fewer than RGB frames), with the same crop and flip (video.py).
"""
from __future__ import annotations

import os

from data_pipelines import clip_reader
from data_pipelines.base import DataError, TaskSpec
from data_pipelines.registry import register

SPELLINGS = {"HandStandPushups": "HandstandPushups"}


def _alternate(name: str) -> str:
  """The other spelling of a HandstandPushups video/folder name (or the name itself)."""
  for wrong, right in SPELLINGS.items():
    if wrong in name:
      return name.replace(wrong, right)
    if right in name:
      return name.replace(right, wrong)
  return name


@register("ucf101")
class Ucf101Reader(clip_reader.ClipReader):
  """UCF101 split N: 'rgb' frames and 'flow' (u, v) stacks."""

  KNOWN_SPLIT_SIZES = {"split1": {"train": 9537, "test": 3783}}
  DEFAULTS = dict(
      modalities=("rgb", "flow"),
      split_dir="ucfTrainTestlist",
      split_number=1,
      rgb_dir="jpegs_256",
      flow_dir="tvl1_flow",
  )
  VISUAL = {"rgb": clip_reader.VisualModality(("rgb",)),
            "flow": clip_reader.VisualModality(("flow_u", "flow_v"), flow=True)}
  HAS_AUDIO = False

  def _lists(self) -> dict[str, str]:
    o, n = self.options, int(self.options["split_number"])
    folder = self.path(o["split_dir"])
    return {"classes": os.path.join(folder, "classInd.txt"),
            "train": os.path.join(folder, f"trainlist{n:02d}.txt"),
            "test": os.path.join(folder, f"testlist{n:02d}.txt")}

  def _lines(self, path: str) -> list[tuple[int, list[str]]]:
    try:
      with open(path, encoding="utf-8-sig") as f:
        return [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
    except FileNotFoundError:
      raise DataError(f"{path}: UCF101 split file not found (config.data.split_dir / "
                      f"split_number)") from None

  def task_spec(self) -> TaskSpec:
    path = self._lists()["classes"]
    names = []
    for n, fields in self._lines(path):
      if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) != len(names) + 1:
        raise DataError(f"{path}:{n}: expected '<index> <ClassName>' with index "
                        f"{len(names) + 1}, found {' '.join(fields)!r}")
      names.append(SPELLINGS.get(fields[1], fields[1]))
    self.class_names = tuple(names)
    return TaskSpec("classification", num_classes=len(names), class_names=self.class_names)

  def split_names(self) -> tuple[str, ...]:
    return ("train", "test")

  def list_files(self) -> list[str]:
    return list(self._lists().values())

  def _frames_dir(self, base: str, video: str) -> str:
    path = os.path.join(base, video)
    if not os.path.isdir(path) and os.path.isdir(os.path.join(base, _alternate(video))):
      return os.path.join(base, _alternate(video))
    return path

  def read_split(self, split: str) -> list[clip_reader.Clip]:
    o, path = self.options, self._lists()[split]
    rgb, flow = self.path(o["rgb_dir"]), self.path(o["flow_dir"])
    clips = []
    for n, fields in self._lines(path):
      where = f"{path}:{n}"
      folder, _, filename = fields[0].partition("/")
      if not filename or len(fields) > 2:
        raise DataError(f"{where}: expected '<Class>/v_<name>.avi [label]', found "
                        f"{' '.join(fields)!r}")
      cls = SPELLINGS.get(folder, folder)
      if cls not in self.class_names:
        raise DataError(f"{where}: label {folder!r} not in the class list "
                        f"{self._lists()['classes']}")
      label = self.class_names.index(cls)
      if len(fields) == 2 and fields[1] != str(label + 1):
        raise DataError(f"{where}: label {fields[1]} disagrees with classInd.txt, which gives "
                        f"{cls!r} the index {label + 1}")
      video = os.path.splitext(filename)[0]
      frames = {}
      if "rgb" in self.streams:
        frames["rgb"] = self._frames_dir(rgb, video)
      if "flow_u" in self.streams:
        frames["flow_u"] = self._frames_dir(os.path.join(flow, "u"), video)
        frames["flow_v"] = self._frames_dir(os.path.join(flow, "v"), video)
      clips.append(clip_reader.Clip(video, label, None, frames, where))
    if not clips:
      raise DataError(f"{path}: empty split list: expected at least one video, found none")
    return clips
