"""Matrix-free solvers for damped curvature systems ``(A + λI) x = b`` on pytrees.

``A`` is given only through ``matvec(v) -> A v`` (for example
:func:`~jaxaudit.curvature.make_hvp`), and ``b`` and ``x`` are pytrees with one
structure (typically that of the parameters). Loops are ``lax.while_loop`` /
``lax.fori_loop``, so every solver runs inside ``jax.jit`` with static shapes;
``damping`` and ``scale`` may be traced scalars.

* :func:`conjugate_gradient` — exact in exact arithmetic for SPD ``A + λI``;
  stops early on a relative residual, reports non-positive curvature.
* :func:`lissa` — truncated Neumann series (Agarwal et al. 2017; Koh & Liang
  2017), optionally with a stochastic (mini-batch) product.
* :func:`power_iteration` — the dominant eigenvalue, to choose LiSSA's ``scale``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxaudit.curvature import _common
from jaxaudit.errors import ConfigError

PyTree = Any
MatVec = Callable[[PyTree], PyTree]
SampleMatVec = Callable[[jax.Array, PyTree], PyTree]


class CGInfo(NamedTuple):
  """Diagnostics of :func:`conjugate_gradient` (scalars, jit-friendly).

  Attributes:
    iterations: int32, number of CG updates applied to ``x``.
    residual_norm: ‖b − (A + λI) x‖₂ as tracked by the CG recursion (the
      recursive residual; it matches the true residual up to round-off).
    converged: bool, the residual reached ``max(tol·‖b‖, atol)``.
    nonpositive_curvature: bool, a search direction p with pᵀ(A + λI)p <= 0 was
      met (A + λI is not positive definite, e.g. an indefinite network
      Hessian with too little damping); the solver then stops and returns the
      last iterate, as truncated Newton-CG does.
  """
  iterations: jax.Array
  residual_norm: jax.Array
  converged: jax.Array
  nonpositive_curvature: jax.Array


def _check_matvec_output(matvec: MatVec, b: PyTree) -> None:
  if not callable(matvec):
    raise ConfigError(f'matvec must be callable, got {type(matvec).__name__}.')
  out = jax.eval_shape(matvec, b)
  _common.check_same_structure('matvec(b)', out, 'b', b)


def conjugate_gradient(matvec: MatVec, b: PyTree, *, damping: Any = 0.0,
                       tol: float = 1e-6, atol: float = 0.0, maxiter: int = 100,
                       x0: PyTree | None = None) -> tuple[PyTree, CGInfo]:
  """Solves ``(A + damping·I) x = b`` for symmetric positive definite ``A + λI``.

  Standard (Hestenes–Stiefel) conjugate gradients in a ``lax.while_loop``. The
  loop stops when ``‖r‖ <= max(tol·‖b‖, atol)``, after ``maxiter`` updates, or
  on non-positive curvature (see :class:`CGInfo`). Each iteration costs one
  ``matvec``. Convergence needs ``A + λI`` SPD; the error contracts at least by
  ``(√κ − 1)/(√κ + 1)`` per step, κ its condition number, so damping a Hessian
  both regularises the problem and speeds the solve.

  Args:
    matvec: ``v -> A v`` on pytrees shaped like ``b`` (A symmetric).
    b: right-hand side pytree of floating leaves; P numbers in all.
    damping: λ >= 0 added to the diagonal (float or traced scalar).
    tol: relative tolerance on the residual norm, >= 0.
    atol: absolute tolerance on the residual norm, >= 0.
    maxiter: maximum number of iterations, >= 1.
    x0: optional initial guess shaped like ``b`` (default zeros).

  Returns:
    ``(x, info)``: ``x`` shaped like ``b`` (same dtypes), ``info`` a
    :class:`CGInfo` of scalars.

  Raises:
    ConfigError: for negative damping/tolerances, non-positive maxiter, integer
      leaves in ``b``, or ``matvec``/``x0`` outputs that do not match ``b``.
  """
  _common.check_inexact('b', b)
  _common.check_nonnegative('damping', damping)
  _common.check_nonnegative('tol', tol)
  _common.check_nonnegative('atol', atol)
  maxiter = _common.check_positive_int('maxiter', maxiter)
  _check_matvec_output(matvec, b)
  if x0 is None:
    x0 = _common.tree_zeros_like(b)
  else:
    _common.check_same_structure('x0', x0, 'b', b)
    x0 = _common.cast_like(x0, b)

  def op(v):
    return _common.tree_axpy(damping, v, _common.cast_like(matvec(v), b))

  rdtype = jnp.result_type(*[jnp.result_type(leaf) for leaf in jax.tree.leaves(b)])
  b_norm2 = _common.tree_vdot(b, b)
  thresh2 = jnp.maximum(jnp.asarray(tol, rdtype) ** 2 * b_norm2,
                        jnp.asarray(atol, rdtype) ** 2)
  r0 = jax.tree.map(jnp.subtract, b, op(x0))
  rs0 = _common.tree_vdot(r0, r0)

  # State: (k, x, r, p, rs, bad)
  def cond(state):
    k, _, _, _, rs, bad = state
    return (k < maxiter) & (rs > thresh2) & jnp.logical_not(bad)

  def body(state):
    k, x, r, p, rs, _ = state
    ap = op(p)
    pap = _common.tree_vdot(p, ap)
    bad = jnp.logical_not(pap > 0)  # also catches NaN
    alpha = jnp.where(bad, 0.0, rs / jnp.where(bad, 1.0, pap))
    x = _common.tree_axpy(alpha, p, x)
    r = _common.tree_axpy(-alpha, ap, r)
    rs_new = _common.tree_vdot(r, r)
    beta = jnp.where(bad, 0.0, rs_new / rs)
    p = _common.tree_axpy(beta, p, r)
    k = k + jnp.where(bad, 0, 1).astype(k.dtype)
    return k, x, r, p, rs_new, bad

  init = (jnp.asarray(0, jnp.int32), x0, r0, r0, rs0, jnp.asarray(False))
  k, x, _, _, rs, bad = jax.lax.while_loop(cond, body, init)
  info = CGInfo(iterations=k, residual_norm=jnp.sqrt(rs),
                converged=rs <= thresh2, nonpositive_curvature=bad)
  return x, info


def lissa(matvec: MatVec | None, b: PyTree, *, damping: Any, scale: Any,
          depth: int, num_repeats: int = 1, key: jax.Array | None = None,
          sample_matvec: SampleMatVec | None = None) -> PyTree:
  """LiSSA estimate of ``(A + damping·I)⁻¹ b`` by a truncated Neumann series.

  With ``M = A + λI`` and ``s = scale`` the recursion is::

    x_0 = b,   x_{j+1} = b + (I − M/s) x_j = b + (1 − λ/s) x_j − (A x_j)/s,

  so ``x_J = Σ_{i<=J} (I − M/s)^i b`` and the estimate is ``x_depth / s``
  (Agarwal, Bullins & Hazan 2017; the form used by Koh & Liang 2017, whose code
  applies its "damping" to the iterate instead — ours is Tikhonov damping of
  ``A``, the same λ as :func:`conjugate_gradient`).

  Convergence: the series converges iff every eigenvalue μ of M satisfies
  ``0 < μ < 2s``; choose ``s > λ_max(A) + λ`` (e.g. from
  :func:`power_iteration`) so that ``I − M/s`` has eigenvalues in [0, 1). The
  error then shrinks like ``(1 − (λ_min(A) + λ)/s)^depth``: ``depth`` must be
  several times ``s/(λ_min + λ)``. With ``A`` indefinite (a network Hessian)
  the damping must exceed ``−λ_min(A)``; otherwise the iterates diverge and
  the result is meaningless (no error is raised inside jit).

  Stochastic mode: with ``sample_matvec(key, v)`` — an unbiased mini-batch
  estimate of ``A v`` — step j of repeat r uses
  ``fold_in(fold_in(key, r), j)``; the estimate is unbiased for the truncated
  series and ``num_repeats`` independent runs are averaged to reduce variance.
  Without ``sample_matvec`` the recursion is deterministic and runs once
  whatever ``num_repeats`` is.

  Args:
    matvec: ``v -> A v`` (deterministic); may be None when ``sample_matvec``
      is given, and is then unused.
    b: right-hand side pytree of floating leaves.
    damping: λ >= 0 (float or traced scalar).
    scale: s > 0 (float or traced scalar), above ``λ_max(A) + λ``.
    depth: number of recursion steps J >= 1 (static).
    num_repeats: independent stochastic runs to average, >= 1 (static).
    key: PRNG key, required with ``sample_matvec``.
    sample_matvec: optional ``(key, v) -> Â v``, a stochastic estimate of A v.

  Returns:
    The estimate of ``(A + λI)⁻¹ b``, shaped like ``b`` (same dtypes).

  Raises:
    ConfigError: for negative damping, non-positive scale/depth/num_repeats,
      a missing key or product, or products that do not match ``b``.
  """
  _common.check_inexact('b', b)
  _common.check_nonnegative('damping', damping)
  _common.check_positive('scale', scale)
  depth = _common.check_positive_int('depth', depth)
  num_repeats = _common.check_positive_int('num_repeats', num_repeats)

  if sample_matvec is None:
    if matvec is None:
      raise ConfigError('lissa needs matvec or sample_matvec; both are None.')
    _check_matvec_output(matvec, b)
    return _lissa_run(lambda j, v: matvec(v), b, damping, scale, depth)

  if not callable(sample_matvec):
    raise ConfigError(
        f'sample_matvec must be callable, got {type(sample_matvec).__name__}.')
  _common.check_key('key', key)
  out = jax.eval_shape(sample_matvec, key, b)
  _common.check_same_structure('sample_matvec(key, b)', out, 'b', b)

  def one_run(run_key):
    def product(j, v):
      return sample_matvec(jax.random.fold_in(run_key, j), v)
    return _lissa_run(product, b, damping, scale, depth)

  if num_repeats == 1:
    return one_run(jax.random.fold_in(key, 0))

  def repeat(r, acc):
    return jax.tree.map(jnp.add, acc, one_run(jax.random.fold_in(key, r)))

  total = jax.lax.fori_loop(0, num_repeats, repeat, _common.tree_zeros_like(b))
  return _common.tree_scale(1.0 / num_repeats, total)


def _lissa_run(product: Callable[[jax.Array, PyTree], PyTree], b: PyTree,
               damping: Any, scale: Any, depth: int) -> PyTree:
  """One LiSSA recursion of ``depth`` steps; ``product(j, v)`` is step j's A v."""
  shrink = 1.0 - damping / scale

  def step(j, x):
    ax = _common.cast_like(product(j, x), b)
    # x <- b + (1 - λ/s) x - A x / s
    return jax.tree.map(
        lambda bl, xl, al: (bl + shrink * xl - al / scale).astype(bl.dtype), b, x, ax)

  x = jax.lax.fori_loop(0, depth, step, b)
  return _common.tree_scale(1.0 / scale, x)


