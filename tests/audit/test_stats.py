# Copyright 2026 The jaxaudit Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests for jaxaudit.audit.stats.

Each statistic is checked against a naive reference written here (double
loops, brute-force threshold sweeps, full enumeration of permutations) or
against SciPy, by hypothesis property tests, and by calibration under
exchangeable data.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
from scipy import stats as sps

from jaxaudit.audit import stats
from jaxaudit.errors import AuditError

_SETTINGS = settings(max_examples=60, deadline=None)

# Small integer-valued samples: ties are frequent, values exact in float64.
_int_samples = st.lists(
    st.integers(min_value=-6, max_value=6), min_size=1, max_size=12
)
_float_samples = st.lists(
    st.floats(
        min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False
    ),
    min_size=1,
    max_size=25,
)
_p_lists = st.lists(
    st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30
)


# -----------------------------------------------------------------------------
# Naive references.
# -----------------------------------------------------------------------------


def naive_auc(pos, neg):
  total = 0.0
  for a in pos:
    for b in neg:
      total += 1.0 if a > b else (0.5 if a == b else 0.0)
  return total / (len(pos) * len(neg))


def naive_exact_mwu_p(x, y, alternative):
  """Exact permutation p-value of U by enumerating every relabelling."""
  pooled = list(x) + list(y)
  n1 = len(x)
  u_obs = naive_auc(x, y) * len(x) * len(y)
  us = []
  for idx in itertools.combinations(range(len(pooled)), n1):
    chosen = set(idx)
    xs = [pooled[i] for i in idx]
    ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
    us.append(naive_auc(xs, ys) * len(xs) * len(ys))
  us = np.array(us)
  ge = np.mean(us >= u_obs - 1e-9)
  le = np.mean(us <= u_obs + 1e-9)
  if alternative == 'greater':
    return ge
  if alternative == 'less':
    return le
  return min(1.0, 2.0 * min(ge, le))


def naive_delong_variance(pos, neg):
  n1, n2 = len(pos), len(neg)
  psi = np.zeros((n1, n2))
  for i in range(n1):
    for j in range(n2):
      psi[i, j] = 1.0 if pos[i] > neg[j] else (0.5 if pos[i] == neg[j] else 0.0)
  v10 = psi.mean(axis=1)
  v01 = psi.mean(axis=0)
  a = psi.mean()
  s10 = np.sum((v10 - a) ** 2) / (n1 - 1)
  s01 = np.sum((v01 - a) ** 2) / (n2 - 1)
  return s10 / n1 + s01 / n2


def naive_tpr_at_fpr(pos, neg, target):
  best = 0.0
  for t in sorted(set(pos) | set(neg)) + [math.inf]:
    fpr = sum(1 for b in neg if b >= t) / len(neg)
    tpr = sum(1 for a in pos if a >= t) / len(pos)
    if fpr <= target:
      best = max(best, tpr)
  return best


def naive_epsilon(unlearned, retrained, delta, cap=50.0):
  values = sorted(set(unlearned) | set(retrained))
  mids = [(a + b) / 2 for a, b in zip(values[:-1], values[1:])]
  thresholds = [-math.inf, math.inf] + values + mids
  best = 0.0
  for t in thresholds:
    for rule in ('ge', 'lt'):
      def says_unlearned(s, t=t, rule=rule):
        return s >= t if rule == 'ge' else s < t
      fpr = sum(says_unlearned(s) for s in retrained) / len(retrained)
      fnr = sum(not says_unlearned(s) for s in unlearned) / len(unlearned)
      if fpr == 0 and fnr == 0:
        return cap
      if fpr == 0 or fnr == 0:
        continue
      terms = []
      if 1 - delta - fpr > 0:
        terms.append(math.log(1 - delta - fpr) - math.log(fnr))
      if 1 - delta - fnr > 0:
        terms.append(math.log(1 - delta - fnr) - math.log(fpr))
      if terms:
        best = max(best, max(terms))
  return min(best, cap)


def naive_bh(p, q):
  m = len(p)
  order = sorted(range(m), key=lambda i: p[i])
  k_max = 0
  for k in range(m, 0, -1):
    if p[order[k - 1]] <= q * k / m:
      k_max = k
      break
  mask = np.zeros(m, dtype=bool)
  for i in order[:k_max]:
    mask[i] = True
  # Step-up: ties with the cut-off p-value are rejected too.
  if k_max:
    cutoff = p[order[k_max - 1]]
    mask |= np.array(p) <= cutoff
  return mask


def naive_bh_adjusted(p):
  m = len(p)
  out = []
  for pi in p:
    best = math.inf
    for pj in p:
      if pj >= pi:
        rank = sum(1 for pk in p if pk <= pj)
        best = min(best, m * pj / rank)
    out.append(min(1.0, best))
  return np.array(out)


# -----------------------------------------------------------------------------
# AUC and ranks.
# -----------------------------------------------------------------------------


