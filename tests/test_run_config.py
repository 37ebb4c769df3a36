"""run_config: config.json records the run; fields it predates read back as what they meant then."""
from __future__ import annotations

import json

import pytest

from clcr_jax import losses
from clcr_jax import run_config
from clcr_jax.models import defaults as model_defaults


def _write(tmp_path, record):
  (tmp_path / "config.json").write_text(json.dumps(record))
  return str(tmp_path)


def test_fields_a_record_predates_read_as_their_meaning_at_the_time(tmp_path):
  now = {"model": model_defaults.default_config().to_dict(),
         "loss": losses.default_config().to_dict(), "seed": 3}
  for key in ("exchange_init", "budget"):  # a field and a whole block added later
    del now["model"][key]
  del now["model"]["inter_cad"]["summary_norm"]
  del now["loss"]["reg_reduction"]
  config = run_config.read(_write(tmp_path, now))
  assert config.seed == 3
  # Unchanged since it was added: today's default.
  assert config.model.exchange_init == model_defaults.default_config().exchange_init
  # Changed since: the value that reproduces the recorded run, not today's default.
  assert config.model.inter_cad.summary_norm is model_defaults.PAPER_FORM[
      "inter_cad.summary_norm"] is True
  assert model_defaults.default_config().inter_cad.summary_norm is False
  assert config.model.budget.participation_init == 0.68
  assert config.loss.reg_reduction == losses.PAPER_FORM["reg_reduction"] == "sum"
  # What the record holds always wins.
  assert config.model.inter_cad.value_scale == now["model"]["inter_cad"]["value_scale"]


def test_a_record_that_is_not_a_run_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}/config.json not found"):
    run_config.read(str(tmp_path))
