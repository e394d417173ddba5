"""Curvature-based unlearning: Fisher, influence, Newton, Fisher+Hessian, certified
removal and SSD, checked against independent references written here.

Small on purpose (two shared CPU cores): a 16-unit digits MLP trained for a few
epochs, and L2-regularised logistic regression (an MLP without hidden layers)
on two digit classes in float64, whose exact optima come from a reference
Newton solver on ``jax.hessian`` below.
"""

from __future__ import annotations

import dataclasses

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxaudit import unlearn as U
from jaxaudit.data import load_dataset, make_split
from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model, init_params, make_apply_fn, num_params
from jaxaudit.train import Recipe
from jaxaudit.unlearn import certified as cr
from jaxaudit.unlearn import curvature_methods as cm
from tests.unlearn.conftest import compile_count

METHODS = ('fisher', 'influence', 'newton', 'fisher_hessian', 'certified_removal', 'ssd')


@pytest.fixture
def x64():
  """float64 inside one test; the previous setting is restored afterwards."""
  with jax.enable_x64(True):
    yield


@dataclasses.dataclass(frozen=True)
class Tiny:
  model: object
  params: object
  data: U.UnlearnData


@pytest.fixture(scope='module')
def tiny() -> Tiny:
  """A 64-16-10 MLP (1,210 parameters) fitted to 300 digits, 30 of them to forget."""
  ds = load_dataset('digits')
  split = make_split(ds, seed=0, ref_fraction=0.15, forget_fraction=0.1, train_size=300)
  recipe = Recipe(epochs=15, batch_size=64, learning_rate=3e-3)
  data = U.make_unlearn_data(ds, split, recipe, val_size=100)
  model = get_model('mlp', 10, hidden=(16,))
  return Tiny(model, _fit(model, data.x[split.train], data.y[split.train]), data)


def _fit(model, x, y, steps=300):
  """Full-batch Adam on (x, y) from a fixed initialisation: one small program."""
  apply_fn, tx = make_apply_fn(model), optax.adam(1e-2)

  def loss(p):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(apply_fn(p, x)), y[:, None], 1))

  def step(carry, _):
    p, state = carry
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    return (optax.apply_updates(p, updates), state), None

  @jax.jit
  def run(p):
    return jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0]

  return run(init_params(model, jax.random.key(0), x.shape[1:]))


def _flat(tree) -> np.ndarray:
  return np.asarray(flatten_util.ravel_pytree(tree)[0])


def _dist(a, b) -> float:
  return float(np.linalg.norm(_flat(a) - _flat(b)))


# ----------------------------------------------------------------------------- registry


def test_every_method_is_registered_in_the_curvature_family():
  rows = {r.name: r for r in U.list_methods()}
  for name in METHODS:
    assert rows[name].family == 'curvature', name
    assert rows[name].doc, name
    m = U.get_method(name)
    assert m.family == 'curvature' and dict(m.hparams) == rows[name].defaults


@pytest.mark.parametrize('name, overrides, match', [
    ('fisher', dict(alpha=-1.0), 'alpha'),
    ('fisher', dict(max_var=0.0), 'max_var'),
    ('fisher', dict(max_records=-1), 'max_records'),
    ('fisher', dict(microbatch=0), 'microbatch'),
    ('influence', dict(damping=-0.1), 'damping'),
    ('influence', dict(solver='qr'), 'solver'),
    ('influence', dict(curvature='fisher'), 'curvature'),
    ('influence', dict(hessian_set='test'), 'hessian_set'),
    ('influence', dict(l2=-1.0), 'l2'),
    ('influence', dict(scale=float('nan')), 'scale'),
    ('newton', dict(steps=0), 'steps'),
    ('newton', dict(exact_max_params=-1), 'exact_max_params'),
    ('newton', dict(cg_maxiter=0), 'cg_maxiter'),
    ('fisher_hessian', dict(alpha=-1.0), 'alpha'),
    ('fisher_hessian', dict(lissa_depth=0), 'lissa_depth'),
    ('certified_removal', dict(epsilon=0.0), 'epsilon'),
    ('certified_removal', dict(delta=1.0), 'delta'),
    ('certified_removal', dict(sigma=-1.0), 'sigma'),
    ('certified_removal', dict(lam=0.0), 'lam'),
    ('certified_removal', dict(removal_batches=0), 'removal_batches'),
    ('ssd', dict(alpha=0.0), 'alpha'),
    ('ssd', {'lambda': -1.0}, 'lambda'),
])
def test_bad_hparams_raise_before_compilation(name, overrides, match):
  before = compile_count()
  with pytest.raises(ConfigError, match=match):
    U.get_method(name, **overrides)
  assert compile_count() == before


