"""The paper's component ablation (Table 3; docs/model.md, Ablations) on one benchmark.

  python -m experiments.sweep experiments/sweeps/ablation.py:dataset=mosi \\
      --workdir_root=runs/sweeps/ablation_mosi --config.data.root=/data/MMSA/MOSI
  python -m experiments.sweep experiments/sweeps/ablation.py:dataset=kinetics_sounds,seeds=0-4 \\
      --workdir_root=runs/sweeps/ablation_ks

Rows: full CLCR; w/o hierarchy (one level, the deep one); w/o IntraCED (no shared/private split,
no exchange); w/o InterCAD (uniform level and modality weights, no private gates); full mix
(the tokens of all levels in one pool); w/o regularisation (lambda_intra = lambda_inter = 0).
The paper reports MOSI MAE and Kinetics-Sounds accuracy (full 0.678 / 75.41).
Argument: see experiments/sweeps/_datasets.py (dataset, seeds, epochs, config args).
"""
from experiments.sweeps import _datasets

POINTS = [
    ("full", {}),
    ("w/o hierarchy", {"model.ablation.no_hierarchy": True}),
    ("w/o IntraCED", {"model.ablation.no_intraced": True}),
    ("w/o InterCAD", {"model.ablation.no_intercad": True}),
    ("full mix", {"model.ablation.full_mix": True}),
    ("w/o regularisation", {"loss.lambda_intra": 0.0, "loss.lambda_inter": 0.0}),
]


def get_sweep(arg=None):
  dataset, seeds, overrides, config = _datasets.parse(arg)
  return dict(name=f"ablation_{dataset}", config=config, overrides=overrides, seeds=seeds,
              points=POINTS,
              description="Component ablation (CLCR Table 3): each row removes one part.")
