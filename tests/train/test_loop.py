"""Tests of jaxaudit.train.loop: the one step shared by ensemble training and fit, and the
per-example loss argument of train_ensemble."""

import dataclasses
import functools
import gc
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.models import get_model, init_params, make_apply_fn
from jaxaudit.train import Recipe, train_ensemble, train_model, unstack
from jaxaudit.train import loop
from jaxaudit.unlearn.objectives import CrossEntropy


def _equal(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def _close(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw), a, b)


def _pool(digits, n=200):
  return jnp.asarray(digits.x_train[:n]), jnp.asarray(digits.y_train[:n], jnp.int32)


@pytest.mark.parametrize('optimizer,strategy', [('sgd', 'map'), ('adam', 'map'), ('sgd', 'vmap')])
def test_one_step_train_model_equals_one_step_fit(digits, optimizer, strategy):
  """Both paths run loop.train_step: a one-step, one-record run is bit-identical."""
  model = get_model('mlp', 10, hidden=(16,))
  x, y = _pool(digits)
  p0 = init_params(model, jax.random.key(3), digits.input_shape)
  recipe = Recipe(optimizer=optimizer, learning_rate=0.05, weight_decay=1e-3,
                  schedule='constant', epochs=1, batch_size=4)   # 1 record + 3 padding slots
  trained = train_model(model, x, y, np.array([17]), 0, recipe, init_params=p0,
                        strategy=strategy).params
  fitted = loop.fit(model, p0, x, y, [np.array([17])], jax.random.key(1), recipe,
                    loop.MeanLoss(loop.SoftmaxCE())).params
  _equal(trained, fitted)
  # The unlearning methods' own CE objective is the same loss.
  _equal(fitted, loop.fit(model, p0, x, y, [np.array([17])], jax.random.key(1), recipe,
                          CrossEntropy()).params)
  assert not np.array_equal(np.asarray(jax.tree.leaves(p0)[0]),
                            np.asarray(jax.tree.leaves(trained)[0]))


def test_one_full_batch_step_agrees(digits):
  """With several records the batch order differs (different shuffles), so only the sum
  order of the batch mean differs."""
  model = get_model('mlp', 10, hidden=(16,))
  x, y = _pool(digits)
  p0 = init_params(model, jax.random.key(3), digits.input_shape)
  recipe = Recipe(optimizer='sgd', learning_rate=0.05, schedule='cosine', epochs=1,
                  batch_size=32)
  sub = np.arange(40, 72)
  trained = train_model(model, x, y, sub, 0, recipe, init_params=p0, strategy='map').params
  fitted = loop.fit(model, p0, x, y, [sub], jax.random.key(1), recipe, CrossEntropy()).params
  _close(trained, fitted, rtol=1e-5, atol=1e-6)


def test_both_paths_call_train_step(digits, monkeypatch):
  calls = []
  real = loop.train_step

  def counting(*args, **kwargs):
    calls.append(kwargs.get('lr') is not None)
    return real(*args, **kwargs)

  monkeypatch.setattr(loop, 'train_step', counting)
  model = get_model('mlp', 10, hidden=(5,))   # a model no other test uses: traced afresh
  x, y = _pool(digits)
  train_model(model, x, y, np.arange(20), 0, Recipe(epochs=1, batch_size=8))
  assert calls == [True]          # the ensemble path: unit-rate optimiser, scheduled lr
  p0 = init_params(model, jax.random.key(0), digits.input_shape)
  loop.fit(model, p0, x, y, [np.arange(20)], jax.random.key(0),
           loop.make_spec(epochs=1, lr=0.1, batch_size=8), CrossEntropy())
  assert calls == [True, False]   # fit: the optimiser carries its schedule


def squared_error(outputs, targets):
  """(B, D), (B, D) -> (B,)."""
  return jnp.sum((outputs - targets) ** 2, axis=-1)


