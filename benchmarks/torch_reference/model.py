"""The CLCR model in PyTorch (eager nn.Modules), architecture- and size-identical to clcr_jax.

semantic hierarchy (backbones + H_l = LN(Z_l W_l + P_l)) -> IntraCED per level (Stiefel split,
token budget, budgeted shared-only exchange) -> pooled summaries -> InterCAD -> task head.
Where clcr_jax maps the levels with nn.vmap (parameters stacked on a level axis), this reference
keeps one module per level in an nn.ModuleList and loops over them, as PyTorch code usually does;
levels of different lengths (ResNet stages) are therefore not padded.

`CLCR(config, input_shapes)(inputs, masks)` returns `(prediction, aux)` with the keys of
clcr_jax's aux that the losses use: 'alpha', 'budget', 'budget_ratio', 'token_mask', 'shared',
'private', 'omega', 'beta', 'eta'. `config` is clcr_jax's model ConfigDict (its defaults);
`input_shapes` gives each modality's per-example input shape (PyTorch layout).
Segment classification and the ablation switches are not part of the reference.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from benchmarks.torch_reference import backbones
from benchmarks.torch_reference import layers
from benchmarks.torch_reference import token_budget

LEVEL_NAMES = ("shallow", "mid", "deep")


def _halve(n: int, times: int) -> int:
  """Length after `times` stride-2 ops with 'half' padding (conv 7/3, maxpool 3): (n-1)//2+1."""
  for _ in range(times):
    n = (n - 1) // 2 + 1
  return n


def level_geometry(cfg, kind: str, backbone: str, shape: Sequence[int]):
  """[(tokens, features)] of the three levels a backbone produces for a per-example shape."""
  if backbone == "tcn":
    width = cfg.tcn.width or cfg.d
    return [(shape[0], width)] * 3
  base = cfg.resnet.base_width
  if kind == "spectrogram":
    return [(_halve(shape[-1], 3 + i), base * 2**(i + 1)) for i in range(3)]
  return [(shape[0], base * 2**(i + 1)) for i in range(3)]


def orthonormal_columns(w: torch.Tensor) -> torch.Tensor:
  """Q of the QR decomposition of w [d, k] with the sign fix diag(R) > 0."""
  q, r = torch.linalg.qr(w.float())
  sign = torch.sign(torch.diagonal(r))
  return q * torch.where(sign == 0, torch.ones_like(sign), sign)


def safe_norm(x: torch.Tensor) -> torch.Tensor:
  """||x|| over the last axis with a zero gradient at x = 0."""
  sq = x.square().sum(-1)
  positive = sq > 0
  return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))),
                     torch.zeros_like(sq))


class SemanticHierarchy(nn.Module):
  """Backbones + H_l = LN(Z_l W_l + P_l) for every modality and level."""

  def __init__(self, cfg, input_shapes: Mapping[str, Sequence[int]]):
    super().__init__()
    self.mods = tuple(cfg.modalities.keys())
    self.backbone = nn.ModuleDict()
    self.proj, self.pos, self.norm = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
    for m in self.mods:
      spec, shape = cfg.modalities[m], tuple(input_shapes[m])
      in_channels = shape[1] if spec.kind == "video" else 1
      self.backbone[f"backbone_{m}"] = backbones.ModalityEncoder(
          spec.kind, spec.backbone, shape[-1], cfg.tcn.width or cfg.d, cfg.tcn.kernel_size,
          tuple(cfg.tcn.dilations), cfg.resnet.base_width, in_channels)
      for level, (tokens, features) in enumerate(level_geometry(cfg, spec.kind, spec.backbone,
                                                                shape)):
        tag = f"{m}_{LEVEL_NAMES[level]}"
        self.proj[f"proj_{tag}"] = nn.Linear(features, cfg.d)
        self.pos[f"pos_{tag}"] = layers.PositionalEmbedding(cfg.max_len or tokens, cfg.d,
                                                            cfg.pos_init_std)
        self.norm[f"norm_{tag}"] = layers.layer_norm(cfg.d)

  def forward(self, inputs, masks):
    h, level_masks = {}, {}
    for m in self.mods:
      out = self.backbone[f"backbone_{m}"](inputs[m], masks[m])
      h[m], level_masks[m] = [], []
      for level, (z, mask) in enumerate(out):
        tag = f"{m}_{LEVEL_NAMES[level]}"
        x = self.proj[f"proj_{tag}"](z) + self.pos[f"pos_{tag}"](z.shape[1])
        h[m].append(self.norm[f"norm_{tag}"](x))
        level_masks[m].append(mask)
    return h, level_masks


