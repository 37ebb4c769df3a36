"""Tests of the CLCR forward pass: the design.md contract of `(prediction, aux)` on the input
layouts of the six benchmarks, padding and missing modalities, BatchNorm modes, bfloat16, and
the no-TensorFlow rule.

Each layout compiles one program (`init_with_output`: initialise and run in evaluation mode);
the tests of one layout go through that program (module-scoped cache).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clcr_jax import models
from clcr_jax.models import backbones
import model_fixtures as mf

BATCH = 3
NUM_LEVELS = 3


@functools.lru_cache(maxsize=None)
def _layout_program(name: str, dtype: str = "float32"):
  """(model, jitted init_with_output) of a layout; cached for the whole module."""
  model = models.build_model(mf.model_config(mf.LAYOUTS[name], dtype=dtype))
  return model, mf.init_with_output_fn(model)


def _forward(name: str, batch, dtype: str = "float32", seed: int = 0):
  _, run = _layout_program(name, dtype)
  (prediction, aux), variables = run(jax.random.key(seed), batch["inputs"], batch["masks"])
  return np.asarray(prediction), jax.tree.map(np.asarray, aux), variables


def _expected_token_masks(layout: mf.Layout, masks) -> dict[str, list[np.ndarray]]:
  """Per modality, the mask of every level, derived from the input mask independently."""
  out = {}
  for m, mod in layout.modalities.items():
    lengths = mf.level_lengths(mod, layout.spatial_grid)
    if mod.backbone == "tcn":
      out[m] = [masks[m]] * 3
    elif mod.kind == "video":
      out[m] = [np.repeat(masks[m], layout.spatial_grid**2, axis=1)] * 3
    else:  # ResNet over a spectrogram: a pooled time step is real if it covers a real step
      t = masks[m].shape[1]
      out[m] = []
      for n in lengths:
        cover = [slice((j * t) // n, -(-((j + 1) * t) // n)) for j in range(n)]
        out[m].append(np.stack([masks[m][:, c].any(-1) for c in cover], -1))
  return out


def check_contract(layout: mf.Layout, batch, prediction, aux, num_levels: int = NUM_LEVELS):
  """Asserts the design.md / clcr.py contract of (prediction, aux) for one batch."""
  mods = sorted(layout.modalities)  # ConfigDict orders modalities by name
  b = batch["label"].shape[0]
  expected_pred = {"regression": (b,), "classification": (b, layout.num_classes),
                   "segment_classification": (b, layout.num_segments, layout.num_classes)}
  assert prediction.shape == expected_pred[layout.task]
  assert prediction.dtype == np.float32
  assert np.all(np.isfinite(prediction))

  assert len(aux["alpha"]) == len(aux["budget"]) == len(aux["token_mask"]) == num_levels
  assert len(aux["shared"]) == len(aux["private"]) == num_levels
  assert aux["budget_ratio"].shape == (num_levels,) and aux["budget_ratio"].dtype == np.float32
  token_masks = _expected_token_masks(layout, batch["masks"])
  for l in range(num_levels):
    assert sorted(aux["alpha"][l]) == mods
    for m in mods:
      t = mf.level_lengths(layout.modalities[m], layout.spatial_grid)[l]
      alpha, mask = aux["alpha"][l][m], aux["token_mask"][l][m]
      assert alpha.shape == (b, t) and alpha.dtype == np.float32, (l, m, alpha.shape)
      assert mask.shape == (b, t) and mask.dtype == bool
      np.testing.assert_array_equal(mask, token_masks[m][l], err_msg=f"level {l} {m}")
      assert np.all(alpha[~mask] == 0), (l, m)
      assert np.all((alpha >= 0) & (alpha <= 1))
      budget = aux["budget"][l][m]
      assert budget.shape == (b,) and budget.dtype == np.float32
      np.testing.assert_allclose(budget, aux["budget_ratio"][l] * mask.sum(-1), rtol=1e-5)
      np.testing.assert_array_less(alpha.sum(-1), budget + 1e-3)
      for stream in ("shared", "private"):
        x = aux[stream][l][m]
        assert x.shape == (b, mf.D) and np.all(np.isfinite(x.astype(np.float32))), (stream, l, m)
  np.testing.assert_allclose(aux["budget_ratio"], 0.68, rtol=1e-5)  # the initial ratio

  present = np.stack([batch["masks"][m].any(-1) for m in mods], -1)
  omega, beta, eta = aux["omega"], aux["beta"], aux["eta"]
  assert omega.shape == (b, num_levels) and beta.shape == eta.shape == (b, len(mods))
  assert omega.dtype == beta.dtype == eta.dtype == np.float32
  assert np.all(omega >= 0)
  np.testing.assert_allclose(omega.sum(-1), 1.0, rtol=1e-5)
  assert np.all(beta >= 0) and np.all(beta[~present] == 0)
  np.testing.assert_allclose(beta.sum(-1), 1.0, rtol=1e-5)
  assert np.all((eta >= 0) & (eta <= 1)) and np.all(eta[~present] == 0)


@pytest.mark.parametrize("name", sorted(mf.LAYOUTS))
def test_benchmark_layout_contract(name):
  layout = mf.LAYOUTS[name]
  batch = mf.make_batch(layout, BATCH, seed=1)
  prediction, aux, variables = _forward(name, batch)
  check_contract(layout, batch, prediction, aux)
  has_resnet = any(mod.backbone == "resnet18" for mod in layout.modalities.values())
  assert ("batch_stats" in variables) == has_resnet


@pytest.mark.parametrize("name", ["mosi", "ave"])
def test_padded_steps_are_ignored(name):
  """Values at padded (masked) steps change neither the prediction nor any aux entry."""
  layout = mf.LAYOUTS[name]
  batch = mf.make_batch(layout, BATCH, seed=2)
  assert not all(mask.all() for mask in batch["masks"].values())
  prediction, aux, _ = _forward(name, batch)
  rng = np.random.default_rng(3)
  noisy = {}
  for m, x in batch["inputs"].items():
    pad = ~batch["masks"][m].reshape(batch["masks"][m].shape + (1,) * (x.ndim - 2))
    noisy[m] = np.where(pad, 100.0 * rng.normal(size=x.shape), x).astype(np.float32)
  prediction2, aux2, _ = _forward(name, dict(batch, inputs=noisy))
  np.testing.assert_allclose(prediction2, prediction, atol=1e-5)
  assert mf.tree_allclose(aux2, aux, atol=1e-5)


def test_missing_modality_gets_zero_weight():
  """A modality entirely masked in a row: finite outputs, beta = eta = 0 there, and its input
  values in that row have no influence on that row."""
  layout = mf.LAYOUTS["mosi"]
  batch = mf.make_batch(layout, BATCH, seed=4)
  batch["masks"]["audio"][1] = False                  # row 1 lacks audio
  batch["masks"]["vision"][2] = False                 # row 2 lacks vision ...
  batch["masks"]["text"][2] = False                   # ... and text
  prediction, aux, _ = _forward("mosi", batch)
  check_contract(layout, batch, prediction, aux)
  mods = sorted(layout.modalities)
  audio, text, vision = (mods.index(m) for m in ("audio", "text", "vision"))
  assert aux["beta"][1, audio] == 0 and aux["eta"][1, audio] == 0
  assert np.all(aux["beta"][2, [text, vision]] == 0) and np.all(aux["eta"][2, [text, vision]] == 0)
  np.testing.assert_allclose(aux["beta"][2, audio], 1.0, rtol=1e-6)
  assert np.all(aux["beta"][0] > 0) and np.all(aux["eta"][0] > 0)
  for l in range(NUM_LEVELS):
    assert np.all(aux["alpha"][l]["audio"][1] == 0)
  inputs = dict(batch["inputs"])
  inputs["audio"] = inputs["audio"].copy()
  inputs["audio"][1] = 50.0
  prediction2, _, _ = _forward("mosi", dict(batch, inputs=inputs))
  np.testing.assert_allclose(prediction2[1], prediction[1], atol=1e-5)
  np.testing.assert_allclose(prediction2[[0, 2]], prediction[[0, 2]], atol=1e-6)


def test_bfloat16_forward():
  """config.model.dtype = 'bfloat16': finite outputs, float32 prediction, the same contract,
  and close to the float32 model with the same parameters."""
  layout = mf.LAYOUTS["cremad"]
  batch = mf.make_batch(layout, BATCH, seed=5)
  prediction, aux, variables = _forward("cremad", batch, dtype="bfloat16")
  check_contract(layout, batch, prediction, aux)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  assert aux["shared"][0]["audio"].dtype == jnp.bfloat16
  reference, _, variables32 = _forward("cremad", batch)
  assert mf.tree_allclose(variables32["params"], variables["params"])  # same init
  scale = np.abs(reference).max()
  assert np.abs(prediction - reference).max() < 0.1 * scale + 0.05


# ------------------------------------------------------------------------------------------------
# BatchNorm (ResNet-18 backbones).
# ------------------------------------------------------------------------------------------------


def test_resnet_batchnorm_statistics():
  """train=True: batch statistics normalise and the running averages move with momentum 0.9
  (PyTorch's 0.1); train=False: the running averages are used, rows are independent."""
  net = backbones.ResNet18(base_width=mf.RESNET_WIDTH)
  rng = np.random.default_rng(6)
  x = (2.0 + 3.0 * rng.normal(size=(4, 32, 32, 3))).astype(np.float32)
  variables = jax.jit(net.init, static_argnames="train")(jax.random.key(0), x, train=False)

  @jax.jit
  def train_apply(variables, x):
    return net.apply(variables, x, train=True, mutable=["batch_stats"])

  @jax.jit
  def eval_apply(variables, x):
    return net.apply(variables, x, train=False)

  outs, updated = train_apply(variables, x)
  stats0, stats1 = variables["batch_stats"], updated["batch_stats"]
  # The first BatchNorm sees conv1's output: its running mean becomes 0.9 * 0 + 0.1 * batch mean.
  conv1 = nn.Conv(mf.RESNET_WIDTH, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False)
  y = np.asarray(conv1.apply({"params": variables["params"]["conv1"]}, x), np.float64)
  np.testing.assert_allclose(stats1["bn1"]["mean"], 0.1 * y.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats1["bn1"]["var"], 0.9 + 0.1 * y.var((0, 1, 2)), rtol=1e-4)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), stats0, stats1)
  assert all(jax.tree.leaves(changed))  # every BatchNorm layer updated its statistics
  # In training mode a row's output depends on the other rows (batch statistics) ...
  x2 = x.copy()
  x2[1:] = rng.normal(size=x2[1:].shape)
  outs2, _ = train_apply(variables, x2)
  assert np.abs(np.asarray(outs2[-1][0]) - np.asarray(outs[-1][0])).max() > 1e-3
  # ... in evaluation mode it does not, and the running averages are what normalises.
  merged = {"params": variables["params"], "batch_stats": stats1}
  ev, ev2 = eval_apply(merged, x), eval_apply(merged, x2)
  for a, b in zip(ev, ev2):
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), atol=1e-6)
  ev_init = eval_apply(variables, x)
  assert np.abs(np.asarray(ev_init[-1]) - np.asarray(ev[-1])).max() > 1e-3


