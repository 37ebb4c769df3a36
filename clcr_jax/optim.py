"""The optimiser and learning-rate schedule of `config.train`.

The paper's recipe (spec §4, §8.8) is SGD with momentum 0.9, lr 1e-3, weight decay 1e-4 and
StepLR(70 epochs, x0.1), the OGM-GE defaults. Weight decay follows PyTorch's SGD: it is added to
the gradient before momentum, on every parameter.
"""
from __future__ import annotations

import optax


def make_schedule(train_config, steps_per_epoch: int) -> optax.Schedule:
  """Learning rate as a function of the step.

  schedule: 'constant'; 'step' (x`decay_factor` at each epoch in `decay_epochs`, like
  torch StepLR/MultiStepLR); 'cosine' (to 0 over the run, after `warmup_steps` linear warm-up).
  """
  lr = train_config.learning_rate
  kind = train_config.schedule
  if kind == "constant":
    base = optax.constant_schedule(lr)
  elif kind == "step":
    base = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch): train_config.decay_factor
             for e in train_config.decay_epochs})
  elif kind == "cosine":
    total = max(1, train_config.total_steps - train_config.warmup_steps)
    base = optax.cosine_decay_schedule(lr, total)
  else:
    raise ValueError(f"config.train.schedule must be 'constant', 'step' or 'cosine', "
                     f"found {kind!r}")
  if train_config.warmup_steps > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, train_config.warmup_steps), base],
        [train_config.warmup_steps])
  return base


def make_optimizer(train_config, steps_per_epoch: int) -> optax.GradientTransformation:
  """optax transformation for `train.optimizer` in {'sgd', 'adamw'}."""
  schedule = make_schedule(train_config, steps_per_epoch)
  parts = []
  if train_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train_config.grad_clip_norm))
  if train_config.optimizer == "sgd":
    if train_config.weight_decay:
      parts.append(optax.add_decayed_weights(train_config.weight_decay))
    parts.append(optax.sgd(schedule, momentum=train_config.momentum or None))
  elif train_config.optimizer == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=train_config.weight_decay))
  else:
    raise ValueError(f"config.train.optimizer must be 'sgd' or 'adamw', "
                     f"found {train_config.optimizer!r}")
  return optax.chain(*parts)