class StiefelBases(nn.Module):
  """U_sh [d, d_sh] and {m: U_pr,m [d, d_pr]}, U_pr,m = qr((I - U_sh U_sh^T) W_pr,m)."""

  def __init__(self, d: int, d_shared: int, d_private: int, mods: Sequence[str]):
    super().__init__()
    self.mods = tuple(mods)
    self.w_shared = nn.Parameter(nn.init.orthogonal_(torch.empty(d, d_shared)))
    for m in self.mods:
      self.register_parameter(f"w_private_{m}",
                              nn.Parameter(nn.init.orthogonal_(torch.empty(d, d_private))))

  def forward(self):
    u_sh = orthonormal_columns(self.w_shared)
    complement = torch.eye(u_sh.shape[0], device=u_sh.device) - u_sh @ u_sh.T
    # Projected twice, as in clcr_jax (intra_ced.StiefelBases).
    return u_sh, {m: orthonormal_columns(
        complement @ (complement @ getattr(self, f"w_private_{m}"))) for m in self.mods}


class TokenBudget(nn.Module):
  """alpha = Proj_{capped simplex, B}(sigmoid(softplus(k) (||h_sh|| - theta))), B = r * #valid."""

  def __init__(self, participation_init: float, kappa_init: float, theta_init: float):
    super().__init__()
    r0 = float(np.clip(participation_init, 1e-4, 1 - 1e-4))
    self.b = nn.Parameter(torch.tensor(math.log(r0 / (1 - r0))))
    self.k = nn.Parameter(torch.tensor(math.log(math.expm1(kappa_init))))
    self.theta = nn.Parameter(torch.tensor(float(theta_init)))

  def forward(self, shared, masks):
    ratio = torch.sigmoid(self.b)
    kappa = nn.functional.softplus(self.k)
    alpha, budget = {}, {}
    for m, h in shared.items():
      budget[m] = ratio * masks[m].sum(-1).float()
      scores = torch.sigmoid(kappa * (safe_norm(h.float()) - self.theta))
      alpha[m] = token_budget.capped_simplex_projection(scores, budget[m], masks[m])
    return alpha, budget, ratio


class SharedExchange(nn.Module):
  """h <- LN(h + Drop(alpha * MHA(h, pool))); h <- LN(h + Drop(FFN(h)))."""

  def __init__(self, width: int, num_heads: int, dropout: float, ffn_mult: int):
    super().__init__()
    self.attention = layers.MultiHeadAttention(width, num_heads)
    self.norm1 = layers.layer_norm(width)
    self.ffn = layers.MLP(width, ffn_mult * width, width, dropout)
    self.norm2 = layers.layer_norm(width)
    self.dropout = nn.Dropout(dropout)

  def forward(self, query, alpha, pool, pool_mask):
    msg = self.attention(query, pool, pool_mask)
    msg = self.dropout(alpha.unsqueeze(-1).to(msg.dtype) * msg)
    h = self.norm1(query + msg)
    return self.norm2(h + self.dropout(self.ffn(h)))