@dataclasses.dataclass(frozen=True)
class Huber:
  delta: float = 1.0

  def __call__(self, outputs, targets):
    r = jnp.abs(outputs - targets)
    return jnp.sum(jnp.where(r < self.delta, 0.5 * r ** 2, self.delta * (r - 0.5 * self.delta)),
                   axis=-1)


def _regression(digits, n=300):
  x = jnp.asarray(digits.x_train[:n])
  w = np.random.default_rng(0).normal(size=(int(np.prod(digits.input_shape)), 2)) / 8
  t = np.asarray(x).reshape(n, -1) @ w + 0.25    # fractional targets: an int cast would show
  return x, jnp.asarray(t, jnp.float32)


def test_squared_error_loss_on_float_targets(digits):
  model = get_model('mlp', 2, hidden=(32,))
  x, t = _regression(digits)
  recipe = Recipe(epochs=20, batch_size=32, learning_rate=3e-3)
  res = train_ensemble(model, x, t, [np.arange(150), np.arange(100, 300)], [0, 1], recipe,
                       loss=squared_error)
  assert np.all(np.isfinite(res.losses)) and np.all(res.nonfinite_step == -1)
  assert np.all(res.losses[-1] < 0.2 * res.losses[0])
  # Member 0 is the lone run with the same loss.
  lone = train_model(model, x, t, np.arange(150), 0, recipe, loss=squared_error)
  _close(unstack(res.params, 0), lone.params, rtol=1e-5, atol=1e-6)
  # The targets stay floating point: one step on one record equals fit with float targets.
  p0 = init_params(model, jax.random.key(3), digits.input_shape)
  one = Recipe(optimizer='sgd', learning_rate=0.05, schedule='constant', epochs=1, batch_size=4)
  trained = train_model(model, x, t, np.array([9]), 0, one, init_params=p0, strategy='map',
                        loss=squared_error)
  fitted = loop.fit(model, p0, x, t, [np.array([9])], jax.random.key(0), one,
                    loop.MeanLoss(squared_error))
  _equal(trained.params, fitted.params)
  np.testing.assert_allclose(trained.losses[0], fitted.losses[0], rtol=1e-6)
  np.testing.assert_allclose(
      trained.losses[0],
      float(squared_error(make_apply_fn(model)(p0, x[9:10]), t[9:10])[0]), rtol=1e-5)


def test_loss_keys_the_program_cache(digits):
  """A hashable loss value keys the compiled programs: equal values share one, different
  losses get their own; the default is the recipe's label-smoothed cross-entropy."""
  model = get_model('mlp', 10, hidden=(8,))
  x, y = _pool(digits)
  recipe = Recipe(epochs=1, batch_size=16, label_smoothing=0.1)
  sub = np.arange(48)
  default = train_model(model, x, y, sub, 0, recipe).params
  _equal(default, train_model(model, x, y, sub, 0, recipe, loss=loop.SoftmaxCE(0.1)).params)
  plain = train_model(model, x, y, sub, 0, recipe, loss=loop.SoftmaxCE(0.0)).params
  with pytest.raises(AssertionError):
    _equal(default, plain)
  _equal(plain, train_model(model, x, y, sub, 0, recipe.replace(label_smoothing=0.0)).params)
  from jaxaudit.train import ensemble as ensemble_lib
  strategy = ensemble_lib.model_layout(1, 'auto', model)
  _, _, prog = ensemble_lib._programs(model, recipe.replace(epochs=0), strategy, 3,
                                      digits.input_shape, Huber(0.5))
  assert prog is ensemble_lib._programs(model, recipe.replace(epochs=0), strategy, 3,
                                        digits.input_shape, Huber(0.5))[2]
  assert prog is not ensemble_lib._programs(model, recipe.replace(epochs=0), strategy, 3,
                                            digits.input_shape, Huber(1.0))[2]


def test_integer_targets_become_int32(digits):
  from jaxaudit.train.ensemble import as_targets
  assert as_targets(np.arange(3, dtype=np.int64)).dtype == jnp.int32
  assert as_targets(np.arange(3, dtype=np.uint8)).dtype == jnp.int32
  assert as_targets(np.ones(3, np.float32)).dtype == jnp.float32
  assert as_targets(jnp.ones((3, 2), jnp.bfloat16)).dtype == jnp.bfloat16


