"""TransformerLM: causality, features, hidden states, TokenCE and ensemble training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.models import MODELS, get_model, init_params
from jaxaudit.models.transformer import FEATURES, TransformerLM, token_features
from jaxaudit.train import Recipe, TokenCE, train_ensemble, train_model, unstack

V, T = 20, 8
TINY = dict(width=16, depth=1, heads=2, context=T)


def _init(model, key=None):
  key = jax.random.key(0) if key is None else key
  return jax.jit(lambda k: init_params(model, k, (T + 1,)))(key)


@functools.lru_cache(maxsize=None)
def _jitted(model):
  return jax.jit(lambda p, x: model.apply({'params': p}, x))


def _apply(model, params, x):
  """Jitted model output as a NumPy array (eager Linen calls compile op by op: slow)."""
  return np.asarray(_jitted(model)(params, x))


def _records(n, seed=0, min_len=2):
  """(n, T+1) float32 records right-padded with -1 (lengths min_len..T+1), and their targets."""
  rng = np.random.default_rng(seed)
  x = np.full((n, T + 1), -1.0, np.float32)
  for i in range(n):
    length = rng.integers(min_len, T + 2)
    x[i, :length] = rng.integers(0, V, length)
  y = x[:, 1:].astype(np.int32)
  return x, y


@pytest.fixture(scope='module')
def lm():
  model = get_model('transformer', V, **{**TINY, 'depth': 2})
  return model, _init(model)


def test_registered_and_validated(lm):
  assert MODELS['transformer'] is TransformerLM
  assert FEATURES == ('logp', 'mu', 'sigma', 'argmax', 'valid')
  with pytest.raises(ConfigError, match='divisible'):
    get_model('transformer', V, width=10, heads=4)
  with pytest.raises(ConfigError, match='output'):
    get_model('transformer', V, output='probs')
  with pytest.raises(ConfigError, match='hidden_layer'):
    get_model('transformer', V, depth=1, output='hidden')
  model, params = lm
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  with pytest.raises(ConfigError, match='context'):
    model.apply({'params': params}, jnp.zeros((1, T + 2)))


def test_causal_mask(lm):
  model, params = lm
  feats_model = model.clone(output='features')
  x, _ = _records(4, seed=1, min_len=T + 1)
  for t in (0, 3, T - 2):
    # logits at position t read x[0..t]: perturb the inputs after it
    x2 = x.copy()
    x2[:, t + 1:] = (x2[:, t + 1:] + 7) % V
    a = _apply(model, params, x)
    b = _apply(model, params, x2)
    np.testing.assert_allclose(a[:, :t + 1], b[:, :t + 1], rtol=1e-5, atol=1e-5)
    assert np.abs(a[:, t + 1:] - b[:, t + 1:]).max() > 1e-3
    # features at position t also read the target x[t+1]: perturb what follows it
    x3 = x.copy()
    x3[:, t + 2:] = (x3[:, t + 2:] + 7) % V
    fa = _apply(feats_model, params, x)
    fb = _apply(feats_model, params, x3)
    np.testing.assert_allclose(fa[:, :t + 1], fb[:, :t + 1], rtol=1e-5, atol=1e-5)
    assert np.abs(fa[:, t + 1:] - fb[:, t + 1:]).max() > 1e-3


def test_features_match_logits(lm):
  model, params = lm
  x, _ = _records(4, seed=2)
  x[0, 1:] = -1        # a record with no valid target
  logits = _apply(model, params, x).astype(np.float64)
  feats = _apply(model.clone(output='features'), params, x)
  assert feats.shape == (4, T, 5) and feats.dtype == np.float32
  for i in range(4):
    for t in range(T):
      nxt = x[i, t + 1]
      if nxt < 0:
        np.testing.assert_array_equal(feats[i, t], 0.0)
        continue
      z = logits[i, t] - logits[i, t].max()
      logp = z - np.log(np.exp(z).sum())
      p = np.exp(logp)
      mu = (p * logp).sum()
      sigma = np.sqrt(max((p * logp ** 2).sum() - mu ** 2, 0.0))
      want = [logp[int(nxt)], mu, sigma, np.argmax(logits[i, t]), 1.0]
      np.testing.assert_allclose(feats[i, t], want, rtol=1e-4, atol=1e-5)
  # the helper on its own agrees with the model's output
  np.testing.assert_allclose(np.asarray(token_features(jnp.asarray(logits, jnp.float32), x)),
                             feats, rtol=1e-5, atol=1e-6)


def test_hidden_shape(lm):
  model, params = lm
  x, _ = _records(4, seed=3)
  for layer in (0, 1):
    h = _apply(model.clone(output='hidden', hidden_layer=layer), params, x)
    assert h.shape == (4, T, 16) and h.dtype == jnp.float32
  h0 = _apply(model.clone(output='hidden', hidden_layer=0), params, x)
  h1 = _apply(model.clone(output='hidden', hidden_layer=1), params, x)
  assert not np.allclose(h0, h1)


def test_token_ce_matches_naive_loop():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(4, T, V)).astype(np.float32) * 2
  _, y = _records(4, seed=4)
  y[1] = -1            # no valid token: loss 0
  got = np.asarray(TokenCE()(jnp.asarray(logits), jnp.asarray(y)))
  want = []
  for i in range(4):
    nll = [np.log(np.exp(logits[i, t].astype(np.float64)).sum()) - logits[i, t, y[i, t]]
           for t in range(T) if y[i, t] >= 0]
    want.append(np.mean(nll) if nll else 0.0)
  assert got.shape == (4,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # padding ignored: changing the logits of padded positions changes nothing
  logits2 = np.where((y < 0)[..., None], 100.0, logits)
  np.testing.assert_allclose(np.asarray(TokenCE()(jnp.asarray(logits2), jnp.asarray(y))), got,
                             rtol=1e-6)
  assert TokenCE() == TokenCE() and hash(TokenCE()) == hash(TokenCE())


# Slow: two training programs compile (K = 2 and the lone K = 1), 25-35 s on a loaded
# 2-core CPU. Under vmap, Adam's per-coordinate normalisation turns the float rounding
# differences of batched matmuls into visible ones where a gradient coordinate is near zero
# (one of ~4k entries off by 8e-4 after 6 steps); SGD keeps them at rounding level. Under
# map the member runs the lone program and matches bit for bit, Adam included.
@pytest.mark.parametrize('strategy,optimizer', [
    ('map', 'adam'), pytest.param('vmap', 'sgd', marks=pytest.mark.slow)])
def test_member_equals_lone_run(strategy, optimizer):
  model = get_model('transformer', V, **TINY)
  x, y = _records(24, seed=5)
  recipe = Recipe(epochs=2, batch_size=4, learning_rate=3e-3 if optimizer == 'adam' else 0.1,
                  optimizer=optimizer)
  rng = np.random.default_rng(6)
  subsets = np.stack([np.sort(rng.choice(24, 10, replace=False)) for _ in range(2)])
  keys = jax.vmap(jax.random.key)(jnp.arange(2))
  res = train_ensemble(model, x, y, subsets, keys, recipe, loss=TokenCE(), strategy=strategy)
  assert res.losses.shape == (2, 2) and np.all(np.isfinite(res.losses))
  assert res.diverged() == []
  for k in (1,):
    lone = train_model(model, x, y, subsets[k], keys[k], recipe, loss=TokenCE(),
                       strategy=strategy)
    for a, b in zip(jax.tree.leaves(unstack(res.params, k)), jax.tree.leaves(lone.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.losses[:, k], lone.losses, rtol=1e-5)
  # training moved the parameters
  init = _init(model, jax.random.fold_in(keys[0], 0))
  assert not np.allclose(unstack(res.params, 0)['head']['kernel'], init['head']['kernel'])