class IntraCED(nn.Module):
  """One level: Stiefel split, token budget, shared-only budgeted exchange."""

  def __init__(self, cfg, mods: Sequence[str]):
    super().__init__()
    self.mods = tuple(mods)
    d_sh, d_pr = cfg.d_shared or cfg.d // 2, cfg.d_private or cfg.d // 2
    self.bases = StiefelBases(cfg.d, d_sh, d_pr, self.mods)
    theta = cfg.budget.theta_init if cfg.budget.theta_init >= 0 else float(np.sqrt(d_sh))
    self.budget = TokenBudget(cfg.budget.participation_init, cfg.budget.kappa_init, theta)
    self.exchange = nn.ModuleDict({
        f"exchange_{m}": SharedExchange(d_sh, cfg.num_heads, cfg.dropout, cfg.ffn_mult)
        for m in self.mods})

  def forward(self, h, masks):
    u_sh, u_pr = self.bases()
    shared = {m: h[m] @ u_sh.to(h[m].dtype) for m in self.mods}
    private = {m: h[m] @ u_pr[m].to(h[m].dtype) for m in self.mods}
    alpha, budget, ratio = self.budget(shared, masks)
    exchanged = {}
    for m in self.mods:
      others = [o for o in self.mods if o != m]
      pool = torch.cat([shared[o] for o in others], 1)
      pool_mask = torch.cat([masks[o] for o in others], 1)
      exchanged[m] = self.exchange[f"exchange_{m}"](shared[m], alpha[m], pool, pool_mask)
    return {"shared": exchanged, "private": private, "alpha": alpha, "budget": budget,
            "ratio": ratio}


class Summaries(nn.Module):
  """s_l^m = LN(W masked-mean_t(x)) per modality (one level)."""

  def __init__(self, width: int, d: int, mods: Sequence[str]):
    super().__init__()
    self.proj = nn.ModuleDict({f"proj_{m}": nn.Linear(width, d) for m in mods})
    self.norm = nn.ModuleDict({f"norm_{m}": layers.layer_norm(d) for m in mods})

  def forward(self, streams, masks):
    return {m: self.norm[f"norm_{m}"](self.proj[f"proj_{m}"](layers.masked_mean(x, masks[m])))
            for m, x in streams.items()}


