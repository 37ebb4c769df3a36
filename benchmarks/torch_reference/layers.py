"""Building blocks of the PyTorch CLCR reference: flax-compatible LayerNorm/GELU, attention, MLP.

Conventions that match clcr_jax (flax.linen) exactly, so that copied parameters give the same
numbers:
  * LayerNorm eps is 1e-6 (flax's default; PyTorch's default is 1e-5).
  * GELU is the tanh approximation (flax `nn.gelu` default).
  * A query whose keys are all masked gets exactly zero from attention.
Shapes: B = batch, T = tokens, d = width, h = heads. Masks are bool, True = real token.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LN_EPS = 1e-6


def layer_norm(width: int) -> nn.LayerNorm:
  """LayerNorm with flax's epsilon."""
  return nn.LayerNorm(width, eps=LN_EPS)


def gelu(x: torch.Tensor) -> torch.Tensor:
  """flax.linen.gelu (approximate=True)."""
  return F.gelu(x, approximate="tanh")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = -2) -> torch.Tensor:
  """Mean of x [..., T, d] over tokens where mask [..., T] is True; 0 for fully masked rows."""
  w = mask.to(torch.float32).unsqueeze(-1)
  total = (x.float() * w).sum(dim)
  count = w.sum(dim).clamp_min(1.0)
  return (total / count).to(x.dtype)


class PositionalEmbedding(nn.Module):
  """Learned additive table P [T_max, d] (N(0, 0.02)); returns P[:T]."""

  def __init__(self, max_len: int, width: int, init_std: float = 0.02):
    super().__init__()
    self.embedding = nn.Parameter(torch.randn(max_len, width) * init_std)

  def forward(self, num_tokens: int) -> torch.Tensor:
    return self.embedding[:num_tokens]


class MultiHeadAttention(nn.Module):
  """Cross-attention with separate query/key/value/out projections (as clcr_jax's layers.py).

  Uses `F.scaled_dot_product_attention` (the fused kernel a PyTorch user reaches for).
  """

  def __init__(self, width: int, num_heads: int):
    super().__init__()
    if width % num_heads:
      raise ValueError(f"attention width {width} is not divisible by num_heads={num_heads}")
    self.num_heads = num_heads
    self.query = nn.Linear(width, width)
    self.key = nn.Linear(width, width)
    self.value = nn.Linear(width, width)
    self.out = nn.Linear(width, width)

  def forward(self, queries: torch.Tensor, keys_values: torch.Tensor,
              key_mask: torch.Tensor) -> torch.Tensor:
    b, tq, width = queries.shape
    tk = keys_values.shape[1]
    heads = lambda x, t: x.view(b, t, self.num_heads, -1).transpose(1, 2)  # [B, h, T, dh]
    q = heads(self.query(queries), tq)
    k = heads(self.key(keys_values), tk)
    v = heads(self.value(keys_values), tk)
    # A row without any key (absent modality) attends to everything (finite, no NaN in the
    # backward pass) and is then zeroed.
    has_key = key_mask.any(-1)
    attn_mask = (key_mask | ~has_key[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.transpose(1, 2).reshape(b, tq, width)
    has_key = has_key[:, None, None]
    out = torch.where(has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return self.out(out)


class MLP(nn.Module):
  """Linear -> GELU -> Dropout -> Linear."""

  def __init__(self, width_in: int, hidden: int, out: int, dropout: float = 0.0):
    super().__init__()
    self.fc1 = nn.Linear(width_in, hidden)
    self.fc2 = nn.Linear(hidden, out)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(self.dropout(gelu(self.fc1(x))))