def test_certified_report_rejects_bad_hparams_before_compiling(tiny):
  before = compile_count()
  with pytest.raises(ConfigError, match='delta'):
    cm.certified_removal_report(tiny.params, tiny.model, tiny.data, 0, delta=2.0)
  with pytest.raises(ConfigError, match='unknown hyper-parameter'):
    cm.certified_removal_report(tiny.params, tiny.model, tiny.data, 0, eps=1.0)
  assert compile_count() == before


@pytest.mark.parametrize('name', METHODS)
def test_every_method_runs_on_a_tiny_mlp_without_recompiling(tiny, name):
  method = U.get_method(name)
  out = method.fn(tiny.params, tiny.model, tiny.data, jax.random.key(3))
  assert jax.tree.structure(out) == jax.tree.structure(tiny.params)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(tiny.params)):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.all(np.isfinite(np.asarray(a)))
  before = compile_count()
  again = method.fn(tiny.params, tiny.model, tiny.data, jax.random.key(3))
  jax.block_until_ready(again)
  assert compile_count() == before, 'a second call recompiled'
  np.testing.assert_array_equal(_flat(again), _flat(out))


def test_every_method_traces_under_vmap_over_keys(tiny):
  """Registered as vmappable, so run_method may vmap them: trace (no compile) with
  a batch of keys."""
  keys = U.seed_keys(jax.random.key(0), 2)
  for name in METHODS:
    method = U.get_method(name)
    assert method.vmappable
    shapes = jax.eval_shape(jax.vmap(lambda k: method.fn(tiny.params, tiny.model, tiny.data, k)),
                            keys)
    for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(tiny.params)):
      assert a.shape == (2,) + b.shape, name


# ----------------------------------------------------------------------------- Fisher


def test_fisher_noise_std_matches_the_formula_and_honours_the_clamp():
  f = {'a': jnp.array([0.0, 1e-9, 1e-4, 1e-2, 1.0, 25.0], jnp.float32)}
  alpha, max_var = 1e-3, 50.0
  std = np.asarray(cm.fisher_noise_std(f, alpha=alpha, max_var=max_var)['a'], np.float64)
  fa = np.asarray(f['a'], np.float64)
  expected = np.sqrt(alpha * np.minimum(1.0 / (fa + 1e-8), max_var))
  np.testing.assert_allclose(std, expected, rtol=1e-6)
  # Clamped where 1/(F + 1e-8) > max_var: the variance never exceeds alpha * max_var.
  assert np.all(std ** 2 <= alpha * max_var * (1 + 1e-6))
  np.testing.assert_allclose(std[:4], np.sqrt(alpha * max_var), rtol=1e-6)
  np.testing.assert_allclose(std[4:] ** 2 * fa[4:], alpha, rtol=1e-5)  # ∝ 1/F elsewhere


def _naive_true_fisher(model, params, x):
  """E_x Σ_c p(c|x) (∂ log p(c|x)/∂θ)², one Jacobian per example (reference)."""
  flat, unravel = flatten_util.ravel_pytree(params)
  apply_fn = make_apply_fn(model)

  def one(xi):
    logp = lambda w: jax.nn.log_softmax(apply_fn(unravel(w), xi[None])[0])
    jac = jax.jacrev(logp)(flat)                               # (C, P)
    return jnp.sum(jnp.exp(logp(flat))[:, None] * jac ** 2, axis=0)

  return np.asarray(jax.jit(lambda xs: jnp.mean(jax.lax.map(one, xs), axis=0))(x), np.float64)


