"""On-the-fly gradient modulation, OGM and OGM-GE (Peng et al., CVPR 2022), a training option.

`config.train.modulation = 'ogm_ge'` (or 'ogm', without the noise) with
`model.name='late_fusion'`, `model.fusion_head='linear'` on two modalities (a, v), ordered by
name (audio before visual). With the linear classifier on [h_a; h_v], each modality's share of
the logits is out_m = W_m h_m + b / 2 (aux['unimodal_logits']). Per step, over the global batch:
  s_m = sum_i softmax(out_m)_i[y_i]         (over valid rows; and segments, per-segment tasks)
  rho = s_v / s_a
  rho > 1:  k_v = 1 - tanh(alpha * rho),     k_a = 1
  else:     k_a = 1 - tanh(alpha / rho),     k_v = 1
and, while the epoch (0-based) is in [starts, ends], the gradient of every convolution kernel of
modality m's encoder (the reference: 4-D parameters of its audio / visual net; here the conv
kernels, ndim >= 3, under semantic_hierarchy/backbone_m, so a TCN's Conv1d counts too) becomes
  g <- k_m g + N(0, (std(g) + 1e-8)^2)       (OGM-GE; std unbiased, of the unmodulated g)
  g <- k_m g                                 (OGM)
Other parameters (the projections, the classifier, BatchNorm) keep their gradients.

Defaults (config.train.ogm_ge) follow GeWu-Lab/OGM-GE_CVPR2022: main.py's modulation_starts 0
and modulation_ends 50, and the README's default setting alpha = 0.1 (main.py makes --alpha a
required argument; CREMA-D runs in later work often use 0.8).
The noise is drawn from a key common to all devices, so replicated parameters stay equal.
"""
from __future__ import annotations

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections

MODES = ("none", "ogm", "ogm_ge")


def default_config() -> ml_collections.ConfigDict:
  """config.train.ogm_ge."""
  c = ml_collections.ConfigDict()
  c.alpha = 0.1
  c.starts = 0                   # first epoch (0-based) that is modulated
  c.ends = 50                    # last epoch that is modulated (inclusive)
  return c


def check_config(config) -> None:
  """Launch check of train.modulation against the (resolved) model config."""
  mode = config.train.modulation
  if mode not in MODES:
    raise ValueError(f"config.train.modulation must be one of {MODES}, found {mode!r}")
  if mode == "none":
    return
  model = config.model
  mods = sorted(model.modalities.keys())
  if model.name != "late_fusion" or model.fusion_head != "linear":
    raise ValueError(
        f"config.train.modulation={mode!r} modulates the encoders of a concatenation fusion "
        "with one linear classifier (OGM-GE's setting): set config.model.name='late_fusion' "
        f"and config.model.fusion_head='linear' (found model.name={model.name!r}, "
        f"fusion_head={model.fusion_head!r}, modalities {mods})")
  if len(mods) != 2:
    raise ValueError(f"config.train.modulation={mode!r} (OGM-GE) balances two modalities; "
                     f"config.model.modalities has {mods}")
  if model.task == "regression":
    raise ValueError(f"config.train.modulation={mode!r} scores each modality by its softmax "
                     f"probability of the label; task 'regression' (modalities {mods}) has none")


def coefficients(unimodal_logits, label, valid, alpha: float, axis=None):
  """({m: k_m}, rho) from {m: logits [B, C] | [B, S, C]}, int label [B] | [B, S], valid [B]."""
  mods = sorted(unimodal_logits)
  first, second = mods
  w = valid.astype(jnp.float32)
  scores = {}
  for m in mods:
    p = jax.nn.softmax(unimodal_logits[m].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(p, label.astype(jnp.int32)[..., None], -1)[..., 0]
    per_row = picked.reshape(picked.shape[0], -1).sum(-1)
    score = jnp.sum(per_row * w)
    scores[m] = axis.sum(score) if axis is not None else score
  rho = scores[second] / jnp.maximum(scores[first], 1e-30)
  damp = lambda r: 1.0 - jnp.tanh(alpha * jax.nn.relu(r))
  coeff = {second: jnp.where(rho > 1, damp(rho), 1.0),
           first: jnp.where(rho > 1, 1.0, damp(1.0 / jnp.maximum(rho, 1e-30)))}
  return jax.lax.stop_gradient(coeff), jax.lax.stop_gradient(rho)


def is_modulated(path: tuple[str, ...], leaf, modality: str) -> bool:
  """Whether a parameter is a convolution kernel of `modality`'s encoder."""
  return (len(path) > 2 and path[0] == "semantic_hierarchy" and
          path[1] == f"backbone_{modality}" and leaf.ndim >= 3)


def modulate(grads, coeff, key, mode: str, active):
  """grads (a params pytree) with the conv-kernel gradients of each modality modulated.

  coeff {m: scalar}; active: bool scalar (the epoch is in [starts, ends]); key: noise key,
  the same on every device."""
  flat = traverse_util.flatten_dict(grads)
  out = {}
  for i, (path, g) in enumerate(sorted(flat.items())):
    owner = [m for m in coeff if is_modulated(path, g, m)]
    if not owner:
      out[path] = g
      continue
    k = jnp.where(active, coeff[owner[0]], 1.0).astype(g.dtype)
    new = g * k
    if mode == "ogm_ge":
      std = jnp.std(g.astype(jnp.float32), ddof=1) + 1e-8
      noise = jax.random.normal(jax.random.fold_in(key, i), g.shape, jnp.float32) * std
      new = new + jnp.where(active, noise, 0.0).astype(g.dtype)
    out[path] = new
  return traverse_util.unflatten_dict(out)


def apply(train_config, grads, aux, batch, key, step, steps_per_epoch: int, axis=None):
  """The train step's hook: (grads, metrics). No-op for train.modulation='none'."""
  mode = train_config.get("modulation", "none")  # configs built without the field: none
  if mode == "none":
    return grads, {}
  if aux.get("unimodal_logits") is None:
    raise ValueError(f"train.modulation={mode!r} needs aux['unimodal_logits'] "
                     "(model.name='late_fusion', model.fusion_head='linear')")
  if steps_per_epoch < 1:
    raise ValueError("train.modulation needs the number of steps per epoch")
  cfg = train_config.ogm_ge
  coeff, rho = coefficients(aux["unimodal_logits"], batch["label"], batch["valid"], cfg.alpha,
                            axis)
  epoch = step // steps_per_epoch
  active = (epoch >= cfg.starts) & (epoch <= cfg.ends)
  metrics = {f"modulation/coeff_{m}": jnp.where(active, k, 1.0) for m, k in coeff.items()}
  metrics["modulation/ratio"] = rho
  return modulate(grads, coeff, key, mode, active), metrics
