"""Tests of the CLCR forward pass: the design.md contract of `(prediction, aux)` on the input
layouts of the six benchmarks, padding and missing modalities, BatchNorm modes, bfloat16, and
the no-TensorFlow rule.

Each layout compiles one program (the evaluation-mode `apply`, module-scoped cache) and runs it on
random variables drawn in numpy with the model's structure (model_fixtures.random_variables):
the contract must hold for any parameter values, and an `init` program would double the compile
time. The model's own initialisation is exercised by test_ablations.py and the no-TensorFlow
subprocess here.
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
from clcr_jax.models import clcr
import model_fixtures as mf

NUM_LEVELS = 3


@functools.lru_cache(maxsize=None)
def _layout_program(name: str, dtype: str = "float32"):
  """(model, jitted evaluation-mode apply) of a layout; cached for the whole module."""
  model = models.build_model(mf.model_config(mf.LAYOUTS[name], dtype=dtype))
  return model, jax.jit(functools.partial(model.apply, train=False))


@functools.lru_cache(maxsize=None)
def _variables(name: str):
  """Random float32 variables of a layout's model (the same for every activation dtype)."""
  model, _ = _layout_program(name)
  batch = mf.make_batch(mf.LAYOUTS[name], 1)
  return mf.random_variables(model, batch["inputs"], batch["masks"], seed=len(name))


def _forward(name: str, batch, dtype: str = "float32", variables=None):
  _, run = _layout_program(name, dtype)
  variables = _variables(name) if variables is None else variables
  prediction, aux = run(variables, batch["inputs"], batch["masks"])
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


def check_contract(layout: mf.Layout, batch, prediction, aux, variables,
                   num_levels: int = NUM_LEVELS):
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
  b_param = np.asarray(variables["params"]["intra_ced"]["budget"]["b"], np.float64)
  np.testing.assert_allclose(aux["budget_ratio"], 1 / (1 + np.exp(-b_param)), rtol=1e-5)
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

  present = np.stack([batch["masks"][m].any(-1) for m in mods], -1)
  omega, beta, eta = aux["omega"], aux["beta"], aux["eta"]
  assert omega.shape == (b, num_levels) and beta.shape == eta.shape == (b, len(mods))
  assert omega.dtype == beta.dtype == eta.dtype == np.float32
  assert np.all(omega >= 0)
  np.testing.assert_allclose(omega.sum(-1), 1.0, rtol=1e-5)
  assert np.all(beta >= 0) and np.all(beta[~present] == 0)
  np.testing.assert_allclose(beta.sum(-1), present.any(-1).astype(np.float32), rtol=1e-5)
  assert np.all((eta >= 0) & (eta <= 1)) and np.all(eta[~present] == 0)


def _batch_with_missing(layout: mf.Layout, seed: int):
  """A padded batch of 5 rows where row 2 lacks the first modality, with three modalities row 3
  has only the first one, and row 4 has no modality at all. Returns the batch and the
  (row, modality) pairs missing."""
  batch = mf.make_batch(layout, 5, seed=seed)
  mods = sorted(layout.modalities)
  missing = ([(2, mods[0])] + [(3, m) for m in mods[1:] if len(mods) > 2] +
             [(4, m) for m in mods])
  for row, m in missing:
    batch["masks"][m][row] = False
  return batch, missing


def _spectrogram_resnet(mod: mf.Modality) -> bool:
  return mod.kind == "spectrogram" and mod.backbone == "resnet18"


