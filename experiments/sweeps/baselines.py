"""CLCR next to the reference fusions on the same backbones (clcr_jax/models/baselines.py).

  python -m experiments.sweep experiments/sweeps/baselines.py:dataset=cremad \\
      --workdir_root=runs/sweeps/baselines_cremad

Points: model.name = clcr | late_fusion (per-modality heads, averaged) | flat_attention (one
cross-modal attention over all tokens, no levels, no budget).
Argument: see experiments/sweeps/_datasets.py.
"""
from experiments.sweeps import _datasets

POINTS = [
    ("CLCR", {"model.name": "clcr"}),
    ("late fusion", {"model.name": "late_fusion"}),
    ("flat attention", {"model.name": "flat_attention"}),
]


def get_sweep(arg=None):
  dataset, seeds, overrides, config = _datasets.parse(arg)
  return dict(name=f"baselines_{dataset}", config=config, overrides=overrides, seeds=seeds,
              points=POINTS, description="CLCR vs reference fusions.")
