"""Tests for clcr_jax.models.intra_ced: the Stiefel split, the token budget and the exchange.

IntraCED is tested directly at one level (the model nn.vmaps it over levels), on three
modalities with different token counts, padding, and a row where two modalities are absent:

* a float64 numpy re-implementation of docs/model.md (IntraCED, Budget, Exchange) (QR bases with
the sign fix, the budget
  scores, a bisection capped-simplex projection, masked multi-head attention from the other
  modalities' shared tokens, alpha on the query side, residual + LN, FFN + LN) must reproduce the
  module's outputs;
* isolation: moving modality b's input along its private subspace changes nothing in the other
  modalities' outputs, and tokens whose budget weight is exactly 0 receive nothing at all;
* the bases stay orthonormal and mutually orthogonal through optimiser updates.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clcr_jax.models import intra_ced

MODS = ("a", "b", "c")
D, D_SH, D_PR, HEADS = 16, 8, 6, 2
BATCH = 3
TOKENS = {"a": 6, "b": 7, "c": 5}
# Row 0 is full, row 1 padded, row 2 has only modality a (b and c absent).
LENGTHS = {"a": (6, 4, 6), "b": (7, 7, 0), "c": (5, 2, 0)}
# A small budget and a steep score make the projection bind, so some alphas are exactly 0.
PARTICIPATION, KAPPA = 0.2, 4.0


def _module(train: bool = False, **kw) -> intra_ced.IntraCED:
  return intra_ced.IntraCED(D, D_SH, D_PR, MODS, num_heads=HEADS, dropout=0.1,
                            participation_init=PARTICIPATION, kappa_init=KAPPA, train=train, **kw)


def _inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  h = {m: rng.normal(size=(BATCH, TOKENS[m], D)).astype(np.float32) for m in MODS}
  masks = {m: np.arange(TOKENS[m])[None, :] < np.array(LENGTHS[m])[:, None] for m in MODS}
  return h, masks


@pytest.fixture(scope="module")
def setup():
  """Parameters and jitted eval / train applications of one IntraCED level."""
  h, masks = _inputs()
  params = jax.jit(_module().init)(jax.random.key(0), h, masks)["params"]
  apply_eval = jax.jit(_module().apply)
  train_module = _module(train=True)
  apply_train = jax.jit(lambda p, h, m: train_module.apply(p, h, m,
                                                           rngs={"dropout": jax.random.key(7)}))
  bases = intra_ced.StiefelBases(D, D_SH, D_PR, MODS).apply({"params": params["bases"]})
  return {"params": params, "h": h, "masks": masks, "eval": apply_eval, "train": apply_train,
          "u_sh": np.asarray(bases[0]), "u_pr": {m: np.asarray(u) for m, u in bases[1].items()}}


def _run(setup, h, mode="eval"):
  out = setup[mode]({"params": setup["params"]}, h, setup["masks"])
  return jax.tree.map(np.asarray, out)


# ------------------------------------------------------------------------------------------------
# Float64 reference of one level.
# ------------------------------------------------------------------------------------------------


def _qr_sign(w):
  q, r = np.linalg.qr(w)
  return q * np.where(np.sign(np.diag(r)) == 0, 1.0, np.sign(np.diag(r)))


def _layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu)**2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):  # flax's nn.gelu default (tanh approximation)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _capped_simplex(s, budget, mask):
  """argmin ||a - s|| over {a in [0,1]^T, sum a <= budget, a = 0 off the mask}, by bisection."""
  if budget <= 0 or not mask.any():
    return np.zeros_like(s)
  sv = s[mask]
  tau = 0.0
  if np.clip(sv, 0, 1).sum() > budget:
    lo, hi = 0.0, sv.max()
    for _ in range(200):
      mid = 0.5 * (lo + hi)
      lo, hi = (mid, hi) if np.clip(sv - mid, 0, 1).sum() > budget else (lo, mid)
    tau = 0.5 * (lo + hi)
  return np.where(mask, np.clip(s - tau, 0, 1), 0.0)


def _attention(p, query, pool, pool_mask):
  q = np.einsum("btd,dhk->bthk", query, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("btd,dhk->bthk", pool, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("btd,dhk->bthk", pool, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(pool_mask[:, None, None, :], logits, -np.inf)
  out = np.zeros(q.shape)
  for b in range(q.shape[0]):
    if pool_mask[b].any():  # no key at all: the message is exactly 0
      w = np.exp(logits[b] - logits[b].max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      out[b] = np.einsum("hqs,shk->qhk", w, v[b])
  return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def reference_level(params, h, masks):
  """docs/model.md (IntraCED, Budget, Exchange) in float64 from the module's parameters."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  u_sh = _qr_sign(p["bases"]["w_shared"])
  complement = np.eye(D) - u_sh @ u_sh.T
  u_pr = {m: _qr_sign(complement @ p["bases"][f"w_private_{m}"]) for m in MODS}
  h = {m: np.asarray(h[m], np.float64) for m in MODS}
  shared = {m: h[m] @ u_sh for m in MODS}
  private = {m: h[m] @ u_pr[m] for m in MODS}
  ratio = 1 / (1 + np.exp(-p["budget"]["b"]))
  kappa = np.log1p(np.exp(p["budget"]["k"]))
  alpha, budget, exchanged = {}, {}, {}
  for m in MODS:
    budget[m] = ratio * masks[m].sum(-1)
    scores = 1 / (1 + np.exp(-kappa * (np.linalg.norm(shared[m], axis=-1) - p["budget"]["theta"])))
    alpha[m] = np.stack([_capped_simplex(scores[b], budget[m][b], masks[m][b])
                         for b in range(BATCH)])
  for m in MODS:
    others = [o for o in MODS if o != m]
    pool = np.concatenate([shared[o] for o in others], 1)
    pool_mask = np.concatenate([masks[o] for o in others], 1)
    ex = p[f"exchange_{m}"]
    msg = _attention(ex["attention"], shared[m], pool, pool_mask)
    x = _layer_norm(shared[m] + alpha[m][..., None] * msg, ex["norm1"])
    hidden = _gelu(x @ ex["ffn"]["fc1"]["kernel"] + ex["ffn"]["fc1"]["bias"])
    ffn = hidden @ ex["ffn"]["fc2"]["kernel"] + ex["ffn"]["fc2"]["bias"]
    exchanged[m] = _layer_norm(x + ffn, ex["norm2"])
  return {"shared": exchanged, "private": private, "alpha": alpha, "budget": budget,
          "ratio": ratio, "u_sh": u_sh, "u_pr": u_pr}


