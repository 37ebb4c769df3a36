"""Inter-Level Co-Aggregation Domain (InterCAD), docs/model.md, InterCAD.

For levels l and modalities m:
  s_l^m = LN(W (masked-mean_t h_sh)),  p_l^m = LN(W' (masked-mean_t h_pr))     (width d)
  anchors a_l; s^_l^m = LN(s_l^m) + a_l; level logits = MLP([mean_m s^_l^m ; a_l]);
  omega = softmax_l (per sample, shared by the modalities)
  s-_m = sum_l omega_l s_l^m,  p-_m = sum_l omega_l p_l^m
  g = mean_m s-_m;  beta = softmax_m((W_q g).(W_k s-_m) / sqrt(d));  z_sh = sum_m beta_m W_v s-_m
  eta_m = sigmoid(w_p^T LN(W_p p-_m));  u_pr = sum_m eta_m W_u p-_m
  representation = [z_sh ; u_pr]  (width 2d)
A modality with no valid token in a sample (missing) gets beta = eta = 0 there. For per-segment
tasks the same omega, beta, eta weigh per-segment summaries, giving [B, S, 2d].
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import layers

Dtype = Any

PROJ_INITS = ("lecun", "identity", "orthogonal")


def projection_init(kind: str):
  """Kernel initialiser of the summary and value projections (config.model.inter_cad.proj_init).

  'lecun' (flax's Dense default) starts them as random maps; 'identity' ([w, d] -> eye(w, d),
  the input copied into the first w outputs) and 'orthogonal' start them norm-preserving, so at
  initialisation the pooled backbone features reach the head unchanged (identity) or rotated.
  """
  if kind == "lecun":
    return nn.initializers.lecun_normal()
  if kind == "identity":
    return lambda key, shape, dtype=jnp.float32: jnp.eye(shape[0], shape[1], dtype=dtype)
  if kind == "orthogonal":
    return nn.initializers.orthogonal()
  raise ValueError(f"config.model.inter_cad.proj_init must be one of {PROJ_INITS}, found {kind!r}")


def _embed(x: jax.Array, width: int) -> jax.Array:
  """[..., w] -> [..., width]: x in the first w coordinates, zeros after (w <= width)."""
  if x.shape[-1] > width:
    raise ValueError(f"summary_proj='fixed' embeds a stream of width {x.shape[-1]} into "
                     f"d = {width}; it needs width <= d")
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


class Summaries(nn.Module):
  """Pooled, projected, normalised summaries of one stream at one level.

  The projection W [w, d] is learned (`proj='learned'`, initialised by `proj_init`) or fixed
  (`proj='fixed'`: the pooled stream zero-padded to width d, no parameters).

  Call: streams {m: [B, T, w]}, masks {m: [B, T]}, optional segment assignments
  {m: [T, S]} (layers.masked_segment_mean) -> {m: [B, d]} (and {m: [B, S, d]} per segment
  when num_segments > 0, else None).
  """
  d: int
  num_segments: int = 0
  norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  proj_init: str = "lecun"
  proj: str = "learned"  # 'fixed': no parameters, the input zero-padded to width d (_embed)

  @nn.compact
  def __call__(self, streams, masks, segment_assign=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    pooled, per_segment = {}, {}
    for m, x in streams.items():
      if self.proj == "learned":
        proj = nn.Dense(self.d, name=f"proj_{m}", kernel_init=projection_init(self.proj_init),
                        **kw)
      elif self.proj == "fixed":
        proj = functools.partial(_embed, width=self.d)
      else:
        raise ValueError("config.model.inter_cad.summary_proj must be 'learned' or 'fixed', "
                         f"found {self.proj!r}")
      norm = nn.LayerNorm(name=f"norm_{m}", **kw) if self.norm else (lambda v: v)
      pooled[m] = norm(proj(layers.masked_mean(x, masks[m])))
      if self.num_segments:
        assign = None if segment_assign is None else segment_assign[m]
        per_segment[m] = norm(proj(layers.masked_segment_mean(x, masks[m], self.num_segments,
                                                               assign)))
    return pooled, (per_segment if self.num_segments else None)


class InterCAD(nn.Module):
  """Cross-level aggregation.

  Call args:
    shared, private: per level, {m: [B, d]} pooled summaries (private may be None: no private
      stream, e.g. "w/o IntraCED"); seg_shared, seg_private: same per segment [B, S, d] or None.
    present: {m: bool[B]} whether the modality has any valid token.
  Returns: (representation [B, 2d], segment representation [B, S, 2d] or None,
    {'omega': [B, L], 'beta': [B, M], 'eta': [B, M]}).
  `aggregate=False` is the "w/o InterCAD" ablation: uniform omega and beta, eta = 1.
  """
  d: int
  modalities: Sequence[str]
  aggregate: bool = True
  value_scale: str = "mean"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  proj_init: str = "lecun"  # W_v and W_u (projection_init)
  level_scale: str = "mean"  # 'sum': s-_m = L sum_l omega_l s_l^m (uniform omega: the sum)

  @nn.compact
  def __call__(self, shared, private, seg_shared, seg_private, present):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    mods = tuple(self.modalities)
    num_levels = len(shared)
    batch = shared[0][mods[0]].shape[0]
    present_f = jnp.stack([present[m] for m in mods], axis=-1).astype(jnp.float32)  # [B, M]

    # (a) cross-level synchronisation with learned anchors -> omega [B, L].
    if self.aggregate and num_levels > 1:
      anchors = self.param("anchors", nn.initializers.normal(0.02), (num_levels, self.d),
                           self.param_dtype)
      feats = []
      for level in range(num_levels):
        norm = nn.LayerNorm(name=f"anchor_norm_{level}", **kw)
        s_hat = jnp.stack([norm(shared[level][m]) for m in mods], axis=1) + anchors[level]
        weight = present_f[..., None] / jnp.maximum(present_f.sum(-1), 1.0)[:, None, None]
        mean_s = jnp.sum(s_hat * weight.astype(s_hat.dtype), axis=1)
        feats.append(jnp.concatenate(
            [mean_s, jnp.broadcast_to(anchors[level].astype(mean_s.dtype), mean_s.shape)], -1))
      logits = layers.MLP(self.d // 2, 1, name="level_mlp", **kw)(jnp.stack(feats, 1), train=False)
      omega = jax.nn.softmax(logits[..., 0].astype(jnp.float32), axis=-1)
    else:
      omega = jnp.full((batch, num_levels), 1.0 / num_levels, jnp.float32)

    if self.level_scale not in ("mean", "sum"):
      raise ValueError("config.model.inter_cad.level_scale must be 'mean' or 'sum', found "
                       f"{self.level_scale!r}")
    level_weight = omega * (float(num_levels) if self.level_scale == "sum" else 1.0)

    def over_levels(per_level, segment):
      if per_level is None:
        return None
      w = level_weight[:, None, :, None] if segment else level_weight[:, :, None]
      out = {}
      for m in mods:
        stacked = jnp.stack([per_level[level][m] for level in range(num_levels)], axis=-2)
        out[m] = jnp.sum(stacked.astype(jnp.float32) * w, axis=-2).astype(stacked.dtype)
      return out

    s_bar, p_bar = over_levels(shared, False), over_levels(private, False)
    seg_s_bar, seg_p_bar = over_levels(seg_shared, True), over_levels(seg_private, True)

    # (b) modality selection: beta [B, M] from the global context g.
    s_stack = jnp.stack([s_bar[m] for m in mods], axis=1)  # [B, M, d]
    value = nn.Dense(self.d, name="select_value", kernel_init=projection_init(self.proj_init),
                     **kw)
    if self.aggregate:
      g = jnp.sum(s_stack * present_f[..., None].astype(s_stack.dtype), 1) / jnp.maximum(
          present_f.sum(-1, keepdims=True), 1.0).astype(s_stack.dtype)
      q = nn.Dense(self.d, name="select_query", **kw)(g)
      k = nn.Dense(self.d, name="select_key", **kw)(s_stack)
      logits = jnp.einsum("bd,bmd->bm", q, k).astype(jnp.float32) / np.sqrt(self.d)
      logits = jnp.where(present_f > 0, logits, -1e30)
      beta = jax.nn.softmax(logits, axis=-1) * (present_f.sum(-1, keepdims=True) > 0)
    else:
      beta = present_f / jnp.maximum(present_f.sum(-1, keepdims=True), 1.0)
    if self.value_scale not in ("mean", "sum"):
      raise ValueError("config.model.inter_cad.value_scale must be 'mean' or 'sum', found "
                       f"{self.value_scale!r}")
    scale = float(len(mods)) if self.value_scale == "sum" else 1.0
    z_sh = scale * jnp.einsum("bm,bmd->bd", beta.astype(s_stack.dtype), value(s_stack))

    # (c) private gating: eta [B, M].
    if p_bar is not None:
      p_stack = jnp.stack([p_bar[m] for m in mods], axis=1)
      if self.aggregate:
        gate = nn.LayerNorm(name="gate_norm", **kw)(nn.Dense(self.d, name="gate_proj", **kw)(p_stack))
        gate = nn.Dense(1, name="gate_score", **kw)(gate)[..., 0]
        eta = jax.nn.sigmoid(gate.astype(jnp.float32)) * present_f
      else:
        eta = present_f
      private_value = nn.Dense(self.d, name="private_value",
                               kernel_init=projection_init(self.proj_init), **kw)
      u_pr = jnp.einsum("bm,bmd->bd", eta.astype(p_stack.dtype), private_value(p_stack))
    else:
      eta = jnp.zeros_like(present_f)
      u_pr = jnp.zeros_like(z_sh)
    representation = jnp.concatenate([z_sh, u_pr], axis=-1)

    seg_representation = None
    if seg_s_bar is not None:
      seg_s = jnp.stack([seg_s_bar[m] for m in mods], axis=2)  # [B, S, M, d]
      seg_z = scale * jnp.einsum("bm,bsmd->bsd", beta.astype(seg_s.dtype), value(seg_s))
      if seg_p_bar is not None:
        seg_p = jnp.stack([seg_p_bar[m] for m in mods], axis=2)
        seg_u = jnp.einsum("bm,bsmd->bsd", eta.astype(seg_p.dtype), private_value(seg_p))
      else:
        seg_u = jnp.zeros_like(seg_z)
      seg_representation = jnp.concatenate([seg_z, seg_u], axis=-1)
    return representation, seg_representation, {"omega": omega, "beta": beta, "eta": eta}
