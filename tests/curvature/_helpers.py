"""Tiny model, toy problems and reference implementations for the curvature tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

N_EXAMPLES = 7  # deliberately not a multiple of the micro-batch sizes used
N_FEATURES = 4
N_CLASSES = 3


class TinyMLP(nn.Module):
  """4 -> 6 (tanh) -> 3: 51 parameters in a nested dict pytree."""
  hidden: int = 6
  num_classes: int = N_CLASSES

  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(self.hidden)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)


@dataclasses.dataclass(frozen=True)
class Problem:
  apply_fn: Callable[[Any, jax.Array], jax.Array]
  params: Any
  x: np.ndarray  # (N, 4) float32
  y: np.ndarray  # (N,) int32


def make_problem() -> Problem:
  """The tiny MLP with 7 examples of 4 features, 3 classes (float32).

  Parameters are drawn with NumPy into the structure that ``module.init``
  would return (found by ``jax.eval_shape``, which compiles nothing): eager
  jax.random calls would cost seconds of compilation in a fast test suite.
  """
  module = TinyMLP()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N_EXAMPLES, N_FEATURES)).astype(np.float32)
  y = rng.integers(0, N_CLASSES, size=N_EXAMPLES).astype(np.int32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)['params']
  params = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)

  def apply_fn(p, xb):
    return module.apply({'params': p}, xb)

  return Problem(apply_fn=apply_fn, params=params, x=x, y=y)


def ce_loss(apply_fn, params, x, y):
  """Mean softmax cross-entropy of a batch (the reference loss)."""
  logp = jax.nn.log_softmax(apply_fn(params, x), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(y)[:, None], axis=-1))


def random_like(params, seed):
  """A standard-normal pytree shaped like ``params`` (drawn with NumPy)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def spd_matrix(n, seed, low=1.0, high=5.0):
  """Q diag(λ) Qᵀ with eigenvalues spread over [low, high]."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  return (q * np.linspace(low, high, n)) @ q.T