def test_fisher_noise_variance_is_inversely_proportional_to_the_fisher(tiny):
  alpha, max_var = 1e-5, 1e3
  method = U.get_method('fisher', alpha=alpha, max_var=max_var, max_records=0)
  out = method.fn(tiny.params, tiny.model, tiny.data, jax.random.key(7))
  fisher = _naive_true_fisher(tiny.model, tiny.params, tiny.data.x[tiny.data.retain])
  d2 = (_flat(out).astype(np.float64) - _flat(tiny.params)) ** 2
  var = alpha * np.minimum(1.0 / (fisher + 1e-8), max_var)
  ratio = d2 / var                                       # ~ chi-square(1) per parameter
  assert ratio.size == num_params(tiny.params) == 1210
  assert 0.85 < ratio.mean() < 1.15, ratio.mean()
  clamped = 1.0 / (fisher + 1e-8) > max_var
  assert clamped.sum() > 20  # constant digit pixels and dead units have F ~ 0
  assert 0.6 < ratio[clamped].mean() < 1.4
  assert d2[clamped].max() < 25 * alpha * max_var
  # Unclamped: log (Δθ)² = log α − log F + log χ²₁, so the slope on log F is −1.
  free = ~clamped & (fisher > 0)
  slope = np.polyfit(np.log(fisher[free]), np.log(d2[free]), 1)[0]
  assert -1.15 < slope < -0.85, slope


# ----------------------------------------------------------------------------- SSD


def test_ssd_dampen_on_hand_made_importances():
  params = {'w': jnp.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])}
  i_d = {'w': jnp.array([1.0, 1.0, 0.0, 2.0, 1.0, 0.5])}
  i_f = {'w': jnp.array([5.0, 20.0, 0.0, 2.0, 40.0, 10.0])}
  out = np.asarray(cm.ssd_dampen(params, i_d, i_f, alpha=4.0, lam=2.0)['w'])
  # selected: i_f > 4 i_d -> [T, T, F, F, T, T]; factor min(2 i_d / i_f, 1)
  expected = np.array([1.0 * 0.4, -2.0 * 0.1, 3.0, 4.0, 5.0 * 0.05, 6.0 * 0.1])
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert out[2] == 3.0 and out[3] == 4.0


def _naive_importance(model, params, x, y):
  """Mean over records of the squared per-record CE gradient (reference)."""
  flat, unravel = flatten_util.ravel_pytree(params)
  apply_fn = make_apply_fn(model)

  def one(xi, yi):
    g = jax.grad(lambda w: -jax.nn.log_softmax(apply_fn(unravel(w), xi[None])[0])[yi])(flat)
    return g ** 2

  return np.asarray(jax.jit(lambda xs, ys: jnp.mean(jax.vmap(one)(xs, ys), axis=0))(x, y),
                    np.float64)


def test_ssd_changes_exactly_the_selected_parameters(tiny):
  alpha, lam = 3.0, 1.0
  d = tiny.data
  out = U.get_method('ssd', alpha=alpha, **{'lambda': lam}).fn(tiny.params, tiny.model, d,
                                                               jax.random.key(0))
  union = np.concatenate([np.asarray(d.retain), np.asarray(d.forget)])
  i_d = _naive_importance(tiny.model, tiny.params, d.x[union], d.y[union])
  i_f = _naive_importance(tiny.model, tiny.params, d.x[d.forget], d.y[d.forget])
  theta, new = _flat(tiny.params), _flat(out)
  selected = i_f > alpha * i_d
  clear = np.abs(i_f - alpha * i_d) > 1e-4 * (i_f + alpha * i_d) + 1e-30   # no near-ties
  assert 5 < selected.sum() < selected.size // 2
  changed = new != theta
  np.testing.assert_array_equal(changed[clear & ~selected], False)
  sel = clear & selected & (theta != 0)
  expected = theta[sel] * np.minimum(lam * i_d[sel] / i_f[sel], 1.0)
  np.testing.assert_allclose(new[sel], expected, rtol=1e-3, atol=1e-7)


# ----------------------------------------------------------------------------- logistic regression


@dataclasses.dataclass(frozen=True)
class LogReg:
  model: object
  data: U.UnlearnData
  theta0: object       # exact optimum on D
  theta_r: object      # exact optimum on Dr (retraining)
  lam: float


