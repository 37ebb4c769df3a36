"""The optimiser and learning-rate schedule of `config.train`.

The paper's recipe (docs/model.md, Optimisation) is SGD with momentum 0.9, lr 1e-3, weight decay
1e-4 and
StepLR(70 epochs, x0.1), the OGM-GE defaults. Weight decay follows PyTorch's SGD: it is added to
the gradient before momentum, on every parameter.
"""
from __future__ import annotations

from flax import traverse_util
import optax

from clcr_jax.models import bert as bert_lib


def total_steps(train_config, steps_per_epoch: int) -> int:
  """The run's length in steps: `num_epochs` epochs, capped at `max_steps` when that is > 0.

  Derived at launch and passed where it is needed (never stored in the config); the run
  directory's config.json records it as `train.total_steps`.
  """
  steps = train_config.num_epochs * steps_per_epoch
  if train_config.max_steps > 0:
    steps = min(steps, train_config.max_steps)
  return int(steps)


def make_schedule(train_config, steps_per_epoch: int,
                  learning_rate: float | None = None) -> optax.Schedule:
  """Learning rate as a function of the step.

  schedule: 'constant'; 'step' (x`decay_factor` at each epoch in `decay_epochs`, like
  torch StepLR/MultiStepLR); 'cosine' (to 0 over the run, `total_steps(train_config,
  steps_per_epoch)`, after `warmup_steps` linear warm-up).
  `learning_rate`: the peak, default `train_config.learning_rate`.
  """
  lr = train_config.learning_rate if learning_rate is None else learning_rate
  kind = train_config.schedule
  if kind == "constant":
    base = optax.constant_schedule(lr)
  elif kind == "step":
    base = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch): train_config.decay_factor
             for e in train_config.decay_epochs})
  elif kind == "cosine":
    total = max(1, total_steps(train_config, steps_per_epoch) - train_config.warmup_steps)
    base = optax.cosine_decay_schedule(lr, total)
  else:
    raise ValueError(f"config.train.schedule must be 'constant', 'step' or 'cosine', "
                     f"found {kind!r}")
  if train_config.warmup_steps > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, train_config.warmup_steps), base],
        [train_config.warmup_steps])
  return base


def _update_rule(train_config, schedule, weight_decay: float) -> list[optax.GradientTransformation]:
  """`weight_decay` + the `train.optimizer` update at `schedule` (no clipping)."""
  if train_config.optimizer == "sgd":
    parts = []
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    return parts + [optax.sgd(schedule, momentum=train_config.momentum or None)]
  if train_config.optimizer == "adamw":
    return [optax.adamw(schedule, weight_decay=weight_decay)]
  raise ValueError(f"config.train.optimizer must be 'sgd' or 'adamw', "
                   f"found {train_config.optimizer!r}")


def bert_labels(params):
  """'bert' for the parameters of a BERT backbone (a submodule named 'bert'), else 'rest'."""
  return traverse_util.path_aware_map(lambda path, _: "bert" if "bert" in path else "rest",
                                      params)


def make_optimizer(train_config, steps_per_epoch: int,
                   model_config=None) -> optax.GradientTransformation:
  """optax transformation for `train.optimizer` in {'sgd', 'adamw'}.

  With a 'bert' backbone in `model_config` (models/bert.py), BERT's parameters get their own
  update (`optax.multi_transform`): the same optimiser at `train.bert_learning_rate` (same
  schedule shape) with `train.bert_weight_decay` (None: `train.weight_decay`), or none at all
  when `model.bert.freeze` (no optimiser state for them).
  Gradient clipping stays global, over all parameters.
  """
  schedule = make_schedule(train_config, steps_per_epoch)
  parts = []
  if train_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train_config.grad_clip_norm))
  rule = _update_rule(train_config, schedule, train_config.weight_decay)
  if model_config is None or not bert_lib.uses_bert(model_config):
    # Flat, as before the BERT backbone existed: the optimiser state of older checkpoints.
    return optax.chain(*parts, *rule)
  if model_config.bert.freeze:
    bert_rule = optax.set_to_zero()
  else:
    bert_schedule = make_schedule(train_config, steps_per_epoch, train_config.bert_learning_rate)
    bert_decay = train_config.get("bert_weight_decay")
    if bert_decay is None:
      bert_decay = train_config.weight_decay
    bert_rule = optax.chain(*_update_rule(train_config, bert_schedule, bert_decay))
  rules = {"rest": optax.chain(*rule), "bert": bert_rule}
  return optax.chain(*parts, optax.multi_transform(rules, bert_labels))
