"""The paper's Table 3 ablations and the reference fusions train, change the structure they claim
to change, and compile once; the CLCR objective (clcr_jax.losses) against float64 references.

Every variant trains 25 adamw steps on one small batch of two padded 'sequence' modalities whose
label is learnable (the sign of the audio input's mean), with `losses.total_loss` as the
objective. The regulariser weights enter the step as traced values, so "w/o regularisation"
(all weights 0) reuses the full model's compiled step.

Compile time dominates on XLA:CPU, so: dropout is 0 (it is not what the ablations vary, and it
adds random-bit generators to every program); the full model starts from its own `init`, the
other variants from model_fixtures.random_variables (an `init` program costs about half as much
to compile as the training step); adamw runs on the flattened parameter vector.
"""
from __future__ import annotations

import itertools
import types

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clcr_jax import losses
from clcr_jax import models
from clcr_jax.models import intra_ced
import model_fixtures as mf

BATCH = 16
STEPS = 25
LAYOUT = mf.Layout({"audio": mf.Modality("sequence", "tcn", (6, 5)),
                    "video": mf.Modality("sequence", "tcn", (4, 7))}, "classification", 2)
MODS = ("audio", "video")
FULL_WEIGHTS = {"intra": 0.1, "inter": 0.1, "budget": 0.01}
NO_REG_WEIGHTS = {"intra": 0.0, "inter": 0.0, "budget": 0.0}

VARIANTS = {
    "full": {},
    "no_hierarchy": {"ablation__no_hierarchy": True},
    "no_intraced": {"ablation__no_intraced": True},
    "no_intercad": {"ablation__no_intercad": True},
    "full_mix": {"ablation__full_mix": True},
    "dense_budget": {"ablation__dense_budget": True},
    "late_fusion": {"name": "late_fusion"},
    "flat_attention": {"name": "flat_attention"},
}


def _train_batch(batch_size: int = BATCH, seed: int = 0):
  """Padded random inputs, video missing in row 3; label 1 where the audio input's mean over
  valid steps is positive."""
  batch = mf.make_batch(LAYOUT, batch_size, seed)
  batch["masks"]["video"][3] = False
  mask = batch["masks"]["audio"]
  mean = (batch["inputs"]["audio"].mean(-1) * mask).sum(-1) / mask.sum(-1)
  batch["label"] = (mean > 0).astype(np.int32)
  return batch


def _loss_config(weights):
  """total_loss's config with traced weights (the static fields are the defaults)."""
  defaults = losses.default_config()
  return types.SimpleNamespace(
      lambda_intra=weights["intra"], lambda_inter=weights["inter"],
      lambda_budget=weights["budget"], budget_target=defaults.budget_target,
      regression=defaults.regression, mix_pairs=tuple(defaults.mix_pairs),
      whiten_eps=defaults.whiten_eps, reg_reduction=defaults.reg_reduction,
      reg_debias=defaults.reg_debias)