def test_model_batchnorm_modes():
  """The full model on CREMA-D's layout: train=True returns updated batch_stats for both
  backbones; train=False uses the running averages and treats rows independently."""
  layout = mf.LAYOUTS["cremad"]
  model, _ = _layout_program("cremad")
  batch = mf.make_batch(layout, BATCH, seed=7)
  _, _, variables = _forward("cremad", batch)

  @jax.jit
  def both_modes(variables, inputs, masks):
    train_out, updated = model.apply(variables, inputs, masks, train=True,
                                     rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    merged = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
    return train_out[0], updated, model.apply(merged, inputs, masks, train=False)[0]

  _, updated, eval_pred = both_modes(variables, batch["inputs"], batch["masks"])
  stats0 = variables["batch_stats"]["semantic_hierarchy"]
  stats1 = updated["batch_stats"]["semantic_hierarchy"]
  assert sorted(stats1) == ["backbone_audio", "backbone_visual"]
  for m in stats1:
    diff = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                        stats0[m], stats1[m])
    assert min(jax.tree.leaves(diff)) > 0, m
  # Rows 1.. replaced: with the running averages, row 0's prediction stays the same.
  other = mf.make_batch(layout, BATCH, seed=8)
  inputs = {m: np.concatenate([batch["inputs"][m][:1], other["inputs"][m][1:]])
            for m in batch["inputs"]}
  masks = {m: np.concatenate([batch["masks"][m][:1], other["masks"][m][1:]]) for m in batch["masks"]}
  train_pred2, _, eval_pred2 = both_modes(variables, inputs, masks)
  train_pred, _, _ = both_modes(variables, batch["inputs"], batch["masks"])
  np.testing.assert_allclose(np.asarray(eval_pred2)[0], np.asarray(eval_pred)[0], atol=1e-5)
  assert np.abs(np.asarray(train_pred2)[0] - np.asarray(train_pred)[0]).max() > 1e-4


