"""Tests of jaxaudit.curvature.solvers against numpy.linalg."""

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

DIM = 12


def _split(vec):
  """A (12,) vector as a pytree {'a': (3, 2), 'b': (6,)} to exercise pytrees."""
  vec = jnp.asarray(vec, jnp.float32)
  return {'a': vec[:6].reshape(3, 2), 'b': vec[6:]}


def _join(tree):
  return np.asarray(flatten_util.ravel_pytree(tree)[0])


def _tree_matvec(a):
  a = jnp.asarray(a, jnp.float32)
  return lambda v: _split(a @ flatten_util.ravel_pytree(v)[0])


@pytest.fixture(scope='module')
def spd():
  a = _helpers.spd_matrix(DIM, seed=0)  # eigenvalues in [1, 5]
  b = np.random.default_rng(1).normal(size=DIM)
  return a, b


@functools.partial(jax.jit, static_argnames=('maxiter',))
def _cg_dense(a, b, damping, maxiter=100):
  return curvature.conjugate_gradient(
      _tree_matvec(a), _split(b), damping=damping, tol=1e-7, maxiter=maxiter)


def test_cg_matches_numpy_solve_on_pytrees(spd):
  a, b = spd
  for damping in (0.0, 0.5):
    x, info = _cg_dense(a, b, damping)
    expected = np.linalg.solve(a + damping * np.eye(DIM), b)
    np.testing.assert_allclose(_join(x), expected, rtol=1e-4, atol=1e-5)
    assert bool(info.converged) and not bool(info.nonpositive_curvature)
    assert 1 <= int(info.iterations) <= DIM + 2
    assert float(info.residual_norm) <= 1e-6 * np.linalg.norm(b) * 1.01
  # Second call (damping traced, new values): the jitted solve is reused.
  assert _cg_dense._cache_size() == 1


def test_cg_reports_maxiter_and_zero_rhs(spd):
  a, b = spd
  _, info = _cg_dense(a, b, 0.0, maxiter=2)
  assert int(info.iterations) == 2 and not bool(info.converged)
  x, info = _cg_dense(a, np.zeros(DIM), 0.0, maxiter=2)
  assert int(info.iterations) == 0 and bool(info.converged)
  np.testing.assert_array_equal(_join(x), 0.0)


def test_cg_stops_on_nonpositive_curvature():
  a = np.diag([2.0, 1.0, -1.0, 3.0])
  b = np.ones(4, np.float32)
  x, info = curvature.conjugate_gradient(
      lambda v: jnp.asarray(a, jnp.float32) @ v, jnp.asarray(b))
  assert bool(info.nonpositive_curvature) and not bool(info.converged)
  assert np.all(np.isfinite(np.asarray(x)))


def test_cg_solves_damped_hvp_system_of_a_model(problem):
  loss = functools.partial(_helpers.ce_loss, problem.apply_fn, x=problem.x, y=problem.y)
  h = np.asarray(curvature.hessian_matrix(loss, problem.params), np.float64)
  lam = max(0.0, -np.linalg.eigvalsh(h).min()) + 0.5  # makes H + λI SPD
  g = jax.grad(loss)(problem.params)  # a realistic right-hand side

  @jax.jit
  def solve(params, rhs):
    return curvature.conjugate_gradient(
        curvature.make_hvp(loss, params), rhs, damping=lam, tol=1e-6, maxiter=200)

  x, info = solve(problem.params, g)
  expected = np.linalg.solve(h + lam * np.eye(h.shape[0]), _join(g))
  assert bool(info.converged)
  np.testing.assert_allclose(_join(x), expected, rtol=1e-3, atol=1e-4)


def test_lissa_matches_numpy_solve(spd):
  a, b = spd
  damping, scale = 0.5, 6.0  # scale > λ_max + λ = 5.5; rate (1 - 1.5/6)^depth
  x = jax.jit(lambda a, b: curvature.lissa(
      _tree_matvec(a), _split(b), damping=damping, scale=scale, depth=100))(a, b)
  expected = np.linalg.solve(a + damping * np.eye(DIM), b)
  np.testing.assert_allclose(_join(x), expected, rtol=1e-4, atol=1e-5)


