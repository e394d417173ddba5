"""Helpers shared by the method modules (not public API)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit import compilation
from jaxaudit.errors import ConfigError
from jaxaudit.models import init_params
from jaxaudit.train import loop as loops
from jaxaudit.unlearn.objectives import CrossEntropy

Params = Any

# Fine-tuning defaults (SGD with momentum, cosine schedule), sized for digits/MNIST.
FT_DEFAULTS = dict(epochs=5, lr=0.02, batch_size=64, momentum=0.9, weight_decay=5e-4,
                   optimizer='sgd', schedule='cosine')
# Keys every spec reads, with the prefix of a phase prepended to the phase-specific ones.
_SHARED = ('batch_size', 'momentum', 'weight_decay', 'optimizer', 'schedule')


def spec_from(hp: Mapping[str, Any], prefix: str = '', **changes):
  """The optimiser spec of a phase: ``{prefix}epochs`` and ``{prefix}lr`` plus the shared
  keys (batch_size, momentum, weight_decay, optimizer, schedule) of ``hp``."""
  kw = dict(epochs=hp[prefix + 'epochs'], lr=hp[prefix + 'lr'])
  for k in _SHARED:
    kw[k] = hp.get(prefix + k, hp.get(k, FT_DEFAULTS[k]))
  kw.update(changes)
  return loops.make_spec(**kw)


def check_fraction(name: str, value: float, *, open_low: bool = False) -> None:
  """ConfigError unless value in [0, 1] ((0, 1] with open_low)."""
  lo_ok = value > 0 if open_low else value >= 0
  if not (lo_ok and value <= 1):
    rng = '(0, 1]' if open_low else '[0, 1]'
    raise ConfigError(f'{name} must lie in {rng}, got {value}')


def check_positive(**values) -> None:
  """ConfigError unless every value is > 0."""
  for k, v in values.items():
    if not v > 0:
      raise ConfigError(f'{k} must be > 0, got {v}')


def check_nonneg(**values) -> None:
  """ConfigError unless every value is >= 0."""
  for k, v in values.items():
    if not v >= 0:
      raise ConfigError(f'{k} must be >= 0, got {v}')


@functools.lru_cache(maxsize=2 * compilation.PROGRAMS_PER_CACHE)   # small programs
def _jit(fn: Callable, static: tuple) -> Callable:
  return jax.jit(functools.partial(fn, **dict(static)) if static else fn)


def jit_apply(fn: Callable, *args, **static):
  """``fn(*args, **static)`` through a jitted program cached on (fn, static values).

  Method pre/post-processing (masks, re-initialisation, noise) runs this way as
  one compiled program instead of many eagerly compiled primitives; ``static``
  values must be hashable (model, floats, ints, strings, tuples).
  """
  return _jit(fn, tuple(sorted(static.items())))(*args)


def pool(data):
  """(x, y) of the pool as device arrays."""
  return jnp.asarray(data.x, jnp.float32), jnp.asarray(data.y, jnp.int32)


def idx(a) -> jax.Array:
  """An index array as int32 device array."""
  return jnp.asarray(a, jnp.int32)


def union(data) -> jax.Array:
  """Dr ∪ Df as one (Mr + Mf,) index array (retain first; built on the host)."""
  return jnp.asarray(np.concatenate([np.asarray(data.retain), np.asarray(data.forget)]),
                     jnp.int32)


def forget_flags(data) -> jax.Array:
  """(N,) bool, True on the forget set (built on the host)."""
  flags = np.zeros((data.x.shape[0],), bool)
  flags[np.asarray(data.forget)] = True
  return jnp.asarray(flags)


def _init(key, *, model, input_shape):
  return init_params(model, key, input_shape)


def fresh_params(model, key: jax.Array, data) -> Params:
  """A fresh initialisation of ``model`` (same initialisers as the original), jitted."""
  return jit_apply(_init, key, model=model, input_shape=tuple(data.input_shape))


def finetune(model, params, data, key, spec, *, update_scale=None, loss=None) -> Params:
  """CE fine-tuning on Dr (or ``loss``) with ``spec``; returns params."""
  x, y = pool(data)
  loss = CrossEntropy() if loss is None else loss
  return loops.fit(model, params, x, y, [idx(data.retain)], key, spec, loss,
                   update_scale=update_scale).params


def balanced_class_weights(data) -> jax.Array:
  """(C,) weights n / (C · count_c) over Dr (sklearn's "balanced"); 0 for absent classes."""
  y = np.asarray(data.y)[np.asarray(data.retain)]
  counts = np.bincount(y, minlength=data.num_classes).astype(np.float64)
  w = np.where(counts > 0, y.size / (data.num_classes * np.maximum(counts, 1)), 0.0)
  return jnp.asarray(w, jnp.float32)


def power_class_weights(data, power: float = -0.1) -> jax.Array:
  """(C,) weights count_c^power over Dr; 0 for absent classes."""
  y = np.asarray(data.y)[np.asarray(data.retain)]
  counts = np.bincount(y, minlength=data.num_classes).astype(np.float64)
  w = np.where(counts > 0, np.maximum(counts, 1) ** power, 0.0)
  return jnp.asarray(w, jnp.float32)


def subkeys(key: jax.Array, n: int) -> list[jax.Array]:
  """n independent keys ``fold_in(key, i)``."""
  return [jax.random.fold_in(key, i) for i in range(n)]