class TestAuc:

  @_SETTINGS
  @given(_int_samples, _int_samples)
  def test_matches_double_loop_with_ties(self, pos, neg):
    assert stats.auc(pos, neg) == pytest.approx(naive_auc(pos, neg), abs=1e-12)

  @_SETTINGS
  @given(_float_samples, _float_samples)
  def test_in_unit_interval_and_antisymmetric(self, pos, neg):
    a = stats.auc(pos, neg)
    assert 0.0 <= a <= 1.0
    assert a + stats.auc(neg, pos) == pytest.approx(1.0, abs=1e-12)

  @_SETTINGS
  @given(_int_samples, _int_samples)
  def test_invariant_under_monotone_transform(self, pos, neg):
    f = lambda v: np.exp(np.asarray(v, float) / 3.0) + np.asarray(v, float) ** 3
    assert stats.auc(f(pos), f(neg)) == pytest.approx(
        stats.auc(pos, neg), abs=1e-12
    )

  def test_known_values(self):
    assert stats.auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert stats.auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert stats.auc([1.0, 1.0], [1.0]) == 0.5

  def test_accepts_jax_arrays(self):
    jnp = pytest.importorskip('jax.numpy')
    assert stats.auc(jnp.array([1.0, 2.0]), jnp.array([0.0])) == 1.0

  def test_rank_transform_midranks(self):
    np.testing.assert_allclose(
        stats.rank_transform([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]
    )


# -----------------------------------------------------------------------------
# Mann-Whitney U.
# -----------------------------------------------------------------------------


class TestMannWhitney:

  @pytest.mark.parametrize('alternative', ['two-sided', 'greater', 'less'])
  @pytest.mark.parametrize('seed', [0, 1, 2])
  def test_exact_matches_enumeration(self, alternative, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=4) + 0.5
    y = rng.normal(size=5)
    res = stats.mann_whitney(x, y, alternative)
    assert res.p_value == pytest.approx(
        naive_exact_mwu_p(x, y, alternative), rel=1e-9
    )
    assert res.statistic == pytest.approx(naive_auc(x, y) * 20)
    assert res.auc == pytest.approx(naive_auc(x, y))
    assert (res.n1, res.n2) == (4, 5)

  @pytest.mark.parametrize('alternative', ['two-sided', 'greater', 'less'])
  @pytest.mark.parametrize('seed', [0, 1, 2, 3])
  def test_asymptotic_with_ties_matches_scipy(self, alternative, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=30).astype(float)
    y = rng.integers(1, 6, size=45).astype(float)
    res = stats.mann_whitney(x, y, alternative)
    ref = sps.mannwhitneyu(
        x, y, alternative=alternative, method='asymptotic', use_continuity=True
    )
    assert res.statistic == pytest.approx(float(ref.statistic))
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)

  @pytest.mark.parametrize('alternative', ['two-sided', 'greater', 'less'])
  def test_large_no_ties_matches_scipy_asymptotic(self, alternative):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=60) + 0.2, rng.normal(size=70)
    res = stats.mann_whitney(x, y, alternative)
    ref = sps.mannwhitneyu(x, y, alternative=alternative, method='asymptotic')
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)

  def test_auto_uses_exact_for_small_samples(self):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=15)
    ref = sps.mannwhitneyu(x, y, method='exact')
    assert stats.mann_whitney(x, y).p_value == pytest.approx(float(ref.pvalue))
    forced = stats.mann_whitney(x, y, method='asymptotic')
    ref_asym = sps.mannwhitneyu(x, y, method='asymptotic')
    assert forced.p_value == pytest.approx(float(ref_asym.pvalue))

  def test_all_tied_gives_p_one(self):
    res = stats.mann_whitney([1.0] * 30, [1.0] * 30)
    assert res.p_value == 1.0 and res.auc == 0.5

  def test_direction(self):
    x, y = np.arange(30.0) + 20, np.arange(30.0)
    assert stats.mann_whitney(x, y, 'greater').p_value < 1e-3
    assert stats.mann_whitney(x, y, 'less').p_value > 0.99

  @_SETTINGS
  @given(_int_samples, _int_samples, st.sampled_from(
      ['two-sided', 'greater', 'less']))
  def test_p_value_in_unit_interval(self, x, y, alternative):
    res = stats.mann_whitney(x, y, alternative)
    assert 0.0 <= res.p_value <= 1.0
    assert res.auc == pytest.approx(naive_auc(x, y))

  def test_calibrated_under_exchangeability(self):
    rng = np.random.default_rng(2024)
    n_draws = 2000
    p = np.array([
        stats.mann_whitney(rng.normal(size=50), rng.normal(size=80)).p_value
        for _ in range(n_draws)
    ])
    assert sps.kstest(p, 'uniform').pvalue > 0.01
    lo, hi = sps.binom.interval(0.999, n_draws, 0.05)
    assert lo <= np.sum(p <= 0.05) <= hi

  def test_calibrated_with_ties(self):
    rng = np.random.default_rng(11)
    n_draws = 2000
    p = np.array([
        stats.mann_whitney(
            rng.poisson(2.0, 40).astype(float),
            rng.poisson(2.0, 60).astype(float),
        ).p_value
        for _ in range(n_draws)
    ])
    _, hi = sps.binom.interval(0.999, n_draws, 0.05)
    assert np.sum(p <= 0.05) <= hi

  def test_exact_path_is_valid(self):
    rng = np.random.default_rng(5)
    n_draws = 2000
    p = np.array([
        stats.mann_whitney(rng.normal(size=8), rng.normal(size=10)).p_value
        for _ in range(n_draws)
    ])
    _, hi = sps.binom.interval(0.999, n_draws, 0.05)
    assert np.sum(p <= 0.05) <= hi

  def test_errors(self):
    with pytest.raises(AuditError, match='x is empty'):
      stats.mann_whitney([], [1.0])
    with pytest.raises(AuditError, match=r'y contains non-finite .*\(1 NaN'):
      stats.mann_whitney([1.0], [np.nan, 2.0])
    with pytest.raises(AuditError, match='0 NaN, 1 inf'):
      stats.mann_whitney([np.inf], [2.0])
    with pytest.raises(AuditError, match='alternative must be one of'):
      stats.mann_whitney([1.0], [2.0], 'bigger')
    with pytest.raises(AuditError, match='without ties'):
      stats.mann_whitney([1.0, 2.0], [2.0, 3.0], method='exact')
    with pytest.raises(AuditError, match='method must be one of'):
      stats.mann_whitney([1.0], [2.0], method='magic')
    with pytest.raises(AuditError, match='x must be 1-D'):
      stats.mann_whitney(np.ones((2, 2)), [2.0])
    with pytest.raises(AuditError, match='must be real-valued'):
      stats.mann_whitney(np.ones(2) * 1j, [2.0])
    with pytest.raises(AuditError, match='must be numeric'):
      stats.mann_whitney(['a', 'b'], [2.0])

  def test_result_type(self):
    res = stats.mann_whitney([1.0, 2.0], [0.0])
    assert isinstance(res, stats.TestResult)
    assert res._fields == ('statistic', 'p_value', 'auc', 'n1', 'n2')


