"""The field's baselines (issue 14): MulT, MBT, MISA as models and OGM-GE as a training option.

* MISA's losses (CMD, difference, reconstruction) and OGM-GE's coefficients against float64
  numpy written from the papers' formulas; the modulated gradients.
* MulT / MBT: padded tokens (any amount, any values) never change the output; in MBT the
  bottleneck is the only path between modalities.
* Launch errors name the model and the modalities; one real training run per model through
  train_lib; jit and pmap agree on the batch-statistic objectives (MISA, OGM-GE).
"""
from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import clcr_jax
from clcr_jax import baseline_losses
from clcr_jax import checkpointing
from clcr_jax import models
from clcr_jax import modulation
from clcr_jax import optim
from clcr_jax import parallel
from clcr_jax import train_lib
from clcr_jax.models import mbt as mbt_lib
from data_pipelines import pipeline
from data_pipelines import registry
from experiments.configs import synthetic


# ---------------------------------------------------------------------------------------------
# MISA's losses against numpy (float64), from the formulas
# ---------------------------------------------------------------------------------------------
def np_cmd(x, y, k):
  """||E x - E y|| + sum_{j=2..k} ||E (x - E x)^j - E (y - E y)^j|| over rows."""
  mx, my = x.mean(0), y.mean(0)
  out = np.linalg.norm(mx - my)
  for j in range(2, k + 1):
    out += np.linalg.norm(((x - mx)**j).mean(0) - ((y - my)**j).mean(0))
  return out


def np_difference(x, y):
  """mean over entries of (X~^T Y~)^2, X~ = rows of the column-centred X over their L2 norm."""
  def unit(z):
    z = z - z.mean(0)
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-6)
  return np.mean((unit(x).T @ unit(y))**2)


def np_mse(r, o):
  return np.mean((r - o)**2)


@pytest.fixture
def vectors():
  rng = np.random.default_rng(0)
  n, h = 12, 5
  draw = lambda scale: {m: rng.normal(size=(n, h)) * scale + 0.3 for m in ("a", "t", "v")}
  return {"shared": draw(0.5), "private": draw(1.0), "recon": draw(1.0), "orig": draw(0.8)}


@pytest.mark.parametrize("moments", [1, 2, 5])
def test_cmd_difference_reconstruction_match_numpy(vectors, moments):
  valid = np.ones(12, bool)
  valid[[3, 10]] = False  # padding rows of an eval batch: left out of every statistic
  x, y = vectors["shared"]["a"], vectors["private"]["t"]
  f32 = lambda z: jnp.asarray(z, jnp.float32)
  np.testing.assert_allclose(baseline_losses.cmd(f32(x), f32(y), valid, moments),
                             np_cmd(x[valid], y[valid], moments), rtol=2e-5)
  np.testing.assert_allclose(baseline_losses.difference(f32(x), f32(y), valid),
                             np_difference(x[valid], y[valid]), rtol=2e-5)
  np.testing.assert_allclose(baseline_losses.reconstruction(f32(x), f32(y), valid),
                             np_mse(x[valid], y[valid]), rtol=2e-6)


def test_misa_terms_match_the_reference_sums(vectors):
  valid = np.ones(12, bool)
  terms = baseline_losses.misa_terms(jax.tree.map(jnp.asarray, vectors), valid, 5)
  mods = ("a", "t", "v")
  pairs = list(itertools.combinations(mods, 2))
  s, p = vectors["shared"], vectors["private"]
  sim = np.mean([np_cmd(s[a], s[b], 5) for a, b in pairs])
  diff = (sum(np_difference(p[m], s[m]) for m in mods) +
          sum(np_difference(p[a], p[b]) for a, b in pairs))
  recon = np.mean([np_mse(vectors["recon"][m], vectors["orig"][m]) for m in mods])
  np.testing.assert_allclose(terms["misa_sim"], sim, rtol=2e-5)
  np.testing.assert_allclose(terms["misa_diff"], diff, rtol=2e-5)
  np.testing.assert_allclose(terms["misa_recon"], recon, rtol=2e-6)


