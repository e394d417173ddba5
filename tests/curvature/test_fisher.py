"""Tests of jaxaudit.curvature.fisher against naive per-example loops."""

from __future__ import annotations

import functools

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit import curvature
from jaxaudit.errors import ConfigError

from . import _helpers

N, C = _helpers.N_EXAMPLES, _helpers.N_CLASSES


def _flat(tree):
  return np.asarray(flatten_util.ravel_pytree(tree)[0], np.float64)


def _rows(tree):
  """A pytree with leading axis N as an (N, P) matrix."""
  return np.stack([_flat(jax.tree.map(lambda a: a[i], tree)) for i in range(N)])


@functools.partial(jax.jit, static_argnums=0)
def _grad_log_prob(apply_fn, params, xi, c):
  """∇_θ log p(c | x_i), one example at a time (the naive reference)."""
  def log_prob(p):
    return jax.nn.log_softmax(apply_fn(p, xi[None])[0])[c]
  return jax.grad(log_prob)(params)


def _naive_grads(problem):
  """(N, P) gradients of CE(x_i, y_i) = −log p(y_i | x_i), by a Python loop."""
  return np.stack([
      -_flat(_grad_log_prob(problem.apply_fn, problem.params, problem.x[i], problem.y[i]))
      for i in range(N)])


def _naive_true_fisher(problem, weights):
  probs = np.asarray(jax.nn.softmax(problem.apply_fn(problem.params, problem.x)), np.float64)
  total = 0.0
  for i in range(N):
    if weights[i] == 0:
      continue
    for c in range(C):
      g = _flat(_grad_log_prob(problem.apply_fn, problem.params, problem.x[i], c))
      total = total + weights[i] * probs[i, c] * g ** 2
  return total / np.sum(weights)


def test_per_example_grads_match_a_python_loop(problem):
  expected = _naive_grads(problem)
  for mb in (3, 256):  # 7 = 2*3 + 1: a padded last micro-batch; 256 > N
    grads = curvature.per_example_grads(problem.apply_fn, problem.params, problem.x,
                                        problem.y, microbatch=mb)
    for leaf, p in zip(jax.tree.leaves(grads), jax.tree.leaves(problem.params)):
      assert leaf.shape == (N,) + p.shape
    np.testing.assert_allclose(_rows(grads), expected, rtol=1e-5, atol=1e-6)


def test_per_example_grads_custom_loss(problem):
  soft = np.full((N, C), 1.0 / C, np.float32)

  def loss(logits, t):
    return -jnp.sum(t * jax.nn.log_softmax(logits))

  grads = curvature.per_example_grads(problem.apply_fn, problem.params, problem.x, soft,
                                      microbatch=4, loss=loss)
  expected = -np.mean(np.stack([[
      _flat(_grad_log_prob(problem.apply_fn, problem.params, problem.x[i], c))
      for c in range(C)] for i in range(N)]), axis=1)
  np.testing.assert_allclose(_rows(grads), expected, rtol=1e-5, atol=1e-6)


def test_per_example_grads_jit_does_not_recompile(problem):
  fn = jax.jit(functools.partial(curvature.per_example_grads, problem.apply_fn,
                                 microbatch=3))
  first = fn(problem.params, problem.x, problem.y)
  second = fn(problem.params, problem.x[::-1].copy(), problem.y[::-1].copy())
  assert fn._cache_size() == 1
  np.testing.assert_allclose(_rows(second)[::-1], _rows(first), rtol=1e-5, atol=1e-6)


def test_true_fisher_matches_naive_loop_and_mask_excludes_rows(problem):
  mask = np.array([1, 1, 0, 1, 1, 0, 1], bool)
  expected = _naive_true_fisher(problem, mask.astype(np.float64))
  fisher = curvature.diag_fisher(problem.apply_fn, problem.params, problem.x,
                                 mask=mask, kind='true', microbatch=256)
  assert jax.tree.structure(fisher) == jax.tree.structure(problem.params)
  np.testing.assert_allclose(_flat(fisher), expected, rtol=1e-5, atol=1e-7)
  # Micro-batches of 2 (a padded last one); the masked rows truly do not count,
  # even when their inputs are NaN.
  fn = jax.jit(functools.partial(curvature.diag_fisher, problem.apply_fn, microbatch=2))
  x_nan = problem.x.copy()
  x_nan[~mask] = np.nan
  for x in (problem.x, x_nan):
    fisher = fn(problem.params, x, mask=mask)
    np.testing.assert_allclose(_flat(fisher), expected, rtol=1e-5, atol=1e-7)


def test_true_fisher_with_float_weights(problem):
  weights = np.linspace(0.0, 2.0, N).astype(np.float32)
  expected = _naive_true_fisher(problem, weights.astype(np.float64))
  fisher = curvature.diag_fisher(problem.apply_fn, problem.params, problem.x,
                                 mask=weights, microbatch=3)
  np.testing.assert_allclose(_flat(fisher), expected, rtol=1e-5, atol=1e-7)