# ------------------------------------------------------------------------------------------------
# Tests.
# ------------------------------------------------------------------------------------------------


def test_level_matches_float64_reference(setup):
  out = _run(setup, setup["h"])
  ref = reference_level(setup["params"], setup["h"], setup["masks"])
  np.testing.assert_allclose(setup["u_sh"], ref["u_sh"], atol=1e-5)
  for m in MODS:
    np.testing.assert_allclose(setup["u_pr"][m], ref["u_pr"][m], atol=1e-5)
    np.testing.assert_allclose(out["alpha"][m], ref["alpha"][m], atol=2e-5, err_msg=m)
    np.testing.assert_allclose(out["budget"][m], ref["budget"][m], rtol=1e-6, err_msg=m)
    np.testing.assert_allclose(out["private"][m], ref["private"][m], atol=2e-5, err_msg=m)
    valid = setup["masks"][m]
    np.testing.assert_allclose(out["shared"][m][valid], ref["shared"][m][valid], atol=2e-4,
                               err_msg=m)
  np.testing.assert_allclose(out["ratio"], PARTICIPATION, rtol=1e-6)
  # The inputs make the budget bind: some valid tokens are out (alpha = 0), some are in.
  alpha_a = out["alpha"]["a"][setup["masks"]["a"]]
  assert (alpha_a == 0).any() and (alpha_a > 0).any()
  # Padding and absent modalities never take part.
  for m in MODS:
    assert np.all(out["alpha"][m][~setup["masks"][m]] == 0)
    np.testing.assert_array_less(out["alpha"][m].sum(-1), out["budget"][m] + 1e-4)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_private_subspace_of_b_never_reaches_other_modalities(setup, mode):
  """Moving b's input inside span(U_pr,b) leaves a's and c's shared and private outputs unchanged;
  moving it inside span(U_sh) by the same amount does change them (the check can fail)."""
  rng = np.random.default_rng(1)
  base = _run(setup, setup["h"], mode)
  coords = 3.0 * rng.normal(size=(BATCH, TOKENS["b"], D_PR))
  along_private = dict(setup["h"], b=(setup["h"]["b"] + coords @ setup["u_pr"]["b"].T)
                       .astype(np.float32))
  out = _run(setup, along_private, mode)
  # b's own private stream moved by exactly the coordinates (U_pr^T U_pr = I) ...
  valid = setup["masks"]["b"]
  np.testing.assert_allclose(out["private"]["b"] - base["private"]["b"], coords, atol=1e-4)
  assert np.abs(out["private"]["b"] - base["private"]["b"])[valid].max() > 1.0
  # ... while its shared stream, and everything of the other modalities, did not.
  for m in MODS:
    np.testing.assert_allclose(out["shared"][m], base["shared"][m], atol=1e-5, err_msg=m)
    np.testing.assert_allclose(out["alpha"][m], base["alpha"][m], atol=1e-5, err_msg=m)
  for m in ("a", "c"):  # these never see b's input at all
    np.testing.assert_array_equal(out["alpha"][m], base["alpha"][m], err_msg=m)
    np.testing.assert_array_equal(out["private"][m], base["private"][m], err_msg=m)

  shared_coords = 3.0 * rng.normal(size=(BATCH, TOKENS["b"], D_SH))
  along_shared = dict(setup["h"], b=(setup["h"]["b"] + shared_coords @ setup["u_sh"].T)
                      .astype(np.float32))
  moved = _run(setup, along_shared, mode)
  rows_with_b = np.arange(BATCH)[:, None] < 2
  admitted = (base["alpha"]["a"] > 0) & rows_with_b
  assert np.abs(moved["shared"]["a"] - base["shared"]["a"])[admitted].max() > 1e-2


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_tokens_outside_the_budget_receive_nothing(setup, mode):
  """Replacing the other modalities by arbitrary inputs changes a modality's output only on its
  tokens with alpha > 0 (and not at all in a row where the others are absent)."""
  rng = np.random.default_rng(2)
  base = _run(setup, setup["h"], mode)
  num_excluded = 0
  for m in MODS:
    others = [o for o in MODS if o != m]
    replaced = dict(setup["h"], **{o: (5.0 * rng.normal(size=setup["h"][o].shape))
                                   .astype(np.float32) for o in others})
    out = _run(setup, replaced, mode)
    np.testing.assert_array_equal(out["alpha"][m], base["alpha"][m])  # m's budget is m's own
    alpha, valid = base["alpha"][m], setup["masks"][m]
    partners = np.stack([setup["masks"][o].any(-1) for o in others]).any(0)[:, None]
    excluded, admitted = valid & (alpha == 0), valid & (alpha > 0) & partners
    np.testing.assert_allclose(out["shared"][m][excluded], base["shared"][m][excluded], atol=1e-6)
    np.testing.assert_allclose(out["shared"][m][~partners[:, 0]], base["shared"][m][~partners[:, 0]],
                               atol=1e-6)
    change = np.abs(out["shared"][m] - base["shared"][m]).max(-1)
    assert admitted.sum() >= 2 and np.all(change[admitted] > 1e-4), (m, change, alpha)
    num_excluded += (excluded & partners).sum()
  assert num_excluded >= 4  # the inputs make the budget bind in rows that have partners


