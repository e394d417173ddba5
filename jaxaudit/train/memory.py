"""Memory of a training request, estimated before anything is allocated.

A training step of K members holds, per member and per example of a batch,
the input, every intermediate activation of the forward pass, and about as
much again for the backward pass. :func:`estimate_step_bytes` measures the
activations with ``jax.eval_shape`` (no computation, no allocation) and
:func:`check_fits` refuses a request that would not fit in this machine's
memory with one clear :class:`~jaxaudit.errors.ConfigError`, before a batch of
a billion records reaches XLA.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError

# Forward activations, their gradients and the optimiser's temporaries.
BACKWARD_FACTOR = 3


@functools.lru_cache(maxsize=64)
def per_example_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
  """Bytes of the input and all forward activations of one example (float32)."""
  from jaxaudit.models import init_params

  def fwd():
    params = init_params(model, jax.random.key(0), input_shape)
    _, state = model.apply({'params': params}, jnp.zeros((1, *input_shape), jnp.float32),
                           capture_intermediates=True, mutable=['intermediates'])
    return state

  shapes = jax.eval_shape(fwd)
  acts = sum(int(np.prod(s.shape[1:])) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
  return int(np.prod(input_shape)) * 4 + acts


@functools.lru_cache(maxsize=64)
def params_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
  """Bytes of one model's parameters."""
  from jaxaudit.models import init_params
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0), input_shape))
  return sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in jax.tree.leaves(shapes))


def estimate_step_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                        num_models: int = 1, *, parallel: bool = False) -> int:
  """Peak bytes of one training step of ``num_models`` members on batches of ``batch_size``.

  Args:
    model: the Linen module.
    input_shape: one record's shape (no batch axis).
    batch_size: B, examples per step and member.
    num_models: K members.
    parallel: members run at once (``vmap``) rather than one after another.
  Returns:
    An estimate in bytes: activations (×3 for the backward pass) of the members
    that run at once, plus parameters and Adam state (×4) of all members.
  """
  live = num_models if parallel else 1
  act = per_example_bytes(model, tuple(input_shape)) * int(batch_size) * live * BACKWARD_FACTOR
  return int(act + 4 * params_bytes(model, tuple(input_shape)) * int(num_models))


def available_bytes() -> int:
  """Memory this process may use: physical memory (or the cgroup limit, if lower)."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for path in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with open(path) as f:
        v = f.read().strip()
      if v.isdigit():
        total = min(total, int(v))
    except OSError:
      pass
  return int(total)


def _fmt(n: float) -> str:
  return f'{n / 2 ** 30:.1f} GiB' if n >= 2 ** 30 else f'{n / 2 ** 20:.0f} MiB'


def check_fits(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
               num_models: int = 1, *, parallel: bool = False, what: str = 'training',
               budget: int | None = None) -> int:
  """Raises ConfigError when a step would not fit in memory; returns the estimate.

  Args:
    budget: bytes allowed (default: 80% of :func:`available_bytes`).
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ConfigError(f'{what}: batch_size must be a positive integer, got {batch_size!r}')
  need = estimate_step_bytes(model, input_shape, batch_size, num_models, parallel=parallel)
  budget = int(0.8 * available_bytes()) if budget is None else int(budget)
  if need > budget:
    per = max(need // max(int(batch_size), 1), 1)
    fit = max(int(budget // per), 0)
    raise ConfigError(
        f'{what}: batch_size={batch_size} needs about {_fmt(need)} of memory for one step of '
        f'{num_models} model(s), more than the {_fmt(budget)} available; use a batch_size '
        f'of at most {fit}' if fit else f'{what}: the model does not fit in memory '
        f'({_fmt(need)} needed, {_fmt(budget)} available)')
  return need


__all__ = ['per_example_bytes', 'params_bytes', 'estimate_step_bytes', 'available_bytes',
           'check_fits', 'BACKWARD_FACTOR']
