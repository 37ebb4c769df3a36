"""Sensitivity to the regulariser weights (docs/model.md, Losses): lambda_intra, lambda_inter in
{0.01, 0.05, 0.1, 0.5, 1.0}.

  python -m experiments.sweep experiments/sweeps/regularizers.py:dataset=mosi \\
      --workdir_root=runs/sweeps/lambdas_mosi

Default (`mode=separate`): one weight varies while the other stays at the default 0.1
(9 points). `mode=grid`: all 25 pairs.
Argument: `mode=...` plus those of experiments/sweeps/_datasets.py.
"""
from experiments import sweep as sweep_lib
from experiments.sweeps import _datasets

VALUES = (0.01, 0.05, 0.1, 0.5, 1.0)
DEFAULT = 0.1


def get_sweep(arg=None):
  items = [a for a in (arg or "").split(",") if a]
  mode = next((a.split("=", 1)[1] for a in items if a.startswith("mode=")), "separate")
  dataset, seeds, overrides, config = _datasets.parse(
      ",".join(a for a in items if not a.startswith("mode=")))
  if mode == "separate":
    points = sweep_lib.chain(
        sweep_lib.grid(**{"loss.lambda_intra": VALUES, "loss.lambda_inter": [DEFAULT]}),
        sweep_lib.grid(**{"loss.lambda_intra": [DEFAULT], "loss.lambda_inter": VALUES}))
  elif mode == "grid":
    points = sweep_lib.grid(**{"loss.lambda_intra": VALUES, "loss.lambda_inter": VALUES})
  else:
    raise ValueError(f"mode={mode!r}: expected 'separate' or 'grid'")
  return dict(name=f"regularizers_{dataset}", config=config, overrides=overrides, seeds=seeds,
              points=points,
              description="Regulariser-weight sensitivity (lambda_intra, lambda_inter).")