def test_empirical_fisher_is_mean_squared_grads(problem):
  expected = np.mean(_naive_grads(problem) ** 2, axis=0)
  emp = curvature.diag_fisher(problem.apply_fn, problem.params, problem.x, problem.y,
                              kind='empirical', microbatch=3)
  np.testing.assert_allclose(_flat(emp), expected, rtol=1e-5, atol=1e-7)
  msg = curvature.mean_squared_grads(problem.apply_fn, problem.params, problem.x,
                                     problem.y, microbatch=5)
  np.testing.assert_allclose(_flat(msg), expected, rtol=1e-5, atol=1e-7)
  pe = curvature.per_example_grads(problem.apply_fn, problem.params, problem.x, problem.y)
  np.testing.assert_allclose(np.mean(_rows(pe) ** 2, axis=0), expected, rtol=1e-5, atol=1e-7)


def test_sampled_fisher_is_deterministic_and_unbiased(problem):
  def fisher(key, n_samples, microbatch):
    return curvature.diag_fisher(problem.apply_fn, problem.params, problem.x,
                                 kind='sampled', key=key, n_samples=n_samples,
                                 microbatch=microbatch)

  jitted = jax.jit(fisher, static_argnums=(1, 2))
  small = lambda key, mb: _flat(jitted(key, 4, mb))  # pylint: disable=unnecessary-lambda-assignment
  key = jax.random.key(0)
  a = small(key, 3)
  np.testing.assert_allclose(a, small(key, 256), rtol=1e-5, atol=1e-7)
  assert not np.allclose(a, small(jax.random.key(1), 3))
  assert jitted._cache_size() == 2  # the new key did not recompile
  true = _naive_true_fisher(problem, np.ones(N))
  many = _flat(fisher(key, 2000, 256))
  assert np.linalg.norm(many - true) < 0.1 * np.linalg.norm(true)


def test_diag_fisher_jit_does_not_recompile(problem):
  fn = jax.jit(functools.partial(curvature.diag_fisher, problem.apply_fn, kind='true',
                                 microbatch=4))
  mask_a = jnp.asarray([1, 1, 1, 0, 1, 1, 1], jnp.float32)
  mask_b = jnp.asarray([0, 1, 1, 1, 1, 1, 0], jnp.float32)
  fa = fn(problem.params, problem.x, mask=mask_a)
  fb = fn(problem.params, problem.x, mask=mask_b)
  assert fn._cache_size() == 1
  assert not np.allclose(_flat(fa), _flat(fb))


# ----------------------------------------------------------------- errors


def test_per_example_grads_rejects_bad_arguments(problem):
  f = functools.partial(curvature.per_example_grads, problem.apply_fn, problem.params)
  with pytest.raises(ConfigError, match='mismatched lengths'):
    f(problem.x, problem.y[:4])
  with pytest.raises(ConfigError, match='empty'):
    f(problem.x[:0], problem.y[:0])
  with pytest.raises(ConfigError, match='microbatch must be a positive int'):
    f(problem.x, problem.y, microbatch=0)
  with pytest.raises(ConfigError, match='integer class labels'):
    f(problem.x, problem.y.astype(np.float32))
  with pytest.raises(ConfigError, match='loss must be one of'):
    f(problem.x, problem.y, loss='mse')
  with pytest.raises(ConfigError, match='label 5'):
    f(problem.x, np.full(N, 5, np.int32))


def test_per_example_grads_rejects_non_logit_models(problem):
  def flat_out(p, xb):
    return problem.apply_fn(p, xb).sum(-1)

  with pytest.raises(ConfigError, match=r'logits of shape \(B, C\)'):
    curvature.per_example_grads(flat_out, problem.params, problem.x, problem.y)


@pytest.mark.parametrize('kwargs, match', [
    (dict(kind='exact'), 'kind must be one of'),
    (dict(kind='empirical', y=None), 'y .labels. is required'),
    (dict(kind='sampled'), 'key is required'),
    (dict(kind='sampled', key=jax.random.key(0), n_samples=0), 'n_samples'),
    (dict(mask=np.ones(N - 1, bool)), r'mask must have shape \(7,\)'),
    (dict(mask=np.zeros(N, bool)), 'excludes every example'),
    (dict(mask=-np.ones(N, np.float32)), '>= 0'),
    (dict(microbatch=-2), 'microbatch'),
    (dict(y=np.zeros(N + 1, np.int32)), 'mismatched lengths'),
])
def test_diag_fisher_rejects_bad_arguments(problem, kwargs, match):
  with pytest.raises(ConfigError, match=match):
    curvature.diag_fisher(problem.apply_fn, problem.params, problem.x, **kwargs)


def test_diag_fisher_rejects_empty_data(problem):
  with pytest.raises(ConfigError, match='empty'):
    curvature.diag_fisher(problem.apply_fn, problem.params, problem.x[:0])
