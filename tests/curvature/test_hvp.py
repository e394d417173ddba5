"""Tests of jaxaudit.curvature.hvp against dense reference Hessians."""

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


def _flat(tree):
  return np.asarray(flatten_util.ravel_pytree(tree)[0])


def _loss(problem):
  return functools.partial(_helpers.ce_loss, problem.apply_fn, x=problem.x, y=problem.y)


def _dense_hessian(problem):
  flat, unravel = flatten_util.ravel_pytree(problem.params)
  return np.asarray(jax.jit(jax.hessian(lambda w: _loss(problem)(unravel(w))))(flat))


def test_hvp_matches_dense_hessian_on_pytree_params(problem):
  loss = _loss(problem)
  v = _helpers.random_like(problem.params, 1)
  hv = jax.jit(curvature.hvp, static_argnums=0)(loss, problem.params, v)
  assert jax.tree.structure(hv) == jax.tree.structure(problem.params)
  expected = _dense_hessian(problem) @ _flat(v)
  np.testing.assert_allclose(_flat(hv), expected, rtol=1e-4, atol=1e-5)


def test_make_hvp_adds_damping_and_does_not_recompile(problem):
  loss = _loss(problem)
  h = _dense_hessian(problem)

  @jax.jit
  def damped(params, v):
    return curvature.make_hvp(loss, params, damping=0.3)(v)

  for seed in (1, 2):
    v = _helpers.random_like(problem.params, seed)
    out = damped(problem.params, v)
    np.testing.assert_allclose(_flat(out), h @ _flat(v) + 0.3 * _flat(v),
                               rtol=1e-4, atol=1e-5)
  assert damped._cache_size() == 1


def test_hessian_matrix_of_quadratic_is_exact():
  rng = np.random.default_rng(0)
  a = _helpers.spd_matrix(5, 0).astype(np.float32)
  params = {'w': jnp.asarray(rng.normal(size=(2, 2)), jnp.float32),
            'b': jnp.asarray(rng.normal(size=(1,)), jnp.float32)}

  def loss(p):
    w = flatten_util.ravel_pytree(p)[0]
    return 0.5 * w @ a @ w

  h = curvature.hessian_matrix(loss, params)
  assert h.shape == (5, 5)
  np.testing.assert_allclose(np.asarray(h), a, rtol=1e-5, atol=1e-6)


def test_hessian_matrix_agrees_with_hvp_columns(problem):
  loss = _loss(problem)
  h = np.asarray(curvature.hessian_matrix(loss, problem.params))
  np.testing.assert_allclose(h, h.T, atol=1e-5)
  _, unravel = flatten_util.ravel_pytree(problem.params)
  e3 = np.zeros(h.shape[0], np.float32)
  e3[3] = 1.0
  col = _flat(curvature.hvp(loss, problem.params, unravel(jnp.asarray(e3))))
  np.testing.assert_allclose(col, h[:, 3], rtol=1e-4, atol=1e-6)


def test_ggn_matches_explicit_jacobian_product(problem):
  params, x = problem.params, problem.x
  flat, unravel = flatten_util.ravel_pytree(params)
  jac = np.asarray(jax.jacobian(lambda w: problem.apply_fn(unravel(w), x))(flat))  # (N, C, P)
  p = np.asarray(jax.nn.softmax(problem.apply_fn(params, x), axis=-1))
  v = _helpers.random_like(params, 3)
  mask = np.array([1, 1, 0, 1, 0, 1, 1], bool)
  g = np.zeros((flat.size, flat.size))
  for i in np.flatnonzero(mask):
    h_i = np.diag(p[i]) - np.outer(p[i], p[i])
    g += jac[i].T @ h_i @ jac[i]
  g /= mask.sum()
  out = curvature.ggn_vector_product(problem.apply_fn, params, x, v, mask=mask)
  np.testing.assert_allclose(_flat(out), g @ _flat(v), rtol=1e-4, atol=1e-5)