@pytest.mark.parametrize("name", sorted(mf.LAYOUTS))
def test_layout_forward(name):
  """Evaluation mode on one benchmark layout (one compiled program, several batches):

  * the (prediction, aux) contract (check_contract), on a batch with padding and missing
    modalities;
  * a missing modality gets beta = eta = 0 in its rows and its input there has no influence;
  * values at padded steps have no influence (except for spectrograms through ResNet-18, whose
    convolutions see padded frames, as in the PyTorch reference);
  * rows are independent (BatchNorm uses running averages), and the checks can fail: changing
    the valid inputs of rows 1.. does change those rows.
  """
  layout = mf.LAYOUTS[name]
  mods = sorted(layout.modalities)
  batch, missing = _batch_with_missing(layout, seed=1)
  prediction, aux, variables = _forward(name, batch)
  check_contract(layout, batch, prediction, aux, variables)
  has_resnet = any(mod.backbone == "resnet18" for mod in layout.modalities.values())
  assert ("batch_stats" in variables) == has_resnet

  for row, m in missing:
    assert aux["beta"][row, mods.index(m)] == 0 and aux["eta"][row, mods.index(m)] == 0
    for level in aux["alpha"]:
      assert np.all(level[m][row] == 0)
  assert np.all(aux["beta"][0] > 0) and np.all(aux["eta"][0] > 0)

  rng = np.random.default_rng(2)
  noisy = {}
  for m, x in batch["inputs"].items():
    mask = batch["masks"][m]
    if _spectrogram_resnet(layout.modalities[m]):  # only rows where the modality is missing
      mask = np.broadcast_to(mask.any(-1, keepdims=True), mask.shape)
    # Time is axis 1 of every input but the spectrogram [B, F, T]; a vector's mask is [B, 1].
    if layout.modalities[m].kind == "spectrogram":
      ignored = ~mask[:, None, :]
    else:
      ignored = ~mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    noisy[m] = np.where(ignored, 100.0 * rng.normal(size=x.shape), x).astype(np.float32)
  prediction2, aux2, _ = _forward(name, dict(batch, inputs=noisy))
  np.testing.assert_allclose(prediction2, prediction, atol=1e-5)
  assert mf.tree_allclose(aux2, aux, atol=1e-5)

  shifted = {m: np.concatenate([x[:1], x[1:] + 1.0]) for m, x in batch["inputs"].items()}
  prediction3, _, _ = _forward(name, dict(batch, inputs=shifted))
  np.testing.assert_allclose(prediction3[0], prediction[0], atol=1e-5)
  change = np.abs(prediction3 - prediction).reshape(len(prediction), -1).max(-1)
  assert np.all(change[1:4] > 1e-4), change  # row 4 has no modality: nothing to change

  if name == "mosi":
    _check_padding_equals_truncation(name, batch)
  if name == "ave":
    _check_bfloat16(name, batch, prediction)
  if name == "cremad":
    _check_batchnorm_modes(name, batch)


def _check_padding_equals_truncation(name, batch):
  """Padded tokens are absent, not just zero: with the last step of every modality padded in
  every row, the outputs equal those of the batch cut one step shorter."""
  masks = {m: mask.copy() for m, mask in batch["masks"].items()}
  for mask in masks.values():
    mask[:, -1] = False
  padded = dict(batch, masks=masks)
  cut = dict(batch, inputs={m: x[:, :-1] for m, x in batch["inputs"].items()},
             masks={m: mask[:, :-1] for m, mask in masks.items()})
  prediction, aux, _ = _forward(name, padded)
  prediction_cut, aux_cut, _ = _forward(name, cut)
  np.testing.assert_allclose(prediction_cut, prediction, atol=1e-5)
  for key in ("omega", "beta", "eta", "budget_ratio"):
    np.testing.assert_allclose(aux_cut[key], aux[key], atol=1e-5, err_msg=key)
  for key in ("shared", "private", "budget"):
    assert mf.tree_allclose(aux_cut[key], aux[key], atol=1e-5), key
  for l, level in enumerate(aux["alpha"]):
    for m, alpha in level.items():
      np.testing.assert_allclose(aux_cut["alpha"][l][m], alpha[:, :-1], atol=1e-6)