def test_cmd_gradient_is_finite_when_moments_match():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 3)), jnp.float32)
  g = jax.grad(lambda z: baseline_losses.cmd(z, z, np.ones(6, bool), 5))(x)
  assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------------------------
# OGM-GE
# ---------------------------------------------------------------------------------------------
def np_coefficients(out_a, out_v, label, alpha):
  """Eq. 10 of the paper with the reference's ratio of summed softmax scores."""
  softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(
      z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  score = lambda z: softmax(z)[np.arange(len(label)), label].sum()
  rho = score(out_v) / score(out_a)
  if rho > 1:
    return 1.0, 1 - np.tanh(alpha * rho), rho
  return 1 - np.tanh(alpha / rho), 1.0, rho


@pytest.mark.parametrize("stronger", ["audio", "visual"])
@pytest.mark.parametrize("alpha", [0.1, 0.8])
def test_ogm_ge_coefficients_match_numpy(stronger, alpha):
  rng = np.random.default_rng(3)
  label = rng.integers(0, 4, 16)
  sharp = np.eye(4)[label] * 3.0
  logits = {m: rng.normal(size=(16, 4)) + (sharp if m == stronger else 0.0)
            for m in ("audio", "visual")}
  coeff, rho = modulation.coefficients({m: jnp.asarray(v, jnp.float32)
                                        for m, v in logits.items()}, label,
                                       np.ones(16, bool), alpha)
  k_a, k_v, rho_np = np_coefficients(logits["audio"], logits["visual"], label, alpha)
  np.testing.assert_allclose(rho, rho_np, rtol=1e-5)
  np.testing.assert_allclose([coeff["audio"], coeff["visual"]], [k_a, k_v], rtol=1e-5)
  weaker = "visual" if stronger == "audio" else "audio"
  assert coeff[weaker] == 1.0 and coeff[stronger] < 1.0  # the dominant modality slows down


def _grads():
  rng = np.random.default_rng(4)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  backbone = lambda: {"conv": {"kernel": leaf(3, 3, 16, 32)}, "bn": {"scale": leaf(32)},
                      "tcn": {"kernel": leaf(3, 8, 8)}}
  return {"semantic_hierarchy": {"backbone_audio": backbone(), "backbone_visual": backbone(),
                                 "hierarchy": {"proj": {"kernel": leaf(8, 8)}}},
          "head": {"linear": {"kernel": leaf(16, 4)}}}


def test_modulation_scales_only_the_encoders_conv_kernels():
  grads = _grads()
  coeff = {"audio": jnp.float32(0.7), "visual": jnp.float32(1.0)}
  key = jax.random.key(0)
  ogm = modulation.modulate(grads, coeff, key, "ogm", jnp.bool_(True))
  sh, out = grads["semantic_hierarchy"], ogm["semantic_hierarchy"]
  np.testing.assert_allclose(out["backbone_audio"]["conv"]["kernel"],
                             0.7 * sh["backbone_audio"]["conv"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(out["backbone_audio"]["tcn"]["kernel"],
                             0.7 * sh["backbone_audio"]["tcn"]["kernel"], rtol=1e-6)
  for path in (("backbone_audio", "bn", "scale"), ("hierarchy", "proj", "kernel"),
               ("backbone_visual", "conv", "kernel")):
    a, b = sh, out
    for p in path:
      a, b = a[p], b[p]
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ogm["head"]["linear"]["kernel"], grads["head"]["linear"]["kernel"])
  # OGM-GE adds N(0, std(g)^2) to the modulated kernels, with a key common to all devices.
  ge = modulation.modulate(grads, coeff, key, "ogm_ge", jnp.bool_(True))
  g = sh["backbone_visual"]["conv"]["kernel"]
  noise = ge["semantic_hierarchy"]["backbone_visual"]["conv"]["kernel"] - g
  assert float(jnp.std(noise)) == pytest.approx(float(jnp.std(g, ddof=1)), rel=0.05)
  assert abs(float(jnp.mean(noise))) < 0.05
  np.testing.assert_array_equal(ge["semantic_hierarchy"]["backbone_audio"]["bn"]["scale"],
                                sh["backbone_audio"]["bn"]["scale"])
  # Outside [starts, ends]: the gradients are untouched.
  off = modulation.modulate(grads, coeff, key, "ogm_ge", jnp.bool_(False))
  jax.tree.map(np.testing.assert_array_equal, off, grads)


def test_linear_late_fusion_splits_its_logits_by_modality():
  cfg = _model_config("late_fusion", fusion_head="linear")
  inputs, masks = _inputs(np.random.default_rng(5), 8, 7)
  model = models.build_model(cfg)
  variables = model.init(jax.random.key(0), inputs, masks)
  prediction, aux = model.apply(variables, inputs, masks)
  total = sum(aux["unimodal_logits"].values())
  np.testing.assert_allclose(total, prediction, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# MulT and MBT: padding never changes the output; MBT's bottleneck is the only path
# ---------------------------------------------------------------------------------------------
def _model_config(name, **overrides):
  cfg = models.default_config()
  cfg.name = name
  cfg.task, cfg.num_classes = "classification", 3
  cfg.d, cfg.num_heads, cfg.dropout = 16, 2, 0.0
  cfg.modalities = ml_collections.ConfigDict({"audio": models.modality("sequence"),
                                              "visual": models.modality("sequence")})
  cfg.mult.d, cfg.mult.num_heads, cfg.mult.layers = 8, 2, 2
  cfg.mbt.num_layers, cfg.mbt.fusion_layer = 3, 1
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def _inputs(rng, t_audio, t_visual, lengths=((5, 3), (4, 6)), batch=2):
  """Sequences with the given valid lengths; everything past them is random junk."""
  inputs = {"audio": rng.normal(size=(batch, t_audio, 5)).astype(np.float32),
            "visual": rng.normal(size=(batch, t_visual, 7)).astype(np.float32)}
  masks = {m: np.arange(x.shape[1])[None] < np.asarray(n)[:, None]
           for (m, x), n in zip(inputs.items(), lengths)}
  return inputs, masks


@pytest.mark.parametrize("name", ["mult", "mbt"])
def test_padded_tokens_never_change_the_output(name):
  rng = np.random.default_rng(6)
  long_inputs, long_masks = _inputs(rng, 9, 11)
  model = models.build_model(_model_config(name))
  variables = model.init(jax.random.key(0), long_inputs, long_masks)
  reference, _ = model.apply(variables, long_inputs, long_masks)
  # Other junk in the padding.
  junk = {m: np.where(long_masks[m][..., None], x, rng.normal(size=x.shape) * 50)
          for m, x in long_inputs.items()}
  again, _ = model.apply(variables, junk, long_masks)
  np.testing.assert_allclose(again, reference, rtol=1e-5, atol=1e-6)
  # Less padding: the same valid tokens in shorter arrays.
  short = {"audio": long_inputs["audio"][:, :6], "visual": long_inputs["visual"][:, :7]}
  short_masks = {"audio": long_masks["audio"][:, :6], "visual": long_masks["visual"][:, :7]}
  cropped, _ = model.apply(variables, short, short_masks)
  np.testing.assert_allclose(cropped, reference, rtol=1e-5, atol=1e-6)


def _bottleneck_encoder(**mbt_overrides):
  mc = mbt_lib.default_config()
  mc.num_layers, mc.fusion_layer, mc.droplayer_rate = 4, 2, 0.0
  mc.update(mbt_overrides)
  return mbt_lib.BottleneckEncoder(ml_collections.FrozenConfigDict(mc), num_heads=2, mlp_dim=16)


def _tokens(seed=7):
  rng = np.random.default_rng(seed)
  tokens = {"audio": jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32),
            "visual": jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)}
  masks = {"audio": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool),
           "visual": np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)}
  return tokens, masks


