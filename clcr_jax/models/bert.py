"""BERT encoder (Flax Linen) returning every hidden state, and an offline checkpoint loader.

    module, params = bert.load_pretrained("/models/bert-base-uncased")
    hidden = module.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    # tuple of num_hidden_layers + 1 arrays [B, T, hidden], the embeddings' output first:
    # the list Hugging Face returns with output_hidden_states=True.

The architecture is the original post-norm BERT: embeddings (word + absolute position + token
type, LayerNorm, dropout), then per layer self-attention -> dense -> dropout -> LayerNorm(x + .),
GELU (exact erf) feed-forward -> dropout -> LayerNorm(x + .). Attention goes through
`layers.dot_product_attention` with the project's `model.attention` choice; padded keys are
masked by `attention_mask`. The softmax runs in float32, the rest in `dtype`.
DEVIATION from Hugging Face's training mode: no dropout on the attention probabilities (the
fused and blockwise attention kernels have none); hidden-state dropout is as in BERT.

`load_pretrained` reads a local Hugging Face directory (config.json + model.safetensors) with
`safetensors.numpy`, so torch is not needed. Keys may carry the `bert.` prefix (BertFor* heads)
or not (BertModel); LayerNorms may be `gamma/beta` (old TF conversions) or `weight/bias`.
`position_ids` buffers, `pooler.*` and `cls.*` heads are ignored; every other tensor must be
there with its expected shape.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clcr_jax.models import dropout as dropout_lib
from clcr_jax.models import layers

Dtype = Any

# config.json keys -> Bert attributes (the Hugging Face names).
HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
             "hidden_dropout_prob")
IGNORED_KEYS = re.compile(r"(^|\.)position_ids$|^(bert\.)?pooler\.|^cls\.")


class CheckpointError(ValueError):
  """A BERT checkpoint directory that cannot be loaded (the message names file and key)."""


class Bert(nn.Module):
  """input_ids, attention_mask, token_type_ids [B, T] -> num_hidden_layers + 1 x [B, T, hidden]."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               train: bool = False) -> tuple[jax.Array, ...]:
    b, t = input_ids.shape
    if t > self.max_position_embeddings:
      raise ValueError(f"BERT: {t} tokens but max_position_embeddings is "
                       f"{self.max_position_embeddings}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"BERT: hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}")
    input_ids = jnp.asarray(input_ids).astype(jnp.int32)
    mask = (jnp.ones((b, t), bool) if attention_mask is None
            else jnp.asarray(attention_mask) > 0)
    token_type_ids = (jnp.zeros((b, t), jnp.int32) if token_type_ids is None
                      else jnp.asarray(token_type_ids).astype(jnp.int32))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    init = nn.initializers.normal(0.02)  # BERT's initializer_range
    embed = lambda n, name: nn.Embed(n, self.hidden_size, embedding_init=init, name=name, **kw)
    norm = lambda name: nn.LayerNorm(self.layer_norm_eps, name=name, **kw)
    dense = lambda n, name: nn.Dense(n, kernel_init=init, name=name, **kw)
    drop = dropout_lib.Dropout(self.hidden_dropout_prob, deterministic=not train)

    x = (embed(self.vocab_size, "word_embeddings")(input_ids)
         + embed(self.max_position_embeddings, "position_embeddings")(jnp.arange(t)[None])
         + embed(self.type_vocab_size, "token_type_embeddings")(token_type_ids))
    x = drop(norm("embeddings_norm")(x))
    hidden = [x]
    heads, head_dim = self.num_attention_heads, self.hidden_size // self.num_attention_heads
    for i in range(self.num_hidden_layers):
      p = f"layer_{i}_"
      split = lambda y: y.reshape(b, t, heads, head_dim)
      q, k, v = (split(dense(self.hidden_size, p + n)(x)) for n in ("query", "key", "value"))
      a = layers.dot_product_attention(q, k, v, mask, self.attention).reshape(b, t, -1)
      x = norm(p + "attention_norm")(x + drop(dense(self.hidden_size, p + "attention_out")(a)))
      h = nn.gelu(dense(self.intermediate_size, p + "intermediate")(x), approximate=False)
      x = norm(p + "output_norm")(x + drop(dense(self.hidden_size, p + "output")(h)))
      hidden.append(x)
    return tuple(hidden)


