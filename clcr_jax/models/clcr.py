"""The CLCR model: semantic hierarchy -> IntraCED per level -> InterCAD -> task head.

`CLCR(config).apply(variables, inputs, masks, train=..., rngs=...)` returns
`(prediction, aux)` (design.md contract):
  prediction: logits [B, C] | regression value [B] | per-segment logits [B, S, C]
  aux: {
    'alpha':         per level l, {m: float32[B, T_ml]}  budget weights (0 outside the budget),
    'budget':        per level l, {m: float32[B]}        B_l in tokens for each sample,
    'budget_ratio':  float32[L]                         r_l = B_l / #valid tokens,
    'token_mask':    per level l, {m: bool[B, T_ml]},
    'shared':        per level l, {m: [B, d]}           pooled shared summaries s_l^m,
    'private':       per level l, {m: [B, d]}, or None   pooled private summaries p_l^m,
    'omega': float32[B, L], 'beta': float32[B, M], 'eta': float32[B, M],
  }
"Per level l" is a list of length L (3, or 1 for the no_hierarchy / full_mix ablations).
Modalities are ordered by name (ConfigDict keeps its keys sorted); beta and eta follow that order.

The levels run as one vectorised computation (nn.vmap, parameters stacked on a leading level
axis): each level keeps its own parameters, but XLA compiles one copy of the level's graph,
which cuts compile time about threefold and gives the accelerator bigger kernels. Levels of one
modality with different token counts (ResNet stages) are padded to the longest with masked
tokens, which every operation ignores.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import heads
from clcr_jax.models import hierarchy_encoder
from clcr_jax.models import inter_cad
from clcr_jax.models import intra_ced


def select_levels(h, level_masks, cfg):
  """Applies the hierarchy ablations: returns per-level lists [{m: H}], [{m: mask}]."""
  mods = tuple(cfg.modalities.keys())
  num_levels = len(h[mods[0]])
  if cfg.ablation.no_hierarchy and cfg.ablation.full_mix:
    raise ValueError("config.model.ablation: no_hierarchy and full_mix exclude each other")
  if cfg.ablation.no_hierarchy:
    return [{m: h[m][-1] for m in mods}], [{m: level_masks[m][-1] for m in mods}]
  if cfg.ablation.full_mix:
    return ([{m: jnp.concatenate(h[m], axis=1) for m in mods}],
            [{m: jnp.concatenate(level_masks[m], axis=1) for m in mods}])
  return ([{m: h[m][l] for m in mods} for l in range(num_levels)],
          [{m: level_masks[m][l] for m in mods} for l in range(num_levels)])


def stack_levels(h_levels, mask_levels):
  """Per-level lists of {m: [B, T_ml, d]} -> {m: [L, B, T_m, d]} padded to T_m = max_l T_ml,
  the masks likewise, and the true lengths {m: (T_m1, ..., T_mL)}."""
  mods = list(h_levels[0])
  lengths = {m: tuple(hl[m].shape[1] for hl in h_levels) for m in mods}
  pad = lambda x, t: jnp.pad(x, [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
  h = {m: jnp.stack([pad(hl[m], max(lengths[m])) for hl in h_levels]) for m in mods}
  masks = {m: jnp.stack([pad(ml[m], max(lengths[m])) for ml in mask_levels]) for m in mods}
  return h, masks, lengths


def segment_assignment(h, cfg, num_segments: int):
  """{m: float32[L, T_m, S]}: which segment each token of the stacked levels pools into.

  Token t of a level of T_l tokens covers time t / T_l, so it belongs to segment
  floor(t S / T_l), whether the level stands alone, is padded to the longest level
  (stack_levels) or concatenated with the other levels (full_mix): the segment ids go through
  the same select_levels / stack_levels as the tokens. Padding rows are all zero.
  """
  ids = {m: [np.arange(x.shape[1])[None] * num_segments // x.shape[1] for x in h[m]] for m in h}
  real = {m: [np.ones((1, x.shape[1]), bool) for x in h[m]] for m in h}
  ids, real, _ = stack_levels(*select_levels(ids, real, cfg))
  return {m: jax.nn.one_hot(ids[m][:, 0], num_segments) * real[m][:, 0, :, None] for m in ids}


def _vmap_levels(module_cls):
  return nn.vmap(module_cls, variable_axes={"params": 0},
                 split_rngs={"params": True, "dropout": True}, in_axes=0, out_axes=0)


class CLCR(nn.Module):
  """Cross-Level Co-Representation. `config` is a frozen model config (models/defaults.py)."""
  config: Any
  axis_name: str | None = None  # set by the pmap wrapper for cross-replica BatchNorm

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool = False):
    cfg = self.config
    mods = tuple(cfg.modalities.keys())
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    d_sh, d_pr = cfg.d_shared or cfg.d // 2, cfg.d_private or cfg.d // 2
    num_segments = cfg.num_segments if cfg.task == "segment_classification" else 0
    if cfg.task == "segment_classification" and num_segments < 1:
      raise ValueError("task 'segment_classification' needs config.model.num_segments >= 1")

    h, level_masks = hierarchy_encoder.SemanticHierarchy(cfg, self.axis_name,
                                                         name="semantic_hierarchy")(
                                                             inputs, masks, train=train)
    h_stack, mask_stack, lengths = stack_levels(*select_levels(h, level_masks, cfg))
    num_levels = len(next(iter(lengths.values())))
    split = not cfg.ablation.no_intraced

    out = _vmap_levels(intra_ced.IntraCED)(
        d=cfg.d, d_shared=d_sh, d_private=d_pr, modalities=mods, num_heads=cfg.num_heads,
        dropout=cfg.dropout, ffn_mult=cfg.ffn_mult, split=split,
        participation_init=cfg.budget.participation_init, kappa_init=cfg.budget.kappa_init,
        theta_init=cfg.budget.theta_init, budget_method=cfg.budget.method,
        budget_scores=cfg.budget.scores, budget_constraint=cfg.budget.constraint,
        budget_pool=cfg.budget.pool,
        dense_budget=cfg.ablation.dense_budget, private_ffn=cfg.private_ffn,
        attention=cfg.attention, train=train, dtype=dtype, param_dtype=param_dtype,
        bases_trainable=cfg.stiefel_trainable, exchange_norm=cfg.exchange_norm,
        exchange_init=cfg.exchange_init,
        name="intra_ced")(h_stack, mask_stack)
    summaries = _vmap_levels(inter_cad.Summaries)
    assign = segment_assignment(h, cfg, num_segments) if num_segments else None
    s, s_seg = summaries(cfg.d, num_segments, cfg.inter_cad.summary_norm, dtype, param_dtype,
                         cfg.inter_cad.proj_init, cfg.inter_cad.summary_proj,
                         name="shared_summary")(out["shared"], mask_stack, assign)
    if split:
      p, p_seg = summaries(cfg.d, num_segments, cfg.inter_cad.summary_norm, dtype, param_dtype,
                           cfg.inter_cad.proj_init, cfg.inter_cad.summary_proj,
                           name="private_summary")(out["private"], mask_stack, assign)

    per_level = lambda tree, crop: [
        {m: (tree[m][l, :, :lengths[m][l]] if crop else tree[m][l]) for m in mods}
        for l in range(num_levels)]
    aux = {"alpha": per_level(out["alpha"], True), "budget": per_level(out["budget"], False),
           "token_mask": per_level(mask_stack, True), "shared": per_level(s, False),
           "private": per_level(p, False) if split else None,
           "budget_ratio": out["ratio"].astype(jnp.float32)}

    present = {m: jnp.any(masks[m], axis=-1) for m in mods}
    representation, seg_representation, weights = inter_cad.InterCAD(
        cfg.d, mods, not cfg.ablation.no_intercad, cfg.inter_cad.value_scale, dtype, param_dtype,
        cfg.inter_cad.proj_init, cfg.inter_cad.level_scale, name="inter_cad")(
            aux["shared"], aux["private"],
            per_level(s_seg, False) if num_segments else None,
            per_level(p_seg, False) if num_segments and split else None, present)
    aux.update(weights)
    head_input = seg_representation if num_segments else representation
    prediction = heads.TaskHead(cfg.task, cfg.num_classes, cfg.d, cfg.dropout, dtype, param_dtype,
                                name="head")(head_input, train=train)
    return prediction, aux