# -----------------------------------------------------------------------------
# DeLong interval, bootstrap, power.
# -----------------------------------------------------------------------------


class TestDeLong:

  @pytest.mark.parametrize('seed', range(5))
  def test_variance_matches_brute_force(self, seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=9).astype(float)  # With ties.
    neg = rng.integers(0, 5, size=13).astype(float)
    assert stats.delong_variance(pos, neg) == pytest.approx(
        naive_delong_variance(pos, neg), rel=1e-10, abs=1e-15
    )

  def test_interval_contains_auc_and_is_clipped(self):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=40) + 1.0, rng.normal(size=50)
    lo, hi = stats.auc_confidence_interval(pos, neg, level=0.95)
    a = stats.auc(pos, neg)
    half = sps.norm.ppf(0.975) * math.sqrt(naive_delong_variance(pos, neg))
    assert lo == pytest.approx(max(0.0, a - half))
    assert hi == pytest.approx(min(1.0, a + half))
    lo99, hi99 = stats.auc_confidence_interval(pos, neg, level=0.99)
    assert lo99 < lo < a < hi < hi99
    lo, hi = stats.auc_confidence_interval([9.0, 10.0, 11.0], [0.0, 1.0, 5.0])
    assert (lo, hi) == (1.0, 1.0)
    lo, hi = stats.auc_confidence_interval([0.0, 3.0, 4.0], [1.0, 2.0, 5.0])
    assert 0.0 <= lo <= hi <= 1.0

  def test_coverage(self):
    rng = np.random.default_rng(1)
    true_auc = sps.norm.cdf(1.0 / math.sqrt(2.0))  # N(1,1) vs N(0,1).
    hits = 0
    for _ in range(400):
      lo, hi = stats.auc_confidence_interval(
          rng.normal(size=60) + 1.0, rng.normal(size=60), level=0.9
      )
      hits += lo <= true_auc <= hi
    assert 0.85 <= hits / 400 <= 0.95

  def test_errors(self):
    with pytest.raises(AuditError, match='pos needs at least 2 elements'):
      stats.auc_confidence_interval([1.0], [0.0, 1.0])
    with pytest.raises(AuditError, match=r'level must be in \(0, 1\)'):
      stats.auc_confidence_interval([1.0, 2.0], [0.0, 1.0], level=1.0)
    with pytest.raises(AuditError, match='level must be'):
      stats.auc_confidence_interval([1.0, 2.0], [0.0, 1.0], level=float('nan'))


