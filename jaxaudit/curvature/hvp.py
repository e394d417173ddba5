"""Hessian- and Gauss-Newton-vector products on parameter pytrees.

Products are matrix-free: ``hvp`` differentiates the gradient forward
(forward-over-reverse, ``jax.jvp(jax.grad(f))``), which costs about two
gradient evaluations and never materialises the (P, P) Hessian. Only
:func:`hessian_matrix` builds the dense matrix, for small models or heads.

All functions are traceable: wrap them (or the solver that calls them) in
``jax.jit``. A vector ``v`` is a pytree with the structure and leaf shapes of
``params``; products are returned in the same structure and dtypes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import flatten_util
import jax.numpy as jnp

from jaxaudit.curvature import _common
from jaxaudit.errors import ConfigError

PyTree = Any
LossFn = Callable[[PyTree], jax.Array]
ApplyFn = Callable[[PyTree, Any], jax.Array]
MatVec = Callable[[PyTree], PyTree]

_CURVATURES = ('hessian', 'ggn')


def hvp(loss_fn: LossFn, params: PyTree, v: PyTree) -> PyTree:
  """Hessian-vector product ``∇²f(params) · v`` by forward-over-reverse AD.

  Args:
    loss_fn: scalar function of the parameters, ``f(params) -> ()``.
    params: parameter pytree (leaves of any shape), the point of evaluation.
    v: tangent pytree with the structure and leaf shapes of ``params``; leaves
      are cast to the dtypes of ``params``.

  Returns:
    ``H v`` as a pytree shaped like ``params`` (P numbers in all, where P is the
    total parameter count).

  Raises:
    ConfigError: if ``v`` does not match ``params`` or the loss is not a scalar.
  """
  _common.check_scalar_loss(loss_fn, params)
  _common.check_same_structure('v', v, 'params', params)
  return _hvp(loss_fn, params, v)


def _hvp(loss_fn: LossFn, params: PyTree, v: PyTree) -> PyTree:
  """:func:`hvp` without the checks (for operators validated at construction)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (_common.cast_like(v, params),))[1]


def make_hvp(loss_fn: LossFn, params: PyTree, damping: Any = 0.0) -> MatVec:
  """Returns the damped Hessian operator ``v -> (∇²f(params) + damping·I) v``.

  The closure is pure and traceable, so it can be passed to
  :func:`~jaxaudit.curvature.conjugate_gradient` or
  :func:`~jaxaudit.curvature.lissa` inside ``jax.jit``. For repeated products
  jit the caller and pass ``params`` as a jit argument rather than closing over
  it, so that large parameters are not baked into the program as constants.

  Args:
    loss_fn: scalar function of the parameters, ``f(params) -> ()``.
    params: parameter pytree, the point of evaluation.
    damping: Tikhonov damping λ >= 0 (a float, or a traced scalar under jit).

  Returns:
    ``matvec(v) -> H v + λ v``, pytree -> pytree shaped like ``params``.

  Raises:
    ConfigError: for negative or non-finite damping, or a non-scalar loss.
  """
  _common.check_nonnegative('damping', damping)
  _common.check_scalar_loss(loss_fn, params)

  def matvec(v: PyTree) -> PyTree:
    _common.check_same_structure('v', v, 'params', params)
    hv = _hvp(loss_fn, params, v)
    return _common.tree_axpy(damping, _common.cast_like(v, params), hv)

  return matvec


def hessian_matrix(loss_fn: LossFn, params: PyTree, *,
                   max_params: int = 5000) -> jax.Array:
  """Dense Hessian of ``loss_fn`` with respect to the raveled parameters.

  The row/column order is that of ``jax.flatten_util.ravel_pytree(params)``.
  Memory is O(P²) and time O(P) gradient evaluations; use :func:`hvp` with a
  solver above a few thousand parameters.

  Args:
    loss_fn: scalar function of the parameters, ``f(params) -> ()``.
    params: parameter pytree with P numbers in all.
    max_params: refuse (ConfigError) when P exceeds this cap.

  Returns:
    ``(P, P)`` array in the promoted dtype of the parameters.

  Raises:
    ConfigError: if P > max_params, the loss is not a scalar, or params is empty.
  """
  max_params = _common.check_positive_int('max_params', max_params)
  _common.check_inexact('params', params)
  _common.check_scalar_loss(loss_fn, params)
  flat, unravel = flatten_util.ravel_pytree(params)
  if flat.size > max_params:
    raise ConfigError(
        f'hessian_matrix: the model has {flat.size} parameters, above max_params='
        f'{max_params}; a dense Hessian would need {flat.size}² entries. Use hvp / '
        'make_hvp with conjugate_gradient or lissa instead, or raise max_params.')
  # One compiled program: eager jacfwd(jacrev) dispatches op by op and is slow.
  return jax.jit(jax.hessian(lambda w: loss_fn(unravel(w))))(flat)


