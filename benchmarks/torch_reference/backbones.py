"""Modality backbones of the PyTorch CLCR reference: dilated TCN and ResNet-18 with three levels.

Mirrors clcr_jax/models/backbones.py. Data layouts are PyTorch's own: sequences [B, T, D];
spectrograms [B, F_freq, T] (a channel axis is added); clips [B, F, C, H, W] (channels first).
Each backbone returns three (tokens [B, T_l, D_l], mask bool[B, T_l]) levels, time-major.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.torch_reference import layers


class DilatedTCN(nn.Module):
  """Linear(D -> w), then stages of Conv1d(k, dilation) + LayerNorm + GELU + residual."""

  def __init__(self, in_features: int, width: int, kernel_size: int = 3,
               dilations: Sequence[int] = (1, 2, 4)):
    super().__init__()
    self.input_proj = nn.Linear(in_features, width)
    self.num_stages = len(dilations)
    for i, dilation in enumerate(dilations):
      self.add_module(f"stage{i + 1}_conv", nn.Conv1d(width, width, kernel_size,
                                                      dilation=dilation, padding="same"))
      self.add_module(f"stage{i + 1}_norm", layers.layer_norm(width))

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    m = mask.unsqueeze(-1).to(x.dtype)
    x = self.input_proj(x)
    outputs = []
    for i in range(self.num_stages):
      conv = getattr(self, f"stage{i + 1}_conv")
      norm = getattr(self, f"stage{i + 1}_norm")
      # Padded steps are zeroed before every conv so they never leak into real steps.
      y = conv((x * m).transpose(1, 2)).transpose(1, 2)
      y = layers.gelu(norm(y))
      x = (x + y) * m
      outputs.append(x)
    return outputs


class BasicBlock(nn.Module):
  """ResNet basic block with a projection shortcut when the shape changes."""

  def __init__(self, in_channels: int, features: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, features, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(features)
    self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(features)
    self.project = stride != 1 or in_channels != features
    if self.project:
      self.downsample_conv = nn.Conv2d(in_channels, features, 1, stride, 0, bias=False)
      self.downsample_bn = nn.BatchNorm2d(features)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.project:
      x = self.downsample_bn(self.downsample_conv(x))
    return F.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 trunk: [N, C, H, W] -> layer2, layer3, layer4 maps [N, c_i, h_i, w_i]."""

  def __init__(self, in_channels: int, base_width: int = 64):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(base_width)
    channels = base_width
    for stage in range(4):
      features = base_width * 2**stage
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        self.add_module(f"layer{stage + 1}_{block}", BasicBlock(channels, features, stride))
        channels = features

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    outputs = []
    for stage in range(4):
      for block in range(2):
        x = getattr(self, f"layer{stage + 1}_{block}")(x)
      if stage > 0:
        outputs.append(x)
    return outputs


def downsample_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
  """bool[B, T] -> bool[B, length]: a pooled step is real if any input step it covers is."""
  t = mask.shape[-1]
  cover = torch.zeros(t, length, device=mask.device)
  for j in range(length):
    cover[(j * t) // length:-(-((j + 1) * t) // length), j] = 1.0
  return (mask.float() @ cover) > 0


class ModalityEncoder(nn.Module):
  """One modality's backbone: input + mask -> three (tokens, mask) levels.

  kinds: 'sequence' [B, T, D] (TCN); 'spectrogram' [B, F, T] (ResNet-18, tokens = time after
  pooling frequency); 'video' [B, F, C, H, W] (ResNet-18 per frame, spatial_grid 1: one token
  per frame).
  """

  def __init__(self, kind: str, backbone: str, in_features: int, width: int,
               kernel_size: int = 3, dilations: Sequence[int] = (1, 2, 4),
               resnet_width: int = 64, in_channels: int = 3):
    super().__init__()
    self.kind, self.backbone = kind, backbone
    if backbone == "tcn":
      if kind != "sequence":
        raise NotImplementedError(f"the reference's TCN takes 'sequence' input, not {kind!r}")
      self.tcn = DilatedTCN(in_features, width, kernel_size, dilations)
    elif backbone == "resnet18":
      if kind not in ("spectrogram", "video"):
        raise ValueError(f"ResNet-18 takes 'spectrogram' or 'video', not {kind!r}")
      self.resnet18 = ResNet18(1 if kind == "spectrogram" else in_channels, resnet_width)
    else:
      raise ValueError(f"unknown backbone {backbone!r}")

  def forward(self, x, mask):
    mask = mask.bool()
    if self.backbone == "tcn":
      return [(o, mask) for o in self.tcn(x, mask)]
    if self.kind == "spectrogram":
      maps = self.resnet18(x.unsqueeze(1))                  # [B, c, F', T']
      out = []
      for m in maps:
        tokens = m.mean(2).transpose(1, 2)                   # pool frequency -> [B, T', c]
        out.append((tokens, downsample_mask(mask, tokens.shape[1])))
      return out
    b, f = x.shape[:2]
    maps = self.resnet18(x.reshape((b * f,) + x.shape[2:]))
    return [(m.mean((2, 3)).reshape(b, f, m.shape[1]), mask) for m in maps]