class TestBootstrap:

  def test_deterministic_and_seed_dependent(self):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=30) + 0.5, rng.normal(size=40)
    a = stats.bootstrap_ci(stats.auc, (pos, neg), n_boot=300, seed=3)
    b = stats.bootstrap_ci(stats.auc, (pos, neg), n_boot=300, seed=3)
    c = stats.bootstrap_ci(stats.auc, (pos, neg), n_boot=300, seed=4)
    assert a == b and a != c
    assert a[0] < stats.auc(pos, neg) < a[1]

  def test_matches_manual_resampling(self):
    x = np.arange(10.0)
    rng = np.random.default_rng(5)
    manual = [np.mean(x[rng.integers(0, 10, size=10)]) for _ in range(50)]
    expected = np.quantile(manual, [0.05, 0.95])
    got = stats.bootstrap_ci(np.mean, (x,), level=0.9, n_boot=50, seed=5)
    np.testing.assert_allclose(got, expected)

  def test_mean_interval_close_to_normal_theory(self):
    x = np.random.default_rng(1).normal(size=400)
    lo, hi = stats.bootstrap_ci(np.mean, (x,), n_boot=1000, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.02)
    assert hi == pytest.approx(x.mean() + half, abs=0.02)

  def test_resamples_rows_of_2d(self):
    x = np.stack([np.arange(5.0), np.arange(5.0)], axis=1)
    lo, hi = stats.bootstrap_ci(
        lambda a: float(np.all(a[:, 0] == a[:, 1])), (x,), n_boot=20
    )
    assert lo == hi == 1.0

  def test_errors(self):
    with pytest.raises(AuditError, match='samples must be a tuple'):
      stats.bootstrap_ci(np.mean, np.ones(3))
    with pytest.raises(AuditError, match='samples is empty'):
      stats.bootstrap_ci(np.mean, ())
    with pytest.raises(AuditError, match=r'samples\[1\] is empty'):
      stats.bootstrap_ci(stats.auc, ([1.0], []))
    with pytest.raises(AuditError, match=r'samples\[0\] contains non-finite'):
      stats.bootstrap_ci(np.mean, ([np.nan],))
    with pytest.raises(AuditError, match='n_boot must be >= 2'):
      stats.bootstrap_ci(np.mean, ([1.0],), n_boot=1)
    with pytest.raises(AuditError, match='must return a scalar'):
      stats.bootstrap_ci(lambda a: a, ([1.0, 2.0],), n_boot=5)
    with pytest.raises(AuditError, match='non-finite values on 5 of 5'):
      stats.bootstrap_ci(lambda a: np.nan, ([1.0],), n_boot=5)
    with pytest.raises(AuditError, match='stat_fn must be callable'):
      stats.bootstrap_ci(3, ([1.0],))
    with pytest.raises(AuditError, match="nan_policy must be 'raise' or"):
      stats.bootstrap_ci(np.mean, ([1.0],), nan_policy='drop')
    with pytest.raises(AuditError, match='non-finite values on 5 of 5'):
      stats.bootstrap_ci(lambda a: np.nan, ([1.0],), n_boot=5,
                         nan_policy='omit')

  def test_nan_policy_omit(self):
    x = np.arange(6.0)
    # Undefined (NaN) whenever the resample's first element is 0.
    fn = lambda a: np.nan if a[0] == 0.0 else float(np.mean(a))
    with pytest.raises(AuditError, match='non-finite values on'):
      stats.bootstrap_ci(fn, (x,), n_boot=200, seed=1)
    lo, hi = stats.bootstrap_ci(fn, (x,), n_boot=200, seed=1,
                                nan_policy='omit')
    rng = np.random.default_rng(1)
    manual = [fn(x[rng.integers(0, 6, size=6)]) for _ in range(200)]
    manual = [v for v in manual if np.isfinite(v)]
    assert 0 < len(manual) < 200
    np.testing.assert_allclose((lo, hi), np.quantile(manual, [0.025, 0.975]))


class TestPower:

  def test_equals_alpha_at_null(self):
    for n1, n2 in [(5, 7), (50, 80), (300, 20)]:
      assert stats.mwu_power(0.5, n1, n2, 0.05) == pytest.approx(0.05)

  def test_monotone_and_symmetric(self):
    powers = [stats.mwu_power(0.6, n, n, 0.05) for n in (10, 30, 100, 300)]
    assert np.all(np.diff(powers) > 0) and powers[-1] > 0.95
    assert stats.mwu_power(0.7, 30, 30) > stats.mwu_power(0.6, 30, 30)
    assert stats.mwu_power(0.3, 20, 50) == pytest.approx(
        stats.mwu_power(0.7, 50, 20)
    )
    assert stats.mwu_power(1.0, 30, 30) == 1.0

  def test_hanley_mcneil_formula(self):
    a, n1, n2 = 0.7, 40, 60
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    v1 = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a))
    v1 /= n1 * n2
    c = sps.norm.isf(0.025) * math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    expected = sps.norm.cdf((0.2 - c) / math.sqrt(v1)) + sps.norm.cdf(
        (-0.2 - c) / math.sqrt(v1)
    )
    assert stats.mwu_power(a, n1, n2, 0.05) == pytest.approx(expected)

  def test_close_to_simulation(self):
    rng = np.random.default_rng(0)
    shift = 0.55  # AUC = Phi(shift / sqrt 2) ~ 0.651 for unit normals.
    true_auc = sps.norm.cdf(shift / math.sqrt(2.0))
    rejections = np.mean([
        stats.mann_whitney(rng.normal(size=40) + shift,
                           rng.normal(size=50)).p_value <= 0.05
        for _ in range(600)
    ])
    assert stats.mwu_power(true_auc, 40, 50, 0.05) == pytest.approx(
        rejections, abs=0.07
    )

  def test_errors(self):
    with pytest.raises(AuditError, match=r'alpha must be in \(0, 1\)'):
      stats.mwu_power(0.6, 10, 10, 0.0)
    with pytest.raises(AuditError, match=r'auc_alt must be in \[0, 1\]'):
      stats.mwu_power(1.2, 10, 10, 0.05)
    with pytest.raises(AuditError, match='n1 must be >= 1'):
      stats.mwu_power(0.6, 0, 10, 0.05)
    with pytest.raises(AuditError, match='n2 must be an integer'):
      stats.mwu_power(0.6, 10, 2.5, 0.05)


# -----------------------------------------------------------------------------
# KS, ROC.
# -----------------------------------------------------------------------------


