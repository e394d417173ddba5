import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.errors import ConfigError, DataError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, accuracy, predict_logits, train_ensemble, train_model, unstack
from jaxaudit.train import ensemble as ensemble_lib
from jaxaudit.train.devices import Layout

RECIPE = Recipe(epochs=3, batch_size=32, learning_rate=3e-3)


def _subsets(n, k, m, seed=0):
  rng = np.random.default_rng(seed)
  return np.stack([np.sort(rng.choice(n, m, replace=False)) for _ in range(k)])


def _close(a, b, **kw):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


@pytest.mark.parametrize('name,kwargs,strategy', [
    ('mlp', {'hidden': (32,)}, 'vmap'),
    ('mlp', {'hidden': (32,)}, 'map'),
    ('cnn', {'width': 4, 'dense': 16}, 'map'),
    pytest.param('cnn', {'width': 4, 'dense': 16}, 'vmap', marks=pytest.mark.slow),
])
def test_member_equals_lone_run(digits, name, kwargs, strategy):
  model = get_model(name, 10, **kwargs)
  subs = _subsets(len(digits.y_train), 3, 200)
  keys = jax.vmap(jax.random.key)(jnp.arange(3))
  res = train_ensemble(model, digits.x_train, digits.y_train, subs, keys, RECIPE,
                       strategy=strategy)
  assert res.losses.shape == (3, 3)
  for k in (0, 2):
    lone = train_model(model, digits.x_train, digits.y_train, subs[k], keys[k], RECIPE,
                       strategy=strategy)
    _close(unstack(res.params, k), lone.params, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.losses[:, k], lone.losses, rtol=1e-5)


def test_vmap_and_map_strategies_agree(digits):
  model = get_model('mlp', 10, hidden=(32,))
  subs = _subsets(len(digits.y_train), 2, 150)
  r1 = train_ensemble(model, digits.x_train, digits.y_train, subs, [0, 1], RECIPE.replace(epochs=1),
                      strategy='vmap')
  r2 = train_ensemble(model, digits.x_train, digits.y_train, subs, [0, 1], RECIPE.replace(epochs=1),
                      strategy='map')
  _close(r1.params, r2.params, rtol=1e-4, atol=1e-5)


def test_ragged_subsets_are_masked(digits):
  """A member with a shorter subset equals a lone run on exactly that subset."""
  model = get_model('mlp', 10, hidden=(16,))
  short = np.arange(70)
  long = np.arange(100, 250)
  res = train_ensemble(model, digits.x_train, digits.y_train, [short, long], [5, 6], RECIPE)
  lone = train_model(model, digits.x_train, digits.y_train, short, 5, RECIPE)
  _close(unstack(res.params, 0), lone.params, rtol=1e-5, atol=1e-6)


def test_second_call_does_not_recompile(digits):
  model = get_model('mlp', 10, hidden=(8,))
  subs = _subsets(len(digits.y_train), 2, 64)
  recipe = RECIPE.replace(epochs=2, batch_size=16)
  train_ensemble(model, digits.x_train, digits.y_train, subs, [0, 1], recipe, strategy='vmap')
  steps = 4
  _, _, epoch_fn = ensemble_lib._programs(model, recipe.replace(epochs=0), Layout('vmap'), steps,
                                          digits.input_shape, None, 'threefry2x32')
  size = epoch_fn._cache_size()
  assert size == 1
  train_ensemble(model, digits.x_train, digits.y_train, _subsets(len(digits.y_train), 2, 64, 1),
                 [3, 4], recipe, strategy='vmap')
  assert epoch_fn._cache_size() == size
  # Another epoch count reuses the same program too.
  train_ensemble(model, digits.x_train, digits.y_train, subs, [0, 1], recipe.replace(epochs=1),
                 strategy='vmap')
  assert epoch_fn._cache_size() == size


def test_training_learns_digits(digits, digits_split):
  model = get_model('mlp', 10, hidden=(64,))
  res = train_model(model, digits.x_train, digits.y_train, digits_split.train, 0,
                    Recipe(epochs=15, batch_size=64, learning_rate=3e-3))
  acc = accuracy(predict_logits(model, res.params, digits.x_test), digits.y_test)
  assert acc > 0.93
  assert res.losses[-1] < res.losses[0]


def test_predict_logits_ensemble_matches_single(digits):
  model = get_model('mlp', 10, hidden=(16,))
  res = train_ensemble(model, digits.x_train, digits.y_train, _subsets(len(digits.y_train), 2, 50),
                       [0, 1], RECIPE.replace(epochs=1))
  x = digits.x_test[:77]      # not a multiple of the batch size: padded
  both = predict_logits(model, res.params, x, ensemble=True, batch_size=32)
  assert both.shape == (2, 77, 10)
  one = predict_logits(model, unstack(res.params, 1), x, batch_size=32)
  np.testing.assert_allclose(both[1], one, rtol=1e-5, atol=1e-5)


def test_bad_inputs(digits):
  model = get_model('mlp', 10, hidden=(8,))
  x, y = digits.x_train, digits.y_train
  with pytest.raises(ConfigError, match='indices must lie'):
    train_ensemble(model, x, y, np.array([[0, len(y)]]), [0], RECIPE)
  with pytest.raises(ConfigError, match='empty'):
    train_ensemble(model, x, y, np.zeros((1, 3), int), [0], RECIPE,
                   subset_masks=np.zeros((1, 3), bool))
  with pytest.raises(DataError, match='records'):
    train_ensemble(model, x, y[:-1], np.array([[0, 1]]), [0], RECIPE)
  with pytest.raises(ConfigError, match='keys'):
    train_ensemble(model, x, y, np.array([[0, 1]]), [0, 1], RECIPE)
  with pytest.raises(ConfigError, match='strategy'):
    train_ensemble(model, x, y, np.array([[0, 1]]), [0], RECIPE, strategy='pmap2')
  with pytest.raises(ConfigError, match='optimizer'):
    Recipe(optimizer='lbfgs')
  with pytest.raises(ConfigError, match='unknown training option'):
    Recipe.from_config({'epochz': 3})
