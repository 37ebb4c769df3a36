"""The embedded synthetic benchmark: seeded, generated in memory, no files.

Two generators share the modality geometry (audio 48 x 16 and vision 32 x 12 of variable length,
text 24 x 24 of full length), the API (`inputs`, `masks`, `label`, `factors`) and the nuisance.

Generator "default" (`generate`, `SyntheticSpec`)
--------------------------------------------------
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

Generator "variant" (`generate_variant`, `VariantSpec`): a benchmark of CLCR's claim
-------------------------------------------------------------------------------------
The label needs what CLCR says it models: exchange of shared factors *across* modalities at one
level, a private cue that only one modality has, and factors at three temporal scales, under the
same strong private nuisance. Four label bits (16 classes; chance = 6.25 %):

  bit 0, parity (shallow, cross-modal): three short local events, "at", "tv" and "av", each seen
    by one pair of modalities only (at: audio + text, tv: text + vision, av: audio + vision),
    each with a type 0/1 given by its direction (as the default's local event). parity =
    type_at XOR type_tv XOR type_av. Every modality sees exactly two of the three events, so no
    single modality's view decides the bit (given its two types, the bit is still a coin flip);
    any two modalities together see all three events.
  bit 1, cue (private to `cue_modality`, audio by default): a weak constant offset of sign
    -1 (0) / +1 (1) along a direction private to that modality (orthogonal to its shared and
    nuisance directions). The other modalities carry nothing about it.
  bit 2, window (mid, shared by all): the default's windowed oscillation, slow (0) or fast (1).
  bit 3, global (deep, shared by all): the default's weak constant offset; needs pooling.

label = 8 * global + 4 * window + 2 * cue + parity; class names "g{global}w{window}c{cue}x{parity}".

Each modality's 9 directions are orthonormal: rows 0-3 the types of the two events it sees (its
events in `VariantSpec.events` order; rows 2k, 2k+1 = type 0, type 1 of its k-th event),
4 window, 5 global (shared); 6-7 nuisance, 8 cue (private; row 8 is used by `cue_modality` only).
`variant_directions` returns them by name.

Both generators return the true factors, so probes can test whether a representation carries the
shared factors and not the nuisance (clcr_jax.analyze.leakage_probes).
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


def _clock(geo: ModalityGeometry) -> np.ndarray:
  """This modality's clock: token centres as fractions of the clip, shifted by its offset [T]."""
  return (np.arange(geo.length) + 0.5) / geo.length - geo.offset


def _bump(t: np.ndarray, time: np.ndarray) -> np.ndarray:
  """A Gaussian bump (~4 % of the clip) at each example's `time` [N]: float[N, T]."""
  return np.exp(-0.5 * ((t[None] - time[:, None]) / 0.04)**2)


def _oscillation(t: np.ndarray, fast: np.ndarray, start: np.ndarray) -> np.ndarray:
  """3 (slow) or 8 (fast) cycles inside a window of 30 % of the clip from `start`: float[N, T]."""
  phase = (t[None] - start[:, None]) / 0.3
  inside = (phase >= 0) & (phase < 1)
  cycles = np.where(fast == 1, 8.0, 3.0)[:, None]
  return np.sin(2 * np.pi * cycles * phase) * inside


def _nuisance(rng: np.random.Generator, amplitude: float, n: int, length: int) -> np.ndarray:
  """A random walk and random bursts, independent of everything else: float[N, T, 2]."""
  walk = np.cumsum(rng.normal(size=(n, length)), axis=1) / np.sqrt(length / 4)
  bursts = (rng.uniform(size=(n, length)) < 0.08) * rng.normal(0, 1.5, (n, length))
  return amplitude * np.stack([walk, bursts], -1)