def test_ks_2samp_matches_scipy():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=40), rng.normal(size=30) + 0.5
  res = stats.ks_2samp(x, y)
  ref = sps.ks_2samp(x, y)
  assert res.statistic == pytest.approx(float(ref.statistic))
  assert res.p_value == pytest.approx(float(ref.pvalue))
  assert res.auc == pytest.approx(naive_auc(x, y))
  with pytest.raises(AuditError, match='x is empty'):
    stats.ks_2samp([], y)
  with pytest.raises(AuditError, match='y contains non-finite'):
    stats.ks_2samp(x, [np.inf])


class TestRoc:

  @_SETTINGS
  @given(_int_samples, _int_samples,
         st.floats(min_value=0.0, max_value=1.0))
  def test_tpr_at_fpr_matches_threshold_sweep(self, pos, neg, target):
    assert stats.tpr_at_fpr(pos, neg, target) == pytest.approx(
        naive_tpr_at_fpr(pos, neg, target)
    )

  def test_curve(self):
    fpr, tpr, thr = stats.roc_curve([3.0, 2.0, 2.0], [2.0, 1.0])
    np.testing.assert_array_equal(thr, [np.inf, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 1 / 3, 1.0, 1.0])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    # Trapezoidal area under the ROC curve equals the rank AUC.
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 9, 40).astype(float)
    neg = rng.integers(0, 7, 30).astype(float)
    fpr, tpr, _ = stats.roc_curve(pos, neg)
    assert np.trapezoid(tpr, fpr) == pytest.approx(stats.auc(pos, neg))

  def test_low_fpr_budget(self):
    pos = np.arange(100.0)
    neg = np.arange(100.0) - 50.0
    assert stats.tpr_at_fpr(pos, neg, 0.0) == pytest.approx(0.5)
    assert stats.tpr_at_fpr(pos, neg, 0.1) == pytest.approx(0.6)
    with pytest.raises(AuditError, match=r'fpr must be in \[0, 1\]'):
      stats.tpr_at_fpr(pos, neg, 1.5)


# -----------------------------------------------------------------------------
# Clopper-Pearson.
# -----------------------------------------------------------------------------


class TestClopperPearson:

  @pytest.mark.parametrize('k,n', [(0, 10), (3, 10), (10, 10), (1, 1),
                                   (57, 200), (0, 1000)])
  @pytest.mark.parametrize('level', [0.9, 0.95, 0.999])
  def test_matches_beta_quantiles(self, k, n, level):
    lo, hi = stats.clopper_pearson(k, n, level)
    a = 1 - level
    exp_lo = 0.0 if k == 0 else sps.beta.ppf(a / 2, k, n - k + 1)
    exp_hi = 1.0 if k == n else sps.beta.ppf(1 - a / 2, k + 1, n - k)
    assert lo == pytest.approx(exp_lo) and hi == pytest.approx(exp_hi)
    ref = sps.binomtest(k, n).proportion_ci(level, method='exact')
    assert lo == pytest.approx(ref.low) and hi == pytest.approx(ref.high)
    assert lo <= k / n <= hi

  def test_closed_forms_at_boundaries(self):
    assert stats.clopper_pearson(0, 20, 0.95)[1] == pytest.approx(
        1 - 0.025 ** (1 / 20)
    )
    assert stats.clopper_pearson(20, 20, 0.95)[0] == pytest.approx(
        0.025 ** (1 / 20)
    )

  def test_errors(self):
    with pytest.raises(AuditError, match='k must be <= n'):
      stats.clopper_pearson(5, 4)
    with pytest.raises(AuditError, match='n must be >= 1'):
      stats.clopper_pearson(0, 0)
    with pytest.raises(AuditError, match='k must be an integer'):
      stats.clopper_pearson(1.5, 4)
    with pytest.raises(AuditError, match='level must be'):
      stats.clopper_pearson(1, 4, level=0.0)


# -----------------------------------------------------------------------------
# Multiple testing and combination.
# -----------------------------------------------------------------------------


class TestBenjaminiHochberg:

  @_SETTINGS
  @given(_p_lists, st.floats(min_value=0.001, max_value=0.999))
  def test_matches_naive_loop(self, p, q):
    np.testing.assert_array_equal(
        stats.benjamini_hochberg(p, q), naive_bh(p, q)
    )

  @_SETTINGS
  @given(_p_lists)
  def test_adjusted_matches_naive_and_mask(self, p):
    adj = stats.bh_adjusted(p)
    np.testing.assert_allclose(adj, naive_bh_adjusted(p), rtol=1e-12)
    assert np.all(adj >= np.asarray(p)) and np.all(adj <= 1.0)
    order = np.argsort(p, kind='stable')
    assert np.all(np.diff(adj[order]) >= 0)
    for q in (0.01, 0.05, 0.2):
      np.testing.assert_array_equal(
          stats.benjamini_hochberg(p, q), adj <= q
      )

  @_SETTINGS
  @given(_p_lists, st.floats(min_value=0.001, max_value=0.999),
         st.floats(min_value=0.001, max_value=0.999))
  def test_mask_monotone_in_q(self, p, q1, q2):
    q1, q2 = min(q1, q2), max(q1, q2)
    small = stats.benjamini_hochberg(p, q1)
    large = stats.benjamini_hochberg(p, q2)
    assert np.all(large[small])

  def test_known_example(self):
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    np.testing.assert_array_equal(
        stats.benjamini_hochberg(p, 0.05), [True, True, True, True, False]
    )
    np.testing.assert_allclose(
        stats.bh_adjusted(p), [0.025, 0.05, 0.05, 0.025, 0.5]
    )

  def test_errors(self):
    with pytest.raises(AuditError, match=r'p_values must lie in \[0, 1\]'):
      stats.benjamini_hochberg([0.1, 1.2], 0.05)
    with pytest.raises(AuditError, match='p_values is empty'):
      stats.bh_adjusted([])
    with pytest.raises(AuditError, match=r'q must be in \(0, 1\)'):
      stats.benjamini_hochberg([0.1], 0.0)
    with pytest.raises(AuditError, match='p_values contains non-finite'):
      stats.bh_adjusted([np.nan])


