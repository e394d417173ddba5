"""Tests for jaxaudit.peers.neurips23: the challenge's ε, forget score and final score.

``reference_epsilon`` is written here from the published rules of the
challenge's metric.py (google-deepmind/unlearning_evaluation): positive = the
group with the larger median, single thresholds on a grid of 100 per unit,
interval rules around the peakier group, the 1% range rule, the cap at 50.
``naive_exact_epsilon`` is the pre-reference jaxaudit rule (every distinct
threshold, both directions), reached with ``LEGACY_OPTIONS``.
"""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from jaxaudit.errors import AuditError
from jaxaudit.peers import neurips23 as n23

_SETTINGS = settings(max_examples=40, deadline=None)
_int_samples = st.lists(st.integers(min_value=-6, max_value=6), min_size=1, max_size=12)


def _eps_of_rates(tpr, fpr, delta):
  """ε of one rule from its rates (NaN: skipped); fnr = 1 - tpr."""
  fnr = 1.0 - tpr
  if fpr == 0 and fnr == 0:
    return math.inf
  if fpr == 0 or fnr == 0:
    return math.nan
  terms = []
  if 1 - delta - fpr > 0:
    terms.append(math.log(1 - delta - fpr) - math.log(fnr))
  if 1 - delta - fnr > 0:
    terms.append(math.log(1 - delta - fnr) - math.log(fpr))
  return max(0.0, max(terms)) if terms else math.nan


def reference_epsilon(u, r, delta=1e-5, cap=50.0):
  u, r = np.asarray(u, float), np.asarray(r, float)
  pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
  d_pos, d_neg = pos.max() - pos.min(), neg.max() - neg.min()
  big, small = max(d_pos, d_neg), min(d_pos, d_neg)
  if big > 0 and small / big < 0.01:
    return cap
  found = []
  lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
  for t in np.linspace(lo, hi, int(np.ceil((hi - lo) * 100))):
    found.append(_eps_of_rates(np.mean(pos >= t), np.mean(neg >= t), delta))
  peaky, other = (neg, pos) if d_pos >= d_neg else (pos, neg)
  lo_r = peaky.min() + small - 2.0
  hi_r = peaky.max() + 2.0
  rights = np.linspace(lo_r, hi_r, int(np.ceil((hi_r - lo_r) * 100)))
  for right in rights:
    lefts = np.linspace(right - small - 2.0, right - small + 2.0, 400)
    tp = np.mean((lefts[:, None] <= peaky[None]) & (peaky[None] <= right), axis=1)
    fp = np.mean((lefts[:, None] <= other[None]) & (other[None] <= right), axis=1)
    for a, b in set(zip(tp.tolist(), fp.tolist())):
      found.append(_eps_of_rates(a, b, delta))
  found = [e for e in found if not math.isnan(e)]
  return min(max(found), cap) if found else 0.0


def naive_exact_epsilon(unlearned, retrained, delta=1e-5, cap=50.0):
  values = sorted(set(unlearned) | set(retrained))
  mids = [(a + b) / 2 for a, b in zip(values[:-1], values[1:])]
  best = 0.0
  for t in [-math.inf, math.inf] + values + mids:
    for rule in ('ge', 'lt'):
      says = (lambda s: s >= t) if rule == 'ge' else (lambda s: s < t)
      fpr = sum(says(s) for s in retrained) / len(retrained)
      tpr = sum(says(s) for s in unlearned) / len(unlearned)
      e = _eps_of_rates(tpr, fpr, delta)
      if math.isinf(e):
        return cap
      if not math.isnan(e):
        best = max(best, e)
  return min(best, cap)


# -----------------------------------------------------------------------------
# Default = the reference.
# -----------------------------------------------------------------------------


@pytest.mark.parametrize('seed', range(4))
def test_epsilon_matches_reference_continuous(seed):
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(8, 6)) * rng.uniform(0.3, 2.0, 6) + rng.normal(size=6)
  r = rng.normal(size=(8, 6)) + rng.normal(size=6) * 0.5
  got = n23.per_example_epsilons(u, r)
  want = [reference_epsilon(u[:, i], r[:, i]) for i in range(6)]
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_epsilon_matches_reference_with_ties():
  # Integer-valued confidences: ties within and across groups, equal medians.
  rng = np.random.default_rng(3)
  for _ in range(12):
    u = rng.integers(-3, 4, 6).astype(float)
    r = rng.integers(-2, 4, 6).astype(float)
    assert n23.example_epsilon(u, r) == pytest.approx(reference_epsilon(u, r), rel=1e-12)
  # Equal medians: the unlearned group is "positive".
  assert n23.example_epsilon([0., 1., 2.], [1., 1.5, 3.]) == pytest.approx(
      reference_epsilon([0., 1., 2.], [1., 1.5, 3.]))


