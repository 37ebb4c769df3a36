"""A seconds-per-run sweep of the tiny synthetic setting: 2 noise levels x 2 seeds.

  python -m experiments.sweep experiments/sweeps/synthetic_tiny.py \\
      --workdir_root=runs/sweeps/synthetic_tiny --parallel=2

The smoke test of the sweep machinery (tests/test_sweep.py, the analysis notebook). The points
change only the data (config.data.noise), so all four runs share one compiled program.
"""


def get_sweep(arg=None):
  del arg
  return dict(
      name="synthetic_tiny",
      config="experiments/configs/synthetic.py:tiny",
      # One evaluation and one checkpoint, at the last of the 8 steps.
      overrides={"data.backend": "numpy", "eval.every_steps": 8, "checkpoint.every_steps": 8},
      points=[("noise 0.5", {"data.noise": 0.5}), ("noise 1.5", {"data.noise": 1.5})],
      seeds=(0, 1),
      metrics=("@task", "loss", "participation/mean"),
      description="Tiny synthetic smoke sweep: white-noise level of the data.")
