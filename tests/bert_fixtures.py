"""Writers of tiny Hugging Face BERT checkpoint directories (config.json + model.safetensors).

`write_tiny_bert` draws random weights in PyTorch's layout (Linear weights [out, in]) and writes
them in one of the key styles found in the wild, so loaders are tested on files, not on dicts
built by the code under test.
"""
from __future__ import annotations

import json
import os

import numpy as np

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=16, type_vocab_size=2,
            layer_norm_eps=1e-12, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            hidden_act="gelu", model_type="bert", architectures=["BertModel"],
            pad_token_id=0, position_embedding_type="absolute", initializer_range=0.02)


def random_state_dict(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """A BertModel state dict (keys without 'bert.', LayerNorm weight/bias) with random values."""
  rng = np.random.default_rng(seed)
  h, f = config["hidden_size"], config["intermediate_size"]
  normal = lambda *shape: rng.normal(0, 0.2, size=shape).astype(np.float32)
  sd = {"embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": 1 + normal(h), "embeddings.LayerNorm.bias": normal(h),
        "embeddings.position_ids": np.arange(config["max_position_embeddings"])[None]}
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name, n_out, n_in in (("attention.self.query", h, h), ("attention.self.key", h, h),
                              ("attention.self.value", h, h), ("attention.output.dense", h, h),
                              ("intermediate.dense", f, h), ("output.dense", h, f)):
      sd[p + name + ".weight"], sd[p + name + ".bias"] = normal(n_out, n_in), normal(n_out)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      sd[p + name + ".weight"], sd[p + name + ".bias"] = 1 + normal(h), normal(h)
  sd["pooler.dense.weight"], sd["pooler.dense.bias"] = normal(h, h), normal(h)
  return sd


def restyle(sd: dict[str, np.ndarray], style: str) -> dict[str, np.ndarray]:
  """'model' (BertModel keys) | 'prefixed' ('bert.' + keys, gamma/beta LayerNorms, a cls head,
  as in old BertForPreTraining conversions)."""
  if style == "model":
    return dict(sd)
  if style != "prefixed":
    raise ValueError(style)
  out = {}
  for k, v in sd.items():
    if ".LayerNorm." in k:
      k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
    out["bert." + k] = v
  h = sd["embeddings.word_embeddings.weight"].shape[1]
  out["cls.predictions.transform.dense.weight"] = np.zeros((h, h), np.float32)
  out["cls.predictions.bias"] = np.zeros(sd["embeddings.word_embeddings.weight"].shape[0],
                                         np.float32)
  return out


def write_checkpoint(folder, config: dict, tensors: dict[str, np.ndarray]) -> str:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  return str(folder)


def write_tiny_bert(folder, style: str = "model", seed: int = 0, **overrides) -> str:
  config = dict(TINY, **overrides)
  return write_checkpoint(folder, config, restyle(random_state_dict(config, seed), style))
