"""Dense linear solves that stay safe under ``vmap`` on XLA:CPU.

jaxlib 0.10's CPU LAPACK kernels (Cholesky, LU, ...) split a *batched* call
across XLA's intra-op thread pool and then block that pool thread until the
pieces finish. When the thunk executor runs as many batched LAPACK calls at
once as the pool has threads (two on a 2-core machine: e.g. two independent
``vmap``-ped Newton solves in one program), every thread waits for work that no
thread is free to run, and the program hangs in ``BlockUntilReady``. Measured
here (BUILD_NOTES.md, "Known limits"): the one-vs-rest certificate test hung in
4 of 26 runs; with the batches mapped one matrix at a time, 0 of 30.
``--xla_cpu_multi_thread_eigen=false`` does not help (the LAPACK kernels use the
pool either way); open-source jaxlib 0.11+ runs batches serially.

So the solvers here keep LAPACK's per-matrix kernels and results, but a
``vmap`` over them becomes a ``lax.map`` (one matrix per LAPACK call, which
never leaves the calling thread) when the program is traced for the CPU. On
other backends the batched call is kept. Results are the same LAPACK routine
on the same matrices, so they equal the batched call's.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import jax.scipy as jsp


def _serial_batching(fn: Callable) -> Callable:
  """``fn(a, b)`` whose ``vmap`` is a ``lax.map`` over the batch on CPU."""
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, a, b):
    a_batched, b_batched = in_batched
    if jax.default_backend() != 'cpu':
      out = jax.vmap(fn, in_axes=(0 if a_batched else None, 0 if b_batched else None))(a, b)
      return out, True
    a = a if a_batched else jnp.broadcast_to(a, (axis_size,) + a.shape)
    b = b if b_batched else jnp.broadcast_to(b, (axis_size,) + b.shape)
    return jax.lax.map(lambda ab: wrapped(*ab), (a, b)), True

  return wrapped


def _spd_solve(H, g):
  return jsp.linalg.cho_solve(jsp.linalg.cho_factor(H), g)


_spd_solve_serial = _serial_batching(_spd_solve)
_solve_serial = _serial_batching(jnp.linalg.solve)


def spd_solve(H: jax.Array, g: jax.Array) -> jax.Array:
  """``H⁻¹ g`` by Cholesky for a symmetric positive definite ``H``.

  Args:
    H: (d, d) SPD matrix.
    g: (d,) or (d, k) right-hand side.

  Returns:
    Array shaped like ``g``. Under ``vmap`` on CPU the matrices are factored one
    at a time (see the module docstring). Differentiable in both arguments
    (``lax.custom_linear_solve``: the tangent is one more solve).
  """
  return jax.lax.custom_linear_solve(lambda x: H @ x, g,
                                     solve=lambda _, b: _spd_solve_serial(H, b),
                                     symmetric=True)


def solve(A: jax.Array, b: jax.Array) -> jax.Array:
  """``A⁻¹ b`` by LU with partial pivoting (``jnp.linalg.solve``).

  Args:
    A: (d, d) non-singular matrix.
    b: (d,) or (d, k) right-hand side.

  Returns:
    Array shaped like ``b``; batched under ``vmap`` and differentiable as
    :func:`spd_solve` is.
  """
  return jax.lax.custom_linear_solve(lambda x: A @ x, b,
                                     solve=lambda _, v: _solve_serial(A, v),
                                     transpose_solve=lambda _, v: _solve_serial(A.T, v))


__all__ = ['solve', 'spd_solve']
