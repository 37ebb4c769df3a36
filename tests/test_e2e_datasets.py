"""End to end: every benchmark config trains and evaluates on a fixture of its dataset's format.

For each experiments/configs/<benchmark>.py: the dataset's fixture is written into tmp_path in
the exact on-disk layout (the writers of tests/fixtures_msa.py and tests/fixtures_av.py, extended
here to at least one global batch of 8 training rows), the config is loaded with its `tiny` arg
and pointed at the fixture, capped at 2 steps with an evaluation after each, and run through
`clcr_jax.train_and_evaluate`. The run directory must then hold results.json with the dataset's
metric keys (finite), the selection rule the config documents, and data_fingerprint.json with
the fixture's split sizes. AV-MNIST also runs on the real data in ../shared/data (a subset), for
CLCR and late fusion.

Every distinct model shape costs one XLA compile (tens of seconds on CPU), so each dataset runs
exactly once here; config variants that need no training (aligned / MulT, split formats) are
checked by building their reader and resolving their model config only.
"""
from __future__ import annotations

import json
import math
import os
import pickle

import ml_collections
import numpy as np
import pytest

import clcr_jax
from clcr_jax import metrics as metrics_lib
from clcr_jax import train_lib
from data_pipelines import registry
from experiments.configs import ave
from experiments.configs import avmnist
from experiments.configs import cremad
from experiments.configs import features
from experiments.configs import kinetics_sounds
from experiments.configs import mosei
from experiments.configs import mosi
from experiments.configs import ucf101
import fixtures_av
import fixtures_msa

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
CLASSIFICATION_KEYS = ("accuracy", "macro_f1", "loss")
BATCH = 8  # one row per fake CPU device (tests/conftest.py)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def shrink(config: ml_collections.ConfigDict, root: str, **overrides) -> ml_collections.ConfigDict:
  """A benchmark config (loaded with `tiny`) pointed at `root`, 2 steps, eval after each."""
  config.data.root = str(root)
  config.train.batch_size = BATCH
  config.eval.batch_size = BATCH
  config.train.max_steps = 2
  config.eval.every_steps = 1
  config.train.log_every_steps = 1
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def run(config, workdir, *, keys, select_split: str, select_metric: str,
        split_sizes: dict[str, int]) -> dict:
  """Trains `config` in `workdir` and checks the run directory; returns results.json."""
  results = clcr_jax.train_and_evaluate(config, str(workdir))
  path = os.path.join(workdir, "results.json")
  assert os.path.isfile(path)
  with open(path) as f:
    on_disk = json.load(f)
  assert on_disk == results
  assert results["dataset"] == config.data.name
  assert results["final_step"] == 2
  assert results["selection"]["split"] == select_split
  assert results["selection"]["metric"] == select_metric
  assert results["selection"]["on_test"] == (select_split == "test")
  assert results["selection"]["step"] in (1, 2)
  for split in {"test", select_split}:
    got = results[split]
    missing = set(keys) - set(got)
    assert not missing, f"{split}: missing metric keys {sorted(missing)}; found {sorted(got)}"
    for k, v in got.items():
      assert isinstance(v, float) and math.isfinite(v), f"{split}[{k!r}] = {v!r}"
  with open(os.path.join(workdir, "data_fingerprint.json")) as f:
    fingerprint = json.load(f)
  assert fingerprint["dataset"] == config.data.name
  assert fingerprint["split_sizes"] == split_sizes
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["root"] == str(config.data.root)
  return results


def resolved(config):
  """(reader, resolved model config) of a config: what train_and_evaluate builds first."""
  reader = registry.get_reader(config.data)
  return reader, train_lib.resolve_model_config(config.model, reader)


# ---------------------------------------------------------------------------------------------
# MOSI / MOSEI (MMSA and MulT pickles)
# ---------------------------------------------------------------------------------------------
MSA_SIZES = {"train": BATCH, "valid": 3, "test": 5}


def test_mosi_mmsa_unaligned(tmp_path):
  root = tmp_path / "MOSI" / "Processed"
  fixtures_msa.write_mmsa(root, aligned=False, padding="right", dataset="mosi", sizes=MSA_SIZES)
  config = shrink(mosi.get_config("tiny"), tmp_path / "MOSI")
  assert config.seed == 1111 and config.data.format == "mmsa" and not config.data.aligned
  results = run(config, tmp_path / "run", keys=metrics_lib.MMSA_KEYS + ("loss",),
                select_split="valid", select_metric="loss", split_sizes=MSA_SIZES)
  assert results["selection"]["mode"] == "min"