def power_iteration(matvec: MatVec, like: PyTree, *, num_iters: int = 50,
                    key: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
  """Dominant eigenpair of a symmetric operator by power iteration.

  Returns the Rayleigh quotient of the final unit vector: the eigenvalue of
  largest magnitude (it can be negative for an indefinite Hessian). Use
  ``|λ|`` plus the damping, with a safety margin, as LiSSA's ``scale``. The
  rate is ``|λ_2/λ_1|`` per iteration.

  Args:
    matvec: ``v -> A v`` on pytrees shaped like ``like``.
    like: pytree giving the structure, shapes and dtypes (e.g. ``params``).
    num_iters: number of products, >= 1 (static).
    key: PRNG key for the random start (default ``jax.random.key(0)``).

  Returns:
    ``(eigenvalue, eigenvector)``: a scalar and a unit-norm pytree like ``like``.

  Raises:
    ConfigError: on non-positive num_iters or a mismatched matvec.
  """
  _common.check_inexact('like', like)
  num_iters = _common.check_positive_int('num_iters', num_iters)
  _check_matvec_output(matvec, like)
  if key is None:
    key = jax.random.key(0)
  else:
    _common.check_key('key', key)
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, len(leaves))
  v = jax.tree.unflatten(treedef, [
      jax.random.normal(k, jnp.shape(l), jnp.result_type(l)) for k, l in zip(keys, leaves)])

  def normalise(u):
    return _common.tree_scale(1.0 / jnp.sqrt(_common.tree_vdot(u, u)), u)

  v = normalise(v)
  v = jax.lax.fori_loop(
      0, num_iters, lambda _, u: normalise(_common.cast_like(matvec(u), like)), v)
  eig = _common.tree_vdot(v, _common.cast_like(matvec(v), like))
  return eig, v
