"""Learning-rate schedules: the paper's plateau rule (§5), fixed steps and cosine.

The training step computes `lr = schedule(step) * factor`:

- `make_schedule(config, steps_per_epoch, total_steps)` is the jittable part, a function
  of the step (the number of updates done so far, 0 for the first update).
- `Plateau` is the host-side part of the paper's schedule: "divide the learning rate by 10
  when the validation error rate stopped improving with the current learning rate", at
  most three times (§5). It returns the `factor`, which the train state carries; its
  `state_dict()` goes into checkpoints so that a resumed run drops at the same points.
"""

import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

SCHEDULES = ('plateau', 'steps', 'cosine')


def parse_step_epochs(step_epochs: str) -> list[float]:
  """'30,60,80' -> [30.0, 60.0, 80.0], with an error naming the field if malformed."""
  try:
    epochs = [float(e) for e in step_epochs.split(',') if e.strip()]
  except ValueError:
    raise ValueError(
        f'config.optimizer.step_epochs={step_epochs!r}: expected comma-separated epoch '
        "numbers such as '30,60,80'.") from None
  if epochs != sorted(epochs) or any(e <= 0 for e in epochs):
    raise ValueError(f'config.optimizer.step_epochs={step_epochs!r}: epochs must be '
                     'positive and increasing.')
  return epochs


def make_schedule(config, steps_per_epoch: int, total_steps: int) -> Callable:
  """The step-dependent learning rate of `config.optimizer` (jittable).

  Args:
    config: the full config; reads config.optimizer.{learning_rate, schedule,
      step_epochs, warmup_epochs}.
    steps_per_epoch: updates per epoch (training examples / global batch).
    total_steps: updates in the whole run (the end of the cosine).

  Returns:
    `schedule(step) -> lr`, a float32 scalar, for a Python int or a traced step.
    'plateau' gives the constant base rate (the drops come from `Plateau`); 'steps'
    divides it by 10 at each of `step_epochs`; 'cosine' decays it to 0 at `total_steps`.
    A linear warm-up over `warmup_epochs` (not in the paper) multiplies all three.
  """
  opt = config.optimizer
  if opt.schedule not in SCHEDULES:
    raise ValueError(f'config.optimizer.schedule={opt.schedule!r}: expected one of '
                     f'{SCHEDULES}.')
  if steps_per_epoch <= 0 or total_steps < 0:
    raise ValueError(f'steps_per_epoch={steps_per_epoch} must be positive and '
                     f'total_steps={total_steps} not negative.')
  base = opt.learning_rate
  warmup_steps = round(opt.warmup_epochs * steps_per_epoch)
  if opt.schedule == 'steps':
    boundaries = np.array([round(e * steps_per_epoch)
                           for e in parse_step_epochs(opt.step_epochs)], np.int32)

  def schedule(step):
    step = jnp.asarray(step)
    if opt.schedule == 'steps':
      lr = base * 0.1 ** jnp.sum(step >= boundaries)
    elif opt.schedule == 'cosine':
      progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0, 1)
      lr = base * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    else:
      lr = jnp.asarray(base)
    if warmup_steps > 0:  # The first update uses base / warmup_steps, not 0.
      lr = lr * jnp.minimum((step + 1) / warmup_steps, 1.0)
    return lr.astype(jnp.float32)

  return schedule


class Plateau:
  """The paper's rule: /10 when the validation error stopped improving (§5).

  After each evaluation, `update(val_top1_error)` counts the evaluations since the best
  error so far improved by more than `min_delta`; after `patience` of them it divides the
  factor by 10 (and starts counting again), at most `max_drops` times in all.
  """

  def __init__(self, patience: int, min_delta: float, max_drops: int):
    if patience < 1 or max_drops < 0:
      raise ValueError(f'plateau_patience={patience} must be >= 1 and '
                       f'plateau_max_drops={max_drops} >= 0.')
    self.patience, self.min_delta, self.max_drops = patience, min_delta, max_drops
    self.best = None  # The lowest validation top-1 error seen.
    self.num_bad = 0  # Evaluations since it last improved.
    self.num_drops = 0

  @classmethod
  def from_config(cls, config) -> 'Plateau':
    """From config.optimizer; for schedules other than 'plateau' it never drops."""
    opt = config.optimizer
    max_drops = opt.plateau_max_drops if opt.schedule == 'plateau' else 0
    return cls(opt.plateau_patience, opt.plateau_min_delta, max_drops)

  @property
  def factor(self) -> float:
    return 0.1 ** self.num_drops

  def update(self, val_top1_error: float) -> float:
    """Records one evaluation and returns the factor for the following steps."""
    if not math.isfinite(val_top1_error):
      raise ValueError(f'Plateau.update got a non-finite validation error {val_top1_error}.')
    if self.best is None or val_top1_error < self.best - self.min_delta:
      self.best, self.num_bad = val_top1_error, 0
    else:
      self.num_bad += 1
      if self.num_bad >= self.patience and self.num_drops < self.max_drops:
        self.num_drops += 1
        self.num_bad = 0
    return self.factor

  def state_dict(self) -> dict:
    """A JSON-able snapshot, saved with each checkpoint."""
    return {'best': self.best, 'num_bad': self.num_bad, 'num_drops': self.num_drops}

  def from_state_dict(self, state: dict) -> 'Plateau':
    """Restores a `state_dict()` snapshot in place; returns self."""
    self.best, self.num_bad, self.num_drops = state['best'], state['num_bad'], state['num_drops']
    return self
