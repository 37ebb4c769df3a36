"""The benchmark configurations: model/loss/train configs and synthetic device-resident batches.

* mosi: CMU-MOSI unaligned shape (text 50 x 768, audio 375 x 5, vision 500 x 20), d = 128,
  4 heads, TCN backbones, regression, batch 64 (docs/model.md, Backbones and Widths;
  experiments/configs/mosi.py).
* cremad: CREMA-D shape (audio spectrogram 257 x 188, 3 RGB frames 224 x 224), one ResNet-18
  per modality, d = 512, 8 heads, 6 classes; batch 64 on GPU, 8 on CPU.
* synthetic: experiments/configs/synthetic.py's model (d = 64, 4 heads, TCN) on the synthetic
  generator's three sequence modalities (audio 48 x 16, text 24 x 24, vision 32 x 12), 8 classes.
* mosi_bert (JAX only so far, not in NAMES / `--config all`): `mosi.py:text=bert`'s shape, MMSA
  `text_bert` ids [3, 50] through a bert-base-sized BERT (12 layers, 768, random weights;
  levels 4/8/12, fine-tuned at lr 5e-5), audio and vision as mosi. The PyTorch side (HF
  BertModel in torch_impl) is not written yet.
MulT and MBT (BASELINE_VARIANTS) run as JAX variants of each configuration in the CPU table.
Every configuration trains with the paper's optimiser (SGD momentum 0.9, lr 1e-3, wd 1e-4) in
both frameworks, and CLCR in the paper's form (models/defaults.py and losses.py PAPER_FORM: the
learned, normalised InterCAD summaries, the 0.68 budget, summed R terms), which the PyTorch
reference implements; the project's defaults depart from it in a few cheap places. Only jax,
numpy and ml_collections are imported here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from clcr_jax import losses
from clcr_jax import models
from clcr_jax.models import defaults as model_defaults

NAMES = ("mosi", "cremad", "synthetic")
JAX_ONLY_NAMES = ("mosi_bert",)  # no PyTorch implementation yet: run with --config=mosi_bert
# The field's fusion baselines timed next to CLCR in the CPU table (run.py --baselines): JAX
# variants of the same configuration (same backbones, batch and optimiser), model.name only.
BASELINE_VARIANTS = (("mult", {"name": "mult"}), ("mbt", {"name": "mbt"}))


@dataclasses.dataclass
class Benchmark:
  name: str
  config: ml_collections.ConfigDict  # {model, loss, train}: what train_lib.make_train_step reads
  batch_size: int
  shapes: dict[str, tuple[int, ...]]  # per-example input shapes, JAX layout
  kinds: dict[str, str]
  description: str

  def torch_shapes(self) -> dict[str, tuple[int, ...]]:
    """Per-example shapes in PyTorch layout (clips channels-first)."""
    return {m: to_torch_layout_shape(self.kinds[m], s) for m, s in self.shapes.items()}


def to_torch_layout_shape(kind: str, shape):
  if kind == "video":
    f, h, w, c = shape
    return (f, c, h, w)
  return tuple(shape)


def train_config(steps_per_epoch: int) -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.optimizer = "sgd"
  t.learning_rate = 1e-3
  t.bert_learning_rate = 5e-5  # mosi_bert's BERT parameters (MMSA)
  t.momentum = 0.9
  t.weight_decay = 1e-4
  t.schedule = "step"
  t.decay_epochs = (70,)
  t.decay_factor = 0.1
  t.warmup_steps = 0
  t.grad_clip_norm = 0.0
  t.modulation = "none"
  t.num_epochs = 100              # optim.total_steps: num_epochs * steps_per_epoch
  t.max_steps = -1
  t.steps_per_epoch = steps_per_epoch
  return t


def get(name: str, device: str = "cpu", batch_size: int = 0,
        overrides: dict[str, Any] | None = None) -> Benchmark:
  """The named benchmark. `overrides`: {'attention': 'xla', 'budget.method': 'sort', ...}
  applied to the model config (dotted keys)."""
  model = models.default_config()
  model.name = "clcr"
  # The paper's form of the model, which the PyTorch reference implements (torch_reference/).
  for key, value in model_defaults.PAPER_FORM.items():
    section, field = key.split(".")
    model[section][field] = value
  if name in ("mosi", "mosi_bert"):
    model.task, model.d, model.num_heads = "regression", 128, 4
    shapes = {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}
    kinds = {m: "sequence" for m in shapes}
    if name == "mosi_bert":  # bert-base sizes are model.bert's defaults
      shapes["text"], kinds["text"] = (3, 50), "token_ids"
      model.bert.random_init = True
    batch = batch_size or 64
    steps_per_epoch = 1284 // 64
    desc = "MOSI unaligned: text 50x768, audio 375x5, vision 500x20; d=128, 4 heads, TCN"
  elif name == "cremad":
    model.task, model.num_classes, model.d, model.num_heads = "classification", 6, 512, 8
    model.resnet.base_width = 64
    shapes = {"audio": (257, 188), "visual": (3, 224, 224, 3)}
    kinds = {"audio": "spectrogram", "visual": "video"}
    batch = batch_size or (64 if device == "gpu" else 8)
    steps_per_epoch = 6698 // 64
    desc = ("CREMA-D: spectrogram 257x188, 3 frames 224x224x3; ResNet-18 per modality, "
            "d=512, 8 heads, 6 classes")
  elif name == "synthetic":
    model.task, model.num_classes, model.d, model.num_heads = "classification", 8, 64, 4
    shapes = {"audio": (48, 16), "text": (24, 24), "vision": (32, 12)}
    kinds = {m: "sequence" for m in shapes}
    batch = batch_size or 64
    steps_per_epoch = 4096 // 64
    desc = "synthetic: audio 48x16, text 24x24, vision 32x12; d=64, 4 heads, TCN, 8 classes"
  else:
    raise ValueError(f"unknown benchmark {name!r}; expected one of {NAMES + JAX_ONLY_NAMES}")
  backbone = {"sequence": "tcn", "token_ids": "bert"}
  for m, kind in kinds.items():  # TCN over feature sequences, ResNet-18 over images and audio
    model.modalities[m] = models.modality(kind, backbone.get(kind, "resnet18"))
  for key, value in (overrides or {}).items():
    node = model
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  loss = losses.default_config()
  loss.update(losses.PAPER_FORM)
  config = ml_collections.ConfigDict({"model": model, "loss": loss,
                                      "train": train_config(steps_per_epoch)})
  return Benchmark(name, config, batch, shapes, kinds, desc)


def token_count(kind: str, shape) -> int:
  return {"sequence": shape[0], "spectrogram": shape[-1], "video": shape[0],
          "token_ids": shape[-1]}[kind]


def make_batch(bench: Benchmark, seed: int = 0) -> dict[str, Any]:
  """A host numpy batch in JAX layout (design.md's batch contract). Sequence modalities get
  random valid lengths (>= 70 %) like real MOSI rows; AV inputs are full."""
  rng = np.random.default_rng(seed)
  b = bench.batch_size
  inputs, masks = {}, {}
  for m, shape in bench.shapes.items():
    inputs[m] = rng.standard_normal((b,) + tuple(shape), dtype=np.float32)
    t = token_count(bench.kinds[m], shape)
    if bench.kinds[m] == "token_ids":  # [CLS] w ... [SEP] then padding, like MMSA's rows
      lengths = rng.integers(int(0.3 * t), t + 1, b)
      masks[m] = np.arange(t)[None] < lengths[:, None]
      ids = rng.integers(1000, 29000, (b, t)) * masks[m]
      inputs[m] = np.stack([ids, masks[m], np.zeros((b, t))], axis=1).astype(np.float32)
    elif bench.kinds[m] == "sequence":
      lengths = rng.integers(int(0.7 * t), t + 1, b)
      masks[m] = np.arange(t)[None] < lengths[:, None]
      inputs[m] *= masks[m][..., None]
    else:
      masks[m] = np.ones((b, t), bool)
  task = bench.config.model.task
  if task == "regression":
    label = rng.uniform(-3, 3, b).astype(np.float32)
  else:
    label = rng.integers(0, bench.config.model.num_classes, b).astype(np.int32)
  return {"inputs": inputs, "masks": masks, "label": label, "valid": np.ones(b, bool)}


def to_torch_layout(bench: Benchmark, batch):
  """The same batch with clips channels-first ([B, F, H, W, C] -> [B, F, C, H, W])."""
  inputs = {m: (np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3))
                if bench.kinds[m] == "video" else x) for m, x in batch["inputs"].items()}
  return dict(batch, inputs=inputs)
