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
# DeLong interval, power.
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

  def test_errors(self):
    with pytest.raises(AuditError, match=r'p_values must lie in \[0, 1\]'):
      stats.benjamini_hochberg([0.1, 1.2], 0.05)
    with pytest.raises(AuditError, match='p_values is empty'):
      stats.benjamini_hochberg([], 0.05)
    with pytest.raises(AuditError, match=r'q must be in \(0, 1\)'):
      stats.benjamini_hochberg([0.1], 0.0)
    with pytest.raises(AuditError, match='p_values contains non-finite'):
      stats.benjamini_hochberg([np.nan], 0.05)


class TestCombination:

  def test_bonferroni(self):
    assert stats.combine_bonferroni([0.01, 0.5, 0.2]) == pytest.approx(0.03)
    assert stats.combine_bonferroni([0.5, 0.9]) == 1.0
    np.testing.assert_allclose(stats.bonferroni_adjusted([0.01, 0.5, 0.2]), [0.03, 1.0, 0.6])
    with pytest.raises(AuditError, match='must lie in'):
      stats.bonferroni_adjusted([0.1, 1.5])

  @_SETTINGS
  @given(_p_lists)
  def test_combined_in_unit_interval(self, p):
    assert 0.0 <= stats.combine_bonferroni(p) <= 1.0

  def test_errors(self):
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