@jax.jit
def _exact_optima(x, y, masks, lam):
  """argmin mean_{mask} CE + (lam/2)‖θ‖² of softmax regression, per mask row.

  A reference written from the closed-form gradient Σ w_i a_i ⊗ (p_i − e_{y_i})
  and Hessian Σ w_i a_i a_iᵀ ⊗ (diag p_i − p_i p_iᵀ), solved by 30 Newton steps.
  Parameters are ordered as ``ravel_pytree({'head': {'bias', 'kernel'}})`` (bias
  (C,), then kernel (F, C) row-major), i.e. Θ = θ.reshape(F + 1, C) acts on
  a = [1, x].

  Args:
    x: (n, ...) inputs; y: (n,) labels in [0, 2); masks: (M, n) 0/1; lam: L2.
  Returns:
    (thetas (M, P), gradient norms (M,)).
  """
  a = jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x.reshape(x.shape[0], -1)], 1)
  f, c = a.shape[1], 2
  onehot = jax.nn.one_hot(y, c, dtype=x.dtype)

  def grad_hess(theta, w):
    p = jax.nn.softmax(a @ theta.reshape(f, c))
    grad = (a.T @ (w[:, None] * (p - onehot))).ravel() + lam * theta
    curv = jnp.einsum('ic,cd->icd', p, jnp.eye(c)) - jnp.einsum('ic,id->icd', p, p)
    hess = jnp.einsum('if,ig,icd->fcgd', a * w[:, None], a, curv).reshape(f * c, f * c)
    return grad, hess + lam * jnp.eye(f * c)

  def solve(mask):
    w = mask / jnp.sum(mask)

    def step(_, theta):
      g, h = grad_hess(theta, w)
      return theta - jnp.linalg.solve(h, g)

    theta = jax.lax.fori_loop(0, 30, step, jnp.zeros(f * c, x.dtype))
    return theta, jnp.linalg.norm(grad_hess(theta, w)[0])

  return jax.vmap(solve)(masks)


def _logreg_problem(lam=1e-2, n_forget=8) -> LogReg:
  """Softmax regression (64 → 2) on digits 3 vs 8, float64, L2 strength ``lam``."""
  ds = load_dataset('digits')
  keep = np.flatnonzero(np.isin(ds.y_train, [3, 8]))[:240]
  x = jnp.asarray(ds.x_train[keep], jnp.float64)
  y = jnp.asarray((ds.y_train[keep] == 8).astype(np.int32))
  rng = np.random.default_rng(0)
  perm = rng.permutation(keep.size)
  forget, retain = np.sort(perm[:n_forget]), np.sort(perm[n_forget:])
  model = get_model('mlp', 2, hidden=())
  params = jax.tree.map(lambda p: p.astype(jnp.float64),
                        init_params(model, jax.random.key(0), ds.input_shape))
  unravel = flatten_util.ravel_pytree(params)[1]
  masks = np.ones((2, keep.size))
  masks[1, forget] = 0.0
  thetas, grad_norms = _exact_optima(x, y, jnp.asarray(masks), lam)
  assert np.all(np.asarray(grad_norms) < 1e-10)
  theta0, theta_r = unravel(thetas[0]), unravel(thetas[1])
  # The reference's parameter order is the pytree's: the logits agree.
  a = jnp.concatenate([jnp.ones((x.shape[0], 1)), x.reshape(x.shape[0], -1)], 1)
  np.testing.assert_allclose(np.asarray(make_apply_fn(model)(theta0, x)),
                             np.asarray(a @ thetas[0].reshape(-1, 2)), rtol=1e-10, atol=1e-12)
  data = U.UnlearnData(x=x, y=y, forget=jnp.asarray(forget, jnp.int32),
                       retain=jnp.asarray(retain, jnp.int32), num_classes=2,
                       input_shape=tuple(ds.input_shape), recipe=Recipe())
  return LogReg(model, data, theta0, theta_r, lam)


@pytest.fixture(scope='module')
def logreg() -> LogReg:
  with jax.enable_x64(True):
    return _logreg_problem()


