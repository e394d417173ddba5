"""Generation: determinism, greedy decoding, length checks."""

import jax
import numpy as np
import pytest

from jaxaudit.errors import ConfigError, DataError
from jaxaudit.models import get_model, init_params
from jaxaudit.text.generate import generate

V, T = 20, 8


@pytest.fixture(scope='module')
def lm():
  model = get_model('transformer', V, width=16, depth=1, heads=2, context=T)
  params = jax.jit(lambda k: init_params(model, k, (T + 1,)))(jax.random.key(0))
  # sharper logits than at init, so that samples differ visibly from one key to another
  params = jax.tree.map(lambda p: p * 3.0, params)
  return model, params


def test_sampling_is_deterministic_per_key(lm):
  model, params = lm
  prompt = np.array([3, 1, 4])
  a = generate(model, params, prompt, 5, jax.random.key(1))
  b = generate(model, params, prompt, 5, jax.random.key(1))
  assert a.shape == (8,) and a.dtype == np.int32
  np.testing.assert_array_equal(a[:3], prompt)
  np.testing.assert_array_equal(a, b)
  assert a.min() >= 0 and a.max() < V
  others = [generate(model, params, prompt, 5, jax.random.key(s)) for s in (2, 3, 4)]
  assert any(not np.array_equal(a, o) for o in others)
  # top_k=1 is greedy whatever the key and temperature
  g1 = generate(model, params, prompt, 5, jax.random.key(5), top_k=1)
  g0 = generate(model, params, prompt, 5, jax.random.key(6), temperature=0.0)
  np.testing.assert_array_equal(g1, g0)


def test_greedy_equals_argmax_loop(lm):
  model, params = lm
  n = 5          # one num_tokens throughout this file: one compiled program
  for prompt in ([7], [2, 9, 11, 0]):   # the second fills the context exactly
    got = generate(model, params, np.array(prompt), n, jax.random.key(0), temperature=0.0)
    seq = list(prompt)
    apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
    while len(seq) < len(prompt) + n:
      x = np.full((1, T + 1), -1.0, np.float32)        # one shape: one compiled forward
      x[0, :len(seq)] = seq
      logits = np.asarray(apply(params, x))[0, len(seq) - 1]
      seq.append(int(np.argmax(logits)))
    np.testing.assert_array_equal(got, seq)
  # features-output models generate from their logits too
  feats_model = model.clone(output='features')
  np.testing.assert_array_equal(
      generate(feats_model, params, np.array([7]), n, 0, temperature=0.0),
      generate(model, params, np.array([7]), n, 0, temperature=0.0))


def test_bad_lengths_and_values(lm):
  model, params = lm
  key = jax.random.key(0)
  with pytest.raises(ConfigError, match='context'):
    generate(model, params, np.array([1, 2]), T, key)
  with pytest.raises(ConfigError, match='at least one token'):
    generate(model, params, np.array([], np.int32), 3, key)
  with pytest.raises(ConfigError, match='temperature'):
    generate(model, params, np.array([1]), 3, key, temperature=-1.0)
  with pytest.raises(ConfigError, match='top_k'):
    generate(model, params, np.array([1]), 3, key, top_k=0)
  with pytest.raises(DataError, match='token ids'):
    generate(model, params, np.array([V]), 3, key)
  np.testing.assert_array_equal(generate(model, params, np.array([1, 2]), 0, key), [1, 2])
  assert generate(model, params, np.array([1, 2, 3, 4]), 5, key).shape == (T + 1,)
