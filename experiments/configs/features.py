"""Your own pre-extracted features (the generic `features` format): no code to write.

Launch (the root is required):
  python -m clcr_jax.main --config=experiments/configs/features.py \\
      --config.data.root=/data/my_features --workdir=runs/my_features
Layout (data_pipelines/readers/features.py): <root>/{train,valid,test}.npz (or one folder of
  <key>.npy per split) with `<modality>` float [N, T, D] or [N, D], optional `<modality>_lengths`
  int [N], and `label`: int [N] (classification), float [N] (regression) or int [N, S]
  (per-segment classification). The task, the number of classes and the modalities are read
  from the arrays (config.model.task / num_classes / modalities stay 'auto' / 0 / empty).
Variants (`:arg`, comma-separated):
  select_on=test        for data with no validation split: also pass
                        --config.data.splits="('train', 'test')". Test-set selection gives
                        optimistic numbers (train_lib warns); prefer a held-out valid split.
  model=late_fusion | flat_attention | mult | mbt | misa, tiny
Other reader fields: --config.data.modalities="('audio', 'video')" (which keys, in order),
  --config.data.task=..., --config.data.num_classes=..., --config.data.padding_side=left.

Model: d = 128, 4 heads (docs/model.md, Widths: the MSA width; features are usually
low-dimensional), every
  modality through Linear + the 3-stage dilated TCN (vectors are one-token sequences).
Optimisation: the paper recipe (SGD 0.9, lr 1e-3, wd 1e-4, batch 64, 100 epochs, StepLR 70).
Selection: the 'valid' split, every epoch: accuracy (classification), loss (regression),
  segment accuracy (per-segment labels).
"""
from __future__ import annotations

from ml_collections import config_dict

from experiments.configs import _benchmark
from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, model="clcr", select_on="valid", tiny=False)
  config = common.paper_recipe(common.base_config())
  config.model.name = _benchmark.check_model(arg.model)

  _benchmark.set_data(config, "features", dict(
      root="",                                    # required: --config.data.root=...
      splits=("train", "valid", "test"),
      modalities=config_dict.placeholder(tuple),  # None: every non-label key, sorted
      task="auto",          # 'auto' | 'classification' | 'regression' | 'segment_classification'
      num_classes=config_dict.placeholder(int),   # None: max label + 1
      padding_side="right",
  ))
  config.model.d = 128
  config.model.num_heads = 4
  if arg.select_on not in ("valid", "test"):
    raise ValueError(f"select_on={arg.select_on!r}: expected 'valid' or 'test'")
  config.eval.select_on = arg.select_on

  if arg.tiny:
    _benchmark.scale_down(config)
  return config
