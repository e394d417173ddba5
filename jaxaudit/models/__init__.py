"""Flax Linen models, used as pure ``apply_fn(params, x) -> logits``.

``get_model(name, num_classes, **kwargs)`` builds a module by name; ``init_params``
and ``make_apply_fn`` wrap the Linen calling convention so that the rest of
jaxaudit handles parameters as a plain pytree (the ``'params'`` collection).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaudit.errors import ConfigError
from jaxaudit.models.cnn import CNN
from jaxaudit.models.mlp import MLP
from jaxaudit.models.resnet import ResNet18
from jaxaudit.models.transformer import TransformerLM

Params = Any
ApplyFn = Callable[[Params, jnp.ndarray], jnp.ndarray]

MODELS: dict[str, type[nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'resnet18': ResNet18,
    'transformer': TransformerLM,
}
IMAGE_ONLY = frozenset({'cnn', 'resnet18'})


def get_model(name: str, num_classes: int, input_shape: tuple[int, ...] | None = None,
              **kwargs) -> nn.Module:
  """Returns the Linen module registered as ``name``.

  Args:
    name: one of ``MODELS`` (``mlp``, ``cnn``, ``resnet18``, ``transformer``).
    num_classes: size of the output layer.
    input_shape: shape of one input; when given, checked against the model
      (convolutional models need (H, W, C) images).
    **kwargs: module attributes (e.g. ``hidden=(512,)`` for the MLP).
  """
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; choose one of {sorted(MODELS)}')
  if num_classes < 2:
    raise ConfigError(f'num_classes must be >= 2, got {num_classes}')
  if input_shape is not None and name in IMAGE_ONLY and len(input_shape) != 3:
    raise ConfigError(
        f'model {name!r} needs (H, W, C) image inputs, got input_shape {tuple(input_shape)}')
  fields = {f for f in MODELS[name].__dataclass_fields__ if f not in ('parent', 'name')}
  unknown = set(kwargs) - fields
  if unknown:
    raise ConfigError(f'unknown option(s) {sorted(unknown)} for model {name!r}; '
                      f'valid: {sorted(fields - {"num_classes"})}')
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  if name == 'transformer' and input_shape is not None:
    if len(input_shape) != 1:
      raise ConfigError(f"model 'transformer' needs token records of shape (T+1,), got "
                        f'input_shape {tuple(input_shape)}')
    kwargs.setdefault('context', int(input_shape[0]) - 1)   # records hold T + 1 tokens
  return MODELS[name](num_classes=num_classes, **kwargs)


def init_params(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> Params:
  """Initialises parameters for inputs of shape ``input_shape`` (no batch axis)."""
  dummy = jnp.zeros((1, *input_shape), jnp.float32)
  return model.init(key, dummy)['params']


def make_apply_fn(model: nn.Module) -> ApplyFn:
  """``apply_fn(params, x: (B, *input_shape)) -> logits (B, num_classes)``."""

  def apply_fn(params, x):
    return model.apply({'params': params}, x)

  return apply_fn


def num_params(params: Params) -> int:
  """Number of scalar parameters in a pytree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))


__all__ = ['MLP', 'CNN', 'ResNet18', 'TransformerLM', 'MODELS', 'get_model', 'init_params',
           'make_apply_fn', 'num_params']