class TestCombination:

  def test_bonferroni(self):
    assert stats.combine_bonferroni([0.01, 0.5, 0.2]) == pytest.approx(0.03)
    assert stats.combine_bonferroni([0.5, 0.9]) == 1.0
    np.testing.assert_allclose(stats.bonferroni_adjusted([0.01, 0.5, 0.2]), [0.03, 1.0, 0.6])
    with pytest.raises(AuditError, match='must lie in'):
      stats.bonferroni_adjusted([0.1, 1.5])

  @pytest.mark.parametrize('p', [1e-300, 1e-20, 1e-16, 1e-14, 1e-6, 0.3,
                                 0.5, 0.97])
  def test_cauchy_single_and_equal_p_is_identity(self, p):
    assert stats.combine_cauchy([p]) == pytest.approx(p, rel=1e-6)
    assert stats.combine_cauchy([p, p, p]) == pytest.approx(p, rel=1e-6)

  def test_cauchy_formula_and_weights(self):
    p = np.array([0.02, 0.3, 0.7])
    w = np.array([2.0, 1.0, 1.0])
    t = np.sum(w / w.sum() * np.tan((0.5 - p) * np.pi))
    assert stats.combine_cauchy(p, w) == pytest.approx(
        0.5 - np.arctan(t) / np.pi
    )
    assert stats.combine_cauchy([0.01, 0.9], [1.0, 0.0]) == pytest.approx(0.01)
    assert stats.combine_cauchy([0.0, 0.5]) == 0.0
    assert stats.combine_cauchy([1.0, 1.0]) == pytest.approx(1.0)
    tiny = stats.combine_cauchy([1e-30, 0.5])
    assert tiny == pytest.approx(2e-30, rel=1e-6)

  def test_cauchy_calibrated_for_independent_p(self):
    rng = np.random.default_rng(0)
    p = np.array(
        [stats.combine_cauchy(rng.uniform(size=5)) for _ in range(2000)]
    )
    assert np.all((p >= 0) & (p <= 1))
    assert sps.kstest(p, 'uniform').pvalue > 0.01

  @_SETTINGS
  @given(_p_lists)
  def test_combined_in_unit_interval(self, p):
    assert 0.0 <= stats.combine_cauchy(p) <= 1.0
    assert 0.0 <= stats.combine_bonferroni(p) <= 1.0

  def test_errors(self):
    with pytest.raises(AuditError, match='weights has length 1 but p_values'):
      stats.combine_cauchy([0.1, 0.2], [1.0])
    with pytest.raises(AuditError, match='weights must be non-negative'):
      stats.combine_cauchy([0.1, 0.2], [1.0, -1.0])
    with pytest.raises(AuditError, match='weights must not all be zero'):
      stats.combine_cauchy([0.1, 0.2], [0.0, 0.0])
    with pytest.raises(AuditError, match='p_values is empty'):
      stats.combine_bonferroni([])


class TestEmpiricalPValues:

  def test_counts(self):
    ref = [1.0, 2.0, 2.0, 3.0]
    s = [0.0, 2.0, 5.0]
    np.testing.assert_allclose(
        stats.empirical_p_values(s, ref, 'greater'), [5 / 5, 4 / 5, 1 / 5]
    )
    np.testing.assert_allclose(
        stats.empirical_p_values(s, ref, 'less'), [1 / 5, 4 / 5, 5 / 5]
    )
    np.testing.assert_allclose(
        stats.empirical_p_values(s, ref, 'two-sided'), [2 / 5, 1.0, 2 / 5]
    )

  @_SETTINGS
  @given(_int_samples, _int_samples,
         st.sampled_from(['two-sided', 'greater', 'less']))
  def test_matches_naive_and_in_unit_interval(self, s, ref, alternative):
    p = stats.empirical_p_values(s, ref, alternative)
    n = len(ref)
    g = np.array([(1 + sum(r >= v for r in ref)) / (1 + n) for v in s])
    l = np.array([(1 + sum(r <= v for r in ref)) / (1 + n) for v in s])
    expected = {'greater': g, 'less': l,
                'two-sided': np.minimum(1, 2 * np.minimum(g, l))}[alternative]
    np.testing.assert_allclose(p, expected)
    assert np.all((p > 0) & (p <= 1))

  @pytest.mark.parametrize('alternative', ['two-sided', 'greater', 'less'])
  def test_calibrated_under_exchangeability(self, alternative):
    rng = np.random.default_rng(99)
    n_draws, n_ref = 2000, 199
    draws = rng.normal(size=(n_draws, n_ref + 1))
    p = np.array([
        stats.empirical_p_values(d[:1], d[1:], alternative)[0] for d in draws
    ])
    assert sps.kstest(p, 'uniform').pvalue > 0.01
    lo, hi = sps.binom.interval(0.999, n_draws, 0.05)
    assert lo <= np.sum(p <= 0.05) <= hi

  def test_errors(self):
    with pytest.raises(AuditError, match='reference is empty'):
      stats.empirical_p_values([1.0], [])
    with pytest.raises(AuditError, match='scores contains non-finite'):
      stats.empirical_p_values([np.nan], [1.0])
    with pytest.raises(AuditError, match='alternative must be one of'):
      stats.empirical_p_values([1.0], [1.0], 'up')


