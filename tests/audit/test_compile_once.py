"""Compile once: after one warm-up audit, ten audits of the same model, each a
different request (another Du of another size, other samples, other verifiers),
compile no XLA program."""

import dataclasses

import numpy as np
import pytest

from jaxaudit.audit import AuditSettings, Target, audit, get_verifiers
from jaxaudit.compilation import count_compilations
from jaxaudit.data import make_split
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_model

SETTINGS = AuditSettings(num_verifiers=2, ref_sample=200, member_sample=100, test_sample=200)
RECIPE = Recipe(epochs=2, batch_size=64, learning_rate=2e-3)
SIZES = (40, 42, 44, 46, 48, 51, 53, 55, 57, 60)   # |Du| of the ten requests


@pytest.fixture(scope='module')
def warm(digits):
  """Mu trained on D, and one warm-up audit of it (which compiles every program)."""
  split = make_split(digits, seed=0, ref_fraction=0.15, forget_size=50)
  model = get_model('mlp', 10, digits.input_shape, hidden=(32,))
  params = train_model(model, digits.x_train, digits.y_train, split.train, 0, RECIPE).params
  target = Target.from_params(model, params, name='original')
  audit(target, digits, split, verifier_model=model, recipe=RECIPE, settings=SETTINGS)
  return split, model, target


def _run(target, model, digits, requests):
  """Audits every (split, settings, verifiers) request; returns the results and the count."""
  results = []
  with count_compilations() as compiled:
    for split, settings, verifiers in requests:
      results.append(audit(target, digits, split, verifier_model=model, recipe=RECIPE,
                           settings=settings, verifiers=verifiers))
  return results, compiled


def test_ten_requests_with_their_own_splits_compile_nothing(digits, warm):
  """Ten splits of D (same D and D_ref), Du of 40..60 records: verifiers are trained
  in each audit, the samples and queries have other sizes; nothing compiles."""
  base, model, target = warm
  splits = [make_split(digits, seed=0, ref_fraction=0.15, forget_size=n) for n in SIZES]
  for s in splits:   # one model: the same D and D_ref, another Du
    np.testing.assert_array_equal(s.train, base.train)
    np.testing.assert_array_equal(s.ref, base.ref)
  assert len({tuple(s.forget) for s in splits}) == len(SIZES)
  results, compiled = _run(target, model, digits, [(s, SETTINGS, None) for s in splits])
  assert [r.details['sizes']['forget'] for r in results] == list(SIZES)
  assert all(r.details['cost']['models_trained'] == 2 for r in results)
  assert len({r.details['sizes']['members'] for r in results}) > 1   # sample sizes vary
  assert compiled.count == 0, compiled.names


def test_ten_random_requests_with_given_verifiers_compile_nothing(digits, warm):
  """Verifiers given (training excluded): ten random Du of 40..60 records."""
  base, model, target = warm
  rng = np.random.default_rng(3)
  pool = np.sort(rng.choice(base.train, 120, replace=False))   # every Du is drawn from it
  outer = dataclasses.replace(base, forget=pool, retain=np.setdiff1d(base.train, pool))
  verifiers = get_verifiers(model, digits, outer, RECIPE, num_verifiers=2, ratio=0.15,
                            member_sample=100, seed=5)
  requests = []
  for n in SIZES:
    du = np.sort(rng.choice(pool, n, replace=False))
    split = dataclasses.replace(base, forget=du, retain=np.setdiff1d(base.train, du))
    requests.append((split, SETTINGS, verifiers))
  results, compiled = _run(target, model, digits, requests)
  assert all(r.details['cost']['models_trained'] == 0 for r in results)
  assert compiled.count == 0, compiled.names


def test_verifiers_retrained_with_other_seeds_compile_nothing(digits, warm):
  """The warm-up request again with ten other seeds: other verifiers (same shapes),
  other D_ref and member samples, other noise views."""
  base, model, target = warm
  requests = [(base, dataclasses.replace(SETTINGS, seed=s), None) for s in range(1, 11)]
  results, compiled = _run(target, model, digits, requests)
  assert len({r.details['verifiers']['cache_key'] for r in results}) == 10
  assert compiled.count == 0, compiled.names
