"""Reference fusions built on the same backbones, for the tables next to CLCR.

* `LateFusion`: each modality's deep level, masked-mean pooled, concatenated, MLP head
  (`model.fusion_head='linear'`: one Linear layer, OGM-GE's concatenation classifier; aux then
  also holds each modality's share of the logits, `unimodal_logits`, for train.modulation).
* `FlatAttention`: the deep level of every modality attends to all tokens of the other modalities
  (one level, no shared/private split, no budget), then pooled, concatenated, MLP head.
Both return `(prediction, aux)` like CLCR; aux holds the modality presence weights (and the
unimodal logits of a linear head), so the CLCR regularisers are zero for them. MulT, MBT and
MISA live in mult.py, mbt.py and misa.py and share the launch check and `presence_weights`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clcr_jax.models import heads
from clcr_jax.models import hierarchy_encoder
from clcr_jax.models import layers
from clcr_jax.models import transformer_layers as tl


def check_utterance_model(name: str, cfg) -> None:
  """Launch check shared by the utterance-level baselines (MulT, MBT, MISA)."""
  mods = sorted(cfg.modalities.keys())
  if len(mods) < 2:
    raise ValueError(f"model {name!r} fuses two or more modalities; config.model.modalities has "
                     f"{mods}. Use model.name='late_fusion' for one modality")
  if cfg.task == "segment_classification":
    raise ValueError(f"model {name!r} predicts one output per example; it does not support "
                     f"task 'segment_classification' (modalities {mods}); use 'clcr', "
                     "'late_fusion' or 'flat_attention' for per-segment labels")


def dtypes(cfg) -> dict:
  """{'dtype', 'param_dtype'} of the model config, as Flax module keyword arguments."""
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def deep_level(cfg, axis_name, inputs, masks, train: bool):
  """The shared backbones' deep level, for a baseline's compact __call__ (the submodule is
  'semantic_hierarchy' of the caller): ({m: H_deep [B, T_m, d]}, {m: mask bool[B, T_m]})."""
  h, level_masks = hierarchy_encoder.SemanticHierarchy(cfg, axis_name, keep_levels=(2,),
                                                       name="semantic_hierarchy")(
                                                           inputs, masks, train=train)
  return {m: h[m][0] for m in h}, {m: level_masks[m][0] for m in level_masks}


class UtteranceBaseline(nn.Module):
  """Base of MulT, MBT and MISA: built like CLCR (frozen model config, pmap axis name), one
  output per example. `build_model` calls `check_config` at launch."""
  config: Any
  axis_name: str | None = None  # set by the pmap wrapper for cross-replica BatchNorm
  model_name = ""

  @classmethod
  def check_config(cls, cfg) -> None:
    check_utterance_model(cls.model_name, cfg)

  def encode(self, inputs, masks, train: bool):
    """(modality names, dtype kwargs, deep tokens {m: [B, T_m, d]}, masks {m: [B, T_m]})."""
    cfg = self.config
    return (tuple(cfg.modalities.keys()), dtypes(cfg)) + deep_level(
        cfg, self.axis_name, inputs, masks, train)


def presence_weights(masks, mods):
  """beta [B, M]: uniform over the modalities present in each row (as the other baselines)."""
  present = jnp.stack([jnp.any(masks[m], -1) for m in mods], -1).astype(jnp.float32)
  return present / jnp.maximum(present.sum(-1, keepdims=True), 1.0)


FUSION_HEADS = ("mlp", "linear")


def _pool(x, mask, num_segments):
  if num_segments:
    return layers.masked_segment_mean(x, mask, num_segments)
  return layers.masked_mean(x, mask)


class _Fusion(nn.Module):
  """Deep level per modality -> optional flat cross-modal attention -> pool -> concat -> head."""
  config: Any
  axis_name: str | None = None
  cross_attention: bool = False

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool = False):
    cfg = self.config
    mods = tuple(cfg.modalities.keys())
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    num_segments = cfg.num_segments if cfg.task == "segment_classification" else 0
    tokens, tmask = deep_level(cfg, self.axis_name, inputs, masks, train)
    if self.cross_attention and len(mods) > 1:
      fused = {}
      for m in mods:
        others = [o for o in mods if o != m]
        pool = jnp.concatenate([tokens[o] for o in others], axis=1)
        pool_mask = jnp.concatenate([tmask[o] for o in others], axis=1)
        # Gated by the token mask: every valid token receives the pool, padding nothing.
        fused[m] = tl.GatedCrossAttentionBlock(
            num_heads=cfg.num_heads, dropout=cfg.dropout, ffn_mult=cfg.ffn_mult,
            attention=cfg.attention, dtype=dtype, param_dtype=param_dtype,
            name=f"attention_{m}")(tokens[m], tmask[m].astype(jnp.float32), pool, pool_mask,
                                   train=train)
      tokens = fused
    per_modality = [_pool(tokens[m], tmask[m], num_segments) for m in mods]
    pooled = jnp.concatenate(per_modality, axis=-1)
    if cfg.fusion_head not in FUSION_HEADS:
      raise ValueError(f"config.model.fusion_head must be one of {FUSION_HEADS}, "
                       f"found {cfg.fusion_head!r}")
    linear = cfg.fusion_head == "linear"
    head = heads.TaskHead(cfg.task, cfg.num_classes, 0 if linear else cfg.d, cfg.dropout, dtype,
                          param_dtype, name="head")
    prediction = head(pooled, train=train)
    aux = {"beta": presence_weights(masks, mods)}
    if linear:
      aux["unimodal_logits"] = unimodal_logits(head.variables["params"]["linear"], per_modality,
                                               mods, cfg.task)
    return prediction, aux


def unimodal_logits(linear, per_modality, mods, task):
  """Each modality's share of a linear head on the concatenation, W_m h_m + b / M (OGM-GE's
  out_a, out_v): {m: [B, C] | [B, S, C] | [B]}, float32. They sum to the prediction."""
  out, start = {}, 0
  for m, x in zip(mods, per_modality):
    rows = linear["kernel"][start:start + x.shape[-1]]
    start += x.shape[-1]
    y = (x @ rows.astype(x.dtype) + linear["bias"].astype(x.dtype) / len(mods))
    y = y.astype(jnp.float32)
    out[m] = y[..., 0] if task == "regression" else y
  return out


class LateFusion(_Fusion):
  cross_attention: bool = False


class FlatAttention(_Fusion):
  cross_attention: bool = True
