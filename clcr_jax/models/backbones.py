"""Modality backbones that expose three semantic levels (shallow, mid, deep).

* `DilatedTCN` (docs/model.md, Backbones): Linear(D -> w), then three stages of Conv1d(k, dilation
1/2/4) +
  LayerNorm + GELU + residual; the three stage outputs are the levels. For feature sequences
  [B, T, D] (MOSI/MOSEI audio, vision, text features), vectors [B, D] (T = 1) and spectrograms.
* `ResNet18` (OGM-GE's AV backbone, trained from scratch): layer2 / layer3 / layer4 are the
  levels. For spectrograms [B, F, T] (1 channel), clips [B, F, H, W, C] (RGB 3 or flow 2 channels,
  frames encoded independently).
* `bert.Bert` (models/bert.py): token ids [B, 3, T] (MMSA `text_bert` rows: ids, attention
  mask, segment ids); the hidden states `config.model.bert.levels` are the levels.
* `ModalityEncoder` picks the backbone from config and turns each level into tokens with a mask.

Input kinds (`config.model.modalities[m].kind`):
  'sequence' [B, T, D], mask [B, T];      'vector' [B, D], mask [B, 1];
  'spectrogram' [B, F_freq, T], mask [B, T];  'video' [B, F, H, W, C], mask [B, F];
  'feature_map' [B, S, h, w, C] (precomputed CNN maps per segment), mask [B, S];
  'token_ids' [B, 3, T] (ids, attention mask, segment ids; float or int), mask [B, T].
Output: three (tokens [B, T_l, D_l], mask bool[B, T_l]) pairs. Tokens are time-major.
"""
from __future__ import annotations

from typing import Any, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import bert as bert_lib
from clcr_jax.models import layers

Dtype = Any
Level = tuple[jax.Array, jax.Array]


def _zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
  return x * mask[..., None].astype(x.dtype)


class DilatedTCN(nn.Module):
  """Three-stage dilated temporal CNN. [B, T, D], mask [B, T] -> 3 x [B, T, width]."""
  width: int
  kernel_size: int = 3
  dilations: Sequence[int] = (1, 2, 4)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, *, train: bool) -> list[jax.Array]:
    del train
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.Dense(self.width, name="input_proj", **kw)(x.astype(self.dtype))
    outputs = []
    for i, dilation in enumerate(self.dilations):
      # Padded steps are zeroed before every conv so they never leak into real steps.
      y = nn.Conv(self.width, (self.kernel_size,), kernel_dilation=(dilation,), padding="SAME",
                  name=f"stage{i + 1}_conv", **kw)(_zero_padding(x, mask))
      y = nn.gelu(nn.LayerNorm(name=f"stage{i + 1}_norm", **kw)(y))
      x = _zero_padding(x + y, mask)
      outputs.append(x)
    return outputs


