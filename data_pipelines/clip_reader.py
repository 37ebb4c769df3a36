"""The reader of clip datasets (CREMA-D, Kinetics-Sounds, AVE videos, UCF101): per clip an audio
file and frame folders, read from the dataset's own files or from the clip cache
(`clip_cache`, written by `python -m data_pipelines.prepare`).

A subclass only parses its split lists into `Clip`s (ids, labels, file locations); this module
checks the files, samples and decodes frames, computes or loads the audio feature, and serves
examples to `data_pipelines.pipeline` in two ways that give the same batches:

  * `tf_example_fn`: for tf.data. A `tf.numpy_function` fetches the clip's audio feature and the
    encoded bytes of its sampled frames (file reads and numpy work), then TensorFlow decodes the
    JPEGs and augments them in parallel, GIL-free.
  * `load_examples`: for the numpy backend and for error reports. The same fetch, with frames
    decoded one by one so that a bad file surfaces as a `DataError` naming it.

Batch layout (design.md contract): 'audio' float32 [n_freq, n_time] (kind 'spectrogram', mask
[n_time], all True: peers feed the padded fbank frames as signal too); visual modalities float32
[F, H, W, C] (kind 'video', mask [F]: False on slots that repeat a frame, see video.py);
'label' int32 [].

TensorFlow is imported only when frames are decoded, so an audio-only reader works without it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import clip_cache
from data_pipelines import video
from data_pipelines.base import DataError, DatasetReader, ModalitySpec, TaskSpec

DEFAULT_CACHE_DIRNAME = "clcr_cache"
CACHE_MODES = ("auto", "require", "off")

# Config fields every clip reader has (readers add their own; `default_config` merges them).
COMMON_DEFAULTS: dict[str, Any] = dict(
    root="",                   # dataset root; every relative path below is under it
    num_frames=3,              # frame slots F per clip
    image_size=224,            # H = W of the frames in a batch
    eval_crop="resize",        # 'resize' (OGM-GE) | 'center_crop' (shorter side 256/224, crop)
    rgb_mean=video.IMAGENET_MEAN,
    rgb_std=video.IMAGENET_STD,
    flow_mean=video.FLOW_MEAN,
    flow_std=video.FLOW_STD,
    cache="auto",              # 'auto': use <cache_dir> when present | 'require' | 'off'
    cache_dir="",              # '' = <root>/clcr_cache (what `prepare` writes by default)
    skip_missing=False,        # drop split entries whose files are missing (logged) vs DataError
)
# Config fields of readers with an 'audio' modality (besides audio_dir/format/feature).
AUDIO_DEFAULTS: dict[str, Any] = dict(
    audio_sample_rate=0,       # 0 = the feature's own (22050 Hz; fbank: the file's rate)
    stft_pad_mode="reflect",   # librosa <= 0.8 (OGM-GE); 'constant' for librosa >= 0.9
    fbank_norm=(),             # (mean, std) for fbanks computed from wav; () = none
    audio_shape=(),            # precomputed arrays of a custom [freq, time] shape; () = preset
)


def import_tf():
  """TensorFlow with GPUs hidden, or an ImportError saying why it is needed."""
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  tf = pipeline.tensorflow_or_none()
  if tf is None:
    raise ImportError("decoding video frames needs TensorFlow (pip install tensorflow-cpu); "
                      "an audio-only reader (modalities=('audio',)) works without it")
  return tf


def resolve_options(config, defaults: Mapping[str, Any]) -> dict[str, Any]:
  """Reader options: `defaults` overridden by the fields `config` sets; `root` is required."""
  options = {}
  for key, default in defaults.items():
    value = config.get(key, default) if config is not None else default
    if isinstance(default, tuple) and value is not None:
      value = tuple(value)
    options[key] = value
  if not options.get("root"):
    raise ValueError(f"config.data.root must name the dataset folder (reader "
                     f"{config.get('name', '?')!r})")
  if options.get("cache", "off") not in CACHE_MODES:
    raise ValueError(f"config.data.cache must be one of {CACHE_MODES}, found {options['cache']!r}")
  return options


@dataclasses.dataclass(frozen=True)
class Clip:
  """One split entry: where its files are and its label.

  Attributes:
    clip_id: the id the split list uses (unique within a split).
    label: class index.
    audio: path of the audio file (wav / npy / pkl), or None when the reader has no audio.
    frames: stream name -> frames directory, e.g. {'frames': ...} or {'rgb':, 'flow_u':, ...}.
    where: the split-list line, for error messages.
  """
  clip_id: str
  label: int
  audio: str | None = None
  frames: Mapping[str, str] = dataclasses.field(default_factory=dict)
  where: str = ""


@dataclasses.dataclass(frozen=True)
class VisualModality:
  """A visual modality built from frame streams: one RGB stream, or grayscale streams stacked
  as channels (flow u, v)."""
  streams: tuple[str, ...]
  flow: bool = False

  @property
  def stream_channels(self) -> int:
    return 1 if self.flow else 3

  @property
  def channels(self) -> int:
    return self.stream_channels * len(self.streams)


class RawSource:
  """Clips read from the dataset's own files (frames listed once, at construction)."""

  def __init__(self, clips: Sequence[Clip], streams: Sequence[str],
               feature: audio_lib.AudioFeature | None, audio_format: str):
    self.clips = list(clips)
    self.feature, self.audio_format = feature, audio_format
    self._dirs = {s: [c.frames[s] for c in self.clips] for s in streams}
    self._names: dict[str, np.ndarray] = {}
    self._offsets: dict[str, np.ndarray] = {}
    for s in streams:
      names = [video.list_frames(c.frames[s], c.where) for c in self.clips]
      self._offsets[s] = np.cumsum([0] + [len(n) for n in names]).astype(np.int64)
      self._names[s] = np.array([n.encode() for ns in names for n in ns], dtype=bytes)

  def num_frames(self, stream: str) -> np.ndarray:
    return np.diff(self._offsets[stream])

  def frame_path(self, stream: str, i: int, p: int) -> str:
    name = self._names[stream][self._offsets[stream][i] + p].decode()
    return os.path.join(self._dirs[stream][i], name)

  def audio(self, i: int) -> np.ndarray:
    return self.feature.from_file(self.clips[i].audio, self.audio_format)

  def frames(self, stream: str, i: int, positions: Sequence[int]) -> list[bytes]:
    out = []
    for p in positions:
      path = self.frame_path(stream, i, int(p))
      try:
        with open(path, "rb") as f:
          out.append(f.read())
      except OSError as e:
        raise DataError(f"{path}: unreadable frame: expected a readable JPEG/PNG file, found: "
                        f"{e}") from e
    return out