def test_ggn_equals_hessian_for_softmax_regression(problem):
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            'b': jnp.zeros((3,), jnp.float32)}

  def apply_fn(p, xb):
    return xb @ p['w'] + p['b']

  v = _helpers.random_like(params, 4)
  loss = functools.partial(_helpers.ce_loss, apply_fn, x=problem.x, y=problem.y)
  hv = curvature.hvp(loss, params, v)
  gv = curvature.ggn_vector_product(apply_fn, params, problem.x, v)
  np.testing.assert_allclose(_flat(gv), _flat(hv), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('curv', ['hessian', 'ggn'])
def test_dataset_hvp_is_microbatch_invariant_and_masks(problem, curv):
  mask = np.array([1, 0, 1, 1, 1, 0, 1], bool)
  keep = np.flatnonzero(mask)
  v = _helpers.random_like(problem.params, 5)
  if curv == 'hessian':
    ref_loss = functools.partial(_helpers.ce_loss, problem.apply_fn,
                                 x=problem.x[keep], y=problem.y[keep])
    ref = _flat(curvature.hvp(ref_loss, problem.params, v))
  else:
    ref = _flat(curvature.ggn_vector_product(
        problem.apply_fn, problem.params, problem.x[keep], v))
  ref = ref + 0.1 * _flat(v)
  for mb in (2, 256):
    op = curvature.make_dataset_hvp(problem.apply_fn, problem.params, problem.x,
                                    problem.y, mask=mask, microbatch=mb, damping=0.1,
                                    curvature=curv)
    np.testing.assert_allclose(_flat(op(v)), ref, rtol=1e-4, atol=1e-5)


def test_hvp_in_float64(problem, x64):
  del x64
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), problem.params)
  x = problem.x.astype(np.float64)
  loss = functools.partial(_helpers.ce_loss, problem.apply_fn, x=x, y=problem.y)
  v = jax.tree.map(lambda p: jnp.ones_like(p), params)
  flat, unravel = flatten_util.ravel_pytree(params)
  h = np.asarray(jax.jit(jax.hessian(lambda w: loss(unravel(w))))(flat))
  out = jax.jit(curvature.hvp, static_argnums=0)(loss, params, v)
  assert jax.tree.leaves(out)[0].dtype == jnp.float64
  np.testing.assert_allclose(_flat(out), h @ _flat(v), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- errors


def test_hvp_rejects_mismatched_vector(problem):
  v = jax.tree.leaves(problem.params)[0]
  with pytest.raises(ConfigError, match='pytree structure'):
    curvature.hvp(_loss(problem), problem.params, v)
  bad = jax.tree.map(lambda p: jnp.zeros(p.shape + (1,)), problem.params)
  with pytest.raises(ConfigError, match='shape'):
    curvature.hvp(_loss(problem), problem.params, bad)


@pytest.mark.parametrize('damping', [-0.1, float('nan'), float('inf')])
def test_make_hvp_rejects_bad_damping(problem, damping):
  with pytest.raises(ConfigError, match='damping'):
    curvature.make_hvp(_loss(problem), problem.params, damping)


def test_hessian_matrix_refuses_large_models(problem):
  with pytest.raises(ConfigError, match='max_params=50'):
    curvature.hessian_matrix(_loss(problem), problem.params, max_params=50)
  with pytest.raises(ConfigError, match='max_params'):
    curvature.hessian_matrix(_loss(problem), problem.params, max_params=0)


def test_non_scalar_loss_is_rejected(problem):
  def vector_loss(p):
    return problem.apply_fn(p, problem.x)

  with pytest.raises(ConfigError, match='scalar'):
    curvature.hvp(vector_loss, problem.params, problem.params)
  with pytest.raises(ConfigError, match='scalar'):
    curvature.make_hvp(vector_loss, problem.params)
  with pytest.raises(ConfigError, match='scalar'):
    curvature.hessian_matrix(vector_loss, problem.params)


def test_dataset_hvp_rejects_bad_data(problem):
  kw = dict(apply_fn=problem.apply_fn, params=problem.params)
  with pytest.raises(ConfigError, match='mismatched lengths'):
    curvature.make_dataset_hvp(x=problem.x, y=problem.y[:5], **kw)
  with pytest.raises(ConfigError, match='empty'):
    curvature.make_dataset_hvp(x=problem.x[:0], y=problem.y[:0], **kw)
  with pytest.raises(ConfigError, match='microbatch'):
    curvature.make_dataset_hvp(x=problem.x, y=problem.y, microbatch=0, **kw)
  with pytest.raises(ConfigError, match='y .labels. is required'):
    curvature.make_dataset_hvp(x=problem.x, **kw)
  with pytest.raises(ConfigError, match='curvature'):
    curvature.make_dataset_hvp(x=problem.x, y=problem.y, curvature='fisher', **kw)
  with pytest.raises(ConfigError, match='label 3'):
    curvature.make_dataset_hvp(x=problem.x, y=np.full(7, 3, np.int32), **kw)
