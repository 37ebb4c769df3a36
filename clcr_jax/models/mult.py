"""MulT (Tsai et al., ACL 2019): directional pairwise cross-modal transformers on unaligned
sequences.

For every target modality t and every other (source) modality s, a cross-modal transformer lets
t's tokens attend to s's tokens (queries t, keys/values s) through `layers` pre-LN blocks. The
M - 1 outputs of a target are concatenated along the width and run through a self-attention
transformer ("memory", max(layers, 3) blocks); its state at t's last valid token is t's vector.
The M vectors are concatenated, go through a residual block (proj2(dropout(relu(proj1 h))) + h)
and a linear output layer.

Inputs here are the deep level of the same backbones CLCR uses (hierarchy_encoder
.SemanticHierarchy), projected to MulT's own width `mult.d` (MulT's kernel-1 Conv1d). Each
encoder scales its inputs by sqrt(width), adds sinusoidal positions and applies embedding
dropout; the optional future mask ("attn_mask") lets query i see key j only when
j <= i + |n_k - n_q|, the reference's triangular mask for sequences of lengths n_q, n_k.
Padding never changes the output: positions and the future mask count valid tokens only
(per row), padded keys are masked, and the vector is read at the last *valid* token (the
reference reads index -1 of zero-padded sequences).

Defaults (config.model.mult) are those of yaohungt/Multimodal-Transformer main.py and
src/models.py: width 30 per modality, 5 heads, 5 layers (memory: max(5, 3)), attention dropout
0.1 for a text target and 0.0 for audio and vision targets (and 0.1 in the memory encoders),
relu dropout 0.1, residual dropout 0.1, embedding dropout 0.25, output dropout 0.0, future mask
on. Not reproduced: the text-only input dropout before the projection, and MulT's
L1 regression loss is the project's `loss.regression` (L1 by default as well).
Utterance-level: classification and regression tasks, two or more modalities.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from clcr_jax.models import baselines
from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import heads
from clcr_jax.models import transformer_layers as tl

Dtype = Any


def default_config() -> ml_collections.ConfigDict:
  """config.model.mult: yaohungt/Multimodal-Transformer's defaults (main.py, src/models.py)."""
  c = ml_collections.ConfigDict()
  c.d = 30                        # per-modality width (d_l = d_a = d_v = 30)
  c.num_heads = 5
  c.layers = 5                    # nlevels; the memory transformers use max(layers, 3)
  c.attn_dropout = 0.1            # attention dropout of a text target and of the memories
  # Per-target overrides of attn_dropout (attn_dropout_a, attn_dropout_v = 0.0).
  c.attn_dropout_per_modality = ml_collections.ConfigDict({"audio": 0.0, "vision": 0.0,
                                                           "visual": 0.0})
  c.relu_dropout = 0.1
  c.res_dropout = 0.1
  c.embed_dropout = 0.25
  c.out_dropout = 0.0
  c.attn_mask = True              # the future (triangular) mask
  return c


def future_mask(query_mask, key_mask):
  """MulT's triangular mask by valid-token rank: bool[B, Tq, Tk], True = may attend."""
  offset = jnp.abs(key_mask.sum(-1) - query_mask.sum(-1))[:, None, None]
  return tl.token_rank(key_mask)[:, None, :] <= tl.token_rank(query_mask)[:, :, None] + offset


class CrossmodalTransformer(nn.Module):
  """x [B, Tq, w] attends to source [B, Tk, w] (None: to itself) -> [B, Tq, w] (final LN)."""
  width: int
  num_heads: int
  num_layers: int
  attention_dropout: float
  relu_dropout: float
  res_dropout: float
  embed_dropout: float
  use_future_mask: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, x_mask, source=None, source_mask=None, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda rate: dropout_lib.Dropout(rate, deterministic=not train)

    def embed(z, mask):
      pos = tl.sinusoidal_positions(tl.token_rank(mask) + 1, self.width)  # fairseq: from 1
      return drop(self.embed_dropout)(np.sqrt(self.width) * z + pos.astype(z.dtype))

    self_attention = source is None
    key_mask = x_mask if self_attention else source_mask
    x = embed(x, x_mask)
    kv = None if self_attention else embed(source, source_mask)
    mask = tl.pair_mask(x_mask, key_mask)
    if self.use_future_mask:
      mask &= future_mask(x_mask, key_mask)
    for i in range(self.num_layers):
      norm = nn.LayerNorm(name=f"layer{i}_attention_norm", **kw)
      q = norm(x)
      attention = tl.MaskedAttention(self.num_heads, self.width,
                                     attention_dropout=self.attention_dropout, **kw,
                                     name=f"layer{i}_attention")
      a = attention(q, q if self_attention else norm(kv), mask, train=train)
      x = x + drop(self.res_dropout)(a)
      y = nn.LayerNorm(name=f"layer{i}_ffn_norm", **kw)(x)
      y = nn.relu(nn.Dense(4 * self.width, name=f"layer{i}_fc1", **kw)(y))
      y = nn.Dense(self.width, name=f"layer{i}_fc2", **kw)(drop(self.relu_dropout)(y))
      x = x + drop(self.res_dropout)(y)
    return nn.LayerNorm(name="final_norm", **kw)(x)


class MulT(baselines.UtteranceBaseline):
  """Returns (prediction, aux) like CLCR; aux holds only the modality presence weights."""
  model_name = "mult"

  @classmethod
  def check_config(cls, cfg) -> None:
    super().check_config(cfg)
    mc = cfg.mult
    for width, what in ((mc.d, "mult.d"), ((len(cfg.modalities) - 1) * mc.d, "the memory width")):
      if width % mc.num_heads:
        raise ValueError(f"model 'mult': {what} = {width} is not divisible by "
                         f"config.model.mult.num_heads = {mc.num_heads}")

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool = False):
    cfg, mc = self.config, self.config.mult
    mods, kw, deep, tmask = self.encode(inputs, masks, train)
    tokens = {m: nn.Dense(mc.d, name=f"proj_{m}", **kw)(deep[m]) for m in mods}
    encoder = lambda width, layers, attention_dropout, name: CrossmodalTransformer(
        width, mc.num_heads, layers, attention_dropout, mc.relu_dropout, mc.res_dropout,
        mc.embed_dropout, mc.attn_mask, **kw, name=name)
    last = []
    for target in mods:
      rate = mc.attn_dropout_per_modality.get(target, mc.attn_dropout)
      crossed = [encoder(mc.d, mc.layers, rate, f"cross_{source}_to_{target}")(
          tokens[target], tmask[target], tokens[source], tmask[source], train=train)
                 for source in mods if source != target]
      memory = encoder((len(mods) - 1) * mc.d, max(mc.layers, 3), mc.attn_dropout,
                       f"memory_{target}")(jnp.concatenate(crossed, -1), tmask[target],
                                           train=train)
      last.append(tl.last_valid(memory, tmask[target]))
    z = jnp.concatenate(last, axis=-1)                    # [B, M (M - 1) d]
    y = nn.relu(nn.Dense(z.shape[-1], name="proj1", **kw)(z))
    y = dropout_lib.Dropout(mc.out_dropout, deterministic=not train)(y)
    z = z + nn.Dense(z.shape[-1], name="proj2", **kw)(y)
    prediction = heads.TaskHead(cfg.task, cfg.num_classes, 0, 0.0, **kw, name="head")(
        z, train=train)
    return prediction, {"beta": baselines.presence_weights(masks, mods)}

