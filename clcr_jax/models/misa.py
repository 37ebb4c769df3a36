"""MISA (Hazarika et al., ACM MM 2020): modality-invariant and -specific representations.

Per modality m, an utterance vector u_m (here: the masked mean of the deep level of the same
backbones CLCR uses; the reference uses BERT / LSTM final states) is projected,
  o_m = LN(ReLU(W_m u_m))                                  [B, H]   (the reconstruction target)
and split into a shared part with one encoder for all modalities and a private part per modality,
  c_m = sigmoid(W_c o_m),  p_m = sigmoid(W_p,m o_m),  r_m = W_r,m (c_m + p_m)   (reconstruction).
The 2M vectors [p_1..p_M, c_1..c_M] go through one post-norm transformer layer (as a length-2M
sequence), are concatenated [B, 2M H] and mapped Linear(2M H -> M H) -> Dropout -> ReLU ->
Linear(-> output).

The model only returns the vectors (aux['misa']); the losses are in clcr_jax/baseline_losses.py
and added by losses.total_loss: sim_weight * CMD(c_m, c_m') over modality pairs (mean) +
diff_weight * difference (sum over m of D(p_m, c_m) and over pairs of D(p_m, p_m')) +
recon_weight * mean_m MSE(r_m, o_m).

Defaults (config.model.misa) are thuiar/MMSA's MISA settings for MOSI
(config/config_regression.json, trains/singleTask/MISA.py, models/singleTask/MISA.py): hidden
size 128, dropout 0.2, diff_weight 0.1, sim_weight 0.3, recon_weight 1.0, CMD with 5 moments,
similarity by CMD (use_cmd_sim), a fusion transformer layer of 2 heads with PyTorch's defaults
(feed-forward 2048, dropout 0.1). Not reproduced: the adversarial similarity alternative
(use_cmd_sim=False) and MMSA's gradient accumulation and value clipping (training recipe).
The task loss is the project's (MMSA trains MISA with MSE; set loss.regression='mse' for that).
Utterance-level: classification and regression, two or more modalities.
"""
from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from clcr_jax.models import baselines
from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import heads
from clcr_jax.models import layers
from clcr_jax.models import transformer_layers as tl

Dtype = Any


def default_config() -> ml_collections.ConfigDict:
  """config.model.misa: MMSA's MISA defaults for MOSI."""
  c = ml_collections.ConfigDict()
  c.hidden_size = 128
  c.dropout = 0.2
  c.diff_weight = 0.1
  c.sim_weight = 0.3
  c.recon_weight = 1.0
  c.cmd_moments = 5
  c.fusion_heads = 2              # nn.TransformerEncoderLayer(nhead=2)
  c.fusion_ffn = 2048             # PyTorch's dim_feedforward default
  c.fusion_dropout = 0.1          # PyTorch's dropout default
  return c


class PostNormLayer(nn.Module):
  """PyTorch's TransformerEncoderLayer (post-norm, ReLU): x [B, T, w] -> [B, T, w]."""
  num_heads: int
  ffn: int
  dropout: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda y: dropout_lib.Dropout(self.dropout, deterministic=not train)(y)
    every = jnp.ones(x.shape[:2], bool)
    attention = tl.MaskedAttention(self.num_heads, x.shape[-1], attention_dropout=self.dropout,
                                   **kw, name="attention")
    a = attention(x, x, tl.pair_mask(every, every), train=train)
    x = nn.LayerNorm(name="norm1", **kw)(x + drop(a))
    y = nn.Dense(self.ffn, name="fc1", **kw)(x)
    y = nn.Dense(x.shape[-1], name="fc2", **kw)(drop(nn.relu(y)))
    return nn.LayerNorm(name="norm2", **kw)(x + drop(y))


class MISA(baselines.UtteranceBaseline):
  """Returns (prediction, aux); aux['misa'] = {'shared', 'private', 'recon', 'orig'}, each
  {m: [B, H]}, for the MISA losses, plus the modality presence weights."""
  model_name = "misa"

  @classmethod
  def check_config(cls, cfg) -> None:
    super().check_config(cfg)
    mc = cfg.misa
    if mc.hidden_size % mc.fusion_heads:
      raise ValueError(f"model 'misa': config.model.misa.hidden_size = {mc.hidden_size} is not "
                       f"divisible by misa.fusion_heads = {mc.fusion_heads}")
    if mc.cmd_moments < 1:
      raise ValueError(f"model 'misa': config.model.misa.cmd_moments must be >= 1, "
                       f"found {mc.cmd_moments}")

  @nn.compact
  def __call__(self, inputs, masks, *, train: bool = False):
    cfg, mc = self.config, self.config.misa
    mods, kw, deep, tmask = self.encode(inputs, masks, train)
    hidden = mc.hidden_size
    orig, shared, private, recon = {}, {}, {}, {}
    shared_encoder = nn.Dense(hidden, name="shared", **kw)
    for m in mods:
      u = layers.masked_mean(deep[m], tmask[m])
      orig[m] = nn.LayerNorm(name=f"project_{m}_norm", **kw)(
          nn.relu(nn.Dense(hidden, name=f"project_{m}", **kw)(u)))
      shared[m] = nn.sigmoid(shared_encoder(orig[m]))
      private[m] = nn.sigmoid(nn.Dense(hidden, name=f"private_{m}", **kw)(orig[m]))
      recon[m] = nn.Dense(hidden, name=f"recon_{m}", **kw)(shared[m] + private[m])
    stack = jnp.stack([private[m] for m in mods] + [shared[m] for m in mods], axis=1)
    fused = PostNormLayer(mc.fusion_heads, mc.fusion_ffn, mc.fusion_dropout, **kw,
                          name="fusion_transformer")(stack, train=train)
    # One row of the 2M fused vectors, in stack order, as MMSA concatenates them.
    y = nn.Dense(len(mods) * hidden, name="fusion_fc1", **kw)(
        einops.rearrange(fused, "b v d -> b (v d)"))
    y = nn.relu(dropout_lib.Dropout(mc.dropout, deterministic=not train)(y))
    prediction = heads.TaskHead(cfg.task, cfg.num_classes, 0, 0.0, **kw, name="head")(
        y, train=train)
    aux = {"beta": baselines.presence_weights(masks, mods),
           "misa": {"shared": shared, "private": private, "recon": recon, "orig": orig}}
    return prediction, aux
