"""Checks that the PyTorch reference computes what clcr_jax computes, with copied parameters.

    python -m benchmarks.check_torch_equivalence [--batch 4] [--tokens 20,30,40]

MOSI configuration (text 768-d, audio 5-d, vision 20-d features; d = 128, 4 heads, TCN), with a
small batch and short sequences for speed (variable valid lengths). In float32 it checks:
  1. equal parameter counts;
  2. equal forward outputs in eval mode: prediction and aux omega, beta, eta, alpha (every level
     and modality), relative error < 1e-4;
  3. equal training loss and gradients: for every parameter tensor, ||g_torch - g_jax|| <
     2e-3 (||g_jax|| + 1e-4 ||all of g_jax||); the floor covers tensors whose exact gradient is
     zero (key biases and other softmax-shift-invariant biases, where both sides hold rounding
     noise). The initial participation ratio is lowered to 0.3 so that the budget binds and the
     token budget's implicit-function backward is exercised (the budget parameters b get a
     gradient only through it).
A small audio-visual model (ResNet-18 trunks at base width 8, d = 32) is checked for 1-2 too.
Exits non-zero on any failure. Self-contained (no pytest).
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import _env

_env.configure("cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position

from benchmarks import configs  # pylint: disable=wrong-import-position
from benchmarks import torch_reference
from clcr_jax import losses
from clcr_jax import models

TOL_FORWARD = 1e-4
TOL_GRAD = 2e-3


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  # Sums of squares, not np.linalg.norm: BLAS calls from numpy can stall once torch's OpenMP
  # pool is up in the same process.
  norm = lambda x: float(np.sqrt(np.sum(np.square(x))))
  return norm(a - b) / max(norm(b), 1e-12)


def build_pair(bench, batch):
  """(jax model, variables, torch model) with the JAX parameters copied into torch."""
  model = models.build_model(bench.config.model)
  variables = jax.jit(lambda inputs, masks: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, inputs, masks,
      train=False))(batch["inputs"], batch["masks"])
  # Non-trivial BatchNorm statistics, so eval mode exercises them.
  if "batch_stats" in variables:
    rng = np.random.default_rng(3)
    variables = dict(variables, batch_stats=jax.tree.map(
        lambda x: np.asarray(x) + rng.uniform(0.1, 0.5, x.shape).astype(np.float32),
        variables["batch_stats"]))
  torch_model = torch_reference.CLCR(bench.config.model, bench.torch_shapes())
  copied = torch_reference.load_flax_variables(torch_model, variables)
  n_jax = sum(x.size for x in jax.tree.leaves(variables["params"]))
  n_torch = sum(p.numel() for p in torch_model.parameters())
  return model, variables, torch_model, (n_jax, n_torch, copied)


def to_torch(batch):
  return {k: ({m: torch.from_numpy(np.asarray(x)) for m, x in v.items()}
              if isinstance(v, dict) else torch.from_numpy(np.asarray(v)))
          for k, v in batch.items()}


def check_forward(name, bench, batch, failures):
  model, variables, torch_model, (n_jax, n_torch, copied) = build_pair(bench, batch)
  print(f"[{name}] parameters: jax {n_jax:,}  torch {n_torch:,}  copied {copied:,}")
  if not n_jax == n_torch == copied:
    failures.append(f"{name}: parameter counts differ")
  pred, aux = jax.jit(lambda v, inputs, masks: model.apply(v, inputs, masks, train=False))(
      variables, batch["inputs"], batch["masks"])
  torch_model.eval()
  tb = to_torch(configs.to_torch_layout(bench, batch))
  with torch.no_grad():
    t_pred, t_aux = torch_model(tb["inputs"], tb["masks"])
  rows = [("prediction", pred, t_pred)]
  for key in ("omega", "beta", "eta"):
    rows.append((key, aux[key], t_aux[key]))
  for level, alpha in enumerate(aux["alpha"]):
    for m in alpha:
      rows.append((f"alpha[{level}][{m}]", alpha[m], t_aux["alpha"][level][m]))
  worst = 0.0
  for key, a, b in rows:
    err = rel_err(b.numpy(), a)
    worst = max(worst, err)
    if err >= TOL_FORWARD:
      failures.append(f"{name}: {key} relative error {err:.2e} >= {TOL_FORWARD}")
  print(f"[{name}] forward (eval, float32): {len(rows)} outputs, worst relative error "
        f"{worst:.2e} (prediction {rel_err(t_pred.numpy(), pred):.2e})")
  return model, variables, torch_model, tb


def check_gradients(name, bench, batch, model, variables, torch_model, tb, failures):
  cfg = bench.config

  def loss_fn(params):
    pred, aux = model.apply(dict(variables, params=params), batch["inputs"], batch["masks"],
                            train=False)
    return losses.total_loss(pred, aux, batch, cfg.loss, cfg.model.task)[0]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
  torch_model.eval()
  torch_model.zero_grad()
  t_pred, t_aux = torch_model(tb["inputs"], tb["masks"])
  t_loss, _ = torch_reference.total_loss(t_pred, t_aux, tb, cfg.loss, cfg.model.task)
  t_loss.backward()
  errors = {}
  floor = 1e-4 * float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                                   for g in jax.tree.leaves(grads))))
  # Copy the JAX gradients into a twin module, so both trees are compared by torch name.
  twin = torch_reference.CLCR(cfg.model, bench.torch_shapes())
  torch_reference.load_flax_variables(twin, dict(variables, params=grads))
  for (pname, p), (_, g) in zip(torch_model.named_parameters(), twin.named_parameters()):
    a, b = p.grad.numpy().astype(np.float64), g.detach().numpy().astype(np.float64)
    errors[pname] = float(np.sqrt(np.sum((a - b)**2)) / (np.sqrt(np.sum(b**2)) + floor))
  worst = max(errors, key=errors.get)
  loss_err = rel_err(t_loss.item(), float(loss))
  print(f"[{name}] train loss: jax {float(loss):.6f} torch {t_loss.item():.6f} "
        f"(rel {loss_err:.1e}); gradients of {len(errors)} tensors, worst relative error "
        f"{errors[worst]:.2e} ({worst}); token-budget params: "
        + ", ".join(f"b@level{k.split('.')[1]} {v:.1e}"
                    for k, v in errors.items() if ".budget." in k and k.endswith(".b")))
  b_grad = [float(p.grad) for k, p in torch_model.named_parameters() if k.endswith("budget.b")]
  print(f"[{name}] budget gradients d loss / d b_l (torch): "
        + ", ".join(f"{g:.3e}" for g in b_grad))
  if not any(abs(g) > 0 for g in b_grad):
    failures.append(f"{name}: the budget does not bind; its backward was not exercised")
  if loss_err >= TOL_FORWARD:
    failures.append(f"{name}: loss relative error {loss_err:.2e}")
  for k, v in errors.items():
    if v >= TOL_GRAD:
      failures.append(f"{name}: gradient of {k} relative error {v:.2e} >= {TOL_GRAD}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--tokens", default="20,30,40",
                      help="sequence lengths of text, audio, vision (MOSI: 50,375,500)")
  parser.add_argument("--skip-av", action="store_true")
  args = parser.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")
  torch.manual_seed(0)
  failures: list[str] = []

  bench = configs.get("mosi", batch_size=args.batch)
  bench.config.model.budget.participation_init = 0.3  # a binding budget (see the docstring)
  t_text, t_audio, t_vision = (int(t) for t in args.tokens.split(","))
  bench.shapes = {"text": (t_text, 768), "audio": (t_audio, 5), "vision": (t_vision, 20)}
  batch = configs.make_batch(bench, seed=1)
  print(f"MOSI widths, d={bench.config.model.d}, {bench.config.model.num_heads} heads, batch "
        f"{args.batch}, tokens {bench.shapes}")
  out = check_forward("mosi", bench, batch, failures)
  check_gradients("mosi", bench, batch, *out, failures)

  if not args.skip_av:
    av = configs.get("cremad", batch_size=2)
    av.config.model.d, av.config.model.num_heads = 32, 4
    av.config.model.resnet.base_width = 8
    av.shapes = {"audio": (64, 80), "visual": (2, 32, 32, 3)}
    av_batch = configs.make_batch(av, seed=2)
    print(f"AV (ResNet-18 trunks, base width 8, d=32), batch 2, {av.shapes}")
    check_forward("av", av, av_batch, failures)

  if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    return 1
  print("OK: the PyTorch reference matches clcr_jax (float32).")
  return 0


if __name__ == "__main__":
  sys.exit(main())