def _finish(rng: np.random.Generator, x: np.ndarray, geo: ModalityGeometry, noise: float,
            out: dict[str, Any], nuisance: np.ndarray) -> None:
  """Adds white noise to x [N, T, D], draws the lengths and stores inputs, masks, nuisance."""
  n = len(x)
  x += noise * rng.normal(size=x.shape)
  if geo.variable_length:
    lengths = rng.integers(int(0.7 * geo.length), geo.length + 1, n)
  else:
    lengths = np.full(n, geo.length)
  mask = np.arange(geo.length)[None] < lengths[:, None]
  out["inputs"][geo.name] = (x * mask[..., None]).astype(np.float32)
  out["masks"][geo.name] = mask
  out["factors"]["nuisance"][geo.name] = nuisance.astype(np.float32)


def generate(spec: SyntheticSpec, num_examples: int, seed: int) -> dict[str, Any]:
  """Generates one split of the default benchmark.

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
    t = _clock(geo)
    d = dirs[geo.name]
    # Local: a bump of type `local` at the event time.
    x = spec.event_amplitude * _bump(t, event_time)[..., None] * d[local][:, None, :]
    x += spec.window_amplitude * _oscillation(t, window, window_start)[..., None] * d[2]
    # Global: a weak constant offset.
    x += spec.global_amplitude * (2.0 * glob - 1.0)[:, None, None] * d[3]
    nuisance = _nuisance(rng, spec.nuisance_amplitude, n, geo.length)              # [N, T, 2]
    x += nuisance @ d[4:6]
    _finish(rng, x, geo, spec.noise, out, nuisance)
  out["label"] = (4 * glob + 2 * window + local).astype(np.int32)
  out["factors"].update(local=local.astype(np.int32), window=window.astype(np.int32),
                        **{"global": glob.astype(np.int32)},
                        event_time=event_time.astype(np.float32),
                        window_start=window_start.astype(np.float32))
  return out


# ---------------------------------------------------------------------------------------------
# The variant (see the module docstring)
# ---------------------------------------------------------------------------------------------
VARIANT_NUM_CLASSES = 16
# Label bits, most significant first: label = 8 * global + 4 * window + 2 * cue + parity.
VARIANT_LABEL_BITS = ("global", "window", "cue", "parity")
DEFAULT_LABEL_BITS = ("global", "window", "local")
_VARIANT_ROWS = 9  # per modality: 4 event types, window, global, 2 nuisance, cue


@dataclasses.dataclass(frozen=True)
class VariantSpec:
  """Settings of the variant generator (the `config.data` fields of the synthetic config).

  events: (name, modalities that see it); every modality sees at most two events.
  cue_modality: the one modality that carries the private cue.
  """
  modalities: tuple[ModalityGeometry, ...] = DEFAULT_MODALITIES
  events: tuple[tuple[str, tuple[str, ...]], ...] = (
      ("at", ("audio", "text")), ("tv", ("text", "vision")), ("av", ("audio", "vision")))
  cue_modality: str = "audio"
  event_amplitude: float = 2.0       # the three local events (bit parity)
  window_amplitude: float = 1.0      # windowed oscillation (bit window)
  global_amplitude: float = 0.15     # shared constant offset (bit global; needs pooling)
  cue_amplitude: float = 0.2         # private constant offset in cue_modality (bit cue)
  nuisance_amplitude: float = 2.0    # private random walk + bursts
  noise: float = 1.0                 # white noise
  geometry_seed: int = 4321          # the modality directions (fixed across splits)

  def __post_init__(self):
    names = [m.name for m in self.modalities]
    for m in self.modalities:
      if m.width < _VARIANT_ROWS:
        raise ValueError(f"VariantSpec: modality {m.name!r} needs width >= {_VARIANT_ROWS} for "
                         f"its orthonormal directions, found {m.width}")
      seen = [e for e, by in self.events if m.name in by]
      if len(seen) > 2:
        raise ValueError(f"VariantSpec.events: modality {m.name!r} may see at most 2 events, "
                         f"found {seen}")
    for event, seen_by in self.events:
      unknown = sorted(set(seen_by) - set(names))
      if unknown:
        raise ValueError(f"VariantSpec.events: event {event!r} names unknown modalities "
                         f"{unknown}; expected some of {names}")
    if self.cue_modality not in names:
      raise ValueError(f"VariantSpec.cue_modality must be one of {names}, "
                       f"found {self.cue_modality!r}")


def variant_directions(spec: VariantSpec) -> dict[str, dict[str, np.ndarray]]:
  """Per modality, its orthonormal directions by name: 'event_<e>' [2, D] (type 0, type 1) for
  each event e it sees, 'window', 'global' [D] (shared); 'nuisance' [2, D] (walk, bursts) and
  'cue' [D] (private; carries the cue in `spec.cue_modality` only)."""
  rng = np.random.default_rng(spec.geometry_seed)
  out = {}
  for geo in spec.modalities:
    d = _directions(rng, geo.width, _VARIANT_ROWS)
    seen = [e for e, by in spec.events if geo.name in by]
    named = {f"event_{e}": d[2 * k:2 * k + 2] for k, e in enumerate(seen)}
    named.update(window=d[4], nuisance=d[6:8], cue=d[8], **{"global": d[5]})
    out[geo.name] = named
  return out


def variant_label(factors: dict[str, Any]) -> np.ndarray:
  """The variant's label from its factors: 8 * global + 4 * window + 2 * cue + parity, int32[N]."""
  return (8 * factors["global"] + 4 * factors["window"] + 2 * factors["cue"]
          + factors["parity"]).astype(np.int32)