class Trainer:
  """A model, its initial parameters and one jitted adamw step over the flattened parameters.

  `traces` counts how often JAX traced the step (a Python side effect runs only when tracing).
  """

  def __init__(self, variant: str):
    self.config = mf.model_config(LAYOUT, dropout=0.0, **VARIANTS[variant])
    self.model = models.build_model(self.config)
    batch = _train_batch()
    if variant == "full":
      self.params = jax.jit(self.model.init)(jax.random.key(0), batch["inputs"],
                                             batch["masks"])["params"]
    else:
      self.params = mf.random_variables(self.model, batch["inputs"], batch["masks"],
                                        seed=len(variant))["params"]
    flat, self.unravel = ravel_pytree(self.params)
    self.tx = optax.adamw(3e-3)
    self.traces = 0
    self.step = jax.jit(self._step)
    self.flat0 = flat

  def _step(self, flat, opt_state, batch, key, weights):
    self.traces += 1

    def loss_fn(flat):
      prediction, aux = self.model.apply({"params": self.unravel(flat)}, batch["inputs"],
                                         batch["masks"], train=True, rngs={"dropout": key})
      # (dropout is 0, but the key stays an input so that new keys must not retrace)
      total, terms = losses.total_loss(prediction, aux, batch, _loss_config(weights),
                                       self.config.task)
      return total, (terms, prediction, aux)

    (_, (terms, prediction, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(flat)
    updates, opt_state = self.tx.update(grads, opt_state, flat)
    return flat + updates, opt_state, terms, prediction, aux

  def train(self, weights, steps: int = STEPS, batch=None):
    """Runs `steps` steps from the initial parameters: (final flat params, terms per step as
    numpy arrays, last prediction, last aux)."""
    batch = _train_batch() if batch is None else batch
    weights = {k: jnp.float32(v) for k, v in weights.items()}
    flat, opt_state = self.flat0, self.tx.init(self.flat0)
    history = []
    for i in range(steps):
      flat, opt_state, terms, prediction, aux = self.step(flat, opt_state, batch,
                                                          jax.random.key(i), weights)
      history.append(jax.tree.map(np.asarray, terms))
    stacked = {k: np.array([h[k] for h in history]) for k in history[0]}
    return flat, stacked, np.asarray(prediction), jax.tree.map(
        lambda x: None if x is None else np.asarray(x), aux, is_leaf=lambda x: x is None)


_TRAINERS: dict[str, Trainer] = {}


def trainer(variant: str) -> Trainer:
  if variant not in _TRAINERS:
    _TRAINERS[variant] = Trainer(variant)
  return _TRAINERS[variant]


def _assert_falls(curve, name):
  assert np.all(np.isfinite(curve)), (name, curve)
  first, last = curve[:3].mean(), curve[-3:].mean()
  assert last < first, f"{name}: loss did not fall ({first:.4f} -> {last:.4f}): {curve}"


def _present(batch):
  return np.stack([batch["masks"][m].any(-1) for m in MODS], -1)


# ------------------------------------------------------------------------------------------------
# Training and structure of every variant.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"full"}))
def test_variant_trains_and_has_its_structure(variant):
  """An ablation or baseline trains (total and task loss fall) and has its structure."""
  check_variant(variant, *trainer(variant).train(FULL_WEIGHTS))


def check_variant(variant, flat, terms, prediction, aux):
  """Falling losses and the structure the variant claims (module docstring)."""
  t = trainer(variant)
  batch = _train_batch()
  _assert_falls(terms["total"], variant)
  _assert_falls(terms["task"], variant + " (task)")
  assert prediction.shape == (BATCH, 2)
  masks = batch["masks"]
  present = _present(batch)

  if variant in ("late_fusion", "flat_attention"):
    assert sorted(aux) == ["beta"]
    np.testing.assert_allclose(aux["beta"], present / present.sum(-1, keepdims=True))
    for name in ("intra", "pr", "sp", "mix", "budget"):
      assert np.all(terms[name] == 0), name
    np.testing.assert_allclose(terms["total"], terms["task"], rtol=1e-6)
    return

  num_levels = 1 if variant in ("no_hierarchy", "full_mix") else 3
  assert len(aux["alpha"]) == len(aux["shared"]) == num_levels
  assert aux["omega"].shape == (BATCH, num_levels)
  assert aux["budget_ratio"].shape == (num_levels,)
  for l in range(num_levels):
    for m in MODS:
      t_m = masks[m].shape[1]
      expected_mask = np.tile(masks[m], 3) if variant == "full_mix" else masks[m]
      assert aux["alpha"][l][m].shape == expected_mask.shape
      np.testing.assert_array_equal(aux["token_mask"][l][m], expected_mask)
      assert np.all(aux["alpha"][l][m][~expected_mask] == 0)
      np.testing.assert_array_less(aux["alpha"][l][m].sum(-1), aux["budget"][l][m] + 1e-3)
      if variant in ("dense_budget", "no_intraced"):  # every valid token, the budget is all
        np.testing.assert_array_equal(aux["alpha"][l][m], expected_mask.astype(np.float32))
        np.testing.assert_array_equal(aux["budget"][l][m], expected_mask.sum(-1))
        np.testing.assert_array_equal(aux["budget_ratio"][l], 1.0)
      elif variant == "full_mix":
        assert aux["alpha"][l][m].shape[1] == 3 * t_m

  if variant in ("no_hierarchy", "full_mix"):
    np.testing.assert_array_equal(aux["omega"], 1.0)
    for name in ("pr", "sp", "mix"):  # no pair of levels
      assert np.all(terms[name] == 0), name
  if variant == "no_intraced":
    assert aux["private"] is None
    np.testing.assert_array_equal(aux["eta"], 0.0)
    np.testing.assert_array_equal(aux["budget_ratio"], 1.0)
    for name in ("intra", "pr", "sp"):
      assert np.all(terms[name] == 0), name
  else:
    assert len(aux["private"]) == num_levels
    # A real term (the debiased estimate may sit slightly below 0 for nearly independent pairs).
    assert np.all(np.isfinite(terms["intra"])) and np.all(terms["intra"] != 0)
  if variant == "no_intercad":
    np.testing.assert_array_equal(aux["omega"], np.float32(1 / 3))
    np.testing.assert_allclose(aux["beta"], present / present.sum(-1, keepdims=True))
    np.testing.assert_array_equal(aux["eta"], present.astype(np.float32))
  if variant in ("full", "dense_budget"):
    # Sample-adaptive level and modality weights.
    assert np.ptp(aux["omega"][:, 0]) > 0 and np.ptp(aux["beta"][:, 0]) > 0
    eta = aux["eta"]
    assert np.all(eta[present] > 0) and np.all(eta[present] < 1) and np.all(eta[~present] == 0)
  if variant != "no_intraced":
    assert np.all(aux["beta"][~present] == 0)
  if variant == "full":
    _check_trained_bases(t, flat)


def _check_trained_bases(t: Trainer, flat):
  """After the adamw updates the raw basis parameters moved, the bases stayed orthonormal."""
  start, end = (t.unravel(f)["intra_ced"]["bases"] for f in (t.flat0, flat))
  d = t.config.d
  bases = intra_ced.StiefelBases(d, d // 2, d // 2, MODS)
  moved = max(float(np.abs(np.asarray(end[k]) - np.asarray(start[k])).max()) for k in start)
  assert moved > 1e-3
  for level in range(3):
    u_sh, u_pr = bases.apply({"params": jax.tree.map(lambda x: x[level], end)})
    u_sh = np.asarray(u_sh, np.float64)
    np.testing.assert_allclose(u_sh.T @ u_sh, np.eye(d // 2), atol=1e-5)
    for m in MODS:
      u = np.asarray(u_pr[m], np.float64)
      np.testing.assert_allclose(u.T @ u, np.eye(d // 2), atol=1e-5)
      np.testing.assert_allclose(u_sh.T @ u, 0.0, atol=1e-5)


def test_full_model_trains_with_and_without_regularisation_on_one_compiled_step():
  """The full model (from its own init):

  * trains with the default regulariser weights; sample-adaptive omega / beta / eta; the Stiefel
    bases moved and stayed orthonormal;
  * "w/o regularisation" (all weights 0): the total is the task loss and it falls; the
    regularisers are still computed (not weighted);
  * one trace for all of it, and for new values of the same shapes (batch, parameters, weights,
    key); a new batch size traces again (so the counter does count traces).
  """
  t = trainer("full")
  check_variant("full", *t.train(FULL_WEIGHTS))

  _, terms, _, _ = t.train(NO_REG_WEIGHTS)
  np.testing.assert_array_equal(terms["total"], terms["task"])
  assert all(np.all(np.isfinite(terms[k])) and np.all(terms[k] != 0) for k in ("intra", "sp"))
  _assert_falls(terms["total"], "no regularisation")
  assert t.traces == 1

  weights = {k: jnp.float32(v) for k, v in FULL_WEIGHTS.items()}
  flat, opt_state = t.flat0 + 0.01, t.tx.init(t.flat0)
  for seed in range(1, 4):
    new_weights = {k: jnp.float32(seed * 0.05) for k in weights}
    flat, opt_state, terms, _, _ = t.step(flat, opt_state, _train_batch(seed=seed),
                                          jax.random.key(seed), new_weights)
    assert np.isfinite(float(terms["total"]))
  assert t.traces == 1
  t.step.trace(flat, opt_state, _train_batch(BATCH // 2), jax.random.key(0), weights)
  assert t.traces == 2


# ------------------------------------------------------------------------------------------------
# Losses against float64 numpy references.
# ------------------------------------------------------------------------------------------------


def ref_r(x, y, valid, eps=1e-5):
  """Whitened cross-correlation (docs/model.md, Losses) over the valid rows, float64."""
  x, y = np.asarray(x, np.float64)[valid], np.asarray(y, np.float64)[valid]
  xs = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
  ys = (y - y.mean(0)) / np.sqrt(y.var(0) + eps)
  c = xs.T @ ys / len(x)
  return (c**2).sum() / x.shape[1]


_r = jax.jit(losses.cross_correlation)


def test_cross_correlation_matches_reference_and_ignores_padded_rows():
  rng = np.random.default_rng(0)
  n, d = 40, 6
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (0.5 * x[:, ::-1] + rng.normal(size=(n, d))).astype(np.float32)
  valid = rng.random(n) < 0.7
  x[~valid], y[~valid] = 1e4, -3e3  # padded rows hold garbage
  np.testing.assert_allclose(_r(x, y, valid), ref_r(x, y, valid), rtol=1e-4)
  np.testing.assert_allclose(_r(x, y, valid), _r(x[valid], y[valid], np.ones(valid.sum(), bool)),
                             rtol=1e-5)


def test_cross_correlation_large_for_copies_small_for_independent():
  rng = np.random.default_rng(1)
  n, d = 4096, 8
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, d)).astype(np.float32)
  ones = np.ones(n, bool)
  assert float(_r(x, x, ones)) > 0.99                    # the diagonal alone gives ~1
  assert float(_r(x, 3 * x + 1, ones)) > 0.99             # invariant to scale and shift
  assert float(_r(x, y, ones)) < 5 * d / n                 # E[R] ~ d / n for independent data
  np.testing.assert_allclose(_r(x, y, ones), ref_r(x, y, ones), rtol=1e-3)


def _synthetic_aux(rng, num_levels=3, mods=("a", "b", "c"), n=12, d=5):
  shared = [{m: rng.normal(size=(n, d)).astype(np.float32) for m in mods}
            for _ in range(num_levels)]
  # Private streams correlated with shared ones and with each other, so every R term is sizeable.
  private = [{m: (0.7 * shared[l][m] + 0.5 * shared[(l + 1) % num_levels][mods[0]] +
                  rng.normal(size=(n, d))).astype(np.float32) for m in mods}
             for l in range(num_levels)]
  omega = rng.dirichlet(np.ones(num_levels), size=n).astype(np.float32)
  ratio = rng.uniform(0.3, 0.9, size=num_levels).astype(np.float32)
  return {"shared": shared, "private": private, "omega": omega, "budget_ratio": ratio}


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


_regularisers = jax.jit(losses.regularisers, static_argnames=("mix_pairs", "eps"))


def test_regularisers_match_reference():
  rng = np.random.default_rng(2)
  aux = _synthetic_aux(rng)
  n = aux["omega"].shape[0]
  valid = np.ones(n, bool)
  valid[[3, 7]] = False
  for per_level in (aux["shared"], aux["private"]):
    for level in per_level:
      for x in level.values():
        x[~valid] = 50.0
  terms = jax.tree.map(float, _regularisers(aux, valid, mix_pairs=((0, 2),)))
  levels, mods = range(3), ("a", "b", "c")
  s, p = aux["shared"], aux["private"]
  intra = sum(ref_r(p[l][a], p[l][b], valid) for l in levels
              for a, b in itertools.combinations(mods, 2))
  intra += sum(ref_r(p[l][m], s[l][m], valid) for l in levels for m in mods)
  pr = sum(ref_r(p[l][m], p[k][m], valid) for m in mods
           for l, k in itertools.combinations(levels, 2))
  sp = sum(ref_r(s[l][m], p[k][m], valid) for m in mods for l in levels for k in levels if l != k)
  mix = np.mean(aux["omega"][valid, 0].astype(np.float64) * aux["omega"][valid, 2])
  np.testing.assert_allclose(terms["intra"], intra, rtol=1e-4)
  np.testing.assert_allclose(terms["pr"], pr, rtol=1e-4)
  np.testing.assert_allclose(terms["sp"], sp, rtol=1e-4)
  np.testing.assert_allclose(terms["mix"], mix, rtol=1e-5)
  # Other "incompatible" level pairs are configurable.
  terms2 = _regularisers(aux, valid, mix_pairs=((0, 1), (1, 2)))
  np.testing.assert_allclose(
      float(terms2["mix"]),
      np.mean((aux["omega"][:, 0] * aux["omega"][:, 1] + aux["omega"][:, 1] * aux["omega"][:, 2])
              [valid]), rtol=1e-5)
  # Baselines carry no summaries: every term is 0.
  zero = _regularisers({"beta": np.ones((n, 2), np.float32)}, valid, mix_pairs=((0, 2),))
  assert all(float(v) == 0 for v in zero.values())


def test_total_loss_combines_the_terms():
  rng = np.random.default_rng(3)
  aux = _synthetic_aux(rng)
  n = aux["omega"].shape[0]
  logits = rng.normal(size=(n, 4)).astype(np.float32)
  label = rng.integers(0, 4, size=n)
  valid = np.arange(n) < n - 2
  logits[~valid] = 1e4  # padded rows must not count
  cfg = losses.default_config()
  cfg.lambda_intra, cfg.lambda_inter, cfg.lambda_budget = 0.3, 0.2, 0.5
  total, terms = losses.total_loss(jnp.asarray(logits), aux,
                                   {"label": label, "valid": valid}, cfg, "classification")
  task = -np.mean(_log_softmax(logits)[np.arange(n), label][valid])
  budget = np.sum((aux["budget_ratio"].astype(np.float64) - cfg.budget_target)**2)
  np.testing.assert_allclose(float(terms["task"]), task, rtol=1e-5)
  np.testing.assert_allclose(float(terms["budget"]), budget, rtol=1e-5)
  np.testing.assert_allclose(float(terms["inter"]),
                             float(terms["pr"] + terms["sp"] + terms["mix"]), rtol=1e-6)
  expected = (task + 0.3 * float(terms["intra"]) + 0.2 * float(terms["inter"]) + 0.5 * budget)
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  np.testing.assert_allclose(float(terms["total"]), float(total))


@pytest.mark.parametrize("task", ["regression", "segment_classification"])
def test_task_loss_other_tasks(task):
  rng = np.random.default_rng(4)
  n = 6
  valid = np.array([True, True, False, True, True, False])
  if task == "regression":
    pred = rng.normal(size=n).astype(np.float32)
    label = rng.uniform(-3, 3, size=n).astype(np.float32)
    pred[~valid] = 1e6
    np.testing.assert_allclose(float(losses.task_loss(pred, label, valid, task, "l1")),
                               np.mean(np.abs(pred - label)[valid]), rtol=1e-5)
    np.testing.assert_allclose(float(losses.task_loss(pred, label, valid, task, "mse")),
                               np.mean(((pred - label)**2)[valid]), rtol=1e-5)
    with pytest.raises(ValueError, match="regression"):
      losses.task_loss(pred, label, valid, task, "huber")
  else:
    pred = rng.normal(size=(n, 10, 29)).astype(np.float32)
    label = rng.integers(0, 29, size=(n, 10))
    nll = -np.take_along_axis(_log_softmax(pred), label[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(losses.task_loss(pred, label, valid, task)),
                               nll.mean(-1)[valid].mean(), rtol=1e-5)
