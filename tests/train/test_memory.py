"""The memory estimate of a training request, and divergence detection."""

import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_ensemble
from jaxaudit.train import memory


def test_per_example_bytes_counts_input_and_activations():
  m = get_model('mlp', 10, hidden=(32, 16))
  # input 8*8*1 floats; intermediates: two Dense outputs + activations + logits (captured
  # by flax: each Dense's output and the module's output).
  got = memory.per_example_bytes(m, (8, 8, 1))
  assert got >= 4 * (64 + 32 + 16 + 10)
  assert got < 4 * (64 + 4 * (32 + 16 + 10) + 64)


def test_estimate_grows_linearly_with_batch_and_parallel_members():
  m = get_model('mlp', 10, hidden=(32,))
  one = memory.estimate_step_bytes(m, (8, 8, 1), 100, 1)
  two = memory.estimate_step_bytes(m, (8, 8, 1), 200, 1)
  par = memory.estimate_step_bytes(m, (8, 8, 1), 100, 4, parallel=True)
  seq = memory.estimate_step_bytes(m, (8, 8, 1), 100, 4, parallel=False)
  p = memory.params_bytes(m, (8, 8, 1))
  assert two - one == one - 4 * p   # activations double, parameters do not
  assert par > seq


def test_check_fits_refuses_a_huge_batch_before_any_allocation():
  m = get_model('mlp', 10, hidden=(32,))
  with pytest.raises(ConfigError, match='batch_size=1000000000 needs about'):
    memory.check_fits(m, (8, 8, 1), 10 ** 9)
  assert memory.check_fits(m, (8, 8, 1), 64) > 0
  with pytest.raises(ConfigError, match='at most'):
    memory.check_fits(m, (8, 8, 1), 1000, budget=10 * memory.estimate_step_bytes(m, (8, 8, 1), 1))


def test_train_ensemble_reports_the_first_non_finite_step():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = rng.integers(0, 3, 64)
  m = get_model('mlp', 3, hidden=(8,))
  subsets = np.stack([np.arange(64), np.arange(64)])
  ok = train_ensemble(m, x, y, subsets, [0, 1], Recipe(epochs=2, batch_size=16))
  assert ok.diverged() == [] and np.all(ok.nonfinite_step == -1)
  bad = train_ensemble(m, x, y, subsets, [0, 1], Recipe(epochs=2, batch_size=16,
                                                        learning_rate=1e30, optimizer='sgd'))
  assert bad.diverged() == [0, 1]
  steps = np.asarray(bad.nonfinite_step)
  assert np.all((steps >= 0) & (steps < 8))
  # The losses before that step are finite, the one at it is not: a lone run agrees.
  lone = train_ensemble(m, x, y, subsets[:1], [0], Recipe(epochs=2, batch_size=16,
                                                          learning_rate=1e30, optimizer='sgd'))
  assert int(lone.nonfinite_step[0]) == int(steps[0])