def test_newton_and_influence_land_near_the_retrained_optimum(logreg, x64):
  del x64
  p = logreg
  key = jax.random.key(0)
  base = _dist(p.theta0, p.theta_r)
  common = dict(l2=p.lam, damping=0.0, hessian_records=0)
  newton = U.get_method('newton', exact_max_params=10_000, **common).fn(
      p.theta0, p.model, p.data, key)
  ratio = _dist(newton, p.theta_r) / base
  print(f'\nNewton removal: dist(newton, retrained) / dist(original, retrained) = {ratio:.2e}'
        f' (original distance {base:.3e})')
  assert ratio < 0.1
  # At the exact optimum of the full objective the influence step on the retain
  # Hessian *is* the Newton step (module docstring of curvature_methods), and CG on
  # Hessian-vector products reproduces the dense solve.
  inf = U.get_method('influence', cg_tol=1e-12, cg_maxiter=500, **common).fn(
      p.theta0, p.model, p.data, key)
  np.testing.assert_allclose(_flat(inf), _flat(newton), rtol=1e-6, atol=1e-9)
  # The sign convention matters: the opposite step moves away from retraining.
  mirrored = 2 * _flat(p.theta0) - _flat(inf)
  assert np.linalg.norm(mirrored - _flat(p.theta_r)) / base > 1.5
  # The classic Koh & Liang form (full Hessian, factor m/n) and LiSSA also move
  # towards retraining.
  full = U.get_method('influence', solver='exact', hessian_set='full', **common).fn(
      p.theta0, p.model, p.data, key)
  # Only first order: the removed records' own curvature is large next to the L2
  # term here, so the full Hessian captures about two thirds of the move.
  assert _dist(full, p.theta_r) / base < 0.5
  lissa = U.get_method('influence', solver='lissa', lissa_depth=300, **common).fn(
      p.theta0, p.model, p.data, key)
  assert _dist(lissa, p.theta_r) / base < 0.1


def test_newton_exact_equals_cg_on_the_tiny_mlp(tiny):
  # Damping 1 makes H_r + I positive definite here (the MLP Hessian is indefinite).
  kw = dict(damping=1.0, l2=0.0, cg_tol=1e-7)
  key = jax.random.key(0)
  assert num_params(tiny.params) <= U.get_method('newton').hparams['exact_max_params']
  exact = U.get_method('newton', **kw).fn(tiny.params, tiny.model, tiny.data, key)
  cg = U.get_method('newton', exact_max_params=0, **kw).fn(tiny.params, tiny.model,
                                                          tiny.data, key)
  step = _flat(exact) - _flat(tiny.params)
  assert np.linalg.norm(step) > 1e-3
  np.testing.assert_allclose(_flat(cg) - _flat(tiny.params), step,
                             atol=2e-3 * np.abs(step).max())


# ----------------------------------------------------------------------------- certified removal


def _features(n_classes=2):
  """Unit-norm digit pixels (240 records) with ±1 (binary) or class labels."""
  ds = load_dataset('digits')
  if n_classes == 2:
    keep = np.flatnonzero(np.isin(ds.y_train, [3, 8]))[:240]
    y = jnp.asarray(np.where(ds.y_train[keep] == 8, 1.0, -1.0))
  else:
    keep = np.arange(240)
    y = jnp.asarray(ds.y_train[keep])
  x = ds.x_train[keep].reshape(len(keep), -1).astype(np.float64)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return jnp.asarray(x), y


@jax.jit
def _sum_objective_grad(w, X, y, lam, b, keep):
  """∇ of Σ_keep log(1+exp(−y xᵀw)) + (λ n/2)‖w‖² + bᵀw by autodiff (reference);
  keep: (n,) 0/1 membership of the retained set."""
  def f(v):
    return (jnp.sum(keep * jnp.logaddexp(0.0, -y * (X @ v))) + 0.5 * lam * jnp.sum(keep) * v @ v
            + b @ v)
  return jax.grad(f)(w)