def check_clips(clips: Sequence[Clip], skip_missing: bool, split: str) -> list[Clip]:
  """Keeps clips whose audio file and frame folders exist; else DataError (or a logged skip)."""
  kept, missing = [], []
  for c in clips:
    problem = None
    if c.audio is not None and not os.path.isfile(c.audio):
      problem = f"{c.where}: split entry without a file: expected audio file {c.audio}, not found"
    for d in c.frames.values():
      if problem is None and not os.path.isdir(d):
        problem = (f"{c.where}: split entry without a file: expected frames directory {d}, "
                   f"not found")
    if problem is None:
      kept.append(c)
    elif skip_missing:
      missing.append(problem)
    else:
      raise DataError(problem)
  if missing:
    logging.warning("split %r: skipped %d entries with missing files (skip_missing=True), e.g. "
                    "%s", split, len(missing), "; ".join(missing[:3]))
  if not kept:
    raise DataError(f"split {split!r}: no entry has its files (first problem: "
                    f"{missing[0] if missing else 'empty split list'})")
  return kept


class ClipReader(DatasetReader):
  """Base of the clip readers. Subclasses set the class attributes and implement `read_split`.

  Class attributes:
    DEFAULTS: the reader's own config fields and defaults (merged over COMMON_DEFAULTS, and
      AUDIO_DEFAULTS when HAS_AUDIO).
    VISUAL: visual modality name -> VisualModality.
    HAS_AUDIO: whether clips have an 'audio' modality.
  """
  DEFAULTS: Mapping[str, Any] = {}
  VISUAL: Mapping[str, VisualModality] = {}
  HAS_AUDIO = True

  @classmethod
  def defaults(cls) -> dict[str, Any]:
    """Every config field of this reader with its default."""
    return {**COMMON_DEFAULTS, **(AUDIO_DEFAULTS if cls.HAS_AUDIO else {}), **cls.DEFAULTS}

  @classmethod
  def default_config(cls):
    """All config fields with their defaults, as an ml_collections ConfigDict."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    fields = cls.defaults()
    fields["name"] = getattr(cls, "registered_name", cls.__name__)
    return ml_collections.ConfigDict(fields)

  # -- what subclasses provide ---------------------------------------------------------------
  def split_names(self) -> tuple[str, ...]:
    raise NotImplementedError

  def read_split(self, split: str) -> list[Clip]:
    """The split's entries, in split-list order, labels checked against the class list."""
    raise NotImplementedError

  def task_spec(self) -> TaskSpec:
    raise NotImplementedError

  def list_files(self) -> list[str]:
    """Split lists and class lists, for the fingerprint."""
    return []

  # -- construction --------------------------------------------------------------------------
  def __init__(self, config):
    super().__init__(config)
    o = self.options = resolve_options(config, self.defaults())
    self.frame_options = video.FrameOptions(
        num_frames=int(o["num_frames"]), image_size=int(o["image_size"]),
        eval_crop=o["eval_crop"], rgb_mean=o["rgb_mean"], rgb_std=o["rgb_std"],
        flow_mean=o["flow_mean"], flow_std=o["flow_std"])
    available = (("audio",) if self.HAS_AUDIO else ()) + tuple(self.VISUAL)
    self.modality_names = tuple(o.get("modalities") or available)
    unknown = [m for m in self.modality_names if m not in available]
    if unknown or not self.modality_names:
      raise ValueError(f"config.data.modalities={self.modality_names} of reader "
                       f"{self.config.get('name')!r}: expected a non-empty subset of {available}")
    self.visual = {m: self.VISUAL[m] for m in self.modality_names if m in self.VISUAL}
    self.streams = tuple(dict.fromkeys(s for v in self.visual.values() for s in v.streams))
    self.feature = None
    if "audio" in self.modality_names:
      self.feature = audio_lib.AudioFeature(
          kind=o["audio_feature"], sample_rate=int(o["audio_sample_rate"]) or None,
          stft_pad_mode=o["stft_pad_mode"],
          fbank_norm=tuple(float(v) for v in o["fbank_norm"]) or None,
          disk_shape=tuple(int(v) for v in o["audio_shape"]) or None)
      if o["audio_format"] not in audio_lib.FORMATS:
        raise ValueError(f"config.data.audio_format must be one of {audio_lib.FORMATS}, found "
                         f"{o['audio_format']!r}")
    self._task = self.task_spec()
    self._sources: dict[str, Any] = {}
    self._labels: dict[str, np.ndarray] = {}
    self._ids: dict[str, list[str]] = {}
    for split in self.split_names():
      self._open(split, self.read_split(split))
    self._transform_fns: dict[tuple, Callable] = {}

  def path(self, relative: str, split: str = "") -> str:
    """A config path under root ('{split}' in it becomes the split name)."""
    return os.path.join(self.options["root"], relative.format(split=split))

  def cache_signature(self) -> dict[str, Any]:
    """What a cache must have been built with to serve this reader."""
    return {"dataset": self.config.get("name"),
            "audio": self.feature.params() if self.feature else None,
            "streams": list(self.streams)}

  def _cache_dir(self) -> str:
    return self.options["cache_dir"] or os.path.join(self.options["root"], DEFAULT_CACHE_DIRNAME)

  def _open(self, split: str, clips: list[Clip]) -> None:
    mode = self.options["cache"]
    if mode != "off":
      directory = os.path.join(self._cache_dir(), split)
      if os.path.isdir(directory):
        try:
          source = clip_cache.CachedSource(directory, self.cache_signature(), clips,
                                           subset_ok=self.options["skip_missing"])
        except clip_cache.CacheMismatch as e:
          if mode == "require":
            raise DataError(str(e)) from e
          logging.warning("not using the cache: %s; reading the raw files", e)
        else:
          self._set_source(split, source, source.clips)
          return
      elif mode == "require":
        raise DataError(f"config.data.cache='require' but {directory} does not exist; run "
                        f"python -m data_pipelines.prepare {self.config.get('name')} --root "
                        f"{self.options['root']} --out {self._cache_dir()}")
    clips = check_clips(clips, self.options["skip_missing"], split)
    self._set_source(split, RawSource(clips, self.streams, self.feature,
                                      self.options.get("audio_format", "wav")), clips)

  def _set_source(self, split: str, source, clips: Sequence[Clip]) -> None:
    self._sources[split] = source
    self._labels[split] = np.array([c.label for c in clips], np.int32)
    self._ids[split] = [c.clip_id for c in clips]

  # -- DatasetReader -------------------------------------------------------------------------
  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._sources)

  @property
  def task(self) -> TaskSpec:
    return self._task

  @property
  def in_memory(self) -> bool:
    return False

  @property
  def files(self) -> Sequence[str]:
    cache_meta = [f for src in self._sources.values() for f in getattr(src, "files", [])]
    return self.list_files() + cache_meta

  def clip_ids(self, split: str) -> list[str]:
    return list(self._ids[split])

  def source(self, split: str):
    return self._sources[split]

  @property
  def modalities(self) -> dict[str, ModalitySpec]:
    specs = {}
    k, s = self.frame_options.num_frames, self.frame_options.image_size
    for m in self.modality_names:
      if m == "audio":
        specs[m] = ModalitySpec(shape=self.feature.shape, kind="spectrogram",
                                mask_length=self.feature.shape[1])
      else:
        specs[m] = ModalitySpec(shape=(k, s, s, self.visual[m].channels), kind="video",
                                mask_length=k)
    return specs

  def num_examples(self, split: str) -> int:
    if split not in self._sources:
      raise DataError(f"split {split!r} not found; available splits: {list(self._sources)}")
    return len(self._labels[split])

  # -- fetching one example (numpy side, shared by both paths) -------------------------------
  def _fetch_parts(self, split: str, train: bool, index, seed):
    """(audio float32 [F, T] or None, stream -> list of k encoded frames, positions, mask)."""
    source, i = self._sources[split], int(index)
    spec = source.audio(i) if self.feature is not None else None
    encoded, positions, mask = {}, None, None
    if self.streams:
      n = int(min(source.num_frames(s)[i] for s in self.streams))
      positions, mask = video.sample_positions(n, self.frame_options.num_frames, train, seed)
      encoded = {s: source.frames(s, i, positions) for s in self.streams}
    return spec, encoded, positions, mask

  def _fetch(self, split: str, train: bool, index, seed) -> list[np.ndarray]:
    """Flat for tf.numpy_function: [audio] + per stream string [k] + [mask bool [k]]."""
    spec, encoded, _, mask = self._fetch_parts(split, train, index, seed)
    out = [spec] if spec is not None else []
    out += [np.array(encoded[s], dtype=object) for s in self.streams]
    return out + ([mask] if self.streams else [])

  def _tout(self, tf) -> list:
    return (([tf.float32] if self.feature is not None else [])
            + [tf.string] * len(self.streams) + ([tf.bool] if self.streams else []))

  def _assemble(self, tf, fetched, seed, train: bool, decoded=None):
    """(inputs, masks) from fetched arrays; `decoded` = stream -> uint8 frames if already
    decoded (eager path), else frames are decoded here in the graph."""
    inputs, masks, pos = {}, {}, 0
    k = self.frame_options.num_frames
    if self.feature is not None:
      spec = fetched[0]
      if tf is not None and not isinstance(spec, np.ndarray):
        spec.set_shape(self.feature.shape)
      inputs["audio"] = spec
      masks["audio"] = (tf.ones([self.feature.shape[1]], tf.bool) if tf is not None
                        and not isinstance(spec, np.ndarray)
                        else np.ones(self.feature.shape[1], bool))
      pos = 1
    if self.streams:
      encoded = dict(zip(self.streams, fetched[pos:pos + len(self.streams)]))
      mask = fetched[pos + len(self.streams)]
      for m, vis in self.visual.items():
        if decoded is None:
          parts = []
          for s in vis.streams:
            encoded[s].set_shape([k])
            parts.append(video.decode(tf, encoded[s], vis.stream_channels))
          frames = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
          inputs[m] = video.transform(tf, frames, seed, train, self.frame_options, vis.flow)
          mask.set_shape([k])
        else:
          frames = np.concatenate([decoded[s] for s in vis.streams], axis=-1)
          inputs[m] = self._transform_fn(tf, m, train)(frames, np.asarray(seed, np.int32)).numpy()
        masks[m] = mask
    return inputs, masks

  def _transform_fn(self, tf, modality: str, train: bool):
    """The graph transform of one modality as a tf.function (numpy path; traced once)."""
    key = (modality, train)
    if key not in self._transform_fns:
      vis, k = self.visual[modality], self.frame_options.num_frames
      spec = [tf.TensorSpec([k, None, None, vis.channels], tf.uint8),
              tf.TensorSpec([2], tf.int32)]
      self._transform_fns[key] = tf.function(
          functools.partial(video.transform, tf, train=train, options=self.frame_options,
                            flow=vis.flow), input_signature=spec, reduce_retracing=True)
    return self._transform_fns[key]

  def tf_example_fn(self, split: str, *, train: bool):
    from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
    tf = pipeline.tensorflow_or_none()
    if tf is None:  # no tf.data path without TensorFlow; load_examples serves audio-only reads
      return None
    labels = tf.constant(self._labels[split])
    tout = self._tout(tf)
    fetch = functools.partial(self._fetch, split, train)

    def example_fn(index, seed):
      fetched = tf.numpy_function(fetch, [index, seed], tout, stateful=False)
      inputs, masks = self._assemble(tf, fetched, seed, train)
      return {"inputs": inputs, "masks": masks, "label": tf.gather(labels, index)}
    return example_fn

  def _decode_checked(self, tf, split: str, i: int, encoded: Mapping[str, list],
                      positions: np.ndarray) -> dict[str, np.ndarray]:
    """Eager decode of one clip's sampled frames, with errors that name the frame file."""
    source, out = self._sources[split], {}
    for m, vis in self.visual.items():
      for s in vis.streams:
        frames = []
        for data, p in zip(encoded[s], positions):
          try:
            img = tf.io.decode_image(data, channels=vis.stream_channels,
                                     expand_animations=False).numpy()
          except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise DataError(
                f"{source.frame_path(s, i, int(p))}: unreadable frame: expected a JPEG/PNG "
                f"image, found {len(data)} bytes that do not decode "
                f"({str(e).splitlines()[0][:120]})") from e
          if frames and img.shape != frames[0].shape:
            raise DataError(f"{source.frame_path(s, i, int(p))}: frame size {img.shape} differs "
                            f"from the clip's first sampled frame {frames[0].shape}; expected "
                            f"all frames of a clip to share one size")
          frames.append(img)
        out[s] = np.stack(frames)
      sizes = {s: out[s].shape[1:3] for s in vis.streams}
      if len(set(sizes.values())) > 1:
        raise DataError(f"clip {self._ids[split][i]!r} (split {split!r}): the streams of modality "
                        f"{m!r} differ in frame size: {sizes}; expected one size")
    return out

  def load_examples(self, split, indices, *, train, seeds=None):
    indices = np.asarray(indices, np.int64)
    tf = import_tf() if self.streams else None
    if train and seeds is None:
      raise ValueError("load_examples(train=True) needs per-example seeds")
    examples = []
    for r, i in enumerate(indices):
      # tf.data hands the example fn int32 seeds; use the same words here.
      seed = np.asarray(seeds[r]).astype(np.int32) if train else np.zeros(2, np.int32)
      spec, encoded, positions, mask = self._fetch_parts(split, train, i, seed)
      decoded = (self._decode_checked(tf, split, int(i), encoded, positions)
                 if self.streams else None)
      fetched = ([spec] if spec is not None else []) + [None] * len(self.streams)
      fetched += [mask] if self.streams else []
      examples.append(self._assemble(tf, fetched, seed, train, decoded=decoded))
    return {"inputs": {m: np.stack([e[0][m] for e in examples]) for m in self.modality_names},
            "masks": {m: np.stack([e[1][m] for e in examples]) for m in self.modality_names},
            "label": self._labels[split][indices]}