def test_mbt_bottleneck_is_the_only_path_between_modalities():
  tokens, masks = _tokens()
  encoder = _bottleneck_encoder()
  variables = encoder.init(jax.random.key(0), tokens, masks, train=False)

  def audio_state(visual, layer=None):
    x = dict(tokens, visual=visual)
    out, state = encoder.apply(variables, x, masks, train=False, capture_intermediates=True,
                               mutable=["intermediates"])
    if layer is None:
      return jnp.sum(out["audio"])
    return jnp.sum(state["intermediates"][f"layer{layer}_audio"]["__call__"][0])

  # Up to and including the fusion layer, audio's blocks never see visual (the bottleneck they
  # read there is still its initial value); after it, only through the bottleneck.
  for layer in range(3):
    grad = jax.grad(audio_state)(tokens["visual"], layer)
    assert np.all(np.asarray(grad) == 0.0), layer
  assert np.any(np.asarray(jax.grad(audio_state)(tokens["visual"])) != 0.0)

  # Without bottleneck tokens, or with the fusion layer at the top, no path is left at all.
  for overrides in ({"n_bottlenecks": 0}, {"fusion_layer": 4}):
    enc = _bottleneck_encoder(**overrides)
    v = enc.init(jax.random.key(0), tokens, masks, train=False)
    grad = jax.grad(lambda vis: jnp.sum(enc.apply(v, dict(tokens, visual=vis), masks,
                                                  train=False)["audio"]))(tokens["visual"])
    assert np.all(np.asarray(grad) == 0.0), overrides