def test_certificate_bound_holds_and_newton_matches_guo_form(x64):
  del x64
  X, y = _features()
  lam, sigma = 1e-2, 1.0
  b = sigma * jax.random.normal(jax.random.key(1), (X.shape[1],), jnp.float64)
  remove = jnp.zeros(X.shape[0], bool).at[jnp.arange(5)].set(True)
  keep = (~remove).astype(jnp.float64)

  @jax.jit
  def run(X, y, b):
    w = cr.train_logreg(X, y, lam, b)
    cert = cr.certify(w, X, y, remove, lam, b, sigma=sigma, epsilon=1.0, delta=1e-4)
    w_r = cr.train_logreg(X, y, lam, b, mask=~remove)         # retraining, same b
    return w, w_r, cert

  w, w_r, cert = run(X, y, b)
  assert float(jnp.linalg.norm(_sum_objective_grad(w, X, y, lam, b, jnp.ones_like(y)))) < 1e-9
  resid = float(jnp.linalg.norm(_sum_objective_grad(cert.w_new, X, y, lam, b, keep)))
  assert 0 < resid <= float(cert.bound), (resid, float(cert.bound))
  np.testing.assert_allclose(float(cert.residual_norm), resid, rtol=1e-6)
  # Guo et al.'s form: Δ = H(w; D')⁻¹ Σ_removed (∇ℓ_i + λ w), in NumPy.
  Xn, yn, wn, kn = (np.asarray(a) for a in (X, y, w, keep))
  s = 1 / (1 + np.exp(-Xn @ wn))
  h = (Xn.T * (kn * s * (1 - s))) @ Xn + lam * kn.sum() * np.eye(Xn.shape[1])
  g_rm = Xn[:5].T @ ((1 / (1 + np.exp(-yn[:5] * (Xn[:5] @ wn))) - 1) * yn[:5]) + 5 * lam * wn
  np.testing.assert_allclose(np.asarray(cert.w_new), wn + np.linalg.solve(h, g_rm),
                             rtol=1e-8, atol=1e-10)
  # Much closer to retraining (same b) than the original weights.
  assert float(jnp.linalg.norm(cert.w_new - w_r)) < 0.05 * float(jnp.linalg.norm(w - w_r))
  # The bound's pieces, recomputed by hand.
  step = np.asarray(cert.w_new) - wn
  spec = np.sqrt(np.linalg.eigvalsh(Xn.T @ (Xn * kn[:, None]))[-1])
  beta = 0.25 * np.linalg.norm(step) * np.linalg.norm((Xn @ step) * kn) * spec
  np.testing.assert_allclose(float(cert.bound), beta, rtol=1e-8)
  np.testing.assert_allclose(float(cert.budget), sigma / np.sqrt(2 * np.log(1.5 / 1e-4)))


# This program (two independent vmapped Newton solves) hung XLA:CPU in about one run in ten
# while the solves were batched LAPACK calls; jaxaudit.curvature.dense now maps them one
# matrix at a time (tests/curvature/test_dense.py checks the lowering).
def test_certificate_bound_holds_for_one_vs_rest_heads(x64):
  del x64
  X, labels = _features(n_classes=10)
  Y = cr.ovr_labels(labels, 10).astype(jnp.float64)
  lam = 1e-2
  B = jax.random.normal(jax.random.key(2), (10, X.shape[1]), jnp.float64)
  remove = jnp.zeros(X.shape[0], bool).at[jnp.arange(0, 40, 4)].set(True)
  keep = (~remove).astype(jnp.float64)

  @jax.jit
  def run(X, Y, B):
    W = jax.vmap(lambda yk, bk: cr.train_logreg(X, yk, lam, bk))(Y, B)
    cert = cr.certify(W, X, Y, remove, lam, B, sigma=1.0, epsilon=1.0, delta=1e-4)
    per_head = jax.vmap(lambda w, yk, bk: cr.certify(
        w, X, yk, remove, lam, bk, sigma=1.0, epsilon=1.0, delta=1e-4).bound)(W, Y, B)
    resid = jax.vmap(lambda w, yk, bk: jnp.linalg.norm(
        _sum_objective_grad(w, X, yk, lam, bk, keep)))(cert.w_new, Y, B)
    return cert.bound, per_head, resid

  bound, per_head, resid = (np.asarray(a) for a in run(X, Y, B))
  assert resid.sum() <= bound
  np.testing.assert_allclose(per_head.sum(), bound, rtol=1e-10)
  assert np.all(resid <= per_head)   # the bound also holds head by head


