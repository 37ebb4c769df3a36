"""The synthetic generators (data_pipelines/synthetic.py): the default one is unchanged, and the
variant's label needs what it claims (a cross-modal parity no single modality decides, a cue
private to one modality), with every true factor returned."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_pipelines import base
from data_pipelines import registry
from data_pipelines import synthetic
from experiments.configs import synthetic as synthetic_config

SHAPES = {"audio": (48, 16), "text": (24, 24), "vision": (32, 12)}
PAIRS = (("audio", "text"), ("text", "vision"), ("audio", "vision"))


@pytest.fixture(scope="module")
def variant():
  """A large split of the variant at its defaults (the statistics below need many rows)."""
  return synthetic.generate_variant(synthetic.VariantSpec(), 6000, seed=11)


def _pooled(data, m):
  """Mean over valid tokens: float64[N, D]."""
  mask = data["masks"][m]
  return (data["inputs"][m].astype(np.float64) * mask[..., None]).sum(1) / mask.sum(1)[:, None]


def _corr(a, b):
  a, b = a - a.mean(0), b - b.mean()
  return (a * b[:, None]).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum())


def _held_out_accuracy(features, bit):
  """Least squares on +-1 targets fitted on the first half, sign accuracy on the second."""
  x = np.c_[features, np.ones(len(features))]
  y = 2.0 * bit - 1.0
  half = len(x) // 2
  w = np.linalg.lstsq(x[:half], y[:half], rcond=None)[0]
  return float(np.mean(np.sign(x[half:] @ w) == y[half:]))


def test_default_generator_is_unchanged():
  # Computed with the generator as it was before the variant was added (commit 7737781).
  data = synthetic.generate(synthetic.SyntheticSpec(), 16, seed=3)
  expected = {"audio": (-556.9109006979706, 20049.21631274582, 0.4570959210395813,
                        [41, 43, 44, 39, 45, 46, 46, 46, 42, 45, 48, 44, 42, 37, 41, 34]),
              "text": (143.8635361136512, 12224.96069496456, -0.607483983039856, [24] * 16),
              "vision": (1.3488389180929516, 7931.899022217669, 0.5237789750099182,
                         [31, 24, 23, 28, 31, 30, 28, 30, 26, 22, 25, 28, 26, 26, 24, 25])}
  for m, (total, squares, entry, lengths) in expected.items():
    x = data["inputs"][m].astype(np.float64)
    assert x.sum() == pytest.approx(total, rel=1e-6)
    assert (x**2).sum() == pytest.approx(squares, rel=1e-6)
    assert x[5, 7, 3] == pytest.approx(entry, rel=1e-6)
    assert data["masks"][m].sum(1).tolist() == lengths
  assert data["label"].tolist() == [7, 2, 0, 4, 4, 5, 7, 3, 4, 0, 2, 6, 5, 2, 2, 2]
  f = data["factors"]
  np.testing.assert_array_equal(data["label"], 4 * f["global"] + 2 * f["window"] + f["local"])
  nuisance = {m: float(v.astype(np.float64).sum()) for m, v in f["nuisance"].items()}
  assert nuisance == pytest.approx({"audio": 592.8529970208183, "text": -242.70543691143394,
                                    "vision": -304.8629860728979}, rel=1e-6)


def test_reader_selects_the_generator_and_names_the_classes():
  default = registry.get_reader(synthetic_config.get_config("tiny").data)
  config = synthetic_config.get_config("tiny,generator=variant")
  assert config.data.generator == "variant"
  variant = registry.get_reader(config.data)
  assert default.task.num_classes == 8 and default.task.class_names[5] == "g1w0l1"
  assert default.label_factors == ("global", "window", "local")
  assert variant.task.num_classes == 16 and variant.label_factors == synthetic.VARIANT_LABEL_BITS
  names = variant.task.class_names
  assert names[0] == "g0w0c0x0" and names[11] == "g1w0c1x1" and len(set(names)) == 16
  for split in variant.splits:
    label = variant.load_examples(split, np.arange(variant.num_examples(split)),
                                  train=False)["label"]
    np.testing.assert_array_equal(label, synthetic.variant_label(variant.factors[split]))
    assert [names[c] for c in label[:3]] == [
        "".join(f"{k}{variant.factors[split][b][i]}" for k, b in
                zip("gwcx", synthetic.VARIANT_LABEL_BITS)) for i in range(3)]
  config.data.generator = "varaint"
  with pytest.raises(base.DataError, match=r"config.data.generator .*'variant'.*'varaint'"):
    registry.get_reader(config.data)


def test_variant_is_deterministic_per_seed():
  spec = synthetic.VariantSpec()
  a, b = synthetic.generate_variant(spec, 40, 5), synthetic.generate_variant(spec, 40, 5)
  c = synthetic.generate_variant(spec, 40, 6)
  for m in SHAPES:
    np.testing.assert_array_equal(a["inputs"][m], b["inputs"][m])
    np.testing.assert_array_equal(a["factors"]["nuisance"][m], b["factors"]["nuisance"][m])
    assert not np.array_equal(a["inputs"][m], c["inputs"][m])
  for k, v in a["factors"].items():
    if k != "nuisance":
      np.testing.assert_array_equal(v, b["factors"][k])


@pytest.mark.parametrize("generator", ["default", "variant"])
def test_shapes_masks_and_factors(generator):
  n = 50
  data = (synthetic.generate(synthetic.SyntheticSpec(), n, 1) if generator == "default" else
          synthetic.generate_variant(synthetic.VariantSpec(), n, 1))
  assert set(data) == {"inputs", "masks", "label", "factors"}
  for m, (t, d) in SHAPES.items():
    x, mask = data["inputs"][m], data["masks"][m]
    assert x.shape == (n, t, d) and x.dtype == np.float32
    assert mask.shape == (n, t) and mask.dtype == bool
    lengths = mask.sum(1)
    np.testing.assert_array_equal(mask, np.arange(t)[None] < lengths[:, None])  # a prefix
    assert np.all(x[~mask] == 0)  # padding is zero
    if m == "text":
      assert mask.all()
    else:
      assert lengths.min() >= int(0.7 * t) and lengths.max() <= t
    assert data["factors"]["nuisance"][m].shape == (n, t, 2)
  assert data["label"].dtype == np.int32
  if generator == "variant":
    f = data["factors"]
    assert set(f) == {"parity", "cue", "window", "global", "event_at", "event_tv", "event_av",
                      "time_at", "time_tv", "time_av", "window_start", "nuisance"}
    assert data["label"].min() >= 0 and data["label"].max() < synthetic.VARIANT_NUM_CLASSES


def test_variant_label_is_its_formula(variant):
  f = variant["factors"]
  parity = f["event_at"] ^ f["event_tv"] ^ f["event_av"]
  np.testing.assert_array_equal(f["parity"], parity)
  np.testing.assert_array_equal(variant["label"],
                                8 * f["global"] + 4 * f["window"] + 2 * f["cue"] + parity)
  assert np.bincount(variant["label"], minlength=16).min() > 250  # every class appears


def test_variant_directions_are_orthonormal_and_private_rows_are_apart():
  dirs = synthetic.variant_directions(synthetic.VariantSpec())
  seen = {"audio": ("at", "av"), "text": ("at", "tv"), "vision": ("tv", "av")}
  for m, named in dirs.items():
    assert sorted(k for k in named if k.startswith("event_")) == sorted(
        f"event_{e}" for e in seen[m])
    rows = np.concatenate([np.atleast_2d(v) for v in named.values()])
    assert rows.shape == (9, SHAPES[m][1])
    np.testing.assert_allclose(rows @ rows.T, np.eye(9), atol=1e-12)


def test_private_cue_is_only_in_its_modality(variant):
  cue = variant["factors"]["cue"].astype(np.float64)
  bound = 4.5 / np.sqrt(len(cue))  # |corr| of independent variables, over ~100 tests
  for m in ("text", "vision"):
    pooled = _pooled(variant, m)
    mask = variant["masks"][m]
    squares = (variant["inputs"][m].astype(np.float64)**2 * mask[..., None]).sum(1) / mask.sum(1)[
        :, None]
    assert np.abs(_corr(pooled, cue)).max() < bound, m
    assert np.abs(_corr(squares, cue)).max() < bound, m
    assert _held_out_accuracy(pooled, cue) < 0.55, m
  # The cue modality carries it along its private direction, which a linear read-out finds.
  cue_dir = synthetic.variant_directions(synthetic.VariantSpec())["audio"]["cue"]
  assert _corr((_pooled(variant, "audio") @ cue_dir)[:, None], cue)[0] > 0.5
  assert _held_out_accuracy(_pooled(variant, "audio"), cue) > 0.8


def _event_scores(data, modalities):
  """Per event seen by `modalities`: the type score (max over valid tokens of the projection on
  the type-1 direction minus that on type 0), summed over the modalities that see it."""
  dirs = synthetic.variant_directions(synthetic.VariantSpec())
  scores = {}
  for m in modalities:
    x, mask = data["inputs"][m].astype(np.float64), data["masks"][m]
    for name, d in dirs[m].items():
      if name.startswith("event_"):
        peak = np.where(mask[..., None], x @ d.T, -np.inf).max(1)  # [N, 2]
        scores[name] = scores.get(name, 0.0) + peak[:, 1] - peak[:, 0]
  return scores


def _monomials(columns):
  """Every product of 1 to 3 distinct columns (the parity of 3 events is their triple product)."""
  return np.stack([np.prod(c, axis=0) for r in (1, 2, 3) for c in
                   itertools.combinations(columns, r)], 1)


def test_parity_needs_two_modalities():
  # Little white noise, full nuisance: how the events are split over modalities, not the SNR.
  data = synthetic.generate_variant(synthetic.VariantSpec(noise=0.2), 4000, seed=12)
  f = data["factors"]
  parity = f["parity"]
  seen = {"audio": ("at", "av"), "text": ("at", "tv"), "vision": ("tv", "av")}
  for m, events in seen.items():
    # Given the two event types this modality sees, the parity is still a fair coin ...
    for a, b in itertools.product((0, 1), repeat=2):
      cell = (f[f"event_{events[0]}"] == a) & (f[f"event_{events[1]}"] == b)
      assert abs(parity[cell].mean() - 0.5) < 0.06, (m, a, b)
    # ... and nothing in its inputs tells the third type: no correlation with the mean, max or
    # min over valid tokens of any input feature.
    unseen = ({"at", "tv", "av"} - set(events)).pop()
    x, mask = data["inputs"][m].astype(np.float64), data["masks"][m][..., None]
    stats = np.concatenate([_pooled(data, m), np.where(mask, x, -np.inf).max(1),
                            np.where(mask, x, np.inf).min(1)], 1)
    assert np.abs(_corr(stats, f[f"event_{unseen}"].astype(np.float64))).max() < 0.08, m
    # Its own two events it sees well, and their products still say nothing about parity.
    scores = _event_scores(data, (m,))
    for e in events:
      assert _held_out_accuracy(scores[f"event_{e}"][:, None], f[f"event_{e}"]) > 0.85, (m, e)
    assert _held_out_accuracy(_monomials([np.tanh(s) for s in scores.values()]), parity) < 0.56
  for pair in PAIRS:
    scores = _event_scores(data, pair)
    assert len(scores) == 3, pair
    assert _held_out_accuracy(_monomials([np.tanh(s) for s in scores.values()]), parity) > 0.8, \
        pair


def test_variant_spec_checks_its_fields():
  with pytest.raises(ValueError, match="cue_modality must be one of .*'radio'"):
    synthetic.VariantSpec(cue_modality="radio")
  with pytest.raises(ValueError, match="modality .text. may see at most 2 events"):
    synthetic.VariantSpec(events=(("a", ("text",)), ("b", ("text",)), ("c", ("text",))))
  with pytest.raises(ValueError, match="unknown modalities"):
    synthetic.VariantSpec(events=(("a", ("audio", "smell")),))
  narrow = (synthetic.ModalityGeometry("audio", 8, 4, 0.0, False),)
  with pytest.raises(ValueError, match="width >= 9 .* found 4"):
    synthetic.VariantSpec(modalities=narrow, events=(), cue_modality="audio")
