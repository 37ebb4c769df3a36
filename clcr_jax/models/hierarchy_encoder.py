"""Semantic hierarchy encoder (docs/model.md, Hierarchy): H_l = LN(Z_l W_l + P_l) per modality and
level.

Every level of every modality is projected to the common width d, gets a learned positional
embedding P_l (a default, docs/model.md, Hierarchy) and a LayerNorm. Masks pass through unchanged,
so level l of
modality m keeps the token count and mask its backbone produced.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clcr_jax.models import layers

Dtype = Any
LEVEL_NAMES = ("shallow", "mid", "deep")


class HierarchyEncoder(nn.Module):
  """{m: [(Z_l [B, T_ml, D_ml], mask [B, T_ml]) for l]} -> {m: [H_l [B, T_ml, d]]}."""
  d: int
  max_len: int = 0
  pos_init_std: float = 0.02
  level_ids: Sequence[int] = (0, 1, 2)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, levels: Mapping[str, Sequence[tuple[jax.Array, jax.Array]]]):
    out = {}
    for m, per_level in levels.items():
      out[m] = []
      for level, (z, _) in enumerate(per_level):
        tag = f"{m}_{LEVEL_NAMES[self.level_ids[level]]}"
        h = nn.Dense(self.d, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f"proj_{tag}")(z)
        pos = layers.PositionalEmbedding(self.max_len, self.pos_init_std,
                                         where=f"modality {m!r} level {level}",
                                         param_dtype=self.param_dtype,
                                         name=f"pos_{tag}")(z.shape[1], self.d)
        h = h + pos.astype(h.dtype)
        out[m].append(nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                                   name=f"norm_{tag}")(h))
    return out


def level_count_error(m: str, found: int) -> ValueError:
  return ValueError(f"modality {m!r}: backbone produced {found} levels, expected 3")


class SemanticHierarchy(nn.Module):
  """Backbones + hierarchy encoder for all modalities (shared by CLCR and the baselines).

  Call: inputs {m: array}, masks {m: bool[B, T_m]} ->
    H {m: [H_l [B, T_ml, d] for l in keep_levels]}, level masks {m: [bool[B, T_ml]]}.
  `config` is the frozen model config (models/defaults.py).
  """
  config: Any
  axis_name: str | None = None
  keep_levels: Sequence[int] = (0, 1, 2)  # baselines project only the deep level

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool):
    from clcr_jax.models import backbones  # pylint: disable=import-outside-toplevel
    cfg = self.config
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    mods = tuple(cfg.modalities.keys())
    missing = [m for m in mods if m not in inputs or m not in masks]
    if missing:
      raise ValueError(f"the model is configured for modalities {list(mods)} but the batch lacks "
                       f"{missing} (inputs has {sorted(inputs)}, masks has {sorted(masks)})")
    levels, level_masks = {}, {}
    for m in mods:
      spec = cfg.modalities[m]
      # model.remat: a ResNet recomputes block by block (its peak is inside the trunk); a TCN is
      # small next to the exchange attention, so it is recomputed whole and holds nothing
      # while the levels above it run.
      whole = cfg.remat and spec.backbone != "resnet18"
      encoder_cls = (nn.remat(backbones.ModalityEncoder, static_argnums=(3,)) if whole
                     else backbones.ModalityEncoder)
      out = encoder_cls(
          name_=m, kind=spec.kind, backbone=spec.backbone, tcn_width=cfg.tcn.width or cfg.d,
          kernel_size=cfg.tcn.kernel_size, dilations=tuple(cfg.tcn.dilations),
          resnet_width=cfg.resnet.base_width, spatial_grid=cfg.resnet.spatial_grid,
          bert=cfg.bert if spec.backbone == "bert" else None, attention=cfg.attention,
          remat=cfg.remat and not whole, axis_name=self.axis_name, dtype=dtype,
          param_dtype=param_dtype, name=f"backbone_{m}")(inputs[m], masks[m], train)
      if len(out) != 3:
        raise level_count_error(m, len(out))
      levels[m] = [out[l] for l in self.keep_levels]
      level_masks[m] = [out[l][1] for l in self.keep_levels]
    h = HierarchyEncoder(cfg.d, cfg.max_len, cfg.pos_init_std, tuple(self.keep_levels), dtype,
                         param_dtype, name="hierarchy")(levels)
    return h, level_masks
