"""Token-budget sweep (docs/model.md, Budget and Analyses): the participation ratio B_l / T from
0.1 to 1.0.

  python -m experiments.sweep experiments/sweeps/budget.py:dataset=kinetics_sounds \\
      --workdir_root=runs/sweeps/budget_ks
  python -m clcr_jax.analyze --sweep=runs/sweeps/budget_ks     # metric vs measured participation

Each point sets the budget's initial ratio (model.budget.participation_init) and the target of
the budget penalty (loss.budget_target) to the same value, so the penalty holds the budget near
it; a last point makes the exchange dense (model.ablation.dense_budget). The summary reports the
measured test participation per level (the fraction of valid tokens with alpha > 0,
participation/level{l}, and their mean participation/mean) next to the task metric. The paper
finds r ~ 0.68 best and a dense exchange worst.
Argument: see experiments/sweeps/_datasets.py.
"""
from experiments import sweep as sweep_lib
from experiments.sweeps import _datasets

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.8, 0.9, 1.0)


def get_sweep(arg=None):
  dataset, seeds, overrides, config = _datasets.parse(arg)
  points = sweep_lib.zipped(**{"model.budget.participation_init": RATIOS,
                               "loss.budget_target": RATIOS})
  points.append(("dense exchange", {"model.ablation.dense_budget": True}))
  return dict(name=f"budget_{dataset}", config=config, overrides=overrides, seeds=seeds,
              points=points, metrics=("@task", "participation/*"),
              description="Token budget: task metric vs the participation ratio.")