def ggn_vector_product(apply_fn: ApplyFn, params: PyTree, x: Any, v: PyTree, *,
                       mask: Any = None) -> PyTree:
  """Generalised Gauss-Newton product ``G v`` of the mean softmax cross-entropy.

  ``G = Σ_i w_i J_iᵀ (diag(p_i) − p_i p_iᵀ) J_i`` with ``J_i`` the Jacobian of
  example i's logits w.r.t. the parameters, ``p_i`` its predicted
  probabilities and ``w_i = mask_i / Σ mask`` (uniform without a mask). G is
  positive semi-definite, which makes conjugate gradients safe on non-convex
  networks, and it equals the Hessian when the logits are linear in the
  parameters (softmax regression). It does not depend on the labels. One
  forward pass (linearised), one JVP and one transposed JVP.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree.
    x: input batch (B, ...) (or a pytree of arrays with leading axis B).
    v: pytree shaped like ``params``.
    mask: optional (B,) bool/float weights; rows with weight 0 are excluded.

  Returns:
    ``G v`` as a pytree shaped like ``params``.

  Raises:
    ConfigError: on empty data, a bad mask, or ``v`` not matching ``params``.
  """
  n = _common.num_examples('x', x)
  _common.check_logits_fn(apply_fn, params, x)
  _common.check_same_structure('v', v, 'params', params)
  w = _ggn_weights(mask, n)
  return _ggn_weighted(apply_fn, params, x, _common.cast_like(v, params), w)


def _ggn_weights(mask: Any, n: int) -> jax.Array:
  if mask is None:
    return jnp.full((n,), 1.0 / n, jnp.float32)
  m = _common.check_mask(mask, n)
  return m / jnp.sum(m)


def _ggn_weighted(apply_fn: ApplyFn, params: PyTree, x: Any, v: PyTree,
                  w: jax.Array) -> PyTree:
  """``Σ_i w_i J_iᵀ H_i J_i v`` for an already validated batch and weights (B,)."""
  logits, f_jvp = jax.linearize(lambda p: apply_fn(p, x), params)
  jv = f_jvp(v)
  logp = _common.log_probs(logits)
  p = jnp.exp(logp)
  jv = jv.astype(p.dtype)
  hjv = p * jv - p * jnp.sum(p * jv, axis=-1, keepdims=True)
  hjv = jnp.where(w[:, None] != 0, w[:, None].astype(p.dtype) * hjv, 0.0)
  (gv,) = jax.linear_transpose(f_jvp, params)(hjv.astype(logits.dtype))
  return _common.cast_like(gv, params)


def make_dataset_hvp(apply_fn: ApplyFn, params: PyTree, x: Any, y: Any = None, *,
                     mask: Any = None, microbatch: int = 256, damping: Any = 0.0,
                     curvature: str = 'hessian') -> MatVec:
  """Curvature operator of the mean cross-entropy over a data set, micro-batched.

  Returns ``v -> (C + damping·I) v`` where C is the Hessian (or the GGN) of
  ``L(θ) = Σ_i w_i CE(apply_fn(θ, x_i), y_i)``, ``w_i = mask_i / Σ mask``
  (uniform without a mask). The data are processed in micro-batches with
  ``lax.scan``, so memory is that of one micro-batch HVP whatever N is; N need
  not be a multiple of ``microbatch`` (the last batch is padded and masked).
  Add an L2 term of the training objective ``(λ/2)‖θ‖²`` through ``damping``.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree, the point of evaluation.
    x: inputs (N, ...) (or a pytree of arrays with leading axis N).
    y: integer labels (N,); required for ``curvature='hessian'``, ignored for
      ``'ggn'``.
    mask: optional (N,) bool/float weights (0 excludes a row).
    microbatch: examples per micro-batch (static).
    damping: λ >= 0 added on the diagonal.
    curvature: ``'hessian'`` (exact Hessian of the loss, may be indefinite) or
      ``'ggn'`` (generalised Gauss-Newton, positive semi-definite).

  Returns:
    ``matvec(v)``, pytree -> pytree shaped like ``params``; traceable.

  Raises:
    ConfigError: on empty data, mismatched x/y, bad mask, microbatch or damping.
  """
  _common.check_choice('curvature', curvature, _CURVATURES)
  n = _common.num_examples('x', x)
  microbatch = _common.check_positive_int('microbatch', microbatch)
  _common.check_nonnegative('damping', damping)
  num_classes = _common.check_logits_fn(apply_fn, params, x)
  if curvature == 'hessian':
    if y is None:
      raise ConfigError("y (labels) is required for curvature='hessian'.")
    _common.check_labels(y, n)
    _common.check_label_range(y, num_classes)
  else:
    y = jnp.zeros((n,), jnp.int32)
  weights = jnp.ones((n,), jnp.float32) if mask is None else _common.check_mask(mask, n)

  (xs, ys, ws), valid = _common.chunk((x, y, weights), n, microbatch)
  ws = jnp.where(valid, ws, 0.0)
  ws = ws / jnp.sum(ws)

  def matvec(v: PyTree) -> PyTree:
    _common.check_same_structure('v', v, 'params', params)
    v = _common.cast_like(v, params)

    def body(acc, batch):
      xb, yb, wb = batch
      if curvature == 'ggn':
        cv = _ggn_weighted(apply_fn, params, xb, v, wb)
      else:
        def batch_loss(p):
          logp = _common.log_probs(apply_fn(p, xb))
          nll = -jnp.take_along_axis(logp, yb[:, None].astype(jnp.int32), axis=-1)[:, 0]
          return jnp.sum(jnp.where(wb != 0, wb * nll, 0.0))
        cv = _hvp(batch_loss, params, v)
      return jax.tree.map(jnp.add, acc, cv), None

    acc, _ = jax.lax.scan(body, _common.tree_zeros_like(params), (xs, ys, ws))
    return _common.tree_axpy(damping, v, acc)

  return matvec