def test_removing_many_points_exhausts_the_budget(x64):
  del x64
  X, y = _features()
  lam, sigma, eps, delta = 1e-2, 1.0, 1.0, 1e-4
  b = sigma * jax.random.normal(jax.random.key(3), (X.shape[1],), jnp.float64)

  @jax.jit
  def run(k, prior):
    w = cr.train_logreg(X, y, lam, b)
    remove = jnp.arange(X.shape[0]) < k
    return cr.certify(w, X, y, remove, lam, b, sigma=sigma, epsilon=eps, delta=delta,
                      prior_bound=prior)

  certs = [run(k, 0.0) for k in (1, 4, 16, 64)]
  bounds = [float(c.bound) for c in certs]
  flags = [bool(c.certified) for c in certs]
  budget = float(certs[0].budget)
  assert bounds == sorted(bounds)
  assert flags[0] and not flags[-1], (bounds, budget)   # 64 removals: retrain required
  # Sequential removals accumulate: a prior spend past the budget fails at once.
  assert not bool(run(1, budget).certified)
  assert bool(run(1, budget - 1.01 * bounds[0]).certified)


def test_certified_removal_method_and_report(tiny):
  d = tiny.data
  key = jax.random.key(5)
  for hp, expect in ((dict(), False), (dict(epsilon=1e6), True)):
    report = cm.certified_removal_report(tiny.params, tiny.model, d, key, **hp)
    assert report['certified'] is expect and report['retrain_required'] is (not expect)
    assert report['num_heads'] == 10 and report['feature_dim'] == 16
    assert report['features'] == 'penultimate'
    assert report['residual_norm'] <= report['bound']
    assert (report['bound'] <= report['budget']) is expect
    out = U.get_method('certified_removal', **hp).fn(tiny.params, tiny.model, d, key)
    for name in tiny.params:
      if name != 'head':   # the frozen feature extractor is untouched
        np.testing.assert_array_equal(_flat(out[name]), _flat(tiny.params[name]))
    assert not np.allclose(_flat(out['head']), _flat(tiny.params['head']))
    logits = make_apply_fn(tiny.model)(out, d.x[d.retain])
    assert float(jnp.mean(jnp.argmax(logits, -1) == d.y[d.retain])) > 0.6
  with pytest.raises(ConfigError, match='head'):
    cm.certified_removal_report({'Dense_0': tiny.params['Dense_0']}, tiny.model, d, key)


def test_certified_removal_binary_head_on_raw_inputs():
  """Two classes: one logistic head on the raw pixels (an MLP without hidden layers)."""
  ds = load_dataset('digits')
  keep = np.flatnonzero(np.isin(ds.y_train, [3, 8]))[:200]
  x = jnp.asarray(ds.x_train[keep])
  y = jnp.asarray((ds.y_train[keep] == 8).astype(np.int32))
  data = U.UnlearnData(x=x, y=y, forget=jnp.arange(10, dtype=jnp.int32),
                       retain=jnp.arange(10, 200, dtype=jnp.int32), num_classes=2,
                       input_shape=tuple(ds.input_shape), recipe=Recipe())
  model = get_model('mlp', 2, hidden=())
  params = init_params(model, jax.random.key(0), ds.input_shape)
  key = jax.random.key(1)
  hp = dict(epsilon=1e6, removal_batches=5)   # ten removals, two at a time
  report = cm.certified_removal_report(params, model, data, key, **hp)
  assert report['certified'] and report['num_heads'] == 1
  assert report['features'] == 'inputs' and report['feature_dim'] == 64
  assert 0 < report['residual_norm'] <= report['bound']
  out = U.get_method('certified_removal', **hp).fn(params, model, data, key)
  kernel, bias = np.asarray(out['head']['kernel']), np.asarray(out['head']['bias'])
  np.testing.assert_array_equal(kernel[:, 0], -kernel[:, 1])   # logit gap = wᵀx
  np.testing.assert_array_equal(bias[0], -bias[1])
  logits = make_apply_fn(model)(out, x[10:])
  assert float(jnp.mean(jnp.argmax(logits, -1) == y[10:])) > 0.95
