"""Certified removal for L2-regularised logistic regression (Guo et al. 2020).

Pure, traceable functions (wrap the callers in ``jax.jit``) for the math of
"Certified Data Removal from Machine Learning Models" (Guo, Goldstein, Hannun,
van der Maaten, ICML 2020). Notation, for one binary head with weights
``w (d,)``, features ``X (n, d)`` and labels ``y (n,)`` in {-1, +1}::

  L_b(w; D) = Σ_{i∈D} log(1 + exp(−y_i x_iᵀw)) + (λ n_D / 2) ‖w‖² + bᵀw,

the *sum form* of the training objective, i.e. ``n_D`` times the mean-form
objective ``mean_i ℓ_i + (λ/2)‖w‖² + bᵀw / n_D`` (objective perturbation
``b·w/n``). Its gradient and Hessian are::

  ∇L_b(w; D) = Σ_i (σ(y_i x_iᵀw) − 1) y_i x_i + λ n_D w + b,
  H(w; D)    = Σ_i σ_i (1 − σ_i) x_i x_iᵀ + λ n_D I,     σ_i = σ(x_iᵀw).

**Removal.** With D' = D \\ Dₘ (the removed points Dₘ), the Newton step on the
perturbed retain objective is ``w⁻ = w + Δ``, ``Δ = −H(w; D')⁻¹ ∇L_b(w; D')``.
When ``w`` is the exact minimiser of ``L_b(·; D)``, ``∇L_b(w; D') =
−Σ_{i∈Dₘ}(∇ℓ_i(w) + λw)``, so ``Δ = H(w; D')⁻¹ Σ_{i∈Dₘ}(∇ℓ_i(w) + λw)`` — Guo
et al.'s form (the gradient of the removed points' loss, regulariser share
included). We evaluate the retain-objective form, which is the same number at
the optimum and also absorbs any optimisation error left in ``w``.

**Certificate.** Guo et al.'s data-dependent bound (their Corollary 1) on the
gradient residual of the updated weights is::

  ‖∇L_b(w⁻; D')‖ ≤ β = γ · ‖Δ‖ · ‖X' Δ‖ · sqrt(λ_max(X'ᵀX')),

with X' the features of D' and γ = 1/4 the Lipschitz constant they use for the
logistic loss's second derivative (the true one is 1/(6√3) ≈ 0.096). The
derivation bounds ``|x_iᵀΔ|`` by ``‖x_i‖‖Δ‖`` and so assumes ``‖x_i‖ ≤ 1``;
:func:`residual_bound` multiplies by ``max(1, max_i ‖x_i‖)`` so that it stays
a valid bound for unnormalised features. With Gaussian objective perturbation
``b ~ N(0, σ²I)`` removal is (ε, δ)-certified as long as the accumulated
bound is at most the *noise budget*::

  Σ_removals β ≤ σ ε / c,     c = sqrt(2 log(1.5 / δ))

(their Theorem 3 with σ = c ε'/ε). Past the budget the model must be
retrained. Multi-class problems use one-vs-rest heads (one ``w_k`` and one
independent ``b_k`` per class, as Guo et al. do); their bounds are summed
against the single budget, which is conservative since
‖(r_1, …, r_K)‖ ≤ Σ_k ‖r_k‖.

Masks: every function takes an optional ``mask (n,)`` (bool or 0/1) selecting
the points currently in the training set (default: all rows), so that padded
arrays and sequential removals keep static shapes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxaudit.curvature.dense import spd_solve
from jaxaudit.errors import ConfigError

# Guo et al.'s Lipschitz constant of ℓ'' for the logistic loss.
GAMMA_LOGISTIC = 0.25


class Certificate(NamedTuple):
  """Outcome of :func:`certify` (arrays; scalars are 0-d).

  Attributes:
    w_new: Newton-updated weights, shaped like the ``w`` given ((d,) or (K, d)).
    bound: this removal's data-dependent gradient-residual bound β, summed
      over heads.
    budget: the noise budget σ ε / c.
    certified: bool, ``prior_bound + bound <= budget``.
    accumulated_bound: ``prior_bound + bound`` (carry it to the next removal).
    residual_norm: the actual gradient residual Σ_k ‖∇L_b(w_new_k; D')‖ (for
      diagnostics; the certificate uses the bound, not this value).
  """
  w_new: jax.Array
  bound: jax.Array
  budget: jax.Array
  certified: jax.Array
  accumulated_bound: jax.Array
  residual_norm: jax.Array


# ----------------------------------------------------------------------------- validation


def _check_concrete(name: str, value: Any, *, low: float, low_open: bool = True,
                    high: float | None = None, high_open: bool = True) -> None:
  """ConfigError unless a concrete scalar lies in the stated interval (traced: skipped)."""
  if isinstance(value, jax.core.Tracer):
    return
  if isinstance(value, bool) or not isinstance(value, (numbers.Real, jax.Array)):
    raise ConfigError(f'{name} must be a real number, got {value!r}')
  v = float(value)
  if not math.isfinite(v):
    raise ConfigError(f'{name} must be finite, got {v}')
  if (v <= low) if low_open else (v < low):
    raise ConfigError(f'{name} must be {">" if low_open else ">="} {low}, got {v}')
  if high is not None and ((v >= high) if high_open else (v > high)):
    raise ConfigError(f'{name} must be {"<" if high_open else "<="} {high}, got {v}')


def _check_xy(X, y, w=None) -> None:
  if jnp.ndim(X) != 2:
    raise ConfigError(f'X must be (n, d) features, got shape {jnp.shape(X)}')
  if jnp.shape(y) != (jnp.shape(X)[0],):
    raise ConfigError(f'y must have shape ({jnp.shape(X)[0]},) to match X, got '
                      f'{jnp.shape(y)}')
  if w is not None and jnp.shape(w) != (jnp.shape(X)[1],):
    raise ConfigError(f'w must have shape ({jnp.shape(X)[1]},), got {jnp.shape(w)}')


def _weights(mask, n: int, dtype) -> jax.Array:
  if mask is None:
    return jnp.ones((n,), dtype)
  if jnp.shape(mask) != (n,):
    raise ConfigError(f'mask must have shape ({n},), got {jnp.shape(mask)}')
  return jnp.asarray(mask).astype(dtype)


def _b_or_zero(b, d: int, dtype) -> jax.Array:
  if b is None:
    return jnp.zeros((d,), dtype)
  if jnp.shape(b) != (d,):
    raise ConfigError(f'b must have shape ({d},), got {jnp.shape(b)}')
  return jnp.asarray(b, dtype)


def _dtype(X) -> Any:
  return jnp.promote_types(jnp.result_type(X), jnp.float32)


# ----------------------------------------------------------------------------- objective


def ovr_labels(y: jax.Array, num_classes: int) -> jax.Array:
  """One-vs-rest ±1 labels.

  Args:
    y: (n,) integer class labels.
    num_classes: K >= 2.

  Returns:
    (1, n) labels ``2·[y == 1] − 1`` when K = 2 (a single head for class 1),
    else (K, n) with row k equal to ``2·[y == k] − 1`` (float32).
  """
  if num_classes < 2:
    raise ConfigError(f'num_classes must be >= 2, got {num_classes}')
  classes = jnp.arange(1, 2) if num_classes == 2 else jnp.arange(num_classes)
  return jnp.where(jnp.asarray(y)[None, :] == classes[:, None], 1.0, -1.0).astype(jnp.float32)


def logreg_objective(w, X, y, lam, b=None, *, mask=None) -> jax.Array:
  """Sum-form perturbed objective ``L_b(w; D)`` (see the module docstring).

  Args:
    w: (d,) weights.
    X: (n, d) features.
    y: (n,) labels in {-1, +1}.
    lam: λ > 0, the per-record L2 strength (the regulariser is λ n_D/2 ‖w‖²).
    b: optional (d,) objective perturbation (default 0).
    mask: optional (n,) membership of D (default: every row).

  Returns:
    () the objective value.
  """
  _check_xy(X, y, w)
  dtype = _dtype(X)
  m = _weights(mask, X.shape[0], dtype)
  b = _b_or_zero(b, X.shape[1], dtype)
  margins = jnp.asarray(y, dtype) * (X @ w)
  return (jnp.sum(m * jnp.logaddexp(0.0, -margins)) + 0.5 * lam * jnp.sum(m) * jnp.sum(w * w)
          + jnp.sum(b * w))


def logreg_grad(w, X, y, lam, b=None, *, mask=None) -> jax.Array:
  """Gradient ``∇L_b(w; D) = Σ_i (σ(y_i x_iᵀw) − 1) y_i x_i + λ n_D w + b``.

  Args:
    w: (d,) weights; X: (n, d); y: (n,) in {-1, +1}; lam: λ; b: optional (d,);
    mask: optional (n,) membership of D.

  Returns:
    (d,) gradient.
  """
  _check_xy(X, y, w)
  dtype = _dtype(X)
  m = _weights(mask, X.shape[0], dtype)
  b = _b_or_zero(b, X.shape[1], dtype)
  yy = jnp.asarray(y, dtype)
  coef = m * (jax.nn.sigmoid(yy * (X @ w)) - 1.0) * yy
  return X.T @ coef + lam * jnp.sum(m) * w + b


def logreg_hessian(w, X, lam, *, mask=None) -> jax.Array:
  """Hessian ``H(w; D) = Σ_i σ_i(1 − σ_i) x_i x_iᵀ + λ n_D I`` (labels drop out).

  Args:
    w: (d,) weights; X: (n, d) features; lam: λ; mask: optional (n,).

  Returns:
    (d, d) symmetric positive definite matrix (for λ > 0 and a non-empty D).
  """
  if jnp.ndim(X) != 2 or jnp.shape(w) != (jnp.shape(X)[1],):
    raise ConfigError(f'need X (n, d) and w (d,), got {jnp.shape(X)} and {jnp.shape(w)}')
  dtype = _dtype(X)
  m = _weights(mask, X.shape[0], dtype)
  s = jax.nn.sigmoid(X @ w)
  d = X.shape[1]
  return (X.T * (m * s * (1.0 - s))) @ X + lam * jnp.sum(m) * jnp.eye(d, dtype=dtype)


# ----------------------------------------------------------------------------- training


def train_logreg(X, y, lam, b=None, *, mask=None, num_iters: int = 20,
                 w0=None) -> jax.Array:
  """Exact minimiser of ``L_b(·; D)`` by Newton's method with backtracking.

  Each iteration takes the Newton direction ``p = −H⁻¹∇L_b`` (Cholesky solve)
  and the largest step ``t ∈ {1, 1/2, …, 2⁻¹¹}`` meeting the Armijo condition;
  when none does and the squared Newton decrement ``−∇L_bᵀp`` is below 0.1
  (the quadratic region, where round-off in a large sum-form objective can
  hide a real decrease) the full step is taken. The objective is strictly
  convex for λ > 0, so this converges quadratically; the loop stops once
  ``−∇L_bᵀp / 2`` has been at the round-off level of the objective
  (``4·eps·max(1, |L_b|)``) for two iterations in a row, when no step is
  taken, or after ``num_iters`` iterations. Well-scaled problems need 6–9
  iterations from w = 0.

  Args:
    X: (n, d) features (unit-norm rows for the certificate, see
      :func:`residual_bound`).
    y: (n,) labels in {-1, +1}.
    lam: λ > 0.
    b: optional (d,) objective perturbation.
    mask: optional (n,) membership of D.
    num_iters: the most Newton iterations (static, >= 1).
    w0: optional (d,) starting point (default zeros), e.g. a nearby optimum.

  Returns:
    (d,) weights.

  Raises:
    ConfigError: bad shapes, λ <= 0 or num_iters < 1.
  """
  _check_xy(X, y)
  _check_concrete('lam', lam, low=0.0)
  if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
    raise ConfigError(f'num_iters must be an int >= 1, got {num_iters!r}')
  dtype = _dtype(X)
  X = jnp.asarray(X, dtype)
  d = X.shape[1]
  b = _b_or_zero(b, d, dtype)
  if w0 is None:
    w0 = jnp.zeros((d,), dtype)
  elif jnp.shape(w0) != (d,):
    raise ConfigError(f'w0 must have shape ({d},), got {jnp.shape(w0)}')
  steps = 0.5 ** jnp.arange(12, dtype=dtype)
  eps = jnp.finfo(dtype).eps

  def objective(w):
    return logreg_objective(w, X, y, lam, b, mask=mask)

  def cond(state):
    k, _, _, done = state
    return (k < num_iters) & jnp.logical_not(done)

  def body(state):
    k, w, was_small, _ = state
    g = logreg_grad(w, X, y, lam, b, mask=mask)
    p = -spd_solve(logreg_hessian(w, X, lam, mask=mask), g)
    f0 = objective(w)
    slope = jnp.dot(g, p)                     # −(Newton decrement)² <= 0
    fs = jax.vmap(lambda t: objective(w + t * p))(steps)
    ok = fs <= f0 + 1e-4 * steps * slope
    # Inside the quadratic region (squared Newton decrement < 0.1) the full step is
    # safe even when round-off in L_b hides its decrease from the Armijo test.
    fallback = jnp.where(-slope < 0.1, 1.0, 0.0)
    t = jnp.where(jnp.any(ok), steps[jnp.argmax(ok)], fallback)
    small = -slope / 2 <= 4 * eps * jnp.maximum(1.0, jnp.abs(f0))
    return k + 1, w + t * p, small, (small & was_small) | (t == 0)

  init = (jnp.asarray(0, jnp.int32), jnp.asarray(w0, dtype), jnp.asarray(False),
          jnp.asarray(False))
  _, w, _, _ = jax.lax.while_loop(cond, body, init)
  return w


# ----------------------------------------------------------------------------- removal


def newton_removal(w, X, y, remove_mask, lam, b=None, *, mask=None) -> tuple[jax.Array,
                                                                             jax.Array]:
  """One Newton removal step: ``Δ = −H(w; D')⁻¹ ∇L_b(w; D')``.

  D' = (rows in ``mask``) minus (rows in ``remove_mask``). At the exact
  optimum of ``L_b(·; D)`` this is ``H(w; D')⁻¹ Σ_{removed} (∇ℓ_i(w) + λw)``
  (see the module docstring).

  Args:
    w: (d,) current weights (the optimum of L_b on D).
    X: (n, d) features of D (and possibly padding rows outside ``mask``).
    y: (n,) labels in {-1, +1}.
    remove_mask: (n,) bool, the rows to remove now.
    lam: λ > 0.
    b: optional (d,) objective perturbation used at training.
    mask: optional (n,) membership of D before this removal (default: all).

  Returns:
    ``(w_new, delta)``, both (d,): ``w_new = w + delta``.
  """
  _check_xy(X, y, w)
  n = X.shape[0]
  if jnp.shape(remove_mask) != (n,):
    raise ConfigError(f'remove_mask must have shape ({n},), got {jnp.shape(remove_mask)}')
  dtype = _dtype(X)
  keep = _weights(mask, n, dtype) * (1.0 - jnp.asarray(remove_mask).astype(dtype))
  g = logreg_grad(w, X, y, lam, b, mask=keep)
  delta = -spd_solve(logreg_hessian(w, X, lam, mask=keep), g)
  return w + delta, delta


def feature_spectral_norm(X, *, mask=None) -> jax.Array:
  """``sqrt(λ_max(X'ᵀX'))`` = ‖X'‖₂, X' the rows of X in ``mask``. X: (n, d) -> ()."""
  dtype = _dtype(X)
  m = _weights(mask, X.shape[0], dtype)
  gram = (X.T * m) @ X
  return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 0.0))


def residual_bound(delta, X, *, mask=None, gamma: float = GAMMA_LOGISTIC) -> jax.Array:
  """Data-dependent bound on ``‖∇L_b(w + Δ; D')‖`` after a Newton step.

  ``β = γ · R · ‖Δ‖ · ‖X'Δ‖ · sqrt(λ_max(X'ᵀX'))`` with ``R = max(1, max_i
  ‖x_i‖)`` over D' (R = 1 for the unit-norm features Guo et al. assume, giving
  their formula exactly).

  Args:
    delta: (d,) the Newton step.
    X: (n, d) features.
    mask: optional (n,) membership of D' (the retained rows).
    gamma: Lipschitz constant of ℓ'' (1/4 for the logistic loss, Guo et al.).

  Returns:
    () the bound β >= 0.
  """
  if jnp.ndim(X) != 2 or jnp.shape(delta) != (jnp.shape(X)[1],):
    raise ConfigError(f'need X (n, d) and delta (d,), got {jnp.shape(X)} and '
                      f'{jnp.shape(delta)}')
  _check_concrete('gamma', gamma, low=0.0)
  dtype = _dtype(X)
  m = _weights(mask, X.shape[0], dtype)
  xd = (X @ delta) * m
  radius = jnp.maximum(1.0, jnp.max(jnp.where(m > 0, jnp.linalg.norm(X, axis=1), 0.0)))
  return (gamma * radius * jnp.linalg.norm(delta) * jnp.linalg.norm(xd)
          * feature_spectral_norm(X, mask=m))


def noise_budget(sigma, epsilon, delta) -> jax.Array:
  """The residual budget ``σ ε / c`` with ``c = sqrt(2 log(1.5/δ))``.

  Args:
    sigma: σ > 0, the standard deviation of the Gaussian perturbation b.
    epsilon: ε > 0.
    delta: δ in (0, 1).

  Returns:
    () budget (float32 or the promoted dtype of the inputs).
  """
  _check_concrete('sigma', sigma, low=0.0)
  _check_concrete('epsilon', epsilon, low=0.0)
  _check_concrete('delta', delta, low=0.0, high=1.0)
  if isinstance(delta, jax.core.Tracer):
    c = jnp.sqrt(2.0 * jnp.log(1.5 / delta))
  else:
    c = math.sqrt(2.0 * math.log(1.5 / float(delta)))
  return jnp.asarray(sigma * epsilon / c)


def _as_heads(a, ndim_single: int):
  a = jnp.asarray(a)
  return (a[None], True) if a.ndim == ndim_single else (a, False)


def certify(w, X, y, remove_mask, lam, b=None, *, sigma, epsilon, delta, mask=None,
            prior_bound=0.0, gamma: float = GAMMA_LOGISTIC) -> Certificate:
  """Newton removal with its (ε, δ) certificate, for one or K one-vs-rest heads.

  Args:
    w: (d,) or (K, d) weights (the optimum of L_b on D, per head).
    X: (n, d) features, shared by the heads.
    y: (n,) or (K, n) labels in {-1, +1}.
    remove_mask: (n,) bool, the rows removed now.
    lam: λ > 0.
    b: None, (d,) or (K, d) objective perturbation.
    sigma: std of the Gaussian perturbation (σ > 0).
    epsilon: ε > 0.
    delta: δ in (0, 1).
    mask: optional (n,) membership of D before this removal.
    prior_bound: bound already spent by earlier removals (sequential use).
    gamma: Lipschitz constant of ℓ'' (1/4).

  Returns:
    A :class:`Certificate`; ``certified`` is False when the accumulated bound
    exceeds the budget ("retrain required").

  Raises:
    ConfigError: bad shapes or out-of-range σ, ε, δ, λ, γ.
  """
  _check_concrete('lam', lam, low=0.0)
  _check_concrete('prior_bound', prior_bound, low=0.0, low_open=False)
  budget = noise_budget(sigma, epsilon, delta)
  W, single = _as_heads(w, 1)
  Y, _ = _as_heads(y, 1)
  if Y.shape[0] != W.shape[0]:
    raise ConfigError(f'w has {W.shape[0]} heads but y has {Y.shape[0]} label rows')
  if b is None:
    B = jnp.zeros_like(W)
  else:
    B, _ = _as_heads(b, 1)
    if B.shape != W.shape:
      raise ConfigError(f'b must match w: {B.shape} vs {W.shape}')
  n = jnp.shape(X)[0]
  dtype = _dtype(X)
  keep = _weights(mask, n, dtype) * (1.0 - jnp.asarray(remove_mask).astype(dtype))

  def one(wk, yk, bk):
    w_new, step = newton_removal(wk, X, yk, remove_mask, lam, bk, mask=mask)
    bound = residual_bound(step, X, mask=keep, gamma=gamma)
    resid = jnp.linalg.norm(logreg_grad(w_new, X, yk, lam, bk, mask=keep))
    return w_new, bound, resid

  W_new, bounds, resids = jax.vmap(one)(W, Y, B)
  bound = jnp.sum(bounds)
  accumulated = prior_bound + bound
  return Certificate(
      w_new=W_new[0] if single else W_new,
      bound=bound,
      budget=jnp.asarray(budget, bound.dtype),
      certified=accumulated <= budget,
      accumulated_bound=accumulated,
      residual_norm=jnp.sum(resids))


__all__ = ['Certificate', 'GAMMA_LOGISTIC', 'certify', 'feature_spectral_norm', 'logreg_grad',
           'logreg_hessian', 'logreg_objective', 'newton_removal', 'noise_budget',
           'ovr_labels', 'residual_bound', 'train_logreg']
