"""Tiny model configs and random batches in the input layouts of the six benchmarks (docs/data.md).

Shared by test_model_shapes.py, test_intra_ced.py and test_ablations.py. Everything is scaled down
(d = 16, 2 heads, ResNet-18 base width 4, 32 x 32 frames, a handful of tokens) so that XLA:CPU
compiles each program in seconds, but every layout keeps its benchmark's ranks, input kinds,
backbones, task and per-modality token counts (unaligned MOSI has a different T per modality).

The expected token counts per level are computed here from the layer arithmetic (TCN keeps T;
ResNet-18 halves the time axis at conv1, the max-pool and layers 2-4), independently of the model.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import ml_collections
import numpy as np

from clcr_jax import models

D = 16          # common width d
NUM_HEADS = 2
RESNET_WIDTH = 4


@dataclasses.dataclass(frozen=True)
class Modality:
  """One modality of a layout: input kind, backbone and the per-sample input shape."""
  kind: str
  backbone: str
  shape: tuple[int, ...]  # without the batch axis

  @property
  def num_tokens(self) -> int:
    """Token count of the input mask: the time axis of the input."""
    return {"sequence": self.shape[0], "vector": 1, "spectrogram": self.shape[-1],
            "video": self.shape[0], "feature_map": self.shape[0]}[self.kind]


@dataclasses.dataclass(frozen=True)
class Layout:
  """A benchmark's model inputs and task, scaled down."""
  modalities: Mapping[str, Modality]
  task: str
  num_classes: int = 0
  num_segments: int = 0
  spatial_grid: int = 1


def _conv_out(n: int, kernel: int, stride: int, pad: int) -> int:
  return (n + 2 * pad - kernel) // stride + 1


def resnet_stage_lengths(n: int) -> tuple[int, int, int]:
  """Length of one spatial axis after ResNet-18's layer2, layer3 and layer4."""
  n = _conv_out(n, 7, 2, 3)   # conv1
  n = _conv_out(n, 3, 2, 1)   # max-pool (layer1 keeps the size)
  out = []
  for _ in range(3):          # layer2..layer4 open with a stride-2 3x3 conv
    n = _conv_out(n, 3, 2, 1)
    out.append(n)
  return tuple(out)


def level_lengths(mod: Modality, spatial_grid: int = 1) -> tuple[int, int, int]:
  """Expected tokens per level: TCN keeps T; ResNet pools frequency (spectrograms) or space."""
  if mod.backbone == "tcn":
    return (mod.num_tokens,) * 3
  if mod.kind == "spectrogram":
    return resnet_stage_lengths(mod.shape[-1])
  if mod.kind == "video":
    return (mod.shape[0] * spatial_grid**2,) * 3
  raise ValueError(f"no ResNet layout for kind {mod.kind!r}")


# The six benchmarks of docs/data.md (plus a 'vector' layout), scaled down. MOSI is unaligned (a
# different T per modality), MOSEI aligned; text is a BERT-feature sequence through the TCN.
LAYOUTS: dict[str, Layout] = {
    "mosi": Layout({"text": Modality("sequence", "tcn", (8, 12)),
                    "audio": Modality("sequence", "tcn", (12, 5)),
                    "vision": Modality("sequence", "tcn", (10, 7))}, "regression"),
    "mosei": Layout({"text": Modality("sequence", "tcn", (8, 12)),
                     "audio": Modality("sequence", "tcn", (8, 9)),
                     "vision": Modality("sequence", "tcn", (8, 6))}, "regression"),
    "cremad": Layout({"audio": Modality("spectrogram", "resnet18", (32, 24)),
                      "visual": Modality("video", "resnet18", (2, 32, 32, 3))},
                     "classification", num_classes=6),
    "kinetics_sounds": Layout({"audio": Modality("spectrogram", "resnet18", (24, 40)),
                               "visual": Modality("video", "resnet18", (3, 32, 32, 3))},
                              "classification", num_classes=31, spatial_grid=2),
    "ave": Layout({"audio": Modality("sequence", "tcn", (10, 16)),
                   "visual": Modality("feature_map", "tcn", (10, 3, 3, 8))},
                  "segment_classification", num_classes=29, num_segments=10),
    "ucf101": Layout({"rgb": Modality("video", "resnet18", (2, 32, 32, 3)),
                      "flow": Modality("video", "resnet18", (2, 32, 32, 2))},
                     "classification", num_classes=101),
    # T = 1 features (AV-MNIST-like): a 'vector' modality next to a TCN over a spectrogram.
    "vector": Layout({"image": Modality("vector", "tcn", (12,)),
                      "audio": Modality("spectrogram", "tcn", (6, 9))},
                     "classification", num_classes=10),
}


