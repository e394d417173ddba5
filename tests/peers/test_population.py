"""Tests for the population MIA's attack (jaxaudit.peers.population).

``reference_accuracy`` is DeepUnlearn's published protocol
(munl/evaluation/membership_inference_attack.py) written with scikit-learn:
``cross_val_score(LogisticRegression(), X, y, cv=StratifiedShuffleSplit(
n_splits=10, random_state=123), scoring='accuracy')`` on the raw losses
``X = [Du; reference]``, ``y = [0] * m + [1] * m``, after both sets are
shuffled and cut to m (here with the documented seeded permutations).
``legacy_protocol`` is jaxaudit's earlier attack (stratified 10-fold,
standardised losses, near-unpenalised fit).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from jaxaudit.errors import AuditError

pop = importlib.import_module('jaxaudit.peers.population')
linear_model = pytest.importorskip('sklearn.linear_model')
model_selection = pytest.importorskip('sklearn.model_selection')


def reference_accuracy(forget, ref, seed):
  rng = np.random.default_rng(seed)
  m = min(forget.size, ref.size)
  forget = forget[rng.permutation(forget.size)][:m]
  ref = ref[rng.permutation(ref.size)][:m]
  x = np.concatenate([forget, ref]).reshape(-1, 1)
  y = np.concatenate([np.zeros(m, int), np.ones(m, int)])
  cv = model_selection.StratifiedShuffleSplit(n_splits=10, random_state=123)
  return float(np.mean(model_selection.cross_val_score(
      linear_model.LogisticRegression(), x, y, cv=cv, scoring='accuracy')))


def legacy_protocol(pos, neg, n_splits, seed):
  rng = np.random.default_rng(seed)
  m = min(pos.size, neg.size)
  if pos.size > m:
    pos = pos[np.sort(rng.choice(pos.size, size=m, replace=False))]
  if neg.size > m:
    neg = neg[np.sort(rng.choice(neg.size, size=m, replace=False))]
  x = np.concatenate([pos, neg])
  y = np.concatenate([np.ones(m), np.zeros(m)])
  folds = [[] for _ in range(n_splits)]
  for c in (0, 1):
    idx = rng.permutation(np.nonzero(y == c)[0])
    for f, chunk in enumerate(np.array_split(idx, n_splits)):
      folds[f].append(chunk)
  accs = []
  for f in folds:
    test = np.concatenate(f)
    train = np.setdiff1d(np.arange(x.size), test)
    mean, std = x[train].mean(), x[train].std()
    clf = linear_model.LogisticRegression(C=1e6, tol=1e-10, max_iter=10000)
    clf.fit(((x[train] - mean) / std)[:, None], y[train])
    accs.append(clf.score(((x[test] - mean) / std)[:, None], y[test]))
  return float(np.mean(accs))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_default_matches_reference(seed):
  rng = np.random.default_rng(seed)
  forget = rng.gamma(1.0, 0.3, size=137)            # members: small losses
  ref = rng.gamma(1.5, 0.5, size=90)
  assert pop.attack_accuracy(forget, ref, seed=seed) == pytest.approx(
      reference_accuracy(forget, ref, seed), abs=1e-12)


def test_default_matches_reference_with_ties():
  rng = np.random.default_rng(7)
  forget = rng.integers(0, 4, 60).astype(float)     # many equal losses across the sets
  ref = rng.integers(1, 5, 60).astype(float)
  assert pop.attack_accuracy(forget, ref, seed=3) == pytest.approx(
      reference_accuracy(forget, ref, 3), abs=1e-12)


def test_counts_and_trials():
  rng = np.random.default_rng(0)
  res = pop.attack_cv(rng.normal(size=50), rng.normal(size=70) + 1.0, seed=0)
  assert res.trials == 10 * 10                       # 10 splits x ceil(0.1 * 100)
  assert res.correct / res.trials == pytest.approx(res.accuracy)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_legacy_options_match_old_protocol(seed):
  rng = np.random.default_rng(seed)
  pos = rng.normal(size=137) * 2.0 + 1.0
  neg = rng.normal(size=90) * 10.0 + 1.0
  got = pop.attack_accuracy(pos, neg, seed=seed, **pop.LEGACY_OPTIONS)
  assert got == pytest.approx(legacy_protocol(pos, neg, 10, seed), abs=1e-9)


def test_unregularised_fit_matches_sklearn():
  rng = np.random.default_rng(0)
  x = rng.normal(size=200)
  y = (rng.uniform(size=200) < 1 / (1 + np.exp(-(1.5 * x - 0.3)))).astype(float)
  w, b = pop._fit_logistic_1d(x, y, l2=0.5)  # pylint: disable=protected-access
  clf = linear_model.LogisticRegression(C=2.0, tol=1e-12, max_iter=10000).fit(x[:, None], y)
  assert w == pytest.approx(clf.coef_[0, 0], rel=1e-5)
  assert b == pytest.approx(clf.intercept_[0], rel=1e-5)


def test_chance_and_separable():
  rng = np.random.default_rng(0)
  for opts in ({}, pop.LEGACY_OPTIONS):
    assert abs(pop.attack_accuracy(rng.normal(size=500), rng.normal(size=700), **opts)
               - 0.5) < 0.08
    assert pop.attack_accuracy(rng.normal(size=100) + 100.0, rng.normal(size=100),
                               **opts) == 1.0


def test_indiscernibility():
  assert pop.indiscernibility(0.5) == 1.0
  assert pop.indiscernibility(1.0) == 0.0 and pop.indiscernibility(0.0) == 0.0
  assert pop.indiscernibility(0.6) == pytest.approx(0.8)
  with pytest.raises(AuditError, match=r'acc must be in \[0, 1\]'):
    pop.indiscernibility(1.1)


def test_errors():
  with pytest.raises(AuditError, match='at least n_splits=10 scores'):
    pop.attack_accuracy(np.ones(9), np.ones(50), cv='kfold')
  with pytest.raises(AuditError, match='n_splits must be >= 2'):
    pop.attack_accuracy(np.ones(9), np.ones(50), n_splits=1)
  with pytest.raises(AuditError, match='scores_ref is empty'):
    pop.attack_accuracy(np.ones(9), [])
  with pytest.raises(AuditError, match='cv must be one of'):
    pop.attack_accuracy(np.ones(9), np.ones(9), cv='loo')
  with pytest.raises(AuditError, match='too few for shuffle splits'):
    pop.attack_accuracy(np.ones(3), np.ones(3))
