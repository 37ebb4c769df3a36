"""Copies clcr_jax (flax) parameters into the PyTorch reference.

Torch module names mirror the flax tree; the differences are containers (ModuleDicts named
`backbone`, `proj`, `pos`, `norm`, `exchange`), per-level ModuleLists (flax stacks the vmapped
levels' parameters on a leading axis) and the hierarchy encoder's own scope. Kernels are
transposed to PyTorch's layouts: Linear [out, in], Conv1d [out, in, k], Conv2d [out, in, kh, kw].
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

_LEVELED = ("intra_ced", "shared_summary", "private_summary")
_CONTAINERS = ("backbone", "proj", "pos", "norm", "exchange")


def flax_path(torch_name: str) -> tuple[list[str], int | None]:
  """'intra_ced.1.exchange.exchange_text.attention.query' -> (['intra_ced', 'exchange_text',
  'attention', 'query'], 1)."""
  parts = torch_name.split(".")
  level = None
  if parts[0] in _LEVELED and len(parts) > 1:
    level, parts = int(parts[1]), [parts[0]] + parts[2:]
  if parts[0] == "semantic_hierarchy" and len(parts) > 1 and parts[1] in ("proj", "pos", "norm"):
    parts = ["semantic_hierarchy", "hierarchy"] + parts[1:]
  out = []
  i = 0
  while i < len(parts):
    p = parts[i]
    nxt = parts[i + 1] if i + 1 < len(parts) else ""
    if p in _CONTAINERS and nxt.startswith(p + "_"):
      i += 1
      continue
    if p == "anchor_norm" and nxt.isdigit():
      out.append(f"anchor_norm_{nxt}")
      i += 2
      continue
    out.append(p)
    i += 1
  return out, level


def _get(tree, path, level):
  for key in path:
    tree = tree[key]
  x = np.asarray(tree, np.float32)
  return x[level] if level is not None else x


@torch.no_grad()
def load_flax_variables(module: nn.Module, variables) -> int:
  """Copies `variables` ({'params', optional 'batch_stats'}) into `module`; returns the count of
  copied parameter elements. Raises KeyError/ValueError on any name or shape mismatch."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  copied = 0
  done = set()

  def put(tensor, value):
    value = torch.from_numpy(np.array(value, np.float32, copy=True)).to(tensor.dtype)
    if tuple(value.shape) != tuple(tensor.shape):
      raise ValueError(f"shape mismatch: torch {tuple(tensor.shape)} vs flax {value.shape}")
    tensor.copy_(value.to(tensor.device))

  for name, sub in module.named_modules():
    path, level = flax_path(name) if name else ([], None)
    if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)):
      kernel = _get(params, path + ["kernel"], level)
      if isinstance(sub, nn.Linear):
        kernel = kernel.reshape(sub.in_features, sub.out_features).T
      elif isinstance(sub, nn.Conv1d):
        kernel = kernel.transpose(2, 1, 0)
      else:
        kernel = kernel.transpose(3, 2, 0, 1)
      put(sub.weight, kernel)
      if sub.bias is not None:
        put(sub.bias, _get(params, path + ["bias"], level).reshape(-1))
    elif isinstance(sub, (nn.LayerNorm, nn.BatchNorm2d)):
      put(sub.weight, _get(params, path + ["scale"], level))
      put(sub.bias, _get(params, path + ["bias"], level))
      if isinstance(sub, nn.BatchNorm2d):
        put(sub.running_mean, _get(stats, path + ["mean"], level))
        put(sub.running_var, _get(stats, path + ["var"], level))
    else:
      for pname, p in sub.named_parameters(recurse=False):
        put(p, _get(params, path + [pname], level))
        done.add(id(p))
      continue
    for p in sub.parameters(recurse=False):
      done.add(id(p))
  for name, p in module.named_parameters():
    if id(p) not in done:
      raise KeyError(f"torch parameter {name} was not copied")
    copied += p.numel()
  return copied
