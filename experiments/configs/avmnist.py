"""AV-MNIST (MNIST digit image + spoken digit, 10 classes), built from ../shared/data.

Launch (no download: the MNIST, FSDD and pairing files ship in ../shared/data):
  python -m clcr_jax.main --config=experiments/configs/avmnist.py --workdir=runs/avmnist
Variants (`:arg`, comma-separated):
  model=late_fusion | flat_attention | mult | mbt | misa   fusions on the same backbones
  audio_backbone=tcn                   a TCN over the spectrogram's time axis instead of ResNet-18
  modalities=image | audio             one modality only (default image+audio); with
                                       model=late_fusion, the unimodal baselines
  tiny                                 CPU smoke setting (d = 16, batch 8, 512 train rows)
Subsets for quick runs: --config.data.max_train_examples=2000 --config.data.max_eval_examples=500

Data (data_pipelines/readers/avmnist.py; the MultiBench / MFAS recipe):
  root default ../shared/data; spectrogram cache ~/.cache/clcr_jax/avmnist
  splits train 55000 / valid 5000 / test 10000 (MultiBench's `multibench_split`)
  image  PCA of the 784 pixels keeping 25 % of the train variance: float32 [k] (k = 4), 'vector'
  audio  the generator's 112 x 112 spectrogram of the paired FSDD recording, 'spectrogram'
  label  the digit, 10 classes
Model: not one of the paper's benchmarks; the audio-visual settings at MSA width: d = 128,
  4 heads; audio through a from-scratch ResNet-18 (levels = layer2/3/4, frequency pooled, time
  tokens), the image vector through Linear + the dilated TCN (one token).
Optimisation: the paper recipe (SGD 0.9, lr 1e-3, wd 1e-4, batch 64, 100 epochs, StepLR 70).
Selection: validation accuracy every epoch (MultiBench's valid split), test once at the best.
"""
from __future__ import annotations

from ml_collections import config_dict

from clcr_jax import models
from data_pipelines.readers import avmnist as avmnist_reader
from experiments.configs import _benchmark
from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, model="clcr", audio_backbone="resnet18", modalities="image+audio",
                         tiny=False)
  config = common.paper_recipe(common.base_config())
  config.model.name = _benchmark.check_model(arg.model)

  _benchmark.set_data(config, "avmnist", dict(
      root=common.SHARED_DATA,
      cache_dir=avmnist_reader.DEFAULT_CACHE,        # '' disables the spectrogram cache
      max_train_examples=config_dict.placeholder(int),
      max_eval_examples=config_dict.placeholder(int),
      pca_variance=0.25,
      audio_render="mfas",                           # 'mfas' | 'db'
  ))
  config.model.task = "classification"
  config.model.num_classes = avmnist_reader.NUM_CLASSES
  config.model.d = 128
  config.model.num_heads = 4
  available = {"audio": models.modality("spectrogram", arg.audio_backbone),
               "image": models.modality("vector", "tcn")}
  chosen = [m for m in arg.modalities.split("+") if m]
  if not chosen or set(chosen) - set(available):
    raise ValueError(f"avmnist: modalities={arg.modalities!r}; expected 'image', 'audio' or "
                     "'image+audio'")
  for m in sorted(chosen):  # the model's modality order is the data's: audio, image
    config.model.modalities[m] = available[m]

  config.eval.select_on = "valid"
  config.eval.select_metric = "auto"   # accuracy, max

  if arg.tiny:
    _benchmark.scale_down(config)
    config.data.max_train_examples = 512
    config.data.max_eval_examples = 128
  return config