def module_from_hf_config(hf: Mapping[str, Any], *, attention: str = "auto",
                          dtype: Dtype = jnp.float32, where: str = "config.json") -> Bert:
  """A `Bert` with a Hugging Face config.json's sizes."""
  for key, want in (("position_embedding_type", "absolute"), ("hidden_act", "gelu")):
    if hf.get(key, want) != want:
      raise CheckpointError(f"{where}: {key}={hf[key]!r} is not supported (only {want!r})")
  missing = [k for k in HF_FIELDS[:5] if k not in hf]
  if missing:
    raise CheckpointError(f"{where}: missing key(s) {missing}; not a BERT config")
  fields = {k: hf[k] for k in HF_FIELDS if k in hf}
  return Bert(**fields, attention=attention, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Checkpoint loading
# ---------------------------------------------------------------------------------------------
def _torch_layout(module: Bert) -> dict[tuple[str, str], tuple[str, tuple[int, ...], bool]]:
  """(flax module, flax param) -> (HF key without 'bert.', HF shape, transposed)."""
  h, f = module.hidden_size, module.intermediate_size
  out = {("word_embeddings", "embedding"): ("embeddings.word_embeddings.weight",
                                            (module.vocab_size, h), False),
         ("position_embeddings", "embedding"): ("embeddings.position_embeddings.weight",
                                                (module.max_position_embeddings, h), False),
         ("token_type_embeddings", "embedding"): ("embeddings.token_type_embeddings.weight",
                                                  (module.type_vocab_size, h), False)}
  norms = {"embeddings_norm": "embeddings.LayerNorm"}
  for i in range(module.num_hidden_layers):
    hf, p = f"encoder.layer.{i}.", f"layer_{i}_"
    denses = {"query": ("attention.self.query", h, h), "key": ("attention.self.key", h, h),
              "value": ("attention.self.value", h, h),
              "attention_out": ("attention.output.dense", h, h),
              "intermediate": ("intermediate.dense", h, f), "output": ("output.dense", f, h)}
    for name, (key, n_in, n_out) in denses.items():
      out[(p + name, "kernel")] = (hf + key + ".weight", (n_out, n_in), True)
      out[(p + name, "bias")] = (hf + key + ".bias", (n_out,), False)
    norms[p + "attention_norm"] = hf + "attention.output.LayerNorm"
    norms[p + "output_norm"] = hf + "output.LayerNorm"
  for name, key in norms.items():
    out[(name, "scale")] = (key + ".weight", (h,), False)
    out[(name, "bias")] = (key + ".bias", (h,), False)
  return out


def _lookup(tensors: Mapping[str, np.ndarray], key: str) -> str | None:
  """The stored name of HF key `key` under either prefix and LayerNorm naming, or None."""
  alternatives = [key]
  if ".LayerNorm." in key:
    alternatives.append(key.replace(".weight", ".gamma").replace(".bias", ".beta"))
  for k in alternatives:
    for name in (k, "bert." + k):
      if name in tensors:
        return name
  return None


def params_from_tensors(module: Bert, tensors: Mapping[str, np.ndarray],
                        where: str = "checkpoint") -> dict[str, Any]:
  """Flax params of `module` from a Hugging Face state dict {key: array} (numpy, torch layout)."""
  layout = _torch_layout(module)
  if _lookup(tensors, "embeddings.word_embeddings.weight") is None:
    sample = sorted(tensors)[:5]
    raise CheckpointError(
        f"{where}: unknown layout: no 'embeddings.word_embeddings.weight' or "
        f"'bert.embeddings.word_embeddings.weight' (a Hugging Face BERT state dict); "
        f"found {len(tensors)} tensors, e.g. {sample}")
  params: dict[str, dict[str, np.ndarray]] = {}
  used = set()
  for (mod, name), (key, shape, transpose) in layout.items():
    stored = _lookup(tensors, key)
    if stored is None:
      raise CheckpointError(f"{where}: missing tensor {key!r} (expected shape {shape}, "
                            f"for {mod}/{name}; num_hidden_layers="
                            f"{module.num_hidden_layers} in config.json)")
    value = np.asarray(tensors[stored])
    if value.shape != shape:
      raise CheckpointError(f"{where}: tensor {stored!r} has shape {value.shape}, expected "
                            f"{shape} from config.json")
    used.add(stored)
    params.setdefault(mod, {})[name] = np.asarray(value.T if transpose else value, np.float32)
  extra = sorted(k for k in tensors if k not in used and not IGNORED_KEYS.search(k))
  if extra:
    raise CheckpointError(f"{where}: {len(extra)} unexpected tensor(s) for a "
                          f"{module.num_hidden_layers}-layer BERT, e.g. {extra[:5]} "
                          f"(does config.json match the weights?)")
  return params


def read_hf_config(path: str) -> dict[str, Any]:
  """The config.json of a local Hugging Face model directory."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise CheckpointError(f"BERT checkpoint directory {path!r} not found (config.model.bert.path"
                          " must be a local folder with config.json and model.safetensors; "
                          "nothing is downloaded)")
  if not os.path.isfile(config_path):
    raise CheckpointError(f"{config_path}: not found; a Hugging Face model directory holds "
                          "config.json and model.safetensors")
  with open(config_path) as f:
    return json.load(f)


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """{key: numpy array} of `path`/model.safetensors, with a clear error for .bin-only folders."""
  weights = os.path.join(path, "model.safetensors")
  if os.path.isfile(weights):
    from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
    return safetensors_numpy.load_file(weights)
  if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise CheckpointError(
          f"{path}: only pytorch_model.bin, and reading it needs torch, which is not installed. "
          "Convert it once where torch is available:\n  python -c \"import torch; "
          "from safetensors.torch import save_file; "
          f"sd = torch.load('{path}/pytorch_model.bin', map_location='cpu'); "
          "save_file({k: v.contiguous() for k, v in sd.items()}, "
          f"'{path}/model.safetensors')\"") from None
    state = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu",
                       weights_only=True)
    return {k: v.numpy() for k, v in state.items()}
  raise CheckpointError(f"{path}: no model.safetensors (or pytorch_model.bin); found "
                        f"{sorted(os.listdir(path))}")


def load_pretrained(path: str, dtype: Dtype = jnp.float32,
                    attention: str = "auto") -> tuple[Bert, dict[str, Any]]:
  """(module, params) of a local Hugging Face BERT directory; params are float32 numpy."""
  path = os.path.expanduser(str(path))
  module = module_from_hf_config(read_hf_config(path), attention=attention, dtype=dtype,
                                 where=os.path.join(path, "config.json"))
  tensors = read_tensors(path)
  return module, params_from_tensors(module, tensors,
                                     where=os.path.join(path, "model.safetensors"))


# ---------------------------------------------------------------------------------------------
# The 'bert' backbone of CLCR (config.model.bert, models/defaults.py)
# ---------------------------------------------------------------------------------------------
def uses_bert(model_config) -> bool:
  return any(spec.backbone == "bert" for spec in model_config.modalities.values())


def check_levels(levels, num_hidden_layers: int) -> tuple[int, int, int]:
  levels = tuple(int(l) for l in levels)
  if (len(levels) != 3 or list(levels) != sorted(set(levels))
      or not all(0 <= l <= num_hidden_layers for l in levels)):
    raise ValueError(f"config.model.bert.levels={levels}: expected three increasing hidden-state "
                     f"indices in [0, {num_hidden_layers}] (0 = embeddings; the paper's "
                     f"(4, 8, 12) for 12 layers, (2, 4, 6) for 6)")
  return levels


def module_from_config(bert_config, attention: str = "auto", dtype: Dtype = jnp.float32,
                       param_dtype: Dtype = jnp.float32, name: str | None = None) -> Bert:
  """The `Bert` of a resolved `config.model.bert` block."""
  return Bert(**{k: bert_config[k] for k in HF_FIELDS}, attention=attention, dtype=dtype,
              param_dtype=param_dtype, name=name)


def resolve_config(model_config) -> None:
  """Fills `model_config.bert`'s sizes from bert.path's config.json (in place) and checks the
  levels; a no-op without a 'bert' backbone."""
  if not uses_bert(model_config):
    return
  cfg = model_config.bert
  if cfg.path:
    path = os.path.expanduser(cfg.path)
    hf = read_hf_config(path)
    module = module_from_hf_config(hf, where=os.path.join(path, "config.json"))
    for k in HF_FIELDS:
      cfg[k] = type(cfg[k])(getattr(module, k))
  elif not cfg.random_init:
    raise ValueError("config.model.bert.path is empty: point it at a local Hugging Face BERT "
                     "directory (config.json + model.safetensors, e.g. bert-base-uncased), or "
                     "set config.model.bert.random_init=True to train from random weights")
  check_levels(cfg.levels, cfg.num_hidden_layers)


def insert_pretrained(params, model_config):
  """`params` with every BERT backbone's weights replaced by those at config.model.bert.path
  (host numpy arrays in the parameters' dtypes).

  The BERT of modality m is the subtree `.../backbone_<m>/bert`; shapes must match the
  initialised ones (they do when the config was resolved from the same directory).
  """
  if not uses_bert(model_config) or not model_config.bert.path:
    return params
  _, loaded = load_pretrained(model_config.bert.path)
  names = {f"backbone_{m}" for m, spec in model_config.modalities.items()
           if spec.backbone == "bert"}
  found = []

  def replace(tree, path):
    out = {}
    for k, v in tree.items():
      if k == "bert" and path and path[-1] in names:
        want = jax.tree.map(lambda x: x.shape, v)
        got = jax.tree.map(lambda x: x.shape, loaded)
        if want != got:
          raise CheckpointError(f"{model_config.bert.path}: weights do not match the model's "
                                f"BERT ({'/'.join(path + (k,))}); was the config resolved from "
                                "another checkpoint?")
        out[k] = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), loaded, v)
        found.append("/".join(path + (k,)))
      elif isinstance(v, Mapping):
        out[k] = replace(v, path + (k,))
      else:
        out[k] = v
    return out

  new = replace(params, ())
  if not found:
    raise ValueError(f"no BERT backbone parameters (.../{sorted(names)}/bert) in the model")
  return new