# ---------------------------------------------------------------------------------------------
# Launch errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mult", "mbt", "misa"])
def test_baselines_refuse_what_they_do_not_model(name):
  one = _model_config(name)
  one.modalities = ml_collections.ConfigDict({"audio": models.modality("sequence")})
  with pytest.raises(ValueError, match=rf"model '{name}'.*\['audio'\]"):
    models.build_model(one)
  segments = _model_config(name, task="segment_classification", num_segments=2)
  with pytest.raises(ValueError, match=rf"model '{name}'.*segment_classification.*visual"):
    models.build_model(segments)


def test_modulation_launch_errors():
  config = synthetic.get_config("tiny")
  config.train.modulation = "ogm_ge"
  config.model = _model_config("flat_attention")
  with pytest.raises(ValueError, match="late_fusion.*fusion_head='linear'.*flat_attention"):
    modulation.check_config(config)
  config.model = _model_config("late_fusion", fusion_head="linear")
  config.model.modalities.text = models.modality("sequence")
  with pytest.raises(ValueError, match=r"two modalities.*\['audio', 'text', 'visual'\]"):
    modulation.check_config(config)
  config.train.modulation = "gradblend"
  with pytest.raises(ValueError, match="train.modulation must be one of"):
    modulation.check_config(config)


# ---------------------------------------------------------------------------------------------
# Through train_lib: a real run per model, and jit == pmap for the batch-statistic objectives
# ---------------------------------------------------------------------------------------------
TWO_MODALITIES = ("audio", "vision")


def tiny_config(name: str) -> ml_collections.ConfigDict:
  config = synthetic.get_config("tiny")
  config.data.backend = "numpy"
  config.model.name = name
  config.train.max_steps = 2
  config.model.mult.d, config.model.mult.num_heads, config.model.mult.layers = 8, 2, 1
  config.model.mbt.num_layers, config.model.mbt.fusion_layer = 2, 1
  config.model.misa.hidden_size, config.model.misa.fusion_ffn = 16, 32
  if name == "ogm_ge":
    config.model.name, config.model.fusion_head = "late_fusion", "linear"
    config.train.modulation = "ogm_ge"
    config.model.modalities = ml_collections.ConfigDict(
        {m: models.modality("sequence") for m in TWO_MODALITIES})
  return config


