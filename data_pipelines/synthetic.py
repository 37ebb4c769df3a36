"""The embedded synthetic benchmark: seeded, generated in memory, no files.

Each example is a set of token sequences, one per modality, with different lengths and widths.
They all observe one latent timeline carrying three binary *shared* factors, each expressed at
its own temporal scale:

  * local:    a short event (a few tokens) whose type (0/1) is its direction in feature space;
  * windowed: an oscillation over a window of ~30 % of the clip, slow (0) or fast (1);
  * global:   a weak constant offset over the whole clip, sign -1 (0) or +1 (1).

label = 4 * global + 2 * windowed + local  (8 classes; chance = 12.5 %).

Every modality sees the timeline with its own time offset (the event and the window are shifted
between modalities), through its own random directions, plus strong *private* nuisance factors
(a random walk and random bursts along modality-specific directions, orthogonal to that
modality's shared directions) that are independent of the label, plus white noise. Modality
lengths vary per example (the tail is padding, mask False) except for one full-length modality.

`generate` returns the true factors too, so tests can probe whether a representation carries
the shared factors and not the nuisance.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

NUM_CLASSES = 8


@dataclasses.dataclass(frozen=True)
class ModalityGeometry:
  name: str
  length: int        # T_m tokens
  width: int         # D_m features
  offset: float      # time shift of this modality's view, as a fraction of the clip
  variable_length: bool


DEFAULT_MODALITIES = (
    ModalityGeometry("audio", 48, 16, 0.00, True),
    ModalityGeometry("text", 24, 24, 0.06, False),
    ModalityGeometry("vision", 32, 12, -0.05, True),
)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Generator settings (all are `config.data` fields of the synthetic config)."""
  modalities: tuple[ModalityGeometry, ...] = DEFAULT_MODALITIES
  event_amplitude: float = 1.5       # local factor
  window_amplitude: float = 1.0      # windowed factor
  global_amplitude: float = 0.25     # global factor (weak per token; needs pooling)
  nuisance_amplitude: float = 2.0    # private random walk + bursts
  noise: float = 1.0                 # white noise
  geometry_seed: int = 1234          # the modality directions (fixed across splits)


def _directions(rng: np.random.Generator, width: int, count: int) -> np.ndarray:
  """`count` orthonormal directions in R^width (count <= width)."""
  q, _ = np.linalg.qr(rng.normal(size=(width, width)))
  return q[:, :count].T  # [count, width]


def _geometry(spec: SyntheticSpec) -> dict[str, np.ndarray]:
  """Per modality: rows 0-1 event types, 2 window, 3 global (shared); 4-5 nuisance (private)."""
  rng = np.random.default_rng(spec.geometry_seed)
  return {m.name: _directions(rng, m.width, 6) for m in spec.modalities}


def generate(spec: SyntheticSpec, num_examples: int, seed: int) -> dict[str, Any]:
  """Generates one split.

  Returns:
    {'inputs': {m: float32[N, T_m, D_m]}, 'masks': {m: bool[N, T_m]}, 'label': int32[N],
     'factors': {'local', 'window', 'global': int32[N]; 'event_time', 'window_start': float32[N];
                 'nuisance': {m: float32[N, T_m, 2]} (the private signal along its 2 directions)}}
  """
  rng = np.random.default_rng(seed)
  n = num_examples
  local = rng.integers(0, 2, n)
  window = rng.integers(0, 2, n)
  glob = rng.integers(0, 2, n)
  event_time = rng.uniform(0.15, 0.75, n)
  window_start = rng.uniform(0.05, 0.65, n)
  dirs = _geometry(spec)
  out = {"inputs": {}, "masks": {}, "factors": {"nuisance": {}}}
  for geo in spec.modalities:
    t = (np.arange(geo.length) + 0.5) / geo.length - geo.offset  # this modality's clock
    d = dirs[geo.name]
    # Local: a Gaussian bump (~4 % of the clip) of type `local` at the event time.
    bump = np.exp(-0.5 * ((t[None] - event_time[:, None]) / 0.04)**2)          # [N, T]
    x = spec.event_amplitude * bump[..., None] * d[local][:, None, :]
    # Windowed: 3 (slow) or 8 (fast) cycles inside a window of 30 % of the clip.
    phase = (t[None] - window_start[:, None]) / 0.3
    inside = (phase >= 0) & (phase < 1)
    cycles = np.where(window == 1, 8.0, 3.0)[:, None]
    osc = np.sin(2 * np.pi * cycles * phase) * inside
    x += spec.window_amplitude * osc[..., None] * d[2]
    # Global: a weak constant offset.
    x += spec.global_amplitude * (2.0 * glob - 1.0)[:, None, None] * d[3]
    # Private nuisance: a random walk and random bursts, independent of everything above.
    walk = np.cumsum(rng.normal(size=(n, geo.length)), axis=1) / np.sqrt(geo.length / 4)
    bursts = (rng.uniform(size=(n, geo.length)) < 0.08) * rng.normal(0, 1.5, (n, geo.length))
    nuisance = spec.nuisance_amplitude * np.stack([walk, bursts], -1)              # [N, T, 2]
    x += nuisance @ d[4:6]
    x += spec.noise * rng.normal(size=x.shape)
    if geo.variable_length:
      lengths = rng.integers(int(0.7 * geo.length), geo.length + 1, n)
    else:
      lengths = np.full(n, geo.length)
    mask = np.arange(geo.length)[None] < lengths[:, None]
    out["inputs"][geo.name] = (x * mask[..., None]).astype(np.float32)
    out["masks"][geo.name] = mask
    out["factors"]["nuisance"][geo.name] = nuisance.astype(np.float32)
  out["label"] = (4 * glob + 2 * window + local).astype(np.int32)
  out["factors"].update(local=local.astype(np.int32), window=window.astype(np.int32),
                        **{"global": glob.astype(np.int32)},
                        event_time=event_time.astype(np.float32),
                        window_start=window_start.astype(np.float32))
  return out
