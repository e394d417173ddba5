"""Curvature-based unlearning: Fisher forgetting, influence and Newton removal,
Fisher+Hessian, certified removal and selective synaptic dampening (SSD).

Every method is a registered factory (family ``'curvature'``) returning a pure
``unlearn(params, model, data, key) -> params``; the work runs as one jitted
program per (model, hyper-parameters), built from :mod:`jaxaudit.curvature`
(micro-batched Fisher diagonals, Hessian/GGN-vector products, conjugate
gradients, LiSSA). Notation: Df the forget set (m records), Dr the retain set
(n − m records), D = Dr ∪ Df the original training set, θ the original
weights, ``L_S(θ) = mean_{i∈S} CE(θ; x_i, y_i)``, and the training objective
``J_S(θ) = L_S(θ) + (l2/2)‖θ‖²`` (``l2`` = the recipe's L2 weight decay by
default).

* ``fisher`` (Golatkar et al. 2020): ``θ ← θ + sqrt(α·min(1/(F + 1e-8),
  max_var)) ⊙ N(0, I)``, F the true-Fisher diagonal on Dr.
* ``influence`` (Koh & Liang 2017; Izzo et al. 2021):
  ``θ ← θ + scale · (m/(n−m)) · (H_r + (l2 + damping)I)⁻¹ (∇L_f(θ) + l2·θ)``.
* ``newton``: ``θ ← θ − (H_r + (l2 + damping)I)⁻¹ (∇L_r(θ) + l2·θ)``.
* ``fisher_hessian``: ``influence`` then ``fisher`` (Fisher at the corrected θ).
* ``certified_removal`` (Guo et al. 2020): one-vs-rest L2 logistic-regression
  head on frozen features, objective perturbation, Newton removal with a
  gradient-residual certificate (math in :mod:`jaxaudit.unlearn.certified`).
* ``ssd`` (Foster et al. 2023): dampen the parameters far more important to
  Df than to D.

**Sign convention of influence removal.** Up-weighting a record z by ε moves
the optimum of ``J_D`` by ``−ε H⁻¹∇ℓ̃_z`` (Koh & Liang), H the Hessian of the
*full* training objective and ``ℓ̃_z = ℓ_z + (l2/2)‖θ‖²`` the record's loss
with its share of the regulariser (retraining with the same mean-loss recipe
keeps the regulariser per record). Removing Df is ε = −1/n for each of its
records, hence ``θ_new ≈ θ + (1/n) H⁻¹ Σ_{z∈Df} ∇ℓ̃_z = θ + (m/n) H_D⁻¹ (∇L_f + l2·θ)``
— a *plus* sign: the parameters move *away* from fitting Df (``hessian_set=
'full'``). The default (``hessian_set='retain'``) uses the retain Hessian and
the factor m/(n−m): at a stationary point of ``J_D``,
``n∇J_D = (n−m)∇J_r + m(∇L_f + l2·θ) = 0``, so
``−∇J_r = (m/(n−m))(∇L_f + l2·θ)`` and the update is exactly one Newton step
on the retain objective, i.e. ``newton`` evaluated without the retain
gradient. The two agree to first order in m/n.

Curvature: ``curvature='hessian'`` (exact, may be indefinite for networks; CG
then stops at the first non-positive-curvature direction, as truncated
Newton-CG does) or ``'ggn'`` (Gauss-Newton, positive semi-definite). The
Hessian is estimated on a random subset of ``hessian_records`` records (key
``fold_in(key, 0)``; 0 = all); gradients always use the whole set.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np

import flax.linen as nn

from jaxaudit import curvature as cv
from jaxaudit.curvature import dense
from jaxaudit.errors import ConfigError
from jaxaudit.models import make_apply_fn, num_params
from jaxaudit.train.losses import per_example_ce
from jaxaudit.unlearn import _common as C
from jaxaudit.unlearn import certified as cr
from jaxaudit.unlearn.base import check_data, coerce_hparams, register

FAMILY = 'curvature'
Params = Any

_CURVATURES = ('hessian', 'ggn')
_SOLVERS = ('cg', 'lissa', 'exact')
_HESSIAN_SETS = ('retain', 'full')

FISHER_DEFAULTS = dict(alpha=1e-6, max_var=1e3, max_records=1000, microbatch=64)
_SOLVE_DEFAULTS = dict(damping=0.1, l2=None, curvature='hessian', hessian_records=2000,
                       cg_maxiter=100, cg_tol=1e-5, microbatch=256)
INFLUENCE_DEFAULTS = dict(_SOLVE_DEFAULTS, solver='cg', hessian_set='retain', scale=1.0,
                          lissa_depth=200)
NEWTON_DEFAULTS = dict(_SOLVE_DEFAULTS, steps=1, exact_max_params=2000)
FISHER_HESSIAN_DEFAULTS = dict(INFLUENCE_DEFAULTS, alpha=FISHER_DEFAULTS['alpha'],
                               max_var=FISHER_DEFAULTS['max_var'],
                               max_records=FISHER_DEFAULTS['max_records'],
                               fisher_microbatch=FISHER_DEFAULTS['microbatch'])
CERTIFIED_DEFAULTS = dict(lam=1e-3, sigma=1.0, epsilon=1.0, delta=1e-4, gamma=0.25,
                          newton_iters=30, fit_bias=True, removal_batches=1, microbatch=512)
SSD_DEFAULTS = {'alpha': 10.0, 'lambda': 1.0, 'max_records': 2000, 'microbatch': 128}

# Fisher forgetting's floor on the Fisher diagonal (Golatkar et al.'s 1e-8).
FISHER_EPS = 1e-8


# ----------------------------------------------------------------------------- validation


def _real(name: str, v: Any, *, low: float | None = None, low_open: bool = False,
          high: float | None = None, high_open: bool = False) -> float:
  """Checks a hyper-parameter is a finite real in the interval; returns it as float."""
  if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
    raise ConfigError(f'{name} must be a finite real number, got {v!r}')
  v = float(v)
  if low is not None and ((v <= low) if low_open else (v < low)):
    raise ConfigError(f'{name} must be {">" if low_open else ">="} {low}, got {v}')
  if high is not None and ((v >= high) if high_open else (v > high)):
    raise ConfigError(f'{name} must be {"<" if high_open else "<="} {high}, got {v}')
  return v


def _int(name: str, v: Any, *, low: int) -> int:
  if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
    raise ConfigError(f'{name} must be an int >= {low}, got {v!r}')
  return int(v)


def _choice(name: str, v: Any, choices: tuple[str, ...]) -> str:
  if v not in choices:
    raise ConfigError(f'{name} must be one of {choices}, got {v!r}')
  return v


def _fisher_hp(hp) -> dict:
  return dict(alpha=_real('alpha', hp['alpha'], low=0.0),
              max_var=_real('max_var', hp['max_var'], low=0.0, low_open=True),
              max_records=_int('max_records', hp['max_records'], low=0),
              microbatch=_int('microbatch', hp['microbatch'], low=1))


def _solve_hp(hp) -> dict:
  l2 = hp['l2']
  if l2 is not None:
    l2 = _real('l2', l2, low=0.0)
  return dict(damping=_real('damping', hp['damping'], low=0.0), l2=l2,
              curvature=_choice('curvature', hp['curvature'], _CURVATURES),
              hessian_records=_int('hessian_records', hp['hessian_records'], low=0),
              cg_maxiter=_int('cg_maxiter', hp['cg_maxiter'], low=1),
              cg_tol=_real('cg_tol', hp['cg_tol'], low=0.0),
              microbatch=_int('microbatch', hp['microbatch'], low=1))


def _influence_hp(hp) -> dict:
  out = _solve_hp(hp)
  out.update(solver=_choice('solver', hp['solver'], _SOLVERS),
             hessian_set=_choice('hessian_set', hp['hessian_set'], _HESSIAN_SETS),
             scale=_real('scale', hp['scale']),
             lissa_depth=_int('lissa_depth', hp['lissa_depth'], low=1))
  return out


def _certified_hp(hp) -> dict:
  return dict(lam=_real('lam', hp['lam'], low=0.0, low_open=True),
              sigma=_real('sigma', hp['sigma'], low=0.0, low_open=True),
              epsilon=_real('epsilon', hp['epsilon'], low=0.0, low_open=True),
              delta=_real('delta', hp['delta'], low=0.0, low_open=True, high=1.0,
                          high_open=True),
              gamma=_real('gamma', hp['gamma'], low=0.0, low_open=True),
              newton_iters=_int('newton_iters', hp['newton_iters'], low=1),
              fit_bias=bool(hp['fit_bias']),
              removal_batches=_int('removal_batches', hp['removal_batches'], low=1),
              microbatch=_int('microbatch', hp['microbatch'], low=1))


def resolve_l2(l2: float | None, recipe) -> float:
  """The L2 strength of the training objective: ``l2`` if given, else the recipe's
  ``weight_decay`` for SGD/Adam (an L2 gradient term there) and 0 for AdamW (whose
  decoupled decay is not an objective term)."""
  if l2 is not None:
    return float(l2)
  if recipe is None or getattr(recipe, 'optimizer', 'adamw') == 'adamw':
    return 0.0
  return float(getattr(recipe, 'weight_decay', 0.0))


# ----------------------------------------------------------------------------- data helpers


def _pool(data):
  """(x, y) of the pool; x keeps a floating dtype (float64 under jax_enable_x64)."""
  x = jnp.asarray(data.x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x, jnp.asarray(data.y, jnp.int32)


def _subsample(key: jax.Array, idx: jax.Array, size: int) -> jax.Array:
  """``size`` indices of ``idx`` drawn without replacement (all when size is 0 or
  at least ``len(idx)``). Static sizes."""
  if size == 0 or size >= idx.shape[0]:
    return idx
  return jax.random.permutation(key, idx)[:size]


def _records(limit: int, n: int) -> int:
  """The static subset size: ``n`` when ``limit`` is 0 or at least ``n``."""
  return n if limit == 0 or limit >= n else limit


def _split(hp: dict, reals: tuple[str, ...]) -> tuple[dict, dict]:
  """(run-time floats, static values) of a hyper-parameter dict.

  Floats travel as jit *arguments* (changing them does not recompile); shapes,
  choices and loop lengths are static and key the compiled-program cache.
  """
  return ({k: float(v) for k, v in hp.items() if k in reals},
          {k: v for k, v in hp.items() if k not in reals})


def _chunks(tree, microbatch: int):
  """Pads leading axis N to K·B and reshapes to (K, B, ...); returns (tree, valid (K, B))."""
  n = jax.tree.leaves(tree)[0].shape[0]
  b = max(1, min(microbatch, n))
  k = -(-n // b)
  pad = k * b - n

  def one(a):
    if pad:
      a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (pad,) + a.shape[1:])], axis=0)
    return a.reshape((k, b) + a.shape[1:])

  return jax.tree.map(one, tree), (jnp.arange(k * b) < n).reshape(k, b)


def mean_ce_grad(apply_fn, params: Params, x: jax.Array, y: jax.Array, *,
                 microbatch: int = 256) -> Params:
  """Gradient of the mean cross-entropy ``L_S(θ)`` over a set, micro-batched.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree.
    x: (N, ...) inputs of the set S; y: (N,) int labels.
    microbatch: records per ``lax.scan`` step (the last batch is padded, weight 0).

  Returns:
    A pytree like ``params`` (same dtypes): ``∇_θ mean_i CE(θ; x_i, y_i)``.
  """
  n = x.shape[0]
  (xs, ys), valid = _chunks((x, y), microbatch)

  def body(acc, batch):
    xb, yb, vb = batch
    g = jax.grad(lambda p: jnp.sum(jnp.where(vb, per_example_ce(apply_fn(p, xb), yb), 0.0)))(params)
    return jax.tree.map(jnp.add, acc, g), None

  total, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), (xs, ys, valid))
  return jax.tree.map(lambda t: (t / n).astype(t.dtype), total)


def dense_curvature(apply_fn, params: Params, x: jax.Array, y: jax.Array, *,
                    curvature: str = 'hessian', microbatch: int = 256) -> jax.Array:
  """Dense (P, P) Hessian or GGN of the mean cross-entropy over a set.

  Summed over micro-batches (``lax.scan``), each by
  :func:`jaxaudit.curvature.hessian_matrix` (``'hessian'``) or by the logit
  Jacobian ``Σ_i J_iᵀ(diag p_i − p_i p_iᵀ)J_i`` (``'ggn'``). The micro-batch is
  capped at ``2²⁰ / P`` records to bound the memory of the P forward tangents.
  Rows/columns follow ``jax.flatten_util.ravel_pytree(params)``.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree with P numbers.
    x: (N, ...) inputs; y: (N,) int labels (unused by ``'ggn'``).
    curvature: ``'hessian'`` or ``'ggn'``.
    microbatch: records per step before the cap.

  Returns:
    (P, P) symmetric matrix in the parameters' promoted dtype.
  """
  _choice('curvature', curvature, _CURVATURES)
  flat, unravel = flatten_util.ravel_pytree(params)
  p_count = flat.size
  n = x.shape[0]
  (xs, ys), valid = _chunks((x, y), max(1, min(microbatch, (1 << 20) // max(p_count, 1))))

  def body(acc, batch):
    xb, yb, vb = batch
    w = jnp.where(vb, 1.0 / n, 0.0)
    if curvature == 'hessian':
      h = cv.hessian_matrix(lambda p: jnp.sum(w * per_example_ce(apply_fn(p, xb), yb)), params,
                            max_params=p_count)
    else:
      jac = jax.jacfwd(lambda f: apply_fn(unravel(f), xb))(flat)     # (B, C, P)
      prob = jax.nn.softmax(apply_fn(params, xb).astype(jac.dtype), axis=-1)
      u = jnp.einsum('bc,bcp->bp', prob, jac)
      h = (jnp.einsum('b,bc,bcp,bcq->pq', w, prob, jac, jac)
           - jnp.einsum('b,bp,bq->pq', w, u, u))
    return acc + h.astype(acc.dtype), None

  total, _ = jax.lax.scan(body, jnp.zeros((p_count, p_count), flat.dtype), (xs, ys, valid))
  return total


def _solve(apply_fn, params: Params, xh, yh, rhs: Params, key, *, solver: str,
           curvature: str, l2: float, damping: float, cg_maxiter: int, cg_tol: float,
           lissa_depth: int, microbatch: int) -> Params:
  """``(H_S + (l2 + damping) I)⁻¹ rhs`` with H_S the curvature of mean CE on (xh, yh)."""
  shift = l2 + damping
  if solver == 'exact':
    flat_rhs, unravel = flatten_util.ravel_pytree(rhs)
    h = dense_curvature(apply_fn, params, xh, yh, curvature=curvature, microbatch=microbatch)
    h = h + shift * jnp.eye(h.shape[0], dtype=h.dtype)
    return unravel(dense.solve(h, flat_rhs.astype(h.dtype)))
  if solver == 'cg':
    matvec = cv.make_dataset_hvp(apply_fn, params, xh, yh, microbatch=microbatch,
                                 damping=shift, curvature=curvature)
    out, _ = cv.conjugate_gradient(matvec, rhs, tol=cg_tol, maxiter=cg_maxiter)
    return out
  # LiSSA on A = H_S + l2 I with Tikhonov damping; scale from the dominant eigenvalue.
  matvec = cv.make_dataset_hvp(apply_fn, params, xh, yh, microbatch=microbatch, damping=l2,
                               curvature=curvature)
  top, _ = cv.power_iteration(matvec, params, num_iters=20, key=key)
  scale = 1.2 * (jnp.abs(top) + damping) + 1e-6
  return cv.lissa(matvec, rhs, damping=damping, scale=scale, depth=lissa_depth)


def _axpy(a, x: Params, y: Params) -> Params:
  return jax.tree.map(lambda xl, yl: (yl + a * xl).astype(yl.dtype), x, y)


# ----------------------------------------------------------------------------- Fisher


def fisher_noise_std(fisher: Params, *, alpha: float, max_var: float) -> Params:
  """Per-parameter noise std of Fisher forgetting.

  ``std = sqrt(α · min(1 / (F + 1e-8), max_var))``: the variance is
  inversely proportional to the Fisher diagonal, with the inverse Fisher
  clamped at ``max_var`` before scaling by α, as in Golatkar et al.'s
  reference code (``var = (1/(F+1e-8)).clamp(max=1e3); var *= alpha``), so no
  parameter gets a variance above ``α · max_var``.

  Args:
    fisher: pytree of Fisher diagonals (entries >= 0), shaped like the params.
    alpha: α >= 0, the noise scale.
    max_var: cap on the inverse Fisher (> 0).

  Returns:
    A pytree like ``fisher`` of standard deviations.
  """
  return jax.tree.map(
      lambda f: jnp.sqrt(alpha * jnp.minimum(1.0 / (f + FISHER_EPS), max_var)).astype(f.dtype),
      fisher)


def add_fisher_noise(params: Params, fisher: Params, key: jax.Array, *, alpha: float,
                     max_var: float) -> Params:
  """``θ + fisher_noise_std(F) ⊙ N(0, I)``; leaf i draws from ``fold_in(key, i)``.

  Args:
    params: parameter pytree; fisher: pytree like it; key: PRNG key;
    alpha, max_var: see :func:`fisher_noise_std`.

  Returns:
    Noised parameters, shaped and typed like ``params``.
  """
  std = fisher_noise_std(fisher, alpha=alpha, max_var=max_var)
  leaves, treedef = jax.tree.flatten(params)
  stds = treedef.flatten_up_to(std)
  out = [(p + s * jax.random.normal(jax.random.fold_in(key, i), p.shape, s.dtype)).astype(p.dtype)
         for i, (p, s) in enumerate(zip(leaves, stds))]
  return jax.tree.unflatten(treedef, out)


def _fisher_core(apply_fn, params, x, y, retain, key, *, alpha, max_var, max_records,
                 microbatch):
  idx = _subsample(jax.random.fold_in(key, 0), retain,
                   _records(max_records, retain.shape[0]))
  fisher = cv.diag_fisher(apply_fn, params, x[idx], None, kind='true', microbatch=microbatch)
  return add_fisher_noise(params, fisher, jax.random.fold_in(key, 1), alpha=alpha,
                          max_var=max_var)


_FISHER_REALS = ('alpha', 'max_var')


def _fisher_program(params, x, y, retain, key, reals, *, model, **static):
  return _fisher_core(make_apply_fn(model), params, x, y, retain, key, **reals, **static)


@register('fisher', FAMILY, FISHER_DEFAULTS)
def fisher(**hp):
  """Fisher forgetting (Golatkar et al. 2020): F = true-Fisher diagonal on Dr
  (``E_x Σ_y p(y|x)(∂log p(y|x)/∂θ)²``; a random subset of ``max_records``
  records of Dr, key ``fold_in(key, 0)``; 0 = all), then
  ``θ ← θ + sqrt(α·min(1/(F+1e-8), max_var)) ⊙ N(0, I)`` (key ``fold_in(key, 1)``):
  noise is large where Dr does not constrain the weights. The reference code's
  class-forgetting extras (zeroing the forgotten class's head row) do not apply
  to random forget sets and are omitted."""
  f = _fisher_hp(hp)

  def unlearn(params, model, data, key):
    x, y = _pool(data)
    reals, static = _split(f, _FISHER_REALS)
    static['max_records'] = _records(static['max_records'], int(np.asarray(data.retain).size))
    return C.jit_apply(_fisher_program, params, x, y, C.idx(data.retain), key, reals,
                       model=model, **static)

  return unlearn


# ----------------------------------------------------------------------------- influence / Newton


def _influence_core(apply_fn, params, x, y, forget, retain, key, *, l2, damping, curvature,
                    solver, hessian_set, hessian_records, scale, cg_maxiter, cg_tol,
                    lissa_depth, microbatch):
  m, n_r = forget.shape[0], retain.shape[0]
  g_f = mean_ce_grad(apply_fn, params, x[forget], y[forget], microbatch=microbatch)
  rhs = _axpy(l2, params, g_f)                                    # ∇L_f + l2·θ
  if hessian_set == 'retain':
    pool, factor = retain, m / n_r
  else:
    pool, factor = jnp.concatenate([retain, forget]), m / (n_r + m)
  hidx = _subsample(jax.random.fold_in(key, 0), pool, _records(hessian_records, pool.shape[0]))
  delta = _solve(apply_fn, params, x[hidx], y[hidx], rhs, jax.random.fold_in(key, 1),
                 solver=solver, curvature=curvature, l2=l2, damping=damping,
                 cg_maxiter=cg_maxiter, cg_tol=cg_tol, lissa_depth=lissa_depth,
                 microbatch=microbatch)
  return _axpy(scale * factor, delta, params)


_INFLUENCE_REALS = ('l2', 'damping', 'scale', 'cg_tol')


def _influence_program(params, x, y, forget, retain, key, reals, *, model, **static):
  return _influence_core(make_apply_fn(model), params, x, y, forget, retain, key, **reals,
                         **static)


@register('influence', FAMILY, INFLUENCE_DEFAULTS)
def influence(**hp):
  """Influence removal (Koh & Liang 2017; Izzo et al. 2021):
  ``θ ← θ + scale·(m/(n−m))·(H_r + (l2+damping)I)⁻¹(∇L_f(θ) + l2·θ)``, the
  one-shot Newton step on the retain objective that assumes θ minimises the
  full objective (see the module docstring for the sign; ``hessian_set='full'``
  gives the classic ``(m/n)·H_D⁻¹`` form). H is the Hessian (``curvature=
  'hessian'``) or GGN of the mean retain CE on ``hessian_records`` random retain
  records (0 = all), solved by conjugate gradients (``solver='cg'``), LiSSA
  (``'lissa'``, scale from 20 power iterations) or a dense solve (``'exact'``,
  small models only). ``l2=None`` takes the recipe's L2 weight decay."""
  f = _influence_hp(hp)

  def unlearn(params, model, data, key):
    x, y = _pool(data)
    reals, static = _split(dict(f, l2=resolve_l2(f['l2'], data.recipe)), _INFLUENCE_REALS)
    return C.jit_apply(_influence_program, params, x, y, C.idx(data.forget),
                       C.idx(data.retain), key, reals, model=model, **static)

  return unlearn


_NEWTON_REALS = ('l2', 'damping', 'cg_tol')


def _newton_program(params, x, y, retain, key, reals, *, model, curvature, steps, exact,
                    hessian_records, cg_maxiter, microbatch):
  l2, damping, cg_tol = reals['l2'], reals['damping'], reals['cg_tol']
  apply_fn = make_apply_fn(model)
  xr, yr = x[retain], y[retain]
  hidx = _subsample(jax.random.fold_in(key, 0), retain,
                    _records(hessian_records, retain.shape[0]))
  xh, yh = x[hidx], y[hidx]

  def step(_, p):
    g = _axpy(l2, p, mean_ce_grad(apply_fn, p, xr, yr, microbatch=microbatch))
    delta = _solve(apply_fn, p, xh, yh, g, None, solver='exact' if exact else 'cg',
                   curvature=curvature, l2=l2, damping=damping, cg_maxiter=cg_maxiter,
                   cg_tol=cg_tol, lissa_depth=1, microbatch=microbatch)
    return _axpy(-1.0, delta, p)

  return jax.lax.fori_loop(0, steps, step, params)


@register('newton', FAMILY, NEWTON_DEFAULTS)
def newton(**hp):
  """Newton removal on the retain objective: ``steps`` times
  ``θ ← θ − (H_r + (l2+damping)I)⁻¹(∇L_r(θ) + l2·θ)``, ∇L_r the mean retain-CE
  gradient over all of Dr (non-zero once Df is dropped from the objective) and
  H_r its Hessian (or GGN) on ``hessian_records`` random retain records. Dense
  Hessian and a direct solve when the model has at most ``exact_max_params``
  parameters (0: never), conjugate gradients on Hessian-vector products
  otherwise. ``l2=None`` takes the recipe's L2 weight decay."""
  f = _solve_hp(hp)
  steps = _int('steps', hp['steps'], low=1)
  exact_max = _int('exact_max_params', hp['exact_max_params'], low=0)

  def unlearn(params, model, data, key):
    x, y = _pool(data)
    reals, static = _split(dict(f, l2=resolve_l2(f['l2'], data.recipe)), _NEWTON_REALS)
    exact = num_params(params) <= exact_max
    return C.jit_apply(_newton_program, params, x, y, C.idx(data.retain), key, reals,
                       model=model, steps=steps, exact=exact, **static)

  return unlearn


def _fisher_hessian_program(params, x, y, forget, retain, key, reals, *, model, fisher_kw,
                            **static):
  apply_fn = make_apply_fn(model)
  inf_reals = {k: v for k, v in reals.items() if k in _INFLUENCE_REALS}
  params = _influence_core(apply_fn, params, x, y, forget, retain, jax.random.fold_in(key, 0),
                           **inf_reals, **static)
  return _fisher_core(apply_fn, params, x, y, retain, jax.random.fold_in(key, 1),
                      alpha=reals['alpha'], max_var=reals['max_var'], **dict(fisher_kw))


@register('fisher_hessian', FAMILY, FISHER_HESSIAN_DEFAULTS)
def fisher_hessian(**hp):
  """Fisher + Hessian: the ``influence`` correction (key ``fold_in(key, 0)``)
  followed by Fisher-forgetting noise computed at the corrected weights (key
  ``fold_in(key, 1)``); hyper-parameters as the two methods, with the Fisher's
  micro-batch as ``fisher_microbatch``."""
  f = _influence_hp(hp)
  fk = _fisher_hp(dict(hp, microbatch=hp['fisher_microbatch']))

  def unlearn(params, model, data, key):
    x, y = _pool(data)
    reals, static = _split(dict(f, l2=resolve_l2(f['l2'], data.recipe)), _INFLUENCE_REALS)
    reals.update(alpha=fk['alpha'], max_var=fk['max_var'])
    fisher_kw = (('max_records', _records(fk['max_records'],
                                          int(np.asarray(data.retain).size))),
                 ('microbatch', fk['microbatch']))
    return C.jit_apply(_fisher_hessian_program, params, x, y, C.idx(data.forget),
                       C.idx(data.retain), key, reals, model=model, fisher_kw=fisher_kw,
                       **static)

  return unlearn


# ----------------------------------------------------------------------------- SSD


def ssd_dampen(params: Params, imp_full: Params, imp_forget: Params, *, alpha: float,
               lam: float) -> Params:
  """Selective synaptic dampening (Foster et al. 2023).

  Where ``I_Df > α·I_D``: ``θ ← θ · min(λ·I_D / I_Df, 1)``; every other entry is
  returned bit-identical.

  Args:
    params: parameter pytree.
    imp_full: importances I_D on D = Dr ∪ Df, shaped like ``params`` (>= 0).
    imp_forget: importances I_Df on Df, shaped like ``params`` (>= 0).
    alpha: selection threshold α (> 0).
    lam: dampening constant λ (> 0).

  Returns:
    Dampened parameters shaped and typed like ``params``.
  """
  def one(p, i_d, i_f):
    selected = i_f > alpha * i_d
    factor = jnp.minimum(lam * i_d / jnp.where(selected, i_f, 1.0), 1.0)
    return jnp.where(selected, (p * factor).astype(p.dtype), p)

  return jax.tree.map(one, params, imp_full, imp_forget)


def _ssd_program(params, x, y, forget, union, key, reals, *, model, max_records, microbatch):
  alpha, lam = reals['alpha'], reals['lam']
  apply_fn = make_apply_fn(model)
  d_idx = _subsample(jax.random.fold_in(key, 0), union, _records(max_records, union.shape[0]))
  f_idx = _subsample(jax.random.fold_in(key, 1), forget,
                     _records(max_records, forget.shape[0]))
  imp_d = cv.mean_squared_grads(apply_fn, params, x[d_idx], y[d_idx], microbatch=microbatch)
  imp_f = cv.mean_squared_grads(apply_fn, params, x[f_idx], y[f_idx], microbatch=microbatch)
  return ssd_dampen(params, imp_d, imp_f, alpha=alpha, lam=lam)


@register('ssd', FAMILY, SSD_DEFAULTS)
def ssd(**hp):
  """SSD, selective synaptic dampening (Foster et al. 2023): importances
  I_D, I_Df = mean squared per-example CE gradients over D = Dr ∪ Df and over
  Df; where ``I_Df > alpha·I_D`` the weight is multiplied by
  ``min(lambda·I_D/I_Df, 1)``, elsewhere it is unchanged. (The reference code
  squares mini-batch gradients, which scales with the batch size.) Per-record
  gradients cost one backward pass each, so each importance is averaged over
  at most ``max_records`` random records of its set (keys ``fold_in(key, 0)``
  for D, ``fold_in(key, 1)`` for Df; 0 = all records — the exact method, which
  is also what runs whenever a set is that small). The hyper-parameter
  ``lambda`` is a Python keyword: pass it as
  ``get_method('ssd', **{'lambda': 0.5})``."""
  alpha = _real('alpha', hp['alpha'], low=0.0, low_open=True)
  lam = _real('lambda', hp['lambda'], low=0.0, low_open=True)
  max_records = _int('max_records', hp['max_records'], low=0)
  microbatch = _int('microbatch', hp['microbatch'], low=1)

  def unlearn(params, model, data, key):
    x, y = _pool(data)
    union = C.union(data)
    return C.jit_apply(_ssd_program, params, x, y, C.idx(data.forget), union, key,
                       dict(alpha=alpha, lam=lam), model=model,
                       max_records=_records(max_records, int(union.shape[0])),
                       microbatch=microbatch)

  return unlearn


# ----------------------------------------------------------------------------- certified removal


def head_inputs(model: nn.Module, params: Params, x: jax.Array) -> jax.Array:
  """The inputs of the model's top-level ``head`` layer (penultimate features).

  Intercepts the call of the module at path ``('head',)``; for an MLP without
  hidden layers these are the flattened raw inputs.

  Args:
    model: a Linen module whose classifier is a top-level Dense named ``head``.
    params: its parameters.
    x: (B, *input_shape) inputs.

  Returns:
    (B, F) features.

  Raises:
    ConfigError: the model has no top-level ``head`` or its input is not (B, F).
  """
  captured = []

  def interceptor(next_fun, args, kwargs, context):
    scope = getattr(context.module, 'scope', None)
    if (context.method_name == '__call__' and scope is not None
        and tuple(scope.path) == ('head',)):
      captured.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model.apply({'params': params}, x)
  if not captured:
    raise ConfigError(f'{type(model).__name__} has no top-level layer named "head"; '
                      'certified removal replaces the classifier head')
  feats = captured[-1]
  if feats.ndim != 2:
    raise ConfigError(f'the head layer sees inputs of shape {feats.shape}; expected (B, F)')
  return feats


def _features(model, params, x, microbatch):
  n = x.shape[0]
  xs, _ = _chunks(x, microbatch)
  feats = jax.lax.map(lambda xb: head_inputs(model, params, xb), xs)
  return feats.reshape((-1, feats.shape[-1]))[:n]


_CERTIFIED_REALS = ('lam', 'sigma', 'epsilon', 'delta', 'gamma')


def _certified_program(params, x, y, forget, retain, key, reals, *, model, num_classes,
                       newton_iters, fit_bias, removal_batches, microbatch):
  """Returns (new params, info dict of scalars)."""
  lam, sigma, epsilon, delta, gamma = (reals[k] for k in _CERTIFIED_REALS)
  idx = jnp.concatenate([retain, forget])
  n, m = idx.shape[0], forget.shape[0]
  phi = _features(model, params, x[idx], microbatch)
  dtype = jnp.promote_types(phi.dtype, jnp.float32)
  phi = phi.astype(dtype)
  const = jnp.mean(jnp.linalg.norm(phi, axis=1)) if fit_bias else jnp.zeros((), dtype)
  if fit_bias:
    phi = jnp.concatenate([phi, jnp.full((n, 1), 1.0, dtype) * const], axis=1)
  feat_scale = 1.0 / jnp.maximum(jnp.max(jnp.linalg.norm(phi, axis=1)), 1e-12)
  X = phi * feat_scale                                      # rows of norm <= 1
  Y = cr.ovr_labels(y[idx], num_classes).astype(dtype)      # (H, n)
  heads, d = Y.shape[0], X.shape[1]
  B = sigma * jax.random.normal(jax.random.fold_in(key, 0), (heads, d), dtype)

  def train(b, mask, w0):
    def one(yk, bk, wk):
      return cr.train_logreg(X, yk, lam, bk, mask=mask, num_iters=newton_iters, w0=wk)
    return jax.vmap(one)(Y, b, w0)

  W = train(B, None, jnp.zeros((heads, d), dtype))          # the certified original head
  # Sequential removal of Df (positions n−m … n−1) in `removal_batches` chunks.
  pos = jnp.arange(n)
  size = -(-m // removal_batches)
  chunk_of = jnp.where(pos >= n - m, (pos - (n - m)) // size, -1)
  remove_masks = chunk_of[None, :] == jnp.arange(removal_batches)[:, None]

  def remove(carry, rm):
    w, active, acc = carry
    cert = cr.certify(w, X, Y, rm, lam, B, sigma=sigma, epsilon=epsilon, delta=delta,
                      mask=active, prior_bound=acc, gamma=gamma)
    return (cert.w_new, active & ~rm, cert.accumulated_bound), None

  init = (W, jnp.ones((n,), bool), jnp.zeros((), dtype))
  (W_new, retained, bound), _ = jax.lax.scan(remove, init, remove_masks)
  budget = cr.noise_budget(sigma, epsilon, delta).astype(dtype)
  certified = bound <= budget

  def residual_of(w_heads, mask):
    return jnp.sum(jax.vmap(lambda wk, yk, bk: jnp.linalg.norm(
        cr.logreg_grad(wk, X, yk, lam, bk, mask=mask)))(w_heads, Y, B))

  residual = residual_of(W_new, retained)
  # Past the budget: retrain on Dr with fresh noise (warm-started at W_new, which
  # only changes how fast Newton converges, not the optimum it converges to).
  W_out = jax.lax.cond(certified, lambda: W_new,
                       lambda: train(sigma * jax.random.normal(jax.random.fold_in(key, 1),
                                                               (heads, d), dtype), retained,
                                     W_new))
  kernel_w = W_out[:, :d - 1] if fit_bias else W_out
  bias_w = W_out[:, d - 1] * const if fit_bias else jnp.zeros((heads,), dtype)
  kernel_w, bias_w = kernel_w * feat_scale, bias_w * feat_scale
  if num_classes == 2:
    kernel = jnp.stack([-kernel_w[0], kernel_w[0]], axis=1) / 2
    bias = jnp.stack([-bias_w[0], bias_w[0]]) / 2
  else:
    kernel, bias = kernel_w.T, bias_w
  head = dict(params['head'])
  head['kernel'] = kernel.astype(params['head']['kernel'].dtype)
  head['bias'] = bias.astype(params['head']['bias'].dtype)
  new_params = dict(params)
  new_params['head'] = head
  info = dict(bound=bound, budget=budget, certified=certified, residual_norm=residual,
              train_residual=residual_of(W, None), feature_scale=feat_scale)
  return new_params, info


def _check_head(params, model, data) -> int:
  """Host checks of the head before compiling; returns the feature dimension F."""
  if not hasattr(params, 'keys') or 'head' not in params:
    raise ConfigError('certified_removal needs params with a top-level "head" Dense layer')
  head = params['head']
  if 'kernel' not in head or 'bias' not in head:
    raise ConfigError('certified_removal needs a head with "kernel" and "bias"')
  k = head['kernel']
  if jnp.ndim(k) != 2 or jnp.shape(k)[1] != data.num_classes:
    raise ConfigError(f'head kernel must be (F, {data.num_classes}), got {jnp.shape(k)}')
  shape = jax.ShapeDtypeStruct((2,) + tuple(data.input_shape), jnp.float32)
  feats = jax.eval_shape(lambda p, xx: head_inputs(model, p, xx), params, shape)
  if feats.shape[1] != jnp.shape(k)[0]:
    raise ConfigError(f'head inputs have {feats.shape[1]} features but its kernel has '
                      f'{jnp.shape(k)[0]} rows')
  return int(feats.shape[1])


def _run_certified(f, params, model, data, key):
  _check_head(params, model, data)
  x, y = _pool(data)
  reals, static = _split(f, _CERTIFIED_REALS)
  return C.jit_apply(_certified_program, params, x, y, C.idx(data.forget),
                     C.idx(data.retain), key, reals, model=model,
                     num_classes=int(data.num_classes), **static)


@register('certified_removal', FAMILY, CERTIFIED_DEFAULTS)
def certified_removal(**hp):
  """Certified removal (Guo et al. 2020) of a one-vs-rest L2 logistic-regression
  head (a single binary head for 2 classes) on frozen features: the model's
  penultimate activations (the raw inputs for an MLP without hidden layers),
  augmented with a constant bias feature (``fit_bias``) and scaled by one
  global factor to norm <= 1 on D. The head is trained on D with objective
  perturbation ``b·w/n``, ``b ~ N(0, sigma²I)`` per head (key
  ``fold_in(key, 0)``, L2 strength ``lam`` per record), Df is removed by Newton
  steps (``removal_batches`` sequential chunks, bounds accumulated), and the
  removal is certified iff the summed data-dependent residual bound is at most
  ``sigma·epsilon/sqrt(2 log(1.5/delta))``; otherwise the head is retrained on
  Dr with fresh noise (key ``fold_in(key, 1)``). Only the head is replaced —
  the frozen feature extractor was trained on Df too, so the certificate covers
  the head alone. :func:`certified_removal_report` returns the certificate."""
  f = _certified_hp(hp)

  def unlearn(params, model, data, key):
    return _run_certified(f, params, model, data, key)[0]

  return unlearn


def certified_removal_report(params: Params, model: nn.Module, data, key, **hp) -> dict:
  """Runs ``certified_removal`` and returns its certificate.

  The same key gives the same parameters as
  ``get_method('certified_removal', **hp).fn(params, model, data, key)``.

  Args:
    params: the original model's parameters.
    model: the Linen module (with a top-level ``head`` Dense layer).
    data: an :class:`~jaxaudit.unlearn.UnlearnData`.
    key: PRNG key (or int seed).
    **hp: hyper-parameter overrides of ``certified_removal``.

  Returns:
    A JSON-friendly dict: ``certified`` (bool), ``retrain_required`` (bool),
    ``bound`` (accumulated data-dependent residual bound), ``budget``
    (σε/c), ``residual_norm`` (actual gradient residual of the Newton-updated
    heads on Dr), ``train_residual`` (Σ_k ‖∇L_b(w_k; D)‖ of the trained heads:
    the certificate assumes exact minimisers, so it should be ≈ 0 up to
    round-off), ``num_heads``, ``feature_dim`` (F, before the bias feature),
    ``features`` (``'inputs'`` or ``'penultimate'``), ``removed``,
    ``retained`` and the hyper-parameters used.

  Raises:
    ConfigError: unknown or invalid hyper-parameters, or a model without a head.
  """
  full = coerce_hparams('certified_removal', hp)
  f = _certified_hp(full)
  check_data(data)
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  feat_dim = _check_head(params, model, data)
  _, info = _run_certified(f, params, model, data, key)
  certified = bool(info['certified'])
  return dict(
      certified=certified,
      retrain_required=not certified,
      bound=float(info['bound']),
      budget=float(info['budget']),
      residual_norm=float(info['residual_norm']),
      train_residual=float(info['train_residual']),
      num_heads=1 if data.num_classes == 2 else int(data.num_classes),
      feature_dim=feat_dim,
      features='inputs' if tuple(getattr(model, 'hidden', (0,))) == () else 'penultimate',
      removed=int(np.asarray(data.forget).size),
      retained=int(np.asarray(data.retain).size),
      hparams=dict(full))


__all__ = ['FAMILY', 'add_fisher_noise', 'certified_removal', 'certified_removal_report',
           'dense_curvature', 'fisher', 'fisher_hessian', 'fisher_noise_std', 'head_inputs',
           'influence', 'mean_ce_grad', 'newton', 'resolve_l2', 'ssd', 'ssd_dampen']
