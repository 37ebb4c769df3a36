"""MBT (Nagrani et al., NeurIPS 2021): attention bottlenecks for multimodal fusion.

Each modality has its own stack of pre-LN transformer blocks. Below `fusion_layer` the stacks
run separately; from `fusion_layer` on, each modality's block runs on [its tokens; n shared
bottleneck tokens], and the bottleneck tokens that come out are averaged over the modalities
before the next layer. The bottleneck is the only path between modalities. After the last layer
one LayerNorm runs over the tokens of all modalities, their valid tokens are averaged together
('gap', the reference config's classifier) and a linear layer gives the prediction.

Inputs here are the deep level of the same backbones CLCR uses (hierarchy_encoder
.SemanticHierarchy, which already adds a learned positional embedding per modality), at the
common width config.model.d; the reference's transformer is a ViT-Base on raw patches.
Padded tokens are masked as keys and left out of the average, so they never change the output.

Defaults (config.model.mbt) follow scenic projects/mbt configs/audioset/balanced_audioset_base.py
and model.py: 12 layers, fusion layer 8, 4 bottleneck tokens (BERT init N(0, 0.02)), MLP width
4x the model width (3072 / 768), dropout and attention dropout 0, stochastic depth rising
linearly from 0 to 0.3 over the layers (per example, per residual branch, without rescaling, as
scenic does). Heads: config.model.num_heads (the reference's 12 belong to width 768).
Not reproduced: the 'token' classifier, a shared encoder, and mixup / label smoothing (training
recipe, not fusion). Utterance-level: classification and regression, two or more modalities.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from clcr_jax.models import baselines
from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import heads
from clcr_jax.models import layers
from clcr_jax.models import transformer_layers as tl

Dtype = Any


def default_config() -> ml_collections.ConfigDict:
  """config.model.mbt: scenic projects/mbt's balanced AudioSet base config."""
  c = ml_collections.ConfigDict()
  c.num_layers = 12
  c.fusion_layer = 8              # 0: fuse from the first layer; num_layers: never
  c.n_bottlenecks = 4             # 0: no exchange at all
  c.num_heads = 0                 # 0 -> config.model.num_heads
  c.mlp_ratio = 4                 # MLP width / model width (3072 / 768)
  c.dropout = 0.0
  c.attention_dropout = 0.0
  c.droplayer_rate = 0.3          # stochastic_droplayer_rate
  return c


class EncoderBlock(nn.Module):
  """Pre-LN block: x + drop_path(Dropout(MHA(LN x))), then x + drop_path(MLP(LN x)).

  x [B, T, w], mask bool[B, T] -> [B, T, w]."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  droplayer_p: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _keep(self, x, train):
    """Per-example 0/1 factor of stochastic depth (scenic: no 1/(1-p) rescaling)."""
    if not train or not self.droplayer_p:
      return 1.0
    drop = jax.random.bernoulli(self.make_rng("dropout"), self.droplayer_p,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return 1.0 - drop.astype(x.dtype)

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda y: dropout_lib.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(name="attention_norm", **kw)(x)
    attention = tl.MaskedAttention(self.num_heads, x.shape[-1],
                                   attention_dropout=self.attention_dropout, **kw, name="attention")
    y = attention(y, y, tl.pair_mask(mask, mask), train=train)
    x = x + drop(y) * self._keep(x, train)
    y = nn.LayerNorm(name="mlp_norm", **kw)(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, kernel_init=nn.initializers.xavier_uniform(),
                         name="mlp_fc1", **kw)(y))
    y = nn.Dense(x.shape[-1], kernel_init=nn.initializers.xavier_uniform(), name="mlp_fc2",
                 **kw)(drop(y))
    return x + drop(y) * self._keep(x, train)


class BottleneckEncoder(nn.Module):
  """{m: tokens [B, T_m, w]}, {m: mask [B, T_m]} -> {m: tokens [B, T_m, w]} (before the final LN).

  Layers < fusion_layer see one modality each; later layers see one modality plus the
  bottleneck, which is the mean over modalities of its updated copies."""
  config: Any                     # config.model.mbt
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Mapping[str, jax.Array], masks: Mapping[str, jax.Array], *,
               train: bool):
    mc, mods, x = self.config, tuple(tokens), dict(tokens)
    batch, width = next(iter(x.values())).shape[0], next(iter(x.values())).shape[-1]
    bottleneck = None
    if mc.n_bottlenecks and mc.fusion_layer < mc.num_layers:
      init = self.param("bottleneck", nn.initializers.normal(0.02),
                        (1, mc.n_bottlenecks, width), self.param_dtype)
      bottleneck = jnp.broadcast_to(init, (batch,) + init.shape[1:]).astype(self.dtype)
    always = jnp.ones((batch, mc.n_bottlenecks), bool)
    for layer in range(mc.num_layers):
      p = layer / max(mc.num_layers - 1, 1) * mc.droplayer_rate
      block = {m: EncoderBlock(self.num_heads, self.mlp_dim, mc.dropout, mc.attention_dropout, p,
                               self.dtype, self.param_dtype, name=f"layer{layer}_{m}")
               for m in mods}
      if bottleneck is None or layer < mc.fusion_layer:
        x = {m: block[m](x[m], masks[m], train=train) for m in mods}
        continue
      updated = []
      for m in mods:
        n = x[m].shape[1]
        out = block[m](jnp.concatenate([x[m], bottleneck], 1),
                       jnp.concatenate([masks[m], always], 1), train=train)
        x[m] = out[:, :n]
        updated.append(out[:, n:])
      bottleneck = jnp.mean(jnp.stack(updated), axis=0)
    return x


class MBT(baselines.UtteranceBaseline):
  """Returns (prediction, aux) like CLCR; aux holds only the modality presence weights."""
  model_name = "mbt"

  @classmethod
  def check_config(cls, cfg) -> None:
    super().check_config(cfg)
    mc = cfg.mbt
    if not 0 <= mc.fusion_layer <= mc.num_layers:
      raise ValueError(f"model 'mbt': config.model.mbt.fusion_layer must be in "
                       f"[0, num_layers = {mc.num_layers}], found {mc.fusion_layer}")
    heads_ = mc.num_heads or cfg.num_heads
    if cfg.d % heads_:
      raise ValueError(f"model 'mbt': config.model.d = {cfg.d} is not divisible by "
                       f"{heads_} heads (config.model.mbt.num_heads, 0 = model.num_heads)")

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool = False):
    cfg, mc = self.config, self.config.mbt
    mods, kw, deep, tmask = self.encode(inputs, masks, train)
    x = BottleneckEncoder(mc, mc.num_heads or cfg.num_heads, mc.mlp_ratio * cfg.d, **kw,
                          name="encoder")(deep, tmask, train=train)
    tokens = nn.LayerNorm(name="encoder_norm", **kw)(jnp.concatenate([x[m] for m in mods], 1))
    pooled = layers.masked_mean(tokens, jnp.concatenate([tmask[m] for m in mods], 1))
    prediction = heads.TaskHead(cfg.task, cfg.num_classes, 0, 0.0, **kw, name="head")(
        pooled, train=train)
    return prediction, {"beta": baselines.presence_weights(masks, mods)}
