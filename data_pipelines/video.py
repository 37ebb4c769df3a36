"""Frames of a clip: which ones to take, and how to decode and augment them inside tf.data.

Sampling (numpy; a pure function of (frame count n, slots k, train, per-example seed)):
  * A clip's frames are its image files in sorted file-name order (peers use unsorted
    os.listdir, which makes "the first frame" filesystem-dependent).
  * The n frames are cut into k segments at integer bounds b_j = floor(j n / k). Eval takes each
    segment's centre b_j + (b_{j+1} - b_j) // 2 ("k evenly spaced frames"); training takes a
    uniformly random frame of each segment (TSN / BalanceBenchmark segment sampling), drawn from
    the example's seed, so the same (seed, epoch, row) always sees the same frames.
  * A clip with fewer frames than slots (n < k) repeats frames: some segments are empty and take
    their left bound, so positions are non-decreasing and every slot holds a real frame (a
    backbone that ignores masks, e.g. OGM-GE's ResNet averaged over time, sees no black frames).
    The mask is False on every slot that repeats the previous slot's frame, so mask.sum() is the
    number of distinct frames and mask-aware pooling counts each real frame once.

Transforms (TensorFlow, imported lazily; same crop and flip for every frame of a clip and for
all streams of a clip, e.g. RGB and flow of UCF101):
  * train: Inception-style random resized crop (area 0.08-1, aspect 3/4-4/3, 10 attempts, whole
    image as fallback; tf.image.stateless_sample_distorted_bounding_box, which is torchvision's
    RandomResizedCrop up to its fallback rule), bilinear resize to image_size (antialiased when
    shrinking, as PIL does),
    horizontal flip with probability 1/2. All draws come from tf.random.stateless_* ops seeded by
    the example seed. Flipping a flow stack also inverts its x component (u -> 255 - u on the
    8-bit scale, as TSN does), since mirrored motion moves the other way.
  * eval: 'resize' squashes the frame to image_size x image_size (OGM-GE's Resize((224, 224)));
    'center_crop' resizes the shorter side to image_size * 256 / 224 and crops the centre.
  * normalisation: x / 255, then (x - mean) / std per channel: ImageNet statistics for RGB,
    (0.1307, 0.3081) for flow (BalanceBenchmark's flow option).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines.base import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.1307, 0.1307)
FLOW_STD = (0.3081, 0.3081)
EVAL_CROPS = ("resize", "center_crop")


# ---------------------------------------------------------------------------------------------
# which frames
# ---------------------------------------------------------------------------------------------
def list_frames(directory: str, where: str) -> list[str]:
  """Sorted image file names in `directory`; DataError naming `where` when there are none."""
  try:
    names = sorted(e.name for e in os.scandir(directory)
                   if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
  except FileNotFoundError:
    raise DataError(f"{where}: frames directory not found: {directory}") from None
  except NotADirectoryError:
    raise DataError(f"{where}: expected a frames directory, found a file: {directory}") from None
  if not names:
    raise DataError(f"{where}: clip without frames: expected at least one "
                    f"{'/'.join(IMAGE_EXTENSIONS)} file in {directory}, found none")
  return names


def seed_words(seed) -> np.ndarray:
  """A per-example seed (uint32 or int32 [2], as numpy or tf.data deliver it) as uint32 [2]."""
  return (np.asarray(seed).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def sample_positions(n: int, k: int, train: bool,
                     seed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Frame positions for k slots out of n frames (module docstring).

  Args:
    n: number of frames of the clip (>= 1).
    k: number of slots.
    train: segment-random (needs `seed`) instead of segment centres.
    seed: uint32/int32 [2] per-example seed.
  Returns:
    (int64 [k] non-decreasing positions in [0, n), bool [k] mask of distinct frames).
  """
  bounds = (np.arange(k + 1, dtype=np.int64) * n) // k
  length = bounds[1:] - bounds[:-1]
  if train:
    # A tag word keeps this stream of draws apart from other uses of the same example seed.
    u = np.random.default_rng([*seed_words(seed).tolist(), 0x0F4A3E5]).random(k)
    offset = np.floor(u * length).astype(np.int64)
  else:
    offset = length // 2
  positions = np.minimum(bounds[:-1] + offset, n - 1)
  mask = np.concatenate([[True], positions[1:] != positions[:-1]])
  return positions, mask