def test_reference_rules():
  # Peaky: range ratio < 1% -> the cap; both constant (ratio 0/0) -> no cap.
  assert n23.example_epsilon([1.0, 1.001, 1.0], [0.0, 1.0, 2.0]) == 50.0
  assert n23.example_epsilon([1.0, 1.001, 1.0], [0.0, 1.0, 2.0], peaky_cap=False) < 50.0
  assert n23.example_epsilon([1.0] * 4, [1.0] * 4) == 0.0
  assert n23.example_epsilon([5.0] * 4, [1.0] * 4) == 50.0          # perfect separation
  # Direction: the reference only tests "positive iff >= t" for the larger median.
  u, r = [0.0, 0.1, 5.0, 5.1], [2.0, 2.1, 2.2, 2.3]
  assert n23.example_epsilon(u, r, interval_attacks=False, peaky_cap=False) <= \
      n23.example_epsilon(u, r, interval_attacks=False, peaky_cap=False, direction='both')


def test_default_differs_from_legacy_on_fixed_input():
  rng = np.random.default_rng(0)
  u = rng.normal(size=(16, 40)) * 0.6 + 0.3
  r = rng.normal(size=(16, 40))
  new = n23.forget_score(n23.per_example_epsilons(u, r), num_models=16)
  old = n23.forget_score(n23.per_example_epsilons(u, r, **n23.LEGACY_OPTIONS), num_models=16)
  assert new != old
  assert 0.0 <= new <= 1.0 and 0.0 <= old <= 1.0


# -----------------------------------------------------------------------------
# Legacy options = the exact threshold search, both directions.
# -----------------------------------------------------------------------------


@_SETTINGS
@given(_int_samples, _int_samples, st.sampled_from([1e-5, 0.01, 0.3]))
def test_legacy_matches_brute_force(u, r, delta):
  assert n23.example_epsilon(u, r, delta, **n23.LEGACY_OPTIONS) == pytest.approx(
      naive_exact_epsilon(u, r, delta), rel=1e-12, abs=1e-12)


def test_legacy_special_cases():
  legacy = n23.LEGACY_OPTIONS
  assert n23.example_epsilon([1.0] * 8, [1.0] * 8, **legacy) == 0.0
  assert n23.example_epsilon([5.0, 6.0], [1.0, 2.0], **legacy) == 50.0
  assert n23.example_epsilon([5.0, 6.0], [1.0, 2.0], epsilon_cap=None, **legacy) == math.inf
  rng = np.random.default_rng(0)
  u, r = rng.normal(size=30), rng.normal(size=30) + 0.5
  assert n23.example_epsilon(u, r, **legacy) == pytest.approx(
      n23.example_epsilon(r, u, **legacy))


def test_exact_interval_family_dominates_grid():
  rng = np.random.default_rng(5)
  u, r = rng.normal(size=10) * 0.3, rng.normal(size=10)
  assert n23.example_epsilon(u, r, thresholds='exact', peaky_cap=False) >= \
      n23.example_epsilon(u, r, peaky_cap=False) - 1e-12


# -----------------------------------------------------------------------------
# Bucketing and the final score (unchanged: they matched the reference).
# -----------------------------------------------------------------------------


def test_forget_score_buckets():
  eps = [0.0, 0.49, 0.5, 1.2, 6.9, 7.0, math.inf]
  expected = [1.0, 1.0, 0.5, 0.25, 2.0**-13, 0.0, 0.0]
  assert n23.forget_score(eps) == pytest.approx(np.mean(expected))
  assert n23.forget_score([4.9], num_models=100) == 2.0**-9
  assert n23.forget_score([5.0], num_models=100) == 0.0
  assert n23.forget_score([1.0], max_epsilon=1.0) == 0.0
  assert n23.forget_score([0.9], max_epsilon=1.0) == 0.5


def test_final_score():
  assert n23.final_score(0.5, 0.9, 1.0, 0.8, 0.9) == pytest.approx(0.5 * 0.9 * 0.8 / 0.9)
  with pytest.raises(AuditError, match='ra_r must be > 0'):
    n23.final_score(0.5, 0.9, 0.0, 0.8, 0.9)
  with pytest.raises(AuditError, match=r'forget_score must be in \[0, 1\]'):
    n23.final_score(1.5, 0.9, 1.0, 0.8, 0.9)


def test_errors():
  with pytest.raises(AuditError, match='unlearned_scores is empty'):
    n23.example_epsilon([], [1.0])
  with pytest.raises(AuditError, match='retrained_scores contains non-fin'):
    n23.example_epsilon([1.0], [np.nan])
  with pytest.raises(AuditError, match=r'delta must be in \(0, 1\)'):
    n23.example_epsilon([1.0], [1.0], delta=0.0)
  with pytest.raises(AuditError, match='epsilon_cap must be > 0'):
    n23.example_epsilon([1.0], [1.0], epsilon_cap=0.0)
  with pytest.raises(AuditError, match='direction must be one of'):
    n23.example_epsilon([1.0], [1.0], direction='up')
  with pytest.raises(AuditError, match='has 5 examples but retrained'):
    n23.per_example_epsilons(np.zeros((4, 5)), np.zeros((4, 4)))
  with pytest.raises(AuditError, match='must be 2-D'):
    n23.per_example_epsilons(np.zeros(4), np.zeros(4))
  with pytest.raises(AuditError, match='epsilons must be >= 0'):
    n23.forget_score([-1.0])
  with pytest.raises(AuditError, match='epsilons contains NaN'):
    n23.forget_score([np.nan])
  with pytest.raises(AuditError, match='num_models must be >= 3'):
    n23.forget_score([1.0], num_models=2)
