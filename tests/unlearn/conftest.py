"""Shared fixtures of the unlearning tests: digits, a tiny MLP and its original params.

Everything is small (576-record pool, MLP with 32 hidden units, few epochs) so
that the whole directory runs in well under two minutes on two CPU cores.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring
from sklearn.datasets import load_digits

from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_model
from jaxaudit.unlearn import UnlearnData

_COMPILES = [0]


def _on_event(name, secs, **kwargs):
  del secs, kwargs
  if name == '/jax/core/compile/backend_compile_duration':
    _COMPILES[0] += 1


monitoring.register_event_duration_secs_listener(_on_event)


def compile_count() -> int:
  """Number of XLA backend compilations so far in this process."""
  return _COMPILES[0]


@pytest.fixture(scope='module')
def fast_compiles():
  """Compile without most XLA optimisations while a module runs (opt in with
  ``pytestmark = pytest.mark.usefixtures('fast_compiles')``).

  The models here are tiny, so compile time dominates; numerics are compared
  only between runs under the same setting. The previous value is restored
  after the module, so other modules and directories are unaffected.
  """
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@dataclasses.dataclass(frozen=True)
class Setup:
  model: object
  params: object
  data: UnlearnData
  x_np: np.ndarray      # (1797, 64) standardised digits
  y_np: np.ndarray
  pool: np.ndarray      # D = forget ∪ retain
  forget: np.ndarray
  retain: np.ndarray
  test: np.ndarray


@pytest.fixture(scope='session')
def digits():
  d = load_digits()
  x = (d.data / 16.0).astype(np.float32)
  x = (x - x.mean(0)) / (x.std(0) + 1e-6)
  return x.astype(np.float32), d.target.astype(np.int32)


@pytest.fixture(scope='session')
def setup(digits) -> Setup:
  x, y = digits
  perm = np.random.default_rng(0).permutation(len(x))
  # |D| = 576 and |Dr| = 518 both give 9 batches of 64, so the original's training and
  # `retrain` share train_ensemble's compiled programs.
  pool, test = np.sort(perm[:576]), perm[600:900]
  forget = np.sort(perm[:58])
  retain = np.setdiff1d(pool, forget)
  model = get_model('mlp', 10, hidden=(32,))
  recipe = Recipe(epochs=10, batch_size=64, learning_rate=3e-3)
  xd, yd = jnp.asarray(x), jnp.asarray(y)
  params = train_model(model, xd, yd, pool, jax.random.key(0), recipe).params
  data = UnlearnData(x=xd, y=yd, forget=jnp.asarray(forget, jnp.int32),
                     retain=jnp.asarray(retain, jnp.int32), num_classes=10, input_shape=(64,),
                     recipe=recipe, val_x=xd[test[:150]], val_y=yd[test[:150]])
  return Setup(model, params, data, x, y, pool, forget, retain, test)


_APPLY = {}


def logits(model, params) -> np.ndarray:
  """Logits (1797, 10) of one model on every digit (one cached program per model)."""
  if model not in _APPLY:
    from jaxaudit.models import make_apply_fn
    _APPLY[model] = jax.jit(make_apply_fn(model))
  return np.asarray(_APPLY[model](params, _X_ALL[0]))


_X_ALL = [None]


@pytest.fixture(scope='session', autouse=True)
def _all_inputs(digits):
  _X_ALL[0] = jnp.asarray(digits[0])


def accuracy_on(model, params, y, idx) -> float:
  """Top-1 accuracy on records ``idx`` of the digits."""
  return float(np.mean(np.argmax(logits(model, params)[idx], -1) == y[idx]))


def ce_on(model, params, y, idx) -> float:
  """Mean cross-entropy on records ``idx`` of the digits."""
  lg = logits(model, params)[idx].astype(np.float64)
  lse = np.log(np.sum(np.exp(lg - lg.max(-1, keepdims=True)), -1)) + lg.max(-1)
  return float(np.mean(lse - lg[np.arange(len(idx)), y[idx]]))


def assert_trees_equal(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def assert_trees_close(a, b, **kw):
  kw.setdefault('rtol', 1e-5)
  kw.setdefault('atol', 1e-6)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw), a, b)
