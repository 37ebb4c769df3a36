"""Config blocks shared by every experiment config (`get_config(arg)` files beside this one).

A config = seed + model (clcr_jax.models.default_config) + loss + data + train + eval +
checkpoint + parallel + logging. Experiment files override only what differs; the launcher
locks the result, so a mistyped override fails at launch.
"""
from __future__ import annotations

import os

import ml_collections
from ml_collections import config_dict

from clcr_jax import losses
from clcr_jax import modulation
from clcr_jax import models

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))


def parse_arg(arg: str | None, **defaults):
  """'a=1,b=x,flag' -> ConfigDict(a=1, b='x', flag=True) over typed defaults (big_vision style).

  Every key must appear in `defaults`, so a typo in `--config=file.py:arg` fails loudly.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid: {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() in ("", "1", "true", "yes")
    else:
      out[key] = kind(value)
  return out


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = models.default_config()
  config.loss = losses.default_config()

  config.data = ml_collections.ConfigDict()
  config.data.name = ""
  config.data.root = ""
  config.data.backend = "auto"      # 'auto' (tf.data if TensorFlow is installed) | 'tf' | 'numpy'
  config.data.train_split = "train"
  config.data.test_split = "test"

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64      # global batch
  config.train.num_epochs = 100
  config.train.max_steps = -1       # -1: no cap
  config.train.optimizer = "sgd"    # 'sgd' | 'adamw'
  config.train.learning_rate = 1e-3
  # The parameters of a 'bert' backbone (models/bert.py), when not frozen: MMSA fine-tunes BERT
  # at 5e-5 beside 1e-3 for the rest. Same optimiser and schedule shape (clcr_jax/optim.py).
  config.train.bert_learning_rate = 5e-5
  # Their weight decay, as MMSA's weight_decay_bert (e.g. 0.001); None: train.weight_decay.
  config.train.bert_weight_decay = config_dict.placeholder(float)
  config.train.momentum = 0.9
  config.train.weight_decay = 1e-4
  config.train.schedule = "step"    # 'constant' | 'step' | 'cosine'
  config.train.decay_epochs = (70,)
  config.train.decay_factor = 0.1
  config.train.warmup_steps = 0
  config.train.grad_clip_norm = 0.0  # 0: no clipping
  config.train.log_every_steps = 50
  # Gradient modulation (clcr_jax/modulation.py): 'none' | 'ogm_ge' | 'ogm' (OGM-GE without the
  # noise); needs model.name='late_fusion', model.fusion_head='linear' and two modalities.
  config.train.modulation = "none"
  config.train.ogm_ge = modulation.default_config()

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = -1      # -1: once per epoch
  config.eval.batch_size = 0        # 0: train.batch_size
  config.eval.select_on = "valid"   # 'valid'; 'test' only to reproduce peers that select on test
  config.eval.select_metric = "auto"  # auto: accuracy (cls), loss (regression), segment_accuracy
  config.eval.select_mode = "max"   # used when select_metric is not 'auto'
  config.eval.regression_variant = "mmsa"  # 'mmsa' | 'mult' | 'dmd' metric key sets

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = -1  # -1: once per epoch
  config.checkpoint.asynchronous = True
  # Multi-host: the processes agree on a SIGTERM (any one of them got it) every this many steps,
  # with one small all-gather, and all checkpoint that step and exit. One process checks every
  # step without a collective.
  config.checkpoint.preemption_check_every_steps = 10

  config.parallel = ml_collections.ConfigDict()
  config.parallel.mode = "jit"      # 'jit' (NamedSharding, multi-host) | 'pmap' (single host)
  config.parallel.mesh_shape = (-1,)  # devices on the 'data' axis; -1: all
  config.parallel.multihost = False   # call jax.distributed.initialize() at launch
  # jax.distributed.initialize's arguments: all three, or none to let JAX detect the cluster
  # (TPU pods, SLURM, Open MPI). '' / 0 / -1 mean unset.
  config.parallel.coordinator_address = ""  # host:port of process 0, reachable from all hosts
  config.parallel.num_processes = 0
  config.parallel.process_id = -1

  config.logging = ml_collections.ConfigDict()
  config.logging.tensorboard = True
  return config


def paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's optimisation (docs/model.md, Optimisation): SGD(0.9), lr 1e-3, wd 1e-4, batch 64,
  100 epochs,
  StepLR(70, x0.1)."""
  config.train.optimizer = "sgd"
  config.train.momentum = 0.9
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 1e-4
  config.train.batch_size = 64
  config.train.num_epochs = 100
  config.train.schedule = "step"
  config.train.decay_epochs = (70,)
  config.train.decay_factor = 0.1
  return config