def model_config(layout: Layout, **overrides) -> ml_collections.ConfigDict:
  """The tiny model config of a layout; `overrides` are dotted paths, e.g. ablation__full_mix."""
  c = models.default_config()
  c.task = layout.task
  c.num_classes = layout.num_classes
  c.num_segments = layout.num_segments
  c.d = D
  c.num_heads = NUM_HEADS
  c.resnet.base_width = RESNET_WIDTH
  c.resnet.spatial_grid = layout.spatial_grid
  c.modalities = ml_collections.ConfigDict(
      {m: models.modality(mod.kind, mod.backbone) for m, mod in layout.modalities.items()})
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split("__")
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


def lengths_for(batch_size: int, num_tokens: int, rng: np.random.Generator) -> np.ndarray:
  """Per-row valid lengths: the first row full, the others random in [1, T]."""
  lengths = rng.integers(1, num_tokens + 1, size=batch_size)
  lengths[0] = num_tokens
  return lengths


def make_batch(layout: Layout, batch_size: int, seed: int = 0, pad: bool = True) -> dict:
  """A random batch in the layout's exact shapes: inputs, masks (padding at the end), label, valid.

  Padded steps hold random values too (not zeros), so a model that reads them is caught.
  """
  rng = np.random.default_rng(seed)
  inputs, masks = {}, {}
  for m, mod in layout.modalities.items():
    inputs[m] = rng.normal(size=(batch_size,) + mod.shape).astype(np.float32)
    t = mod.num_tokens
    lengths = lengths_for(batch_size, t, rng) if pad and t > 1 else np.full(batch_size, t)
    masks[m] = np.arange(t)[None, :] < lengths[:, None]
  if layout.task == "regression":
    label = rng.uniform(-3, 3, size=batch_size).astype(np.float32)
  elif layout.task == "segment_classification":
    label = rng.integers(0, layout.num_classes, size=(batch_size, layout.num_segments))
  else:
    label = rng.integers(0, layout.num_classes, size=batch_size)
  return {"inputs": inputs, "masks": masks, "label": label,
          "valid": np.ones(batch_size, bool)}


def init_with_output_fn(model):
  """jit of (key, inputs, masks) -> ((prediction, aux), variables), evaluation mode."""
  def run(key, inputs, masks):
    return model.init_with_output({"params": key, "dropout": key}, inputs, masks, train=False)
  return jax.jit(run)


def random_variables(model, *args, seed: int = 0, **kwargs):
  """Random variables with the model's structure, drawn here in numpy (no compilation).

  On XLA:CPU an `init` program costs as much to compile as the forward pass itself (one random
  initialiser per parameter), so the contract tests run on these instead; every property they
  check must hold for any parameter values, not just at the initialisation. Matrices get
  N(0, 1/fan_in) (fan_in = product of all but the last axis), LayerNorm scales 1 + N(0, 0.1^2),
  other vectors and scalars N(0, 0.5^2), BatchNorm running means N(0, 0.1^2) and running
  variances U(0.5, 2).
  """
  abstract = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, *args, train=False, **kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "var":
      x = rng.uniform(0.5, 2.0, shape)
    elif name == "mean":
      x = 0.1 * rng.normal(size=shape)
    elif name == "scale":
      x = 1.0 + 0.1 * rng.normal(size=shape)
    elif len(shape) >= 2:
      x = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
    else:
      x = 0.5 * rng.normal(size=shape)
    return np.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def tree_allclose(a, b, atol: float = 0.0, rtol: float = 0.0) -> bool:
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  return tree_a == tree_b and all(
      np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=atol, rtol=rtol)
      for x, y in zip(leaves_a, leaves_b))