# ---------------------------------------------------------------------------------------------
# how to transform them (TensorFlow)
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FrameOptions:
  """Visual settings shared by the clip readers (all config fields of the same names)."""
  num_frames: int = 3
  image_size: int = 224
  eval_crop: str = "resize"
  rgb_mean: tuple[float, ...] = IMAGENET_MEAN
  rgb_std: tuple[float, ...] = IMAGENET_STD
  flow_mean: tuple[float, ...] = FLOW_MEAN
  flow_std: tuple[float, ...] = FLOW_STD

  def __post_init__(self):
    if self.eval_crop not in EVAL_CROPS:
      raise ValueError(f"eval_crop must be one of {EVAL_CROPS}, found {self.eval_crop!r}")
    if self.num_frames < 1 or self.image_size < 1:
      raise ValueError(f"num_frames and image_size must be >= 1, found {self.num_frames}, "
                       f"{self.image_size}")


def decode(tf, encoded, channels: int):
  """JPEG/PNG bytes (string [k]) -> uint8 [k, H, W, channels]; frames must share one size."""
  frames = [tf.io.decode_image(encoded[i], channels=channels, expand_animations=False)
            for i in range(encoded.shape[0])]
  return tf.stack(frames)


def resize(tf, frames, size):
  """Bilinear resize of [k, H, W, C] to `size` = [h, w], float32 out.

  Antialiased (like PIL, which torchvision's Resize uses) when a side shrinks; plain bilinear
  otherwise, which is the same up to float rounding when enlarging and several times faster
  (TensorFlow's antialiased kernel is slow).
  """
  shape = tf.shape(frames)
  shrinks = tf.logical_or(shape[1] > size[0], shape[2] > size[1])
  return tf.cond(shrinks,
                 lambda: tf.image.resize(frames, size, method="bilinear", antialias=True),
                 lambda: tf.image.resize(frames, size, method="bilinear"))


def train_transform(tf, frames, seed, size: int, flow: bool = False):
  """Random resized crop + flip of uint8 [k, H, W, C] -> float32 [k, size, size, C] on 0..255."""
  seed = tf.cast(seed, tf.int32)
  crop_seed = tf.random.experimental.stateless_fold_in(seed, 1)
  flip_seed = tf.random.experimental.stateless_fold_in(seed, 2)
  shape = tf.shape(frames)
  begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape[1:], tf.zeros([0, 0, 4], tf.float32), seed=crop_seed, min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(frames, tf.concat([[0], begin], 0), tf.concat([[-1], extent], 0))
  out = resize(tf, crop, [size, size])
  flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
  out = tf.cond(flip, lambda: tf.reverse(out, axis=[2]), lambda: out)
  if flow:
    u = tf.where(flip, 255.0 - out[..., :1], out[..., :1])
    out = tf.concat([u, out[..., 1:]], axis=-1)
  return out


def eval_transform(tf, frames, size: int, mode: str):
  """Deterministic resize (or resize + centre crop) -> float32 [k, size, size, C] on 0..255."""
  if mode == "resize":
    return resize(tf, frames, [size, size])
  shape = tf.cast(tf.shape(frames)[1:3], tf.float32)
  short = tf.round(size * 256.0 / 224.0)
  scaled = tf.cast(tf.round(shape * short / tf.reduce_min(shape)), tf.int32)
  scaled = tf.maximum(scaled, size)
  out = resize(tf, frames, scaled)
  top, left = (scaled[0] - size) // 2, (scaled[1] - size) // 2
  return out[:, top:top + size, left:left + size, :]


def normalize(tf, frames, mean, std):
  """(x / 255 - mean) / std per channel; float32."""
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (frames / 255.0 - mean) / std


def transform(tf, frames, seed, train: bool, options: FrameOptions, flow: bool = False):
  """Decoded uint8 [k, H, W, C] -> normalised float32 [k, S, S, C] for one modality."""
  size = options.image_size
  if train:
    out = train_transform(tf, frames, seed, size, flow=flow)
  else:
    out = eval_transform(tf, frames, size, options.eval_crop)
  mean, std = ((options.flow_mean, options.flow_std) if flow
               else (options.rgb_mean, options.rgb_std))
  out = normalize(tf, out, mean, std)
  out.set_shape([frames.shape[0], size, size, frames.shape[-1]])
  return out
