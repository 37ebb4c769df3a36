"""The embedded synthetic benchmark (data_pipelines/synthetic.py): the default, no files needed.

Launch:
  python -m clcr_jax.main --config=experiments/configs/synthetic.py --workdir=runs/synthetic
Variants (`:arg`): model=clcr|late_fusion|flat_attention|mult|mbt|misa, tiny (a seconds-long
smoke setting), generator=default|variant (the variant: 16 classes, see data_pipelines/synthetic.py).
  python -m clcr_jax.main --config=experiments/configs/synthetic.py:model=late_fusion \\
      --workdir=runs/synthetic_late_fusion
"""
from __future__ import annotations

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, model="clcr", tiny=False, generator="default")
  config = common.base_config()
  config.model.name = arg.model

  config.data.name = "synthetic"
  config.data.train_split = "train"
  config.data.num_train = 4096
  config.data.num_valid = 1024
  config.data.num_test = 1024
  config.data.data_seed = 0
  config.data.event_amplitude = 1.5
  config.data.window_amplitude = 1.0
  config.data.global_amplitude = 0.25
  config.data.nuisance_amplitude = 2.0
  config.data.noise = 1.0
  # 'default' | 'variant' (data_pipelines/synthetic.py: cross-modal parity, private cue, levels).
  config.data.generator = arg.generator
  if arg.generator == "variant":  # the variant's levels (its spec defaults) and private cue
    config.data.event_amplitude = 2.0
    config.data.global_amplitude = 0.15
    config.data.cue_amplitude = 0.2

  # A CPU-sized model: d = 64 keeps a run to minutes on two cores.
  config.model.d = 64
  config.model.num_heads = 4

  config.train.optimizer = "adamw"
  config.train.learning_rate = 2e-3
  config.train.weight_decay = 1e-4
  config.train.schedule = "cosine"
  config.train.warmup_steps = 50
  config.train.batch_size = 64
  # 40 epochs: both CLCR's and late fusion's validation accuracy plateau by epoch 25-32 (README,
  # CLCR against late fusion); at 15 they are still rising and the window bit is luck per seed.
  config.train.num_epochs = 40
  config.train.log_every_steps = 64

  if arg.tiny:
    config.data.num_train, config.data.num_valid, config.data.num_test = 64, 32, 32
    config.model.d = 16
    config.model.num_heads = 2
    config.train.batch_size = 16
    config.train.num_epochs = 2
    config.train.warmup_steps = 0
    config.train.log_every_steps = 2
  return config