@pytest.mark.parametrize("name", ["mult", "mbt", "misa", "ogm_ge"])
def test_one_training_run_per_baseline(tmp_path, name):
  results = clcr_jax.train_and_evaluate(tiny_config(name), str(tmp_path))
  assert results["model"] == ("late_fusion" if name == "ogm_ge" else name)
  assert 0.0 <= results["test"]["accuracy"] <= 1.0
  with open(tmp_path / "metrics.jsonl") as f:
    train_rows = [r for r in map(json.loads, f) if "loss/total" in r]
  assert train_rows and all(np.isfinite(r["loss/total"]) for r in train_rows)
  if name == "misa":
    assert {"loss/misa_sim", "loss/misa_diff", "loss/misa_recon"} <= set(train_rows[-1])
  if name == "ogm_ge":
    # Logged as means over the logged steps: each step damps one of the two.
    coeffs = [train_rows[-1][f"modulation/coeff_{m}"] for m in TWO_MODALITIES]
    assert min(coeffs) < 1.0 and max(coeffs) <= 1.0
  assert checkpointing.has_checkpoint(str(tmp_path), "latest")
  if name in ("misa", "ogm_ge"):  # resume from the orbax checkpoint and train one step more
    longer = tiny_config(name)
    longer.train.max_steps = 3
    resumed = clcr_jax.train_and_evaluate(longer, str(tmp_path))
    assert resumed["final_step"] == 3
    with open(tmp_path / "metrics.jsonl") as f:
      steps = [r["step"] for r in map(json.loads, f) if "loss/total" in r]
    assert steps[-1] == 3 and 3 not in steps[:-1]


def _one_step(config, mode: str):
  reader = registry.get_reader(config.data)
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = train_lib.resolve_model_config(config.model, reader)
  config.model.dropout, config.model.misa.dropout, config.model.misa.fusion_dropout = 0.0, 0, 0
  config.train.max_steps = 1
  dp = parallel.DataParallel(mode)
  model = models.build_model(config.model, axis_name=dp.model_axis_name)
  tx = optim.make_optimizer(config.train, 4)
  step = train_lib.make_train_step(model, tx, optim.make_schedule(config.train, 4), config, 4)
  sample = reader.load_examples("train", np.arange(2), train=False)
  variables = models.build_model(config.model).init(jax.random.key(0), sample["inputs"],
                                                    sample["masks"], train=False)
  state = {"params": variables["params"], "batch_stats": {},
           "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}
  batch = next(pipeline.train_batches(reader, "train", global_batch_size=16, seed=0,
                                      start_step=0, num_steps=1, backend="numpy"))
  new_state, metrics = dp.compile_train(step)(dp.put_state(state), dp.put_batch(batch),
                                              jax.random.key(1))
  params = jax.tree.map(np.asarray, dp.get_state(new_state)["params"])
  return {k: float(v) for k, v in metrics.items()}, params


@pytest.mark.parametrize("name", ["misa", "ogm_ge"])
def test_jit_and_pmap_agree_on_batch_statistic_objectives(name):
  assert jax.device_count() == 8
  config = tiny_config(name)
  # SGD: Adam's first step is ~lr * sign(g), which turns rounding-level differences of near-zero
  # gradients into full-size parameter differences (see test_train.py).
  config.train.batch_size, config.train.optimizer, config.train.schedule = 16, "sgd", "constant"
  if name == "ogm_ge":
    config.train.modulation = "ogm"  # the noise is the same on all devices, but keep it exact
  jit_m, jit_p = _one_step(config, "jit")
  pmap_m, pmap_p = _one_step(config, "pmap")
  keys = [k for k in jit_m if k.startswith(("loss/", "modulation/"))] + ["grad_norm"]
  for key in keys:
    assert jit_m[key] == pytest.approx(pmap_m[key], rel=2e-5, abs=1e-7), key
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), jit_p,
               pmap_p)