# -----------------------------------------------------------------------------
# Population MIA.
# -----------------------------------------------------------------------------


def _sklearn_protocol(pos, neg, n_splits, seed):
  """The same protocol with scikit-learn's (near-unpenalised) regression."""
  linear_model = pytest.importorskip('sklearn.linear_model')
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


class TestLogisticCv:

  @pytest.mark.parametrize('seed', [0, 1, 2])
  def test_matches_sklearn_reference(self, seed):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=137) * 2.0 + 1.0
    neg = rng.normal(size=90) * 10.0 + 50.0  # Far from 0: needs standardising.
    neg = neg - 49.0
    got = stats.logistic_cv_accuracy(pos, neg, n_splits=10, seed=seed)
    assert got == pytest.approx(_sklearn_protocol(pos, neg, 10, seed), abs=1e-9)

  def test_fit_matches_sklearn(self):
    linear_model = pytest.importorskip('sklearn.linear_model')
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = (rng.uniform(size=200) < 1 / (1 + np.exp(-(1.5 * x - 0.3)))).astype(
        float
    )
    fit = stats._fit_logistic_1d  # pylint: disable=protected-access
    w, b = fit(x, y, l2=0.5)
    clf = linear_model.LogisticRegression(C=2.0, tol=1e-12, max_iter=10000)
    clf.fit(x[:, None], y)
    assert w == pytest.approx(clf.coef_[0, 0], rel=1e-5)
    assert b == pytest.approx(clf.intercept_[0], rel=1e-5)

  def test_chance_and_separable(self):
    rng = np.random.default_rng(0)
    acc = stats.logistic_cv_accuracy(rng.normal(size=500), rng.normal(size=700))
    assert abs(acc - 0.5) < 0.06
    acc = stats.logistic_cv_accuracy(
        rng.normal(size=100) + 100.0, rng.normal(size=100)
    )
    assert acc == 1.0
    assert stats.logistic_cv_accuracy(np.ones(20), np.ones(20)) <= 0.5

  def test_deterministic(self):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=80) + 0.4, rng.normal(size=120)
    a = stats.logistic_cv_accuracy(pos, neg, seed=5)
    assert a == stats.logistic_cv_accuracy(pos, neg, seed=5)

  def test_indiscernibility(self):
    assert stats.indiscernibility(0.5) == 1.0
    assert stats.indiscernibility(1.0) == 0.0
    assert stats.indiscernibility(0.0) == 0.0
    assert stats.indiscernibility(0.6) == pytest.approx(0.8)
    with pytest.raises(AuditError, match=r'acc must be in \[0, 1\]'):
      stats.indiscernibility(1.1)

  def test_errors(self):
    with pytest.raises(AuditError, match='at least n_splits=10 scores'):
      stats.logistic_cv_accuracy(np.ones(9), np.ones(50))
    with pytest.raises(AuditError, match='n_splits must be >= 2'):
      stats.logistic_cv_accuracy(np.ones(9), np.ones(50), n_splits=1)
    with pytest.raises(AuditError, match='scores_neg is empty'):
      stats.logistic_cv_accuracy(np.ones(9), [])


# -----------------------------------------------------------------------------
# NeurIPS 2023 challenge score.
# -----------------------------------------------------------------------------


