"""Tests for the estimator, aggregation and budget options chosen in issue 12.

* loss.reg_reduction='mean' (with and without reg_debias) against a float64 numpy reference of
  the mean squared cross-correlation, and its noise floor for independent data;
* budget.scores='zscore' with budget.constraint='exactly': every row spends its budget exactly,
  participation approaches the ratio as kappa grows, and the weights ignore the scale of h;
* inter_cad.value_scale='sum' is M times 'mean' with the same parameters; summary_norm=False
  leaves the projected pooled summary un-normalised.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clcr_jax import losses
from clcr_jax.models import inter_cad
from clcr_jax.models import intra_ced
from clcr_jax.models import token_budget
from clcr_jax.models import transformer_layers as tl


def _mean_r(x, y, valid):
  """float64 mean over the d^2 entries of C^2, C the standardised cross-correlation."""
  x, y = np.asarray(x, np.float64)[valid], np.asarray(y, np.float64)[valid]
  x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
  y = (y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)
  return np.mean((x.T @ y / len(x))**2)


def _aux(rng, n, d, mods=("a", "b", "c"), levels=3, coupled=True):
  shared = [{m: rng.normal(size=(n, d)).astype(np.float32) for m in mods} for _ in range(levels)]
  private = [{m: ((0.8 * shared[l][m] if coupled else 0.0) + rng.normal(size=(n, d)))
              .astype(np.float32) for m in mods} for l in range(levels)]
  return {"shared": shared, "private": private}


@pytest.mark.parametrize("debias", [False, True])
def test_mean_reduction_matches_reference(debias):
  rng = np.random.default_rng(0)
  n, d = 20, 6
  aux = _aux(rng, n, d)
  valid = np.ones(n, bool)
  valid[[2, 11]] = False
  terms = losses.regularisers(aux, valid, mix_pairs=(), reduction="mean", debias=debias)
  s, p, mods, levels = aux["shared"], aux["private"], ("a", "b", "c"), range(3)
  intra = [_mean_r(p[l][a], p[l][b], valid) for l in levels
           for a, b in itertools.combinations(mods, 2)]
  intra += [_mean_r(p[l][m], s[l][m], valid) for l in levels for m in mods]
  pr = [_mean_r(p[l][m], p[k][m], valid) for m in mods for l, k in itertools.combinations(levels, 2)]
  sp = [_mean_r(s[l][m], p[k][m], valid) for m in mods for l in levels for k in levels if l != k]
  shift = 1.0 / valid.sum() if debias else 0.0
  for name, ref in (("intra", intra), ("pr", pr), ("sp", sp)):
    np.testing.assert_allclose(float(terms[name]), np.mean(ref) - shift, rtol=1e-4, atol=1e-7)


def test_mean_reduction_is_about_zero_for_independent_summaries_at_any_width():
  rng = np.random.default_rng(1)
  for d in (8, 64):
    aux = _aux(rng, 256, d, coupled=False)
    raw = losses.regularisers(aux, np.ones(256, bool), mix_pairs=(), reduction="mean")
    fixed = losses.regularisers(aux, np.ones(256, bool), mix_pairs=(), reduction="mean",
                                debias=True)
    # Without the correction the floor is 1/N; with it, the estimate is centred on 0.
    np.testing.assert_allclose(float(raw["pr"]), 1 / 256, rtol=0.2)
    assert abs(float(fixed["pr"])) < 0.2 / 256
  coupled = losses.regularisers(_aux(rng, 256, 8), np.ones(256, bool), mix_pairs=(),
                                reduction="mean", debias=True)
  # Coupled shared-private pairs: diagonal r^2 = 0.39 over d = 8 entries, half the pairs.
  np.testing.assert_allclose(float(coupled["intra"]), 0.39 / 8 / 2, rtol=0.25)


def test_unknown_reduction_is_refused():
  rng = np.random.default_rng(2)
  with pytest.raises(ValueError, match="reg_reduction"):
    losses.regularisers(_aux(rng, 8, 3), np.ones(8, bool), reduction="max")


def _budget(**kw):
  return token_budget.TokenBudget(participation_init=kw.pop("ratio", 0.5),
                                  kappa_init=kw.pop("kappa", 2.0), theta_init=1.0,
                                  scores="zscore", constraint="exactly", **kw)


def _tokens(rng, b=4, t=40, d=8):
  h = {"a": rng.normal(size=(b, t, d)).astype(np.float32),
       "b": rng.normal(size=(b, t // 2, d)).astype(np.float32)}
  masks = {"a": np.arange(t)[None] < np.array([t, 30, 25, t])[:, None],
           "b": np.ones((b, t // 2), bool)}
  return h, masks


def test_exact_budget_is_spent_and_participation_follows_kappa():
  rng = np.random.default_rng(3)
  h, masks = _tokens(rng)
  part = {}
  for kappa in (1.0, 8.0):
    module = _budget(kappa=kappa, ratio=0.4)
    (alpha, budget, ratio), _ = module.init_with_output(jax.random.key(0), h, masks)
    for m in h:
      a = np.asarray(alpha[m])
      assert np.all(a[~masks[m]] == 0) and np.all((a >= 0) & (a <= 1))
      np.testing.assert_allclose(a.sum(-1), 0.4 * masks[m].sum(-1), rtol=1e-4)
      np.testing.assert_allclose(np.asarray(budget[m]), 0.4 * masks[m].sum(-1), rtol=1e-6)
    part[kappa] = np.mean([((np.asarray(alpha[m]) > 0) & masks[m]).sum() / masks[m].sum()
                           for m in h])
  # A soft ranking spreads the budget over most tokens; a steep one admits about 40 %.
  assert part[1.0] > 0.5 and 0.4 <= part[8.0] < 0.46


def test_zscore_scores_ignore_the_scale_of_the_shared_stream():
  rng = np.random.default_rng(4)
  h, masks = _tokens(rng)
  module = _budget()
  params = module.init(jax.random.key(0), h, masks)
  a1 = module.apply(params, h, masks)[0]
  a2 = module.apply(params, {m: 5.0 * x for m, x in h.items()}, masks)[0]
  for m in h:
    np.testing.assert_allclose(np.asarray(a1[m]), np.asarray(a2[m]), atol=2e-5)


def test_exact_budget_gradient_reaches_the_scores():
  rng = np.random.default_rng(5)
  h, masks = _tokens(rng)
  module = _budget()
  params = module.init(jax.random.key(0), h, masks)
  w = rng.normal(size=h["a"].shape[:2]).astype(np.float32)
  grad = jax.grad(lambda x: jnp.sum(module.apply(params, {**h, "a": x}, masks)[0]["a"] * w))(
      jnp.asarray(h["a"]))
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
  assert float(jnp.abs(grad[~masks["a"]]).sum()) == 0  # padded tokens are not scored


def test_budget_options_are_checked():
  rng = np.random.default_rng(6)
  h, masks = _tokens(rng)
  for kw, field in (({"scores": "norm"}, "budget.scores"),
                    ({"constraint": "equal"}, "budget.constraint")):
    module = token_budget.TokenBudget(0.5, 1.0, 1.0, **kw)
    with pytest.raises(ValueError, match=field):
      module.init(jax.random.key(0), h, masks)


def _inter_cad_inputs(rng, b=5, d=8, mods=("a", "b", "c")):
  level = lambda: {m: jnp.asarray(rng.normal(size=(b, d)), jnp.float32) for m in mods}
  present = {m: jnp.ones(b, bool) for m in mods}
  return [level() for _ in range(3)], [level() for _ in range(3)], present


def test_value_scale_sum_is_m_times_mean():
  rng = np.random.default_rng(7)
  shared, private, present = _inter_cad_inputs(rng)
  mean = inter_cad.InterCAD(8, ("a", "b", "c"), value_scale="mean")
  params = mean.init(jax.random.key(0), shared, private, None, None, present)
  rep_mean, _, w_mean = mean.apply(params, shared, private, None, None, present)
  rep_sum, _, w_sum = inter_cad.InterCAD(8, ("a", "b", "c"), value_scale="sum").apply(
      params, shared, private, None, None, present)
  np.testing.assert_allclose(np.asarray(rep_sum[:, :8]), 3 * np.asarray(rep_mean[:, :8]),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(rep_sum[:, 8:]), np.asarray(rep_mean[:, 8:]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(w_sum["beta"]), np.asarray(w_mean["beta"]))
  with pytest.raises(ValueError, match="value_scale"):
    inter_cad.InterCAD(8, ("a", "b", "c"), value_scale="max").apply(
        params, shared, private, None, None, present)


def test_summaries_without_norm_are_the_projected_masked_mean():
  rng = np.random.default_rng(8)
  x = {"a": jnp.asarray(rng.normal(size=(3, 7, 5)), jnp.float32)}
  mask = {"a": jnp.asarray(np.arange(7)[None] < np.array([7, 4, 1])[:, None])}
  module = inter_cad.Summaries(6, norm=False)
  params = module.init(jax.random.key(0), x, mask)
  pooled, _ = module.apply(params, x, mask)
  kernel = np.asarray(params["params"]["proj_a"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["proj_a"]["bias"], np.float64)
  m = np.asarray(mask["a"], np.float64)[..., None]
  mean = (np.asarray(x["a"], np.float64) * m).sum(1) / m.sum(1)
  np.testing.assert_allclose(np.asarray(pooled["a"]), mean @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_identity_proj_init_passes_the_pooled_features_through():
  rng = np.random.default_rng(9)
  x = {m: jnp.asarray(rng.normal(size=(3, 7, 4)), jnp.float32) for m in ("a", "b")}
  lengths = np.array([7, 3, 1])
  mask = {m: jnp.asarray(np.arange(7)[None] < lengths[:, None]) for m in x}
  module = inter_cad.Summaries(6, norm=False, proj_init="identity")
  pooled, _ = module.apply(module.init(jax.random.key(0), x, mask), x, mask)
  for m in x:
    valid = np.arange(7)[None] < lengths[:, None]
    mean = np.stack([np.asarray(x[m], np.float64)[i, valid[i]].mean(0) for i in range(3)])
    # [B, 4] embedded in the first 4 of 6 outputs, the last two zero.
    np.testing.assert_allclose(np.asarray(pooled[m]), np.pad(mean, ((0, 0), (0, 2))),
                               rtol=1e-5, atol=1e-6)
  # Without aggregation (uniform omega, beta; eta = 1) and identity W_v, W_u, the representation
  # is [sum_m mean_l s_l^m ; sum_m mean_l p_l^m] with value_scale='sum' (the sums over l and, for
  # the private half, over m scale with level_scale='sum').
  shared, private, present = _inter_cad_inputs(rng)
  for level_scale, per_level in (("mean", 1 / 3), ("sum", 1.0)):
    cad = inter_cad.InterCAD(8, ("a", "b", "c"), aggregate=False, value_scale="sum",
                             proj_init="identity", level_scale=level_scale)
    rep, _, _ = cad.apply(cad.init(jax.random.key(0), shared, private, None, None, present),
                          shared, private, None, None, present)
    total = lambda levels: per_level * sum(np.asarray(lv[m], np.float64) for lv in levels
                                           for m in lv)
    np.testing.assert_allclose(np.asarray(rep),
                               np.concatenate([total(shared), total(private)], -1),
                               rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="level_scale"):
    inter_cad.InterCAD(8, ("a", "b", "c"), level_scale="max").init(
        jax.random.key(0), shared, private, None, None, present)


@pytest.mark.parametrize("kind", ["orthogonal", "lecun"])
def test_proj_init_kinds(kind):
  kernel = inter_cad.projection_init(kind)(jax.random.key(1), (16, 16), jnp.float32)
  gram = np.asarray(kernel.T @ kernel)
  if kind == "orthogonal":
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-5)
  else:  # random: variance 1 / fan_in, far from orthonormal
    assert abs(np.mean(np.diag(gram)) - 1.0) < 0.5
    assert np.abs(gram - np.diag(np.diag(gram))).max() > 0.3
  with pytest.raises(ValueError, match="proj_init"):
    inter_cad.projection_init("eye")


def test_fixed_summary_projection_has_no_parameters_and_pads_the_mean():
  rng = np.random.default_rng(10)
  x = {"a": jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)}
  mask = {"a": jnp.asarray(np.arange(5)[None] < np.array([5, 2])[:, None])}
  module = inter_cad.Summaries(4, norm=False, proj="fixed")
  variables = module.init(jax.random.key(0), x, mask)
  assert not jax.tree_util.tree_leaves(variables)
  pooled, _ = module.apply(variables, x, mask)
  xa = np.asarray(x["a"], np.float64)
  mean = np.stack([xa[0].mean(0), xa[1, :2].mean(0)])
  np.testing.assert_allclose(np.asarray(pooled["a"]), np.pad(mean, ((0, 0), (0, 1))), rtol=1e-6)
  with pytest.raises(ValueError, match="width 3 into d = 2"):
    inter_cad.Summaries(2, proj="fixed").init(jax.random.key(0), x, mask)
  with pytest.raises(ValueError, match="summary_proj"):
    inter_cad.Summaries(4, proj="frozen").init(jax.random.key(0), x, mask)


@pytest.mark.parametrize("trainable", [True, False])
def test_stiefel_bases_learn_only_when_trainable(trainable):
  module = intra_ced.StiefelBases(6, 2, 3, ("a", "b"), trainable=trainable)
  params = module.init(jax.random.key(0))
  target = jnp.asarray(np.random.default_rng(11).normal(size=(6, 2)), jnp.float32)
  def loss(p):
    u_sh, u_pr = module.apply(p)
    return jnp.sum(u_sh * target) + jnp.sum(u_pr["a"][:, :2] * target)

  grads = jax.grad(loss)(params)["params"]
  norms = {k: float(jnp.abs(g).max()) for k, g in grads.items()}
  if trainable:
    assert norms["w_shared"] > 1e-3 and norms["w_private_a"] > 1e-3
  else:
    assert all(v == 0.0 for v in norms.values())
  u_sh, u_pr = module.apply(params)  # orthonormal and orthogonal to each other either way
  np.testing.assert_allclose(np.asarray(u_sh.T @ u_pr["b"]), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(u_pr["a"].T @ u_pr["a"]), np.eye(3), atol=1e-5)


def test_pre_norm_exchange_is_the_identity_residual_when_nothing_is_added():
  rng = np.random.default_rng(12)
  q = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  pool = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  pool_mask = jnp.ones((2, 6), bool)
  alpha = jnp.zeros((2, 5), jnp.float32)
  block = tl.GatedCrossAttentionBlock(2, dropout=0.0, norm="pre")
  params = block.init(jax.random.key(0), q, alpha, pool, pool_mask, train=False)
  # With alpha = 0 no message arrives; zeroing the FFN's output layer leaves x + 0 = x, which
  # the post-norm block (LN(x)) does not.
  fc2 = params["params"]["ffn"]["fc2"]
  params["params"]["ffn"]["fc2"] = jax.tree_util.tree_map(jnp.zeros_like, fc2)
  out = block.apply(params, q, alpha, pool, pool_mask, train=False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(q), atol=1e-6)
  post = tl.GatedCrossAttentionBlock(2, dropout=0.0, norm="post")
  out_post = post.apply(params, q, alpha, pool, pool_mask, train=False)
  assert np.abs(np.asarray(out_post) - np.asarray(q)).max() > 0.1
  with pytest.raises(ValueError, match="exchange_norm"):
    tl.GatedCrossAttentionBlock(2, norm="sandwich").init(jax.random.key(0), q, alpha, pool,
                                                            pool_mask, train=False)


def test_zero_init_exchange_starts_as_the_identity_and_then_learns():
  rng = np.random.default_rng(13)
  q = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  pool = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  pool_mask = jnp.ones((2, 6), bool)
  alpha = jnp.ones((2, 5), jnp.float32)  # every token receives a message
  block = tl.GatedCrossAttentionBlock(2, dropout=0.0, norm="pre", output_init="zero")
  params = block.init(jax.random.key(0), q, alpha, pool, pool_mask, train=False)
  out = block.apply(params, q, alpha, pool, pool_mask, train=False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(q), atol=1e-6)
  # The output projections are zero but receive a gradient, so the block does not stay inert.
  grads = jax.grad(lambda p: jnp.sum(block.apply(p, q, alpha, pool, pool_mask,
                                                 train=False)**2))(params)["params"]
  assert float(jnp.abs(grads["attention"]["out"]["kernel"]).max()) > 1e-4
  assert float(jnp.abs(grads["ffn"]["fc2"]["kernel"]).max()) > 1e-4
  # The default init adds a message: the output moves away from the query.
  default = tl.GatedCrossAttentionBlock(2, dropout=0.0, norm="pre")
  out_default = default.apply(default.init(jax.random.key(0), q, alpha, pool, pool_mask,
                                           train=False), q, alpha, pool, pool_mask, train=False)
  assert np.abs(np.asarray(out_default) - np.asarray(q)).max() > 0.1
  with pytest.raises(ValueError, match="exchange_init"):
    tl.GatedCrossAttentionBlock(2, output_init="small").init(jax.random.key(0), q, alpha, pool,
                                                             pool_mask, train=False)


def _reference_gated_attention(params, q, pool, gate):
  """float64 numpy: one query set over a pool whose tokens with gate 0 are no keys and whose
  values are scaled by the gate (the attention sublayer only, before its gate and residual)."""
  p = {k: {n: np.asarray(v, np.float64) for n, v in params[k].items()} for k in params}
  proj = lambda x, name: np.einsum("btd,dhk->bthk", x, p[name]["kernel"]) + p[name]["bias"]
  qh, kh, vh = proj(q, "query"), proj(pool, "key"), proj(pool, "value") * gate[..., None, None]
  logits = np.einsum("bqhk,bthk->bhqt", qh, kh) / np.sqrt(qh.shape[-1])
  logits = np.where((gate > 0)[:, None, None], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bhqt,bthk->bqhk", w, vh)
  return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def test_budget_pool_admits_only_the_budgeted_pool_tokens_weighted_by_alpha():
  rng = np.random.default_rng(14)
  q = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  pool = np.asarray(rng.normal(size=(2, 6, 8)), np.float32)
  pool_mask = jnp.ones((2, 6), bool)
  gate = np.asarray([[1.0, 0.0, 0.5, 0.0, 0.2, 1.0], [0.0, 0.0, 1.0, 0.3, 0.0, 0.0]], np.float32)
  ones = jnp.ones((2, 5), jnp.float32)
  block = tl.GatedCrossAttentionBlock(2, dropout=0.0, norm="pre", output_init="default")
  params = block.init(jax.random.key(0), q, ones, jnp.asarray(pool), pool_mask, jnp.asarray(gate),
                      train=False)
  params["params"]["ffn"]["fc2"] = jax.tree_util.tree_map(jnp.zeros_like,
                                                          params["params"]["ffn"]["fc2"])
  run = lambda x, g: np.asarray(block.apply(params, q, ones, jnp.asarray(x), pool_mask,
                                            None if g is None else jnp.asarray(g), train=False))
  # pre-norm with a zero FFN output: out = q + MHA(LN(q), pool), so out - q is the message.
  norm = params["params"]["norm1"]
  qn = np.asarray(q, np.float64)
  qn = (qn - qn.mean(-1, keepdims=True)) / np.sqrt(qn.var(-1, keepdims=True) + 1e-6)
  qn = qn * np.asarray(norm["scale"]) + np.asarray(norm["bias"])
  expected = _reference_gated_attention(params["params"]["attention"], qn, pool, gate)
  np.testing.assert_allclose(run(pool, gate) - np.asarray(q), expected, atol=1e-5)
  # A pool token outside the budget changes nothing; with the whole pool as keys it does.
  moved = pool.copy()
  moved[:, 1] += 5.0
  np.testing.assert_allclose(run(moved, gate), run(pool, gate), atol=1e-6)
  assert np.abs(run(moved, None) - run(pool, None)).max() > 1e-2
  with pytest.raises(ValueError, match="budget.pool"):
    intra_ced.IntraCED(8, 4, 4, ("a", "b"), budget_pool="some").init(
        jax.random.key(0), {"a": jnp.ones((1, 3, 8)), "b": jnp.ones((1, 3, 8))},
        {"a": jnp.ones((1, 3), bool), "b": jnp.ones((1, 3), bool)})