def _check_bfloat16(name, batch, reference):
  """config.model.dtype = 'bfloat16': the same contract, bfloat16 activations, float32
  prediction, close to the float32 model with the same parameters."""
  layout = mf.LAYOUTS[name]
  prediction, aux, variables = _forward(name, batch, dtype="bfloat16")
  check_contract(layout, batch, prediction, aux, variables)
  assert aux["shared"][0][sorted(layout.modalities)[0]].dtype == jnp.bfloat16
  scale = np.abs(reference).max()
  assert np.abs(prediction - reference).max() < 0.1 * scale + 0.05


def _check_batchnorm_modes(name, batch):
  """The full model with ResNet-18 backbones: train=True returns updated batch_stats for every
  backbone and makes rows depend on each other; train=False then uses the new running averages
  (the prediction moves) and keeps rows independent."""
  model, _ = _layout_program(name)
  variables = _variables(name)

  @jax.jit
  def train_mode(variables, inputs, masks):
    (prediction, _), updated = model.apply(variables, inputs, masks, train=True,
                                           rngs={"dropout": jax.random.key(0)},
                                           mutable=["batch_stats"])
    return prediction, updated["batch_stats"]

  train_pred, stats = train_mode(variables, batch["inputs"], batch["masks"])
  assert sorted(stats["semantic_hierarchy"]) == sorted(f"backbone_{m}" for m in batch["inputs"])
  changed = jax.tree.map(lambda a, b: bool(np.all(np.asarray(a) != np.asarray(b))),
                         variables["batch_stats"], stats)
  assert all(jax.tree.leaves(changed))
  shifted = {m: np.concatenate([x[:1], x[1:] + 1.0]) for m, x in batch["inputs"].items()}
  train_pred2, _ = train_mode(variables, shifted, batch["masks"])
  assert np.abs(np.asarray(train_pred2)[0] - np.asarray(train_pred)[0]).max() > 1e-4
  merged = {"params": variables["params"], "batch_stats": stats}
  eval_pred, _, _ = _forward(name, batch, variables=merged)
  eval_pred2, _, _ = _forward(name, dict(batch, inputs=shifted), variables=merged)
  np.testing.assert_allclose(eval_pred2[0], eval_pred[0], atol=1e-5)
  eval_before, _, _ = _forward(name, batch)
  assert np.abs(eval_before - eval_pred).max() > 1e-4


# ------------------------------------------------------------------------------------------------
# BatchNorm (ResNet-18 backbones).
# ------------------------------------------------------------------------------------------------


def test_resnet_batchnorm_statistics():
  """train=True: batch statistics normalise and the running averages move with momentum 0.9
  (PyTorch's 0.1); train=False: the running averages are used, rows are independent."""
  net = backbones.ResNet18(base_width=mf.RESNET_WIDTH)
  rng = np.random.default_rng(6)
  x = (2.0 + 3.0 * rng.normal(size=(4, 32, 32, 3))).astype(np.float32)
  variables = mf.random_variables(net, x, seed=6)

  @jax.jit
  def train_apply(variables, x):
    return net.apply(variables, x, train=True, mutable=["batch_stats"])

  @jax.jit
  def eval_apply(variables, x):
    return net.apply(variables, x, train=False)

  outs, updated = train_apply(variables, x)
  stats0, stats1 = variables["batch_stats"], updated["batch_stats"]
  # The first BatchNorm sees conv1's output: running mean <- 0.9 * mean + 0.1 * batch mean, and
  # the same for the (biased) variance.
  conv1 = nn.Conv(mf.RESNET_WIDTH, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False)
  y = np.asarray(conv1.apply({"params": variables["params"]["conv1"]}, x), np.float64)
  np.testing.assert_allclose(stats1["bn1"]["mean"],
                             0.9 * stats0["bn1"]["mean"] + 0.1 * y.mean((0, 1, 2)), rtol=1e-4)
  np.testing.assert_allclose(stats1["bn1"]["var"],
                             0.9 * stats0["bn1"]["var"] + 0.1 * y.var((0, 1, 2)), rtol=1e-4)
  changed = jax.tree.map(lambda a, b: bool(np.all(np.asarray(a) != np.asarray(b))), stats0, stats1)
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
  ev_before = eval_apply(variables, x)
  assert np.abs(np.asarray(ev_before[-1]) - np.asarray(ev[-1])).max() > 1e-3


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
  # The positional tables are sized at init (max_len = 0): shorter sequences are fine (see
  # _check_padding_equals_truncation), longer ones name the fix.
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch["inputs"],
                                                batch["masks"]))
  longer = {m: np.concatenate([x, x[:, :2]], axis=1) for m, x in batch["inputs"].items()}
  longer_masks = {m: np.concatenate([x, x[:, :2]], axis=1) for m, x in batch["masks"].items()}
  with pytest.raises(ValueError, match="max_len"):
    jax.eval_shape(lambda v: model.apply(v, longer, longer_masks), variables)