class InterCAD(nn.Module):
  """Anchored level weights omega, modality selection beta, private gates eta -> [z_sh ; u_pr]."""

  def __init__(self, d: int, mods: Sequence[str], num_levels: int = 3):
    super().__init__()
    self.d, self.mods, self.num_levels = d, tuple(mods), num_levels
    self.anchors = nn.Parameter(torch.randn(num_levels, d) * 0.02)
    self.anchor_norm = nn.ModuleList([layers.layer_norm(d) for _ in range(num_levels)])
    self.level_mlp = layers.MLP(2 * d, d // 2, 1)
    self.select_query = nn.Linear(d, d)
    self.select_key = nn.Linear(d, d)
    self.select_value = nn.Linear(d, d)
    self.gate_proj = nn.Linear(d, d)
    self.gate_norm = layers.layer_norm(d)
    self.gate_score = nn.Linear(d, 1)
    self.private_value = nn.Linear(d, d)

  def forward(self, shared, private, present):
    present_f = torch.stack([present[m] for m in self.mods], -1).float()     # [B, M]
    count = present_f.sum(-1, keepdim=True)
    weight = (present_f / count.clamp_min(1.0)).unsqueeze(-1)                # [B, M, 1]
    feats = []
    for level in range(self.num_levels):
      norm = self.anchor_norm[level]
      s_hat = torch.stack([norm(shared[level][m]) for m in self.mods], 1) + self.anchors[level]
      mean_s = (s_hat * weight.to(s_hat.dtype)).sum(1)
      feats.append(torch.cat([mean_s, self.anchors[level].to(mean_s.dtype).expand_as(mean_s)],
                             -1))
    logits = self.level_mlp(torch.stack(feats, 1))[..., 0]
    omega = torch.softmax(logits.float(), -1)                                 # [B, L]

    def over_levels(per_level):
      return {m: (torch.stack([per_level[l][m] for l in range(self.num_levels)], -2).float()
                  * omega.unsqueeze(-1)).sum(-2).to(per_level[0][m].dtype) for m in self.mods}
    s_bar, p_bar = over_levels(shared), over_levels(private)
    s_stack = torch.stack([s_bar[m] for m in self.mods], 1)                  # [B, M, d]
    g = (s_stack * present_f.unsqueeze(-1).to(s_stack.dtype)).sum(1) / count.clamp_min(
        1.0).to(s_stack.dtype)
    q = self.select_query(g)
    k = self.select_key(s_stack)
    sel = torch.einsum("bd,bmd->bm", q, k).float() / math.sqrt(self.d)
    sel = sel.masked_fill(present_f == 0, -1e30)
    beta = torch.softmax(sel, -1) * (count > 0)
    z_sh = torch.einsum("bm,bmd->bd", beta.to(s_stack.dtype), self.select_value(s_stack))
    p_stack = torch.stack([p_bar[m] for m in self.mods], 1)
    gate = self.gate_score(self.gate_norm(self.gate_proj(p_stack)))[..., 0]
    eta = torch.sigmoid(gate.float()) * present_f
    u_pr = torch.einsum("bm,bmd->bd", eta.to(p_stack.dtype), self.private_value(p_stack))
    return torch.cat([z_sh, u_pr], -1), {"omega": omega, "beta": beta, "eta": eta}


class TaskHead(nn.Module):
  """MLP(2d -> d -> out) with GELU and dropout; regression returns [B]."""

  def __init__(self, task: str, d: int, num_classes: int, dropout: float):
    super().__init__()
    if task not in ("classification", "regression"):
      raise NotImplementedError(f"the reference implements classification and regression, "
                                f"not {task!r}")
    self.task = task
    self.mlp = layers.MLP(2 * d, d, 1 if task == "regression" else num_classes, dropout)

  def forward(self, representation):
    y = self.mlp(representation).float()
    return y[..., 0] if self.task == "regression" else y


class CLCR(nn.Module):
  """Cross-Level Co-Representation (PyTorch reference of clcr_jax.models.CLCR)."""

  def __init__(self, cfg, input_shapes: Mapping[str, Sequence[int]]):
    super().__init__()
    self.mods = tuple(cfg.modalities.keys())
    self.num_levels = 3
    d_sh, d_pr = cfg.d_shared or cfg.d // 2, cfg.d_private or cfg.d // 2
    self.semantic_hierarchy = SemanticHierarchy(cfg, input_shapes)
    self.intra_ced = nn.ModuleList([IntraCED(cfg, self.mods) for _ in range(self.num_levels)])
    self.shared_summary = nn.ModuleList([Summaries(d_sh, cfg.d, self.mods)
                                         for _ in range(self.num_levels)])
    self.private_summary = nn.ModuleList([Summaries(d_pr, cfg.d, self.mods)
                                          for _ in range(self.num_levels)])
    self.inter_cad = InterCAD(cfg.d, self.mods, self.num_levels)
    self.head = TaskHead(cfg.task, cfg.d, cfg.num_classes, cfg.dropout)

  def forward(self, inputs, masks):
    h, level_masks = self.semantic_hierarchy(inputs, masks)
    aux = {k: [] for k in ("alpha", "budget", "token_mask", "shared", "private")}
    ratios = []
    for level in range(self.num_levels):
      lm = {m: level_masks[m][level] for m in self.mods}
      out = self.intra_ced[level]({m: h[m][level] for m in self.mods}, lm)
      aux["alpha"].append(out["alpha"])
      aux["budget"].append(out["budget"])
      aux["token_mask"].append(lm)
      aux["shared"].append(self.shared_summary[level](out["shared"], lm))
      aux["private"].append(self.private_summary[level](out["private"], lm))
      ratios.append(out["ratio"])
    aux["budget_ratio"] = torch.stack(ratios).float()
    present = {m: masks[m].bool().any(-1) for m in self.mods}
    representation, weights = self.inter_cad(aux["shared"], aux["private"], present)
    aux.update(weights)
    return self.head(representation), aux