# ------------------------------------------------------------------------------------------------
# Configuration errors and the no-TensorFlow rule.
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
  layout = mf.LAYOUTS["ave"]
  model = models.build_model(mf.model_config(layout))
  batch = mf.make_batch(layout, 2)
  with pytest.raises(ValueError, match="lacks"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), {"audio": batch["inputs"]["audio"]},
                                      batch["masks"]))
  bad = dict(batch["inputs"], visual=batch["inputs"]["visual"][:, :, 0])
  with pytest.raises(ValueError, match="rank-5"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), bad, batch["masks"]))
  bad_mask = dict(batch["masks"], audio=batch["masks"]["audio"][:, :4])
  with pytest.raises(ValueError, match="mask shape"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), batch["inputs"], bad_mask))
  config = mf.model_config(layout, ablation__no_hierarchy=True, ablation__full_mix=True)
  with pytest.raises(ValueError, match="exclude each other"):
    jax.eval_shape(lambda: models.build_model(config).init(jax.random.key(0), batch["inputs"],
                                                           batch["masks"]))
  with pytest.raises(ValueError, match="must be one of"):
    models.build_model(mf.model_config(layout, name="transformer"))


_NO_TF_SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          raise ImportError("clcr_jax imported " + name)
        return None

    sys.meta_path.insert(0, NoTensorFlow())
    import jax, numpy as np
    import clcr_jax, clcr_jax.models, clcr_jax.train_lib, clcr_jax.losses
    from clcr_jax import models
    import model_fixtures as mf
    layout = mf.Layout({"x": mf.Modality("vector", "tcn", (5,))}, "classification", 2)
    model = models.build_model(mf.model_config(layout))
    batch = mf.make_batch(layout, 2)
    (prediction, aux), _ = mf.init_with_output_fn(model)(jax.random.key(0), batch["inputs"],
                                                         batch["masks"])
    assert prediction.shape == (2, 2) and np.all(np.isfinite(prediction))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
    assert not loaded, loaded
    print("OK")
""")


def test_clcr_jax_never_imports_tensorflow():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  tests_dir = os.path.join(root, "tests")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, tests_dir,
                                                     os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", _NO_TF_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