def test_segment_assignment_follows_time():
  """Per-segment pooling maps token t of a level of T_l tokens to segment floor(t S / T_l), for
  levels of different lengths (padded when stacked) and for full_mix's concatenated levels."""
  h = {"a": [np.zeros((2, t, 3)) for t in (6, 3, 2)], "b": [np.zeros((2, 4, 3))] * 3}
  segments = 3
  expected_a = [[0, 0, 1, 1, 2, 2], [0, 1, 2], [0, 1]]
  expected_b = [0, 0, 1, 2]
  cases = {  # name: (config overrides, segment ids per level of a, of b)
      "levels": ({}, expected_a, [expected_b] * 3),
      "full_mix": ({"ablation__full_mix": True}, [sum(expected_a, [])], [expected_b * 3]),
      "no_hierarchy": ({"ablation__no_hierarchy": True}, [expected_a[-1]], [expected_b]),
  }
  for case, (overrides, ids_a, ids_b) in cases.items():
    cfg = mf.model_config(mf.Layout({"a": mf.Modality("sequence", "tcn", (6, 1)),
                                     "b": mf.Modality("sequence", "tcn", (4, 1))},
                                    "segment_classification", 2, segments), **overrides)
    assign = jax.tree.map(np.asarray, clcr.segment_assignment(h, cfg, segments))
    for m, ids in (("a", ids_a), ("b", ids_b)):
      t_max = max(len(level) for level in ids)
      expected = np.zeros((len(ids), t_max, segments))
      for l, level in enumerate(ids):
        expected[l, np.arange(len(level)), level] = 1
      np.testing.assert_array_equal(assign[m], expected, err_msg=f"{case} {m}")
  # The full_mix model on AVE's per-segment layout: one level of 3 x 10 tokens, [B, 10, C].
  layout = mf.LAYOUTS["ave"]
  model = models.build_model(mf.model_config(layout, ablation__full_mix=True))
  batch = mf.make_batch(layout, 2)
  (prediction, aux), _ = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), batch["inputs"], batch["masks"]))
  assert prediction.shape == (2, 10, 29) and aux["alpha"][0]["audio"].shape == (2, 30)


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


def test_remat_gives_the_same_loss_gradients_and_batch_stats():
  """model.remat recomputes the backbones in the backward pass: a memory switch, not a new model."""
  layout = mf.LAYOUTS["cremad"]
  batch = mf.make_batch(layout, 2, seed=4)
  results = []
  for remat in (False, True):
    model = models.build_model(mf.model_config(layout, remat=remat))
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           batch["inputs"], batch["masks"], train=False)

    def loss(params, variables=variables, model=model):
      (pred, _), updates = model.apply(
          {**variables, "params": params}, batch["inputs"], batch["masks"], train=True,
          rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
      return jnp.sum(pred**2), updates

    results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"]))
  ((l0, s0), g0), ((l1, s1), g1) = results
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  # Recomputation changes XLA's fusions, hence float32 summation order: tolerances scale with
  # each tensor's largest entry.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max())), g1, g0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s1, s0)
  assert float(jnp.abs(jax.tree.leaves(g0)[0]).sum()) > 0
