"""Tests of jaxaudit.curvature.dense: the vmap-safe dense solves."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit import curvature

BATCH, DIM = 5, 7


def _problem(seed: int):
  """(BATCH, DIM, DIM) SPD matrices and (BATCH, DIM) right-hand sides, float64."""
  a = jax.random.normal(jax.random.key(seed), (BATCH, DIM, DIM), jnp.float64)
  H = a @ jnp.swapaxes(a, -1, -2) + DIM * jnp.eye(DIM, dtype=jnp.float64)
  return H, jax.random.normal(jax.random.key(seed + 1), (BATCH, DIM), jnp.float64)


def _lapack_batch_dims(lowered_text: str) -> list[int]:
  """``num_batch_dims`` of every LAPACK custom call in a lowered program."""
  calls = [l for l in lowered_text.splitlines() if re.search(r'@lapack_\w+_ffi', l)]
  assert calls, 'no LAPACK call in the program'
  return [int(re.search(r'num_batch_dims = "(\d+)"', l).group(1)) for l in calls]


@pytest.mark.parametrize('name', ['spd_solve', 'solve'])
def test_vmap_equals_numpy_and_calls_lapack_one_matrix_at_a_time(x64, name):
  del x64
  fn = getattr(curvature, name)
  H, g = _problem(0)
  program = jax.jit(jax.vmap(fn))
  out = np.asarray(program(H, g))
  np.testing.assert_allclose(out, np.linalg.solve(np.asarray(H), np.asarray(g)[..., None])[..., 0],
                             rtol=1e-10)
  if jax.default_backend() == 'cpu':
    # A batched LAPACK call (num_batch_dims > 0) is what deadlocked jaxlib 0.10's pool.
    assert set(_lapack_batch_dims(program.lower(H, g).as_text())) == {0}
  # Nested vmap with a shared matrix and a batch of right-hand sides.
  nested = jax.vmap(jax.vmap(fn, in_axes=(None, 0)), in_axes=(None, 0))(
      H[0], g.reshape(BATCH, 1, DIM))
  np.testing.assert_allclose(np.asarray(nested[:, 0]),
                             np.linalg.solve(np.asarray(H[0]), np.asarray(g).T).T, rtol=1e-10)


@pytest.mark.parametrize('name', ['spd_solve', 'solve'])
def test_gradients_match_jnp_linalg_solve(x64, name):
  del x64
  fn = getattr(curvature, name)
  H, g = _problem(2)

  def loss(solver, H, g):
    return jnp.sum(jnp.sin(jax.vmap(solver)(H, g)))

  ours = jax.grad(lambda H, g: loss(fn, H, g), argnums=(0, 1))(H, g)
  ref = jax.grad(lambda H, g: loss(jnp.linalg.solve, H, g), argnums=(0, 1))(H, g)
  # spd_solve treats H as symmetric: compare the symmetric parts of the H-gradients.
  sym = lambda a: np.asarray(a + jnp.swapaxes(a, -1, -2))
  np.testing.assert_allclose(sym(ours[0]), sym(ref[0]), rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(np.asarray(ours[1]), np.asarray(ref[1]), rtol=1e-8)
  t_ours = jax.jvp(fn, (H[0], g[0]), (H[1], g[1]))[1]
  t_ref = jax.jvp(jnp.linalg.solve, (H[0], g[0]), (H[1], g[1]))[1]
  np.testing.assert_allclose(np.asarray(t_ours), np.asarray(t_ref), rtol=1e-8)