def test_divergence_probe_names_the_first_non_finite_step(digits):
  model = get_model('mlp', 10, hidden=(16,))
  params = init_params(model, jax.random.key(0), digits.input_shape)
  x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
  idx = np.arange(256)
  ok = loop.make_spec(epochs=2, lr=1e-3, batch_size=64)
  bad = loop.make_spec(epochs=2, lr=1e30, batch_size=64)
  with loop.divergence_probe() as probe:
    loop.fit(model, params, x, y, [idx], jax.random.key(1), ok, CrossEntropy())
    res = loop.fit(model, params, x, y, [idx], jax.random.key(1), bad, CrossEntropy())
  losses = np.asarray(res.losses)
  assert probe.phase == 1 and probe.steps_per_epoch == 4       # the second call diverged
  assert not np.isfinite(losses[probe.epoch])
  assert np.all(np.isfinite(losses[:probe.epoch]))
  assert probe.describe().startswith(f'step {probe.step + 1} of 4 in epoch {probe.epoch + 1}')
  with loop.divergence_probe() as clean:
    loop.fit(model, params, x, y, [idx], jax.random.key(1), ok, CrossEntropy())
  assert clean.describe() is None and clean.calls == 1
  # Outside a probe nothing is recorded and nothing is fetched.
  loop.fit(model, params, x, y, [idx], jax.random.key(1), bad, CrossEntropy())
  assert probe.calls == 2


def test_recipe_reads_a_none_augment_as_no_augmentation():
  """`--config.train.augment=none` reaches the config as None (ml_collections parses it)."""
  from jaxaudit.errors import ConfigError
  from jaxaudit.train import Recipe
  assert Recipe(augment=None).augment == 'none'
  with pytest.raises(ConfigError, match='unknown augment'):
    Recipe(augment='rotate')


def _memory_maps() -> int:
  with open('/proc/self/maps') as f:
    return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists('/proc/self/maps'), reason='needs /proc (Linux)')
def test_program_caches_are_bounded_and_evicted_programs_free_their_maps(digits, monkeypatch):
  """A learning rate is a constant of the compiled training program, so every tuning trial
  adds one; a process dies at vm.max_map_count memory maps (LLVM: "Cannot allocate memory"
  after ~180 LM trials with the old 256-program cache). The caches are bounded, and an
  evicted program gives its maps back: with a cache of 2, four rates leave the map count
  where two left it, while an unbounded cache grows with every rate."""
  from jaxaudit import compilation
  from jaxaudit.train import ensemble
  from jaxaudit.unlearn import _common
  for cache in (loop._fit_program, ensemble._programs, _common._jit):
    assert cache.cache_info().maxsize is not None
    assert cache.cache_info().maxsize <= 2 * compilation.PROGRAMS_PER_CACHE
  model = get_model('mlp', 10, hidden=(7,))       # a model no other test uses
  x, y = _pool(digits)
  p0 = init_params(model, jax.random.key(3), digits.input_shape)

  def growth(maxsize, first_lr):
    monkeypatch.setattr(loop, '_fit_program',
                        functools.lru_cache(maxsize=maxsize)(loop._fit_program.__wrapped__))
    counts = []
    for i in range(4):
      recipe = Recipe(optimizer='sgd', learning_rate=first_lr + 1e-3 * i, schedule='constant',
                      epochs=1, batch_size=32)
      jax.block_until_ready(loop.fit(model, p0, x, y, [np.arange(64)], jax.random.key(1),
                                     recipe, CrossEntropy()).params)
      gc.collect()
      counts.append(_memory_maps())
    return counts[-1] - counts[1]

  unbounded = growth(None, 0.01)
  bounded = growth(2, 0.5)
  assert unbounded >= 12, unbounded           # two more programs, dozens of maps each
  assert bounded <= unbounded // 3, (bounded, unbounded)
