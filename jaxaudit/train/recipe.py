"""Training recipes: optimiser, schedule and loop lengths as a frozen, hashable value."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
import optax

from jaxaudit.errors import ConfigError

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine')
AUGMENTS = ('none', 'flip', 'crop', 'flip_crop')


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How to train one model. Hashable, so it can key compiled programs.

  Attributes:
    optimizer: ``sgd`` (with momentum), ``adam`` or ``adamw``.
    learning_rate: peak learning rate.
    momentum: SGD momentum (ignored by Adam).
    weight_decay: decoupled for ``adamw``; an L2 gradient term otherwise.
    schedule: ``constant`` or ``cosine`` (decay to 0 over all steps).
    warmup_steps: linear warm-up steps (cosine only).
    epochs: passes over each model's training subset.
    batch_size: examples per step.
    label_smoothing: cross-entropy label smoothing.
    augment: on-the-fly image augmentation: ``none``, ``flip``, ``crop``
      (random ±2 px translation) or ``flip_crop``.
  """
  optimizer: str = 'adam'
  learning_rate: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: str = 'cosine'
  warmup_steps: int = 0
  epochs: int = 10
  batch_size: int = 128
  label_smoothing: float = 0.0
  augment: str = 'none'

  def __post_init__(self):
    if self.augment is None:    # `--config.train.augment=none` reaches us as None
      object.__setattr__(self, 'augment', 'none')
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f'unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}')
    if self.schedule not in SCHEDULES:
      raise ConfigError(f'unknown schedule {self.schedule!r}; choose one of {SCHEDULES}')
    if self.augment not in AUGMENTS:
      raise ConfigError(f'unknown augment {self.augment!r}; choose one of {AUGMENTS}')
    for name in ('epochs', 'batch_size', 'warmup_steps'):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ConfigError(f'{name} must be an integer, got {v!r}')
    if not 0 < self.learning_rate < float('inf'):
      raise ConfigError(f'learning_rate must be a finite number > 0, got {self.learning_rate}')
    if self.epochs > 1_000_000:
      raise ConfigError(f'epochs must be <= 1000000, got {self.epochs}')
    if self.epochs < 0:
      raise ConfigError(f'epochs must be >= 0, got {self.epochs}')
    if self.batch_size < 1:
      raise ConfigError(f'batch_size must be >= 1, got {self.batch_size}')
    if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
      raise ConfigError('weight_decay must be >= 0 and label_smoothing in [0, 1)')

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | None = None, **overrides) -> 'Recipe':
    """Builds a recipe from a mapping (e.g. an ml_collections ConfigDict)."""
    values = dict(cfg or {})
    values.update(overrides)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
      raise ConfigError(f'unknown training option(s) {sorted(unknown)}; valid: {sorted(fields)}')
    for name in ('epochs', 'batch_size', 'warmup_steps'):   # 5.0 from a JSON file is 5
      v = values.get(name)
      if isinstance(v, float) and v.is_integer():
        values[name] = int(v)
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> 'Recipe':
    return dataclasses.replace(self, **changes)


def make_optimizer(recipe: Recipe, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation a recipe describes, for ``total_steps`` updates."""
  total_steps = max(int(total_steps), 1)
  if recipe.schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if recipe.warmup_steps else recipe.learning_rate,
        peak_value=recipe.learning_rate,
        warmup_steps=min(recipe.warmup_steps, total_steps - 1),
        decay_steps=total_steps, end_value=0.0)
  else:
    lr = recipe.learning_rate
  if recipe.optimizer == 'adamw':
    return optax.adamw(lr, weight_decay=recipe.weight_decay)
  chain = []
  if recipe.weight_decay:
    chain.append(optax.add_decayed_weights(recipe.weight_decay))
  if recipe.optimizer == 'sgd':
    chain.append(optax.sgd(lr, momentum=recipe.momentum or None))
  else:
    chain.append(optax.adam(lr))
  return optax.chain(*chain)


def make_base_optimizer(recipe: Recipe) -> optax.GradientTransformation:
  """The recipe's optimiser with a unit learning rate.

  In every optax optimiser used here the learning rate is the last,
  multiplicative stage, so ``updates * learning_rate_at(...)`` equals the
  scheduled optimiser's updates. Ensemble training uses this form so that
  each member follows its own schedule length (ragged subsets).
  """
  return make_optimizer(recipe.replace(schedule='constant', learning_rate=1.0), 1)


def learning_rate_at(recipe: Recipe, step, total_steps):
  """Learning rate at ``step`` of ``total_steps`` (both may be traced scalars)."""
  peak = recipe.learning_rate
  if recipe.schedule == 'constant':
    return jnp.asarray(peak, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  warm = jnp.minimum(jnp.float32(recipe.warmup_steps), total - 1.0)
  warm_lr = peak * step / jnp.maximum(warm, 1.0)
  frac = jnp.clip((step - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
  cos_lr = 0.5 * peak * (1.0 + jnp.cos(jnp.pi * frac))
  return jnp.where(step < warm, warm_lr, cos_lr)
