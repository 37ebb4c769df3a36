"""Reference fusions built on the same backbones, for the tables next to CLCR.

* `LateFusion`: each modality's deep level, masked-mean pooled, concatenated, MLP head.
* `FlatAttention`: the deep level of every modality attends to all tokens of the other modalities
  (one level, no shared/private split, no budget), then pooled, concatenated, MLP head.
Both return `(prediction, aux)` like CLCR; aux holds only the modality presence weights, so the
CLCR regularisers are zero for them.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clcr_jax.models import heads
from clcr_jax.models import hierarchy_encoder
from clcr_jax.models import intra_ced
from clcr_jax.models import layers


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
    h, level_masks = hierarchy_encoder.SemanticHierarchy(cfg, self.axis_name, keep_levels=(2,),
                                                         name="semantic_hierarchy")(
                                                             inputs, masks, train=train)
    tokens = {m: h[m][0] for m in mods}
    tmask = {m: level_masks[m][0] for m in mods}
    if self.cross_attention and len(mods) > 1:
      fused = {}
      for m in mods:
        others = [o for o in mods if o != m]
        pool = jnp.concatenate([tokens[o] for o in others], axis=1)
        pool_mask = jnp.concatenate([tmask[o] for o in others], axis=1)
        fused[m] = intra_ced.SharedExchange(cfg.num_heads, cfg.dropout, cfg.ffn_mult,
                                            cfg.attention, dtype, param_dtype,
                                            name=f"attention_{m}")(
                                                tokens[m], tmask[m].astype(jnp.float32), pool,
                                                pool_mask, train=train)
      tokens = fused
    pooled = jnp.concatenate([_pool(tokens[m], tmask[m], num_segments) for m in mods], axis=-1)
    prediction = heads.TaskHead(cfg.task, cfg.num_classes, cfg.d, cfg.dropout, dtype, param_dtype,
                                name="head")(pooled, train=train)
    present = jnp.stack([jnp.any(masks[m], -1) for m in mods], -1).astype(jnp.float32)
    beta = present / jnp.maximum(present.sum(-1, keepdims=True), 1.0)
    return prediction, {"beta": beta}


class LateFusion(_Fusion):
  cross_attention: bool = False


class FlatAttention(_Fusion):
  cross_attention: bool = True