class BasicBlock(nn.Module):
  """ResNet basic block (two 3x3 convs, BatchNorm, projection shortcut when the shape changes)."""
  features: int
  strides: int = 1
  axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # PyTorch BatchNorm defaults (momentum 0.1 == flax 0.9, eps 1e-5), as in OGM-GE.
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     axis_name=self.axis_name, name=name, **kw)
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=[(k // 2, k // 2)] * 2,
                                         use_bias=False, name=name, **kw)
    y = nn.relu(norm("bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
    y = norm("bn2")(conv(self.features, 3, 1, "conv2")(y))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = norm("downsample_bn")(conv(self.features, 1, self.strides, "downsample_conv")(x))
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 trunk. Images [N, H, W, C] -> layer2, layer3, layer4 maps [N, h_i, w_i, c_i].

  `base_width` 64 is the standard network (c = 128, 256, 512); tests shrink it. `remat`
  recomputes each basic block in the backward pass, so only block inputs are kept.
  """
  base_width: int = 64
  axis_name: str | None = None
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool) -> list[jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.Conv(self.base_width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                name="conv1", **kw)(x.astype(self.dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.axis_name, name="bn1", **kw)(x)
    x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
    # Per block, not around the whole trunk: rematerialising the trunk as one piece rebuilds all
    # its activations at once in the backward pass, so the peak would not move.
    block_cls = nn.remat(BasicBlock, static_argnums=(2,)) if self.remat else BasicBlock
    outputs = []
    for stage in range(4):
      features = self.base_width * 2**stage
      for block in range(2):
        strides = 2 if stage > 0 and block == 0 else 1
        x = block_cls(features, strides, self.axis_name, name=f"layer{stage + 1}_{block}",
                      **kw)(x, train)
      if stage > 0:
        outputs.append(x)
    return outputs


def downsample_mask(mask: jax.Array, length: int) -> jax.Array:
  """bool[B, T] -> bool[B, length]: a pooled step is real if any input step it covers is."""
  t = mask.shape[-1]
  cover = np.zeros((t, length), bool)
  for j in range(length):
    lo, hi = (j * t) // length, -(-((j + 1) * t) // length)
    cover[lo:hi, j] = True
  return jnp.einsum("bt,tl->bl", mask.astype(jnp.float32), jnp.asarray(cover, jnp.float32)) > 0


def spatial_tokens(x: jax.Array, grid: int) -> jax.Array:
  """Adaptive average pool [N, h, w, c] -> [N, grid * grid, c] (row-major cells)."""
  ph = jnp.asarray(layers.adaptive_pool_matrix(x.shape[1], grid))
  pw = jnp.asarray(layers.adaptive_pool_matrix(x.shape[2], grid))
  pooled = jnp.einsum("nhwc,gh,kw->ngkc", x.astype(jnp.float32), ph, pw).astype(x.dtype)
  return einops.rearrange(pooled, "n g k c -> n (g k) c")


class ModalityEncoder(nn.Module):
  """Backbone of one modality: input + mask -> three (tokens [B, T_l, D_l], mask [B, T_l]).

  Attributes:
    name_: modality name (for error messages).
    kind: input layout (module docstring).
    backbone: 'tcn', 'resnet18' or 'bert' (kind 'token_ids' only).
    tcn_width, kernel_size, dilations: TCN settings.
    resnet_width: ResNet-18 base width; spatial_grid: tokens per frame = grid**2 for clips.
    remat: recompute each ResNet basic block in the backward pass (the TCN is rematerialised
      as a whole by the caller).
    bert: the resolved `config.model.bert` block (sizes, levels, freeze) for backbone 'bert';
      attention: `config.model.attention` for its self-attention.
  """
  name_: str
  kind: str
  backbone: str
  tcn_width: int = 128
  kernel_size: int = 3
  dilations: Sequence[int] = (1, 2, 4)
  resnet_width: int = 64
  spatial_grid: int = 1
  remat: bool = False
  bert: Any = None
  attention: str = "auto"
  axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _check(self, x, mask):
    ranks = {"sequence": 3, "vector": 2, "spectrogram": 3, "video": 5, "feature_map": 5,
             "token_ids": 3}
    if self.kind not in ranks:
      raise ValueError(f"modality {self.name_!r}: kind must be one of {sorted(ranks)}, "
                       f"found {self.kind!r}")
    if x.ndim != ranks[self.kind]:
      raise ValueError(f"modality {self.name_!r} (kind {self.kind!r}): expected a rank-"
                       f"{ranks[self.kind]} input, found shape {x.shape}")
    if self.kind == "token_ids" and x.shape[1] != 3:
      raise ValueError(f"modality {self.name_!r} (kind 'token_ids'): expected [B, 3, T] (input "
                       f"ids, attention mask, segment ids), found shape {x.shape}")
    if (self.kind == "token_ids") != (self.backbone == "bert"):
      raise ValueError(f"modality {self.name_!r}: kind 'token_ids' and backbone 'bert' go "
                       f"together, found kind {self.kind!r} with backbone {self.backbone!r}")
    tokens = {"sequence": x.shape[1], "vector": 1, "spectrogram": x.shape[-1],
              "video": x.shape[1], "feature_map": x.shape[1], "token_ids": x.shape[-1]}[self.kind]
    if mask.shape != (x.shape[0], tokens):
      raise ValueError(f"modality {self.name_!r}: expected mask shape {(x.shape[0], tokens)} "
                       f"for input {x.shape}, found {mask.shape}")

  @nn.compact
  def __call__(self, x, mask, train: bool) -> list[Level]:
    self._check(x, mask)
    mask = mask.astype(bool)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.backbone == "tcn":
      if self.kind == "vector":
        x = x[:, None, :]
      elif self.kind == "spectrogram":
        x = jnp.swapaxes(x, 1, 2)  # [B, F, T] -> [B, T, F]: frequency bins become features
      elif self.kind in ("video", "feature_map"):
        x = x.mean(axis=(2, 3))    # one token per frame / segment
      outs = DilatedTCN(self.tcn_width, self.kernel_size, tuple(self.dilations), name="tcn",
                        **kw)(x, mask, train=train)
      return [(o, mask) for o in outs]
    if self.backbone == "resnet18":
      net = ResNet18(self.resnet_width, self.axis_name, self.remat, name="resnet18", **kw)
      if self.kind == "spectrogram":
        maps = net(x[..., None], train=train)             # [B, F', T', c]
        out = []
        for m in maps:
          tokens = m.mean(axis=1)                           # pool frequency: time tokens
          out.append((tokens, downsample_mask(mask, tokens.shape[1])))
        return out
      if self.kind == "video":
        b = x.shape[0]
        maps = net(einops.rearrange(x, "b f ... -> (b f) ..."), train=train)  # frames as images
        g2 = self.spatial_grid**2
        out = []
        for m in maps:
          tokens = einops.rearrange(spatial_tokens(m, self.spatial_grid),
                                    "(b f) g c -> b (f g) c", b=b)
          out.append((tokens, jnp.repeat(mask, g2, axis=1)))
        return out
      raise ValueError(f"modality {self.name_!r}: backbone 'resnet18' takes kind 'spectrogram' "
                       f"or 'video', found {self.kind!r}")
    if self.backbone == "bert":
      return self._bert_levels(x, mask, train)
    raise ValueError(f"modality {self.name_!r}: backbone must be 'tcn', 'resnet18' or 'bert', "
                     f"found {self.backbone!r}")

  def _bert_levels(self, x, mask, train: bool) -> list[Level]:
    """BERT hidden states `bert.levels` of ids x[:, 0] and segment ids x[:, 2], padded by mask.

    A frozen BERT is a fixed feature extractor: no dropout, no gradient (stop_gradient).
    """
    cfg = self.bert
    levels = bert_lib.check_levels(cfg.levels, cfg.num_hidden_layers)
    net = bert_lib.module_from_config(cfg, self.attention, self.dtype, self.param_dtype,
                                      name="bert")
    hidden = net(x[:, 0], mask, x[:, 2], train=train and not cfg.freeze)
    outs = [hidden[l] for l in levels]
    if cfg.freeze:
      outs = [jax.lax.stop_gradient(o) for o in outs]
    return [(o, mask) for o in outs]