def test_without_split_the_level_is_the_identity():
  """The "w/o IntraCED" switch: shared = H, no private stream, every valid token weighted 1."""
  h, masks = _inputs()
  module = intra_ced.IntraCED(D, D_SH, D_PR, MODS, split=False)
  out, variables = module.init_with_output(jax.random.key(0), h, masks)
  assert out["private"] is None and not variables
  for m in MODS:
    np.testing.assert_array_equal(out["shared"][m], h[m])
    np.testing.assert_array_equal(out["alpha"][m], masks[m].astype(np.float32))


def _orthonormality_errors(u_sh, u_pr):
  errs = [np.abs(u_sh.T @ u_sh - np.eye(u_sh.shape[1])).max()]
  for u in u_pr.values():
    errs.append(np.abs(u.T @ u - np.eye(u.shape[1])).max())
    errs.append(np.abs(u_sh.T @ u).max())
  return max(errs)


@pytest.mark.parametrize("d_private", [6, D - D_SH])
def test_bases_stay_orthonormal_under_optimiser_updates(d_private):
  """U_sh^T U_sh = I, U_pr^T U_pr = I and U_sh^T U_pr = 0 at init and after SGD on the raw
  parameters (which move far: the loss pulls every basis towards an arbitrary target)."""
  bases = intra_ced.StiefelBases(D, D_SH, d_private, MODS)
  params = bases.init(jax.random.key(3))["params"]
  rng = np.random.default_rng(4)
  targets = (rng.normal(size=(D, D_SH)), {m: rng.normal(size=(D, d_private)) for m in MODS})

  def loss_fn(p):
    u_sh, u_pr = bases.apply({"params": p})
    return (jnp.sum((u_sh - targets[0])**2) +
            sum(jnp.sum((u_pr[m] - targets[1][m])**2) for m in MODS))

  tx = optax.sgd(0.2, momentum=0.9)

  @jax.jit
  def step(p, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  p, opt_state = params, tx.init(params)
  losses = []
  for _ in range(8):
    u_sh, u_pr = jax.tree.map(np.asarray, bases.apply({"params": p}))
    assert u_sh.shape == (D, D_SH) and all(u.shape == (D, d_private) for u in u_pr.values())
    assert _orthonormality_errors(u_sh, u_pr) < 1e-5
    p, opt_state, loss = step(p, opt_state)
    losses.append(float(loss))
  u_sh, u_pr = jax.tree.map(np.asarray, bases.apply({"params": p}))
  assert _orthonormality_errors(u_sh, u_pr) < 1e-5
  moved = [np.abs(np.asarray(p[k]) - np.asarray(params[k])).max() for k in params]
  assert min(moved) > 0.05, moved
  assert losses[-1] < losses[0]


def test_bases_reject_too_wide_subspaces():
  with pytest.raises(ValueError, match="exceeds d"):
    intra_ced.StiefelBases(D, D_SH, D - D_SH + 1, MODS).init(jax.random.key(0))


@pytest.mark.parametrize("shape", [(128, 64), (16, 16), (9, 1)])
def test_orthonormal_columns_is_the_sign_fixed_householder_q(shape):
  """Against numpy's float64 Householder QR with diag(R) > 0, values and gradients; vmapped."""
  w = np.asarray(jax.random.normal(jax.random.key(shape[0]), (3,) + shape), np.float64)
  # Nearly dependent columns make the float32 Gram-Schmidt work for its orthogonality.
  if shape[1] > 1:
    w[:, :, 1] = w[:, :, 0] + 1e-2 * w[:, :, 1]

  def householder(w):
    q, r = np.linalg.qr(w)
    return q * np.sign(np.diagonal(r))[None, :]

  q = np.asarray(jax.jit(jax.vmap(intra_ced.orthonormal_columns))(w.astype(np.float32)))
  for i in range(3):
    np.testing.assert_allclose(q[i], householder(w[i]), atol=2e-5)
    np.testing.assert_allclose(q[i].T.astype(np.float64) @ q[i], np.eye(shape[1]), atol=2e-6)
  # d/dw of <c, Q(w)> (reverse mode through the closed-form custom JVP) against central differences of the float64
  # reference: every entry of the small shapes, 48 random ones and the corners of the large one.
  c = np.random.default_rng(0).normal(size=shape)
  grad = np.asarray(jax.grad(lambda w: jnp.sum(c * intra_ced.orthonormal_columns(w)))(
      w[0].astype(np.float32)), np.float64)
  eps = 1e-6
  entries = list(np.ndindex(shape))
  if len(entries) > 300:
    picks = np.random.default_rng(1).choice(len(entries), 48, replace=False)
    entries = [entries[i] for i in picks] + [(0, 0), (shape[0] - 1, shape[1] - 1)]
  for idx in entries:
    dw = np.zeros(shape)
    dw[idx] = eps
    fd = (np.sum(c * householder(w[0] + dw)) - np.sum(c * householder(w[0] - dw))) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-3, atol=2e-4)
  # Forward mode along a random direction, against the same float64 differences.
  direction = np.random.default_rng(2).normal(size=shape)
  _, tangent = jax.jvp(intra_ced.orthonormal_columns, (w[0].astype(np.float32),),
                       (direction.astype(np.float32),))
  fd = (householder(w[0] + eps * direction) - householder(w[0] - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(tangent, np.float64), fd, rtol=2e-3, atol=2e-4)


def test_orthonormal_columns_backward_keeps_no_per_column_copies():
  """The closed-form backward stores Q and R^-1 only. Autodiff through the Gram-Schmidt scan
  would keep Q at every column (d * k^2 floats: 128 MiB here, 384 MiB per level at CREMA-D's
  width); XLA's memory plan for the gradient must stay near the size of a few [d, k] arrays."""
  w = jax.random.normal(jax.random.key(0), (512, 256))
  compiled = jax.jit(jax.grad(lambda w: jnp.sum(jnp.sin(intra_ced.orthonormal_columns(w))))
                     ).lower(w).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 16 * w.size * 4, f"gradient plan {temp / 2**20:.1f} MiB"