def test_lissa_stochastic_products(spd):
  a, b = spd
  rng = np.random.default_rng(2)
  e = rng.normal(size=(DIM, DIM))
  e = 0.3 * (e + e.T) / 2
  a32, e32 = jnp.asarray(a, jnp.float32), jnp.asarray(e, jnp.float32)
  expected = np.linalg.solve(a + np.eye(DIM), b)

  def noisy(key, v):  # unbiased: A ± E with probability 1/2 each
    sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
    return _split((a32 + sign * e32) @ flatten_util.ravel_pytree(v)[0])

  def exact(key, v):
    del key
    return _tree_matvec(a)(v)

  @functools.partial(jax.jit, static_argnums=(0, 2))
  def run(sample, key, repeats):
    return curvature.lissa(None, _split(b), damping=1.0, scale=8.0, depth=120,
                           num_repeats=repeats, key=key, sample_matvec=sample)

  key = jax.random.key(3)
  # A key-independent product reproduces the deterministic solve exactly.
  np.testing.assert_allclose(_join(run(exact, key, 2)), expected, rtol=1e-4, atol=1e-5)
  # Noisy products: unbiased, averaged over repeats.
  x = _join(run(noisy, key, 64))
  assert np.linalg.norm(x - expected) < 0.05 * np.linalg.norm(expected)
  # Different keys give different (stochastic) estimates.
  assert not np.allclose(x, _join(run(noisy, jax.random.key(4), 64)))


def test_power_iteration_finds_largest_eigenvalue(spd):
  a, _ = spd
  eig, vec = jax.jit(lambda a: curvature.power_iteration(
      _tree_matvec(a), _split(np.zeros(DIM)), num_iters=200))(a)
  np.testing.assert_allclose(float(eig), 5.0, rtol=1e-3)
  np.testing.assert_allclose(np.linalg.norm(_join(vec)), 1.0, rtol=1e-5)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize('kwargs, match', [
    (dict(damping=-1.0), 'damping must be >= 0'),
    (dict(tol=-1e-3), 'tol must be >= 0'),
    (dict(maxiter=0), 'maxiter must be a positive int'),
    (dict(maxiter=2.5), 'maxiter must be a positive int'),
])
def test_cg_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    curvature.conjugate_gradient(lambda v: v, jnp.ones(3), **kwargs)


def test_cg_rejects_mismatched_operator_and_integer_rhs():
  with pytest.raises(ConfigError, match='matvec'):
    curvature.conjugate_gradient(lambda v: v[:2], jnp.ones(3))
  with pytest.raises(ConfigError, match='floating'):
    curvature.conjugate_gradient(lambda v: v, jnp.ones(3, jnp.int32))
  with pytest.raises(ConfigError, match='x0'):
    curvature.conjugate_gradient(lambda v: v, jnp.ones(3), x0=jnp.ones(4))


@pytest.mark.parametrize('kwargs, match', [
    (dict(damping=-0.1, scale=2.0, depth=5), 'damping'),
    (dict(damping=0.1, scale=0.0, depth=5), 'scale must be > 0'),
    (dict(damping=0.1, scale=2.0, depth=0), 'depth'),
    (dict(damping=0.1, scale=2.0, depth=5, num_repeats=0), 'num_repeats'),
])
def test_lissa_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    curvature.lissa(lambda v: v, jnp.ones(3), **kwargs)


def test_lissa_needs_a_product_and_a_key():
  with pytest.raises(ConfigError, match='matvec or sample_matvec'):
    curvature.lissa(None, jnp.ones(3), damping=0.0, scale=2.0, depth=3)
  with pytest.raises(ConfigError, match='key is required'):
    curvature.lissa(None, jnp.ones(3), damping=0.0, scale=2.0, depth=3,
                    sample_matvec=lambda k, v: v)