def generate_variant(spec: VariantSpec, num_examples: int, seed: int) -> dict[str, Any]:
  """Generates one split of the variant benchmark (module docstring).

  Returns:
    {'inputs': {m: float32[N, T_m, D_m]}, 'masks': {m: bool[N, T_m]}, 'label': int32[N],
     'factors': {'parity', 'cue', 'window', 'global': int32[N] (the label bits);
                 'event_<e>': int32[N] (type of event e, e in 'at', 'tv', 'av');
                 'time_<e>', 'window_start': float32[N] (event centre, window start, as
                 fractions of the clip before each modality's offset);
                 'nuisance': {m: float32[N, T_m, 2]} (the private signal along its 2 directions)}}
  """
  rng = np.random.default_rng(seed)
  n = num_examples
  types = {e: rng.integers(0, 2, n) for e, _ in spec.events}
  window = rng.integers(0, 2, n)
  glob = rng.integers(0, 2, n)
  cue = rng.integers(0, 2, n)
  times = {e: rng.uniform(0.15, 0.75, n) for e, _ in spec.events}
  window_start = rng.uniform(0.05, 0.65, n)
  parity = np.bitwise_xor.reduce(np.stack(list(types.values())), axis=0)
  dirs = variant_directions(spec)
  out = {"inputs": {}, "masks": {}, "factors": {"nuisance": {}}}
  for geo in spec.modalities:
    t = _clock(geo)
    d = dirs[geo.name]
    x = np.zeros((n, geo.length, geo.width))
    for e, seen_by in spec.events:
      if geo.name in seen_by:  # the same event time in both modalities, each on its own clock
        x += (spec.event_amplitude * _bump(t, times[e])[..., None]
              * d[f"event_{e}"][types[e]][:, None, :])
    x += spec.window_amplitude * _oscillation(t, window, window_start)[..., None] * d["window"]
    x += spec.global_amplitude * (2.0 * glob - 1.0)[:, None, None] * d["global"]
    if geo.name == spec.cue_modality:
      x += spec.cue_amplitude * (2.0 * cue - 1.0)[:, None, None] * d["cue"]
    nuisance = _nuisance(rng, spec.nuisance_amplitude, n, geo.length)              # [N, T, 2]
    x += nuisance @ d["nuisance"]
    _finish(rng, x, geo, spec.noise, out, nuisance)
  factors = {"parity": parity, "cue": cue, "window": window, "global": glob}
  factors.update({f"event_{e}": v for e, v in types.items()})
  out["factors"].update({k: v.astype(np.int32) for k, v in factors.items()})
  out["factors"].update({f"time_{e}": v.astype(np.float32) for e, v in times.items()})
  out["factors"]["window_start"] = window_start.astype(np.float32)
  out["label"] = variant_label(out["factors"])
  return out