class TestNeurips23:

  @_SETTINGS
  @given(_int_samples, _int_samples,
         st.sampled_from([1e-5, 0.01, 0.3]))
  def test_epsilon_matches_brute_force(self, u, r, delta):
    assert stats.neurips23_epsilon(u, r, delta) == pytest.approx(
        naive_epsilon(u, r, delta), rel=1e-12, abs=1e-12
    )

  @pytest.mark.parametrize('seed', range(3))
  def test_epsilon_matches_brute_force_continuous(self, seed):
    rng = np.random.default_rng(seed)
    u, r = rng.normal(size=40) + 0.7, rng.normal(size=40)
    assert stats.neurips23_epsilon(u, r) == pytest.approx(
        naive_epsilon(list(u), list(r), 1e-5), rel=1e-12
    )

  def test_epsilon_special_cases(self):
    assert stats.neurips23_epsilon([1.0] * 8, [1.0] * 8) == 0.0
    assert stats.neurips23_epsilon([5.0, 6.0], [1.0, 2.0]) == 50.0
    assert stats.neurips23_epsilon(
        [5.0, 6.0], [1.0, 2.0], epsilon_cap=None
    ) == math.inf
    rng = np.random.default_rng(0)
    same = stats.neurips23_epsilon(rng.normal(size=512), rng.normal(size=512))
    far = stats.neurips23_epsilon(
        rng.normal(size=512) + 2, rng.normal(size=512)
    )
    assert 0.0 <= same < 2.0 < far < math.log(511) + 1e-9
    # Symmetric in which sample is called "unlearned".
    u, r = rng.normal(size=30), rng.normal(size=30) + 0.5
    assert stats.neurips23_epsilon(u, r) == pytest.approx(
        stats.neurips23_epsilon(r, u)
    )

  def test_epsilons_batched(self):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(16, 5))
    r = rng.normal(size=(16, 5)) + np.arange(5)
    eps = stats.neurips23_epsilons(u, r)
    assert eps.shape == (5,)
    for i in range(5):
      assert eps[i] == stats.neurips23_epsilon(u[:, i], r[:, i])
    with pytest.raises(AuditError, match='has 5 examples but retrained'):
      stats.neurips23_epsilons(u, r[:, :4])
    with pytest.raises(AuditError, match='must be 2-D'):
      stats.neurips23_epsilons(u[:, 0], r[:, 0])

  def test_forget_score_buckets(self):
    eps = [0.0, 0.49, 0.5, 1.2, 6.9, 7.0, math.inf]
    expected = [1.0, 1.0, 0.5, 0.25, 2.0**-13, 0.0, 0.0]
    assert stats.neurips23_forget_score(eps) == pytest.approx(np.mean(expected))
    # ceil(log(99)) = 5: ten bins; eps = 4.9 is the last one.
    assert stats.neurips23_forget_score([4.9], num_models=100) == 2.0**-9
    assert stats.neurips23_forget_score([5.0], num_models=100) == 0.0
    assert stats.neurips23_forget_score([1.0], max_epsilon=1.0) == 0.0
    assert stats.neurips23_forget_score([0.9], max_epsilon=1.0) == 0.5

  def test_forget_score_from_simulated_models(self):
    rng = np.random.default_rng(1)
    u = rng.normal(size=(64, 20))
    good = stats.neurips23_forget_score(
        stats.neurips23_epsilons(u, rng.normal(size=(64, 20))), num_models=64
    )
    mid = stats.neurips23_forget_score(
        stats.neurips23_epsilons(u, rng.normal(size=(64, 20)) + 1.0),
        num_models=64,
    )
    bad = stats.neurips23_forget_score(
        stats.neurips23_epsilons(u, rng.normal(size=(64, 20)) + 3.0),
        num_models=64,
    )
    # Even identical distributions score well below 1: the maximum over all
    # thresholds picks up sampling noise in the tails.
    assert 0.15 < good < 0.5 and 0.02 < mid < 0.1 and bad < 0.02

  def test_final_score(self):
    assert stats.neurips23_final_score(0.5, 0.9, 1.0, 0.8, 0.9) == (
        pytest.approx(0.5 * 0.9 * 0.8 / 0.9)
    )
    with pytest.raises(AuditError, match='ra_r must be > 0'):
      stats.neurips23_final_score(0.5, 0.9, 0.0, 0.8, 0.9)
    with pytest.raises(AuditError, match=r'forget_score must be in \[0, 1\]'):
      stats.neurips23_final_score(1.5, 0.9, 1.0, 0.8, 0.9)

  def test_errors(self):
    with pytest.raises(AuditError, match='unlearned_scores is empty'):
      stats.neurips23_epsilon([], [1.0])
    with pytest.raises(AuditError, match='retrained_scores contains non-fin'):
      stats.neurips23_epsilon([1.0], [np.nan])
    with pytest.raises(AuditError, match=r'delta must be in \(0, 1\)'):
      stats.neurips23_epsilon([1.0], [1.0], delta=0.0)
    with pytest.raises(AuditError, match='epsilon_cap must be > 0'):
      stats.neurips23_epsilon([1.0], [1.0], epsilon_cap=0.0)
    with pytest.raises(AuditError, match='epsilons must be >= 0'):
      stats.neurips23_forget_score([-1.0])
    with pytest.raises(AuditError, match='epsilons contains NaN'):
      stats.neurips23_forget_score([np.nan])
    with pytest.raises(AuditError, match='num_models must be >= 3'):
      stats.neurips23_forget_score([1.0], num_models=2)


def test_binomial_test_and_power_against_scipy():
  from scipy import stats as _sps
  for k, n, p0 in ((0, 10, 0.1), (3, 10, 0.1), (10, 10, 0.5), (7, 50, 0.02)):
    ref = 1.0 if k == 0 else _sps.binomtest(k, n, p0, alternative='greater').pvalue
    np.testing.assert_allclose(stats.binomial_test_greater(k, n, p0), ref, rtol=1e-9)
  # Power by simulation.
  rng = np.random.default_rng(0)
  n, p0, p1 = 30, 0.1, 0.3
  sims = rng.binomial(n, p1, 20000)
  emp = np.mean([stats.binomial_test_greater(int(k), n, p0) <= 0.05 for k in sims])
  assert abs(stats.binomial_power(n, p0, p1, 0.05) - emp) < 0.02
  assert stats.binomial_power(5, 0.99, 1.0, 0.05) == 0.0     # nothing can reject
  with pytest.raises(AuditError):
    stats.binomial_test_greater(11, 10, 0.1)
