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
"""Host-side statistics for unlearning audits (NumPy/SciPy, float64).

Everything here runs on the host on small 1-D arrays of per-example scores
(one score per record, or one per model for a fixed record), after the heavy
per-example work has been done in JAX. The functions are exact where an exact
answer is cheap, document every approximation they make, and validate their
inputs at the boundary: empty arrays, NaN/inf values, wrong shapes, mismatched
lengths and out-of-range levels raise :class:`jaxaudit.errors.AuditError` with
a message naming the offending argument.

Conventions:
  * "pos"/"x" is the sample that is expected to score *higher* under the
    alternative (e.g. members, or records of Du); "neg"/"y" the reference.
  * AUC is ``P(pos > neg) + 0.5 P(pos == neg)``, i.e. ``U / (n1 n2)`` where
    ``U`` is the Mann-Whitney statistic of ``pos``.
  * All results are returned as Python floats or float64/bool NumPy arrays.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as sps

from jaxaudit.errors import AuditError

__all__ = [
    'TestResult',
    'auc',
    'auc_confidence_interval',
    'benjamini_hochberg',
    'binomial_power',
    'binomial_test_greater',
    'bonferroni_adjusted',
    'clopper_pearson',
    'combine_bonferroni',
    'maxt_adjusted_mwu',
    'permutation_maxt_mwu',
    'delong_variance',
    'empirical_p_values',
    'ks_2samp',
    'mann_whitney',
    'mwu_power',
]

_ALTERNATIVES = ('two-sided', 'greater', 'less')
# Largest sample size for which `mann_whitney` uses the exact null law.
_EXACT_MAX_N = 20


class TestResult(NamedTuple):
  """Result of a two-sample test.

  Attributes:
    statistic: the test statistic (Mann-Whitney ``U`` of the first sample, or
      the Kolmogorov-Smirnov ``D``).
    p_value: the p-value in [0, 1].
    auc: ``P(x > y) + 0.5 P(x == y)``, the effect size (0.5 = no effect).
    n1: size of the first sample.
    n2: size of the second sample.
  """

  __test__ = False  # Not a pytest test class despite its name.

  statistic: float
  p_value: float
  auc: float
  n1: int
  n2: int


# -----------------------------------------------------------------------------
# Validation helpers.
# -----------------------------------------------------------------------------


def _as_float_array(x: Any, name: str) -> np.ndarray:
  """Converts `x` to a float64 array, rejecting non-numeric input."""
  try:
    arr = np.asarray(x)
  except Exception as e:  # pylint: disable=broad-except
    raise AuditError(
        f'{name} must be array-like; got {type(x).__name__}'
    ) from e
  if arr.dtype.kind == 'c':
    raise AuditError(f'{name} must be real-valued; got dtype {arr.dtype}')
  if arr.dtype.kind in 'US':
    raise AuditError(f'{name} must be numeric; got dtype {arr.dtype}')
  try:
    arr = arr.astype(np.float64)
  except (TypeError, ValueError) as e:
    raise AuditError(f'{name} must be numeric; got dtype {arr.dtype}') from e
  return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
  if not np.all(np.isfinite(arr)):
    n_nan = int(np.sum(np.isnan(arr)))
    n_inf = int(np.sum(np.isinf(arr)))
    raise AuditError(
        f'{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)'
    )


def _as_1d(x: Any, name: str, *, min_size: int = 1) -> np.ndarray:
  """Validates a 1-D finite numeric array with at least `min_size` entries."""
  arr = _as_float_array(x, name)
  if arr.ndim != 1:
    raise AuditError(f'{name} must be 1-D; got shape {arr.shape}')
  if arr.size == 0:
    raise AuditError(f'{name} is empty')
  if arr.size < min_size:
    raise AuditError(
        f'{name} needs at least {min_size} elements; got {arr.size}'
    )
  _check_finite(arr, name)
  return arr


def _as_p_values(p_values: Any, name: str = 'p_values') -> np.ndarray:
  p = _as_1d(p_values, name)
  if np.any(p < 0.0) or np.any(p > 1.0):
    raise AuditError(
        f'{name} must lie in [0, 1]; got range [{p.min()}, {p.max()}]'
    )
  return p


def _check_open_unit(value: Any, name: str) -> float:
  """Validates a probability-like level strictly inside (0, 1)."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise AuditError(f'{name} must be a number in (0, 1); got {value!r}') from e
  if not 0.0 < v < 1.0:  # Also rejects NaN.
    raise AuditError(f'{name} must be in (0, 1); got {value!r}')
  return v


def check_unit(value: Any, name: str) -> float:
  """A float in the closed interval [0, 1]; AuditError otherwise."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise AuditError(f'{name} must be a number in [0, 1]; got {value!r}') from e
  if not 0.0 <= v <= 1.0:
    raise AuditError(f'{name} must be in [0, 1]; got {value!r}')
  return v


def _check_int(value: Any, name: str, *, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)
  ):
    raise AuditError(f'{name} must be an integer; got {value!r}')
  v = int(value)
  if v < minimum:
    raise AuditError(f'{name} must be >= {minimum}; got {v}')
  return v


def _check_alternative(alternative: str) -> str:
  if alternative not in _ALTERNATIVES:
    raise AuditError(
        f'alternative must be one of {_ALTERNATIVES}; got {alternative!r}'
    )
  return alternative


# -----------------------------------------------------------------------------
# Ranks, AUC and the Mann-Whitney U test.
# -----------------------------------------------------------------------------


def _u_statistic(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray]:
  """Mann-Whitney U of `pos` and the pooled mid-ranks (validated inputs)."""
  n1 = pos.size
  ranks = sps.rankdata(np.concatenate([pos, neg]), method='average')
  u1 = float(np.sum(ranks[:n1])) - n1 * (n1 + 1) / 2.0
  return u1, ranks


def auc(pos: Any, neg: Any) -> float:
  """Area under the ROC curve, ``P(pos > neg) + 0.5 P(pos == neg)``.

  Computed from mid-ranks of the pooled sample in O(n log n); equal to
  ``U / (n1 n2)`` with ``U`` the Mann-Whitney statistic of `pos`.

  Args:
    pos: scores of the positive sample, shape (n1,).
    neg: scores of the negative sample, shape (n2,).

  Returns:
    The AUC in [0, 1]; 0.5 means the scores do not separate the samples.
  """
  pos = _as_1d(pos, 'pos')
  neg = _as_1d(neg, 'neg')
  u1, _ = _u_statistic(pos, neg)
  return u1 / (pos.size * neg.size)


def _tie_term(ranks_or_values: np.ndarray) -> float:
  """Sum over tie groups of ``t^3 - t``."""
  _, counts = np.unique(ranks_or_values, return_counts=True)
  counts = counts.astype(np.float64)
  return float(np.sum(counts**3 - counts))


def mann_whitney(
    x: Any,
    y: Any,
    alternative: str = 'two-sided',
    *,
    method: str = 'auto',
) -> TestResult:
  """Mann-Whitney U (Wilcoxon rank-sum) test of ``x`` against ``y``.

  The null hypothesis is that ``x`` and ``y`` are exchangeable (drawn from one
  distribution). ``alternative='greater'`` means ``x`` tends to be larger
  (AUC > 0.5), ``'less'`` that it tends to be smaller.

  P-values:
    * ``method='exact'`` (used by ``'auto'`` when there are no ties and both
      samples have at most 20 elements): the exact permutation law of U
      (``scipy.stats.mannwhitneyu(method='exact')``).
    * ``method='asymptotic'`` (``'auto'`` otherwise): normal approximation
      with mean ``n1 n2 / 2``, tie-corrected variance
      ``n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))`` and a continuity
      correction of 0.5; identical to SciPy's ``method='asymptotic'``. If every
      value is tied the variance is 0 and the p-value is 1 (no evidence).

  Args:
    x: first sample, shape (n1,).
    y: second sample, shape (n2,).
    alternative: ``'two-sided'``, ``'greater'`` or ``'less'``.
    method: ``'auto'``, ``'exact'`` or ``'asymptotic'``. ``'exact'`` raises if
      the samples contain ties.

  Returns:
    A :class:`TestResult` with ``statistic`` = U of ``x`` (the number of pairs
    with x > y, ties counting one half), the p-value, ``auc = U / (n1 n2)``,
    n1 and n2.
  """
  x = _as_1d(x, 'x')
  y = _as_1d(y, 'y')
  _check_alternative(alternative)
  if method not in ('auto', 'exact', 'asymptotic'):
    raise AuditError(
        "method must be one of ('auto', 'exact', 'asymptotic'); "
        f'got {method!r}'
    )
  n1, n2 = x.size, y.size
  u1, ranks = _u_statistic(x, y)
  n = n1 + n2
  has_ties = np.unique(ranks).size < n
  if method == 'exact' and has_ties:
    raise AuditError(
        "method='exact' needs samples without ties; use 'asymptotic'"
    )
  use_exact = method == 'exact' or (
      method == 'auto' and not has_ties and max(n1, n2) <= _EXACT_MAX_N
  )
  if use_exact:
    res = sps.mannwhitneyu(x, y, alternative=alternative, method='exact')
    p = float(res.pvalue)
  else:
    mu = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - _tie_term(ranks) / (n * (n - 1)))
    if var <= 0.0:
      p = 1.0
    else:
      sd = math.sqrt(var)
      if alternative == 'two-sided':
        u = max(u1, n1 * n2 - u1)
        p = 2.0 * float(sps.norm.sf((u - mu - 0.5) / sd))
      elif alternative == 'greater':
        p = float(sps.norm.sf((u1 - mu - 0.5) / sd))
      else:
        p = float(sps.norm.sf((n1 * n2 - u1 - mu - 0.5) / sd))
  p = min(max(p, 0.0), 1.0)
  return TestResult(
      statistic=u1, p_value=p, auc=u1 / (n1 * n2), n1=n1, n2=n2
  )


def _delong_components(
    pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """DeLong structural components V10 (n1,) and V01 (n2,) via mid-ranks.

  ``V10_i = mean_j psi(pos_i, neg_j)`` and ``V01_j = mean_i psi(pos_i, neg_j)``
  with ``psi(a, b) = 1[a > b] + 0.5 1[a == b]`` (Sun & Xu 2014: mid-rank in the
  pooled sample minus mid-rank within the own sample counts the other sample's
  elements below, ties counting one half).
  """
  n1, n2 = pos.size, neg.size
  pooled = sps.rankdata(np.concatenate([pos, neg]), method='average')
  r_pos = sps.rankdata(pos, method='average')
  r_neg = sps.rankdata(neg, method='average')
  v10 = (pooled[:n1] - r_pos) / n2
  v01 = 1.0 - (pooled[n1:] - r_neg) / n1
  return v10, v01


def delong_variance(pos: Any, neg: Any) -> float:
  """DeLong (1988) estimate of the variance of the empirical AUC.

  ``Var = S10 / n1 + S01 / n2`` where S10, S01 are the unbiased sample
  variances of the structural components (see :func:`auc_confidence_interval`).

  Args:
    pos: positive scores, shape (n1,), n1 >= 2.
    neg: negative scores, shape (n2,), n2 >= 2.

  Returns:
    The variance estimate (>= 0); 0 when the samples are perfectly separated.
  """
  pos = _as_1d(pos, 'pos', min_size=2)
  neg = _as_1d(neg, 'neg', min_size=2)
  v10, v01 = _delong_components(pos, neg)
  return float(
      np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size
  )


def auc_confidence_interval(
    pos: Any, neg: Any, level: float = 0.95
) -> tuple[float, float]:
  """Wald confidence interval for the AUC with DeLong's variance.

  ``auc +/- z_{(1+level)/2} * sqrt(Var_DeLong)``, clipped to [0, 1]. The
  interval collapses to a point when the samples are perfectly separated (the
  DeLong variance is then 0); more data is needed there.

  Args:
    pos: positive scores, shape (n1,), n1 >= 2.
    neg: negative scores, shape (n2,), n2 >= 2.
    level: confidence level in (0, 1).

  Returns:
    ``(lo, hi)`` with ``0 <= lo <= auc <= hi <= 1``.
  """
  level = _check_open_unit(level, 'level')
  pos = _as_1d(pos, 'pos', min_size=2)
  neg = _as_1d(neg, 'neg', min_size=2)
  v10, v01 = _delong_components(pos, neg)
  a = float(np.mean(v10))
  var = np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size
  half = float(sps.norm.ppf(0.5 + level / 2.0)) * math.sqrt(max(var, 0.0))
  return max(0.0, a - half), min(1.0, a + half)


def ks_2samp(
    x: Any, y: Any, alternative: str = 'two-sided'
) -> TestResult:
  """Two-sample Kolmogorov-Smirnov test (validated wrapper of SciPy's).

  Args:
    x: first sample, shape (n1,).
    y: second sample, shape (n2,).
    alternative: ``'two-sided'``, ``'greater'`` or ``'less'`` in SciPy's
      convention (``'less'``: the CDF of x lies below that of y somewhere,
      i.e. x tends to be larger).

  Returns:
    A :class:`TestResult` with ``statistic`` = D, the p-value (SciPy's
    ``method='auto'``: exact for small samples, asymptotic otherwise), the AUC
    of x against y as effect size, n1 and n2.
  """
  x = _as_1d(x, 'x')
  y = _as_1d(y, 'y')
  _check_alternative(alternative)
  res = sps.ks_2samp(x, y, alternative=alternative, method='auto')
  u1, _ = _u_statistic(x, y)
  return TestResult(
      statistic=float(res.statistic),
      p_value=min(max(float(res.pvalue), 0.0), 1.0),
      auc=u1 / (x.size * y.size),
      n1=x.size,
      n2=y.size,
  )


# -----------------------------------------------------------------------------
# Power.
# -----------------------------------------------------------------------------


def mwu_power(auc_alt: float, n1: int, n2: int, alpha: float = 0.05) -> float:
  """Approximate power of the two-sided Mann-Whitney test at level `alpha`.

  Approximation (normal theory on the AUC scale):
    * Under H0 the empirical AUC has mean 1/2 and variance
      ``v0 = (n1 + n2 + 1) / (12 n1 n2)``, so the test rejects when
      ``|AUC - 1/2| > z_{1-alpha/2} sqrt(v0)``.
    * Under the alternative the AUC is normal with mean ``A = auc_alt`` and the
      Hanley & McNeil (1982) variance
      ``v1 = [A(1-A) + (n1-1)(Q1-A^2) + (n2-1)(Q2-A^2)] / (n1 n2)`` with
      ``Q1 = A / (2 - A)`` and ``Q2 = 2 A^2 / (1 + A)`` (exact for exponential
      score distributions, a good approximation for most others). n1 is the
      size of the sample that scores higher when A > 1/2.
    * ``power = Phi((d - c) / sqrt(v1)) + Phi((-d - c) / sqrt(v1))`` with
      ``d = |A - 1/2|`` and ``c = z_{1-alpha/2} sqrt(v0)``.
  For A < 1/2 the roles are swapped (A -> 1 - A, n1 <-> n2), which makes the
  result consistent with ``auc(x, y) = 1 - auc(y, x)``. At A = 1/2 the two
  variances coincide and the power equals `alpha`. The continuity correction
  and the exact small-sample law are ignored; expect a few percent error for
  n1, n2 < 20.

  Args:
    auc_alt: the true AUC under the alternative, in [0, 1].
    n1: size of the first sample (>= 1).
    n2: size of the second sample (>= 1).
    alpha: significance level in (0, 1).

  Returns:
    The approximate power in [0, 1] (equal to `alpha` at auc_alt = 1/2).
  """
  a = check_unit(auc_alt, 'auc_alt')
  n1 = _check_int(n1, 'n1', minimum=1)
  n2 = _check_int(n2, 'n2', minimum=1)
  alpha = _check_open_unit(alpha, 'alpha')
  if a < 0.5:
    a, n1, n2 = 1.0 - a, n2, n1
  v0 = (n1 + n2 + 1) / (12.0 * n1 * n2)
  q1 = a / (2.0 - a)
  q2 = 2.0 * a * a / (1.0 + a)
  v1 = (
      a * (1.0 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)
  ) / (n1 * n2)
  c = float(sps.norm.isf(alpha / 2.0)) * math.sqrt(v0)
  d = a - 0.5
  if v1 <= 0.0:  # A == 1: the empirical AUC is 1 with certainty.
    return 1.0 if d > c else 0.0
  s1 = math.sqrt(v1)
  power = float(sps.norm.cdf((d - c) / s1) + sps.norm.cdf((-d - c) / s1))
  return min(max(power, 0.0), 1.0)


# -----------------------------------------------------------------------------
# Binomial proportions.
# -----------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
  """Exact (Clopper-Pearson) confidence interval for a binomial proportion.

  ``lo = Beta.ppf((1-level)/2; k, n-k+1)`` (0 if k = 0) and
  ``hi = Beta.ppf((1+level)/2; k+1, n-k)`` (1 if k = n). Coverage is at least
  `level` for every true proportion.

  Args:
    k: number of successes, 0 <= k <= n.
    n: number of trials, n >= 1.
    level: confidence level in (0, 1).

  Returns:
    ``(lo, hi)`` with ``0 <= lo <= k/n <= hi <= 1``.
  """
  n = _check_int(n, 'n', minimum=1)
  k = _check_int(k, 'k', minimum=0)
  if k > n:
    raise AuditError(f'k must be <= n; got k={k}, n={n}')
  level = _check_open_unit(level, 'level')
  tail = (1.0 - level) / 2.0
  lo = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
  hi = 1.0 if k == n else float(sps.beta.ppf(1.0 - tail, k + 1, n - k))
  return lo, hi


def binomial_test_greater(k: int, n: int, p0: float) -> float:
  """Exact one-sided binomial test of H0: rate <= p0 against rate > p0.

  ``p = P(Bin(n, p0) >= k)`` (1 when k = 0; 0 < p when p0 > 0; when p0 = 0 the
  p-value is 1 for k = 0 and 0 otherwise).

  Args:
    k: successes, 0 <= k <= n.
    n: trials, n >= 1.
    p0: the largest success rate allowed under H0, in [0, 1].

  Returns:
    The p-value in [0, 1].
  """
  n = _check_int(n, 'n', minimum=1)
  k = _check_int(k, 'k', minimum=0)
  if k > n:
    raise AuditError(f'k must be <= n; got k={k}, n={n}')
  p0 = check_unit(p0, 'p0')
  if k == 0:
    return 1.0
  return float(np.clip(sps.binom.sf(k - 1, n, p0), 0.0, 1.0))


def binomial_power(n: int, p0: float, p1: float, alpha: float = 0.05) -> float:
  """Power of :func:`binomial_test_greater` at level ``alpha`` when the true rate is p1.

  The test rejects for k >= k*, the smallest k with ``P(Bin(n, p0) >= k) <= alpha``;
  the power is ``P(Bin(n, p1) >= k*)`` (0 if no k <= n rejects).

  Args:
    n: trials, n >= 1.
    p0: rate under H0, in [0, 1].
    p1: rate under the alternative, in [0, 1].
    alpha: level in (0, 1).

  Returns:
    The power in [0, 1].
  """
  n = _check_int(n, 'n', minimum=1)
  p0 = check_unit(p0, 'p0')
  p1 = check_unit(p1, 'p1')
  alpha = _check_open_unit(alpha, 'alpha')
  ks = np.arange(1, n + 1)
  reject = sps.binom.sf(ks - 1, n, p0) <= alpha
  if not reject.any():
    return 0.0
  k_star = int(ks[np.argmax(reject)])
  return float(sps.binom.sf(k_star - 1, n, p1))


# -----------------------------------------------------------------------------
# Multiple testing and p-value combination.
# -----------------------------------------------------------------------------


def benjamini_hochberg(p_values: Any, q: float = 0.05) -> np.ndarray:
  """Benjamini-Hochberg step-up procedure controlling the FDR at level `q`.

  Rejects the hypotheses with the k smallest p-values, where k is the largest
  index with ``p_(k) <= k q / m`` (valid for independent or positively
  dependent p-values).

  Args:
    p_values: p-values in [0, 1], shape (m,).
    q: target false-discovery rate in (0, 1).

  Returns:
    Boolean mask of shape (m,), True for rejected hypotheses.
  """
  p = _as_p_values(p_values)
  q = _check_open_unit(q, 'q')
  m = p.size
  p_sorted = np.sort(p)
  below = np.nonzero(p_sorted <= q * np.arange(1, m + 1) / m)[0]
  if below.size == 0:
    return np.zeros(m, dtype=bool)
  cutoff = p_sorted[below[-1]]
  return p <= cutoff


def bonferroni_adjusted(p_values: Any) -> np.ndarray:
  """Bonferroni-adjusted p-values ``min(1, m * p_i)``, shape (m,) -> (m,).

  Rejecting those <= alpha keeps the family-wise error <= alpha under any
  dependence.
  """
  p = _as_p_values(p_values)
  return np.minimum(1.0, p.size * p)


def combine_bonferroni(p_values: Any) -> float:
  """Bonferroni combination ``min(1, m * min_i p_i)``.

  Valid under any dependence between the p-values.

  Args:
    p_values: p-values in [0, 1], shape (m,).

  Returns:
    The combined p-value in [0, 1].
  """
  return float(np.min(bonferroni_adjusted(p_values)))


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
  """(T, T) correlation of the pooled (midrank) vectors of T scores; None if one is constant."""
  t = x.shape[0]
  ranks = np.stack([sps.rankdata(r) for r in np.concatenate([x, y], axis=1)])
  ranks -= ranks.mean(1, keepdims=True)
  norm = np.sqrt(np.sum(ranks * ranks, axis=1))
  if np.any(norm == 0):
    return None
  corr = (ranks @ ranks.T) / np.outer(norm, norm)
  return 0.5 * (corr + corr.T) + 1e-9 * np.eye(t)


def maxt_critical_level(x: Any, y: Any, alpha: float, *, min_size: int = 20) -> float:
  """The raw two-sided level at which one test of a max-T family rejects.

  The level ℓ with ``P(max_i |Z_i| >= z) = alpha`` for Z ~ N(0, R) (R the
  rank correlation of :func:`maxt_adjusted_mwu`) and ``z`` its normal quantile
  ``isf(ℓ / 2)``: a test whose raw p-value is ≤ ℓ has max-T adjusted p ≤
  alpha. Between ``alpha / T`` (independent statistics: Bonferroni) and
  ``alpha`` (identical ones); ``alpha / T`` where :func:`maxt_adjusted_mwu`
  falls back to Bonferroni. Used for power estimates of the family.

  Args:
    x: (T, n1) scores of the first set.
    y: (T, n2) scores of the second set.
    alpha: family-wise level in (0, 1).
    min_size: as in :func:`maxt_adjusted_mwu`.
  Returns:
    ℓ in [alpha / T, alpha].
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  alpha = _check_open_unit(alpha, 'alpha')
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
    raise AuditError(f'maxt_critical_level expects (T, n1) and (T, n2); got {x.shape}, {y.shape}')
  live = np.ptp(np.concatenate([x, y], axis=1), axis=1) > 0   # as in maxt_adjusted_mwu
  if live.any() and not live.all():
    x, y = x[live], y[live]
  t = x.shape[0]
  if t == 1:
    return float(alpha)
  if min(x.shape[1], y.shape[1]) < min_size:
    return float(alpha / t)
  corr = _rank_correlation(x, y)
  # The (1 − alpha) quantile of max_i |Z_i| under the law maxt_adjusted_mwu uses.
  hi = float(np.quantile(_maxt_null(corr), 1.0 - alpha))
  return float(np.clip(2.0 * sps.norm.sf(hi), alpha / t, alpha))


# Draws of the joint normal law behind max-T (fixed seed: every adjustment is deterministic).
MAXT_DRAWS = 100_000
# Below this Bonferroni bound the adjusted p-value is the bound itself: the Monte Carlo law
# has too few draws out there, and the bound is nearly exact (the family's tail is a union
# of nearly disjoint single-test tails).
MAXT_BONFERRONI_BELOW = 1e-3


def _maxt_null(corr: np.ndarray) -> np.ndarray:
  """Sorted max_i |Z_i| of MAXT_DRAWS fixed-seed draws of Z ~ N(0, corr) (memoised: the
  adjustment and the critical level of one family share the draws; read-only)."""
  corr = np.ascontiguousarray(corr, np.float64)
  return _maxt_null_draws(corr.tobytes(), corr.shape[0])


@functools.lru_cache(maxsize=8)
def _maxt_null_draws(key: bytes, t: int) -> np.ndarray:
  corr = np.frombuffer(key, np.float64).reshape(t, t)
  w, v = np.linalg.eigh(corr)
  root = v * np.sqrt(np.clip(w, 0.0, None))
  z = np.random.default_rng(12345).standard_normal((MAXT_DRAWS, t)) @ root.T
  out = np.sort(np.abs(z).max(axis=1))
  out.flags.writeable = False
  return out


def maxt_adjusted_mwu(x: Any, y: Any, p_values: Any, *, min_size: int = 20) -> np.ndarray:
  """Single-step max-T adjusted p-values of T two-sided Mann–Whitney tests on one split.

  The T statistics compare the same records (``x`` one set, ``y`` the other)
  under T scores. Under exchangeability of the two sets the standardised
  rank sums are jointly asymptotically normal, with the correlation matrix R
  of the pooled rank vectors (the permutation covariance of rank sums is
  proportional to it). The adjusted p-value of test j is
  ``P(max_i |Z_i| >= |z_j|)`` for Z ~ N(0, R), |z_j| the normal quantile of its
  two-sided p-value, estimated from :data:`MAXT_DRAWS` fixed-seed draws
  (deterministic; Monte Carlo standard error ≤ 0.0007 at 0.05, and fast for
  any T, where SciPy's multivariate normal integral took seconds per test at
  T = 13). It lies in [p_j, T p_j]; where the Bonferroni bound T p_j is below
  :data:`MAXT_BONFERRONI_BELOW` the bound itself is returned. Correlated
  statistics thus cost less than Bonferroni's factor T. Falls back to
  Bonferroni when either set has fewer than ``min_size`` records (where exact
  MWU p-values are not normal quantiles). A statistic constant over the
  pooled records (p = 1 under any labelling) gets adjusted p 1 and leaves
  the family.

  Args:
    x: (T, n1) scores of the first set (one row per statistic).
    y: (T, n2) scores of the second set.
    p_values: (T,) the tests' two-sided p-values (from :func:`mann_whitney`).
    min_size: smallest set size for the normal joint law.
  Returns:
    (T,) adjusted p-values in [0, 1]; the family-wise error is <= alpha when
    rejecting those <= alpha.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  p = _as_p_values(p_values)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] != p.size:
    raise AuditError(f'maxt_adjusted_mwu expects (T, n1), (T, n2) and (T,); got {x.shape}, '
                     f'{y.shape}, {p.shape}')
  # A statistic constant over the pooled records cannot reject (p = 1 whatever the labels):
  # it leaves the family, and the others are adjusted among themselves.
  live = np.ptp(np.concatenate([x, y], axis=1), axis=1) > 0
  if not live.all():
    out = np.ones(p.size)
    if live.any():
      out[live] = maxt_adjusted_mwu(x[live], y[live], p[live], min_size=min_size)
    return out
  t = p.size
  bonf = bonferroni_adjusted(p)
  if t == 1 or min(x.shape[1], y.shape[1]) < min_size:
    return bonf
  null = _maxt_null(_rank_correlation(x, y))
  z = sps.norm.isf(p / 2.0)
  tail = 1.0 - np.searchsorted(null, z, side='left') / null.size
  out = np.clip(np.maximum(p, tail), None, bonf)
  return np.where(bonf < MAXT_BONFERRONI_BELOW, bonf, out)


def permutation_maxt_mwu(x: Any, y: Any, *, strata_x: Any = None, strata_y: Any = None,
                         n_perm: int = 2000, seed: int = 0) -> np.ndarray:
  """Single-step max-T adjusted p-values of T two-sided rank-sum tests, by permutation.

  The T statistics compare the same two sets (``x`` rows vs ``y`` rows, one row
  per score). Statistic t is the standardised rank sum
  ``|R_t(x) - E R_t| / sd_t`` of the pooled ranks of score t (ties averaged).
  The labels "x"/"y" are permuted ``n_perm`` times (within strata when given,
  e.g. classes of a class-matched sample), jointly for all T scores, and the
  adjusted p-value of test t is ``(1 + #{b: max_s |Z_s^b| >= |z_t|}) / (1 + n_perm)``.
  Exact (finite-sample) family-wise control under exchangeability of the
  labels (within strata), whatever the dependence of the T scores; cheap for
  many statistics (one (T, N) x (N, B) product), unlike the multivariate
  normal integral of :func:`maxt_adjusted_mwu`. Deterministic for a seed.

  Args:
    x: (T, n1) scores of the first set.
    y: (T, n2) scores of the second set.
    strata_x: optional (n1,) stratum labels of the first set.
    strata_y: optional (n2,) stratum labels of the second set.
    n_perm: permutations B (>= 1).
    seed: permutation seed.
  Returns:
    (T,) adjusted p-values in (0, 1]; rejecting those <= alpha has family-wise
    error <= alpha.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
    raise AuditError(f'permutation_maxt_mwu expects (T, n1) and (T, n2); got {x.shape}, {y.shape}')
  if x.shape[1] < 1 or y.shape[1] < 1:
    raise AuditError('permutation_maxt_mwu needs at least one record in each set')
  for name, a in (('x', x), ('y', y)):
    _check_finite(a, name)
  n_perm = _check_int(n_perm, 'n_perm', minimum=1)
  n1, n2 = x.shape[1], y.shape[1]
  n = n1 + n2
  ranks = np.stack([sps.rankdata(r) for r in np.concatenate([x, y], axis=1)])
  ranks -= ranks.mean(1, keepdims=True)
  sd = np.sqrt(n1 * n2 / (n * (n - 1.0)) * np.sum(ranks * ranks, axis=1)) if n > 1 else \
      np.zeros(x.shape[0])
  sd = np.where(sd > 0, sd, np.inf)     # a constant score carries no evidence: z = 0
  z_obs = np.abs(ranks[:, :n1].sum(1)) / sd
  if (strata_x is None) != (strata_y is None):
    raise AuditError('strata_x and strata_y must be given together')
  if strata_x is None:
    strata = np.zeros(n, np.int64)
  else:
    sx, sy = np.asarray(strata_x).reshape(-1), np.asarray(strata_y).reshape(-1)
    if sx.shape != (n1,) or sy.shape != (n2,):
      raise AuditError(f'strata must have shapes ({n1},) and ({n2},); got {sx.shape}, {sy.shape}')
    strata = np.unique(np.concatenate([sx, sy]), return_inverse=True)[1].reshape(-1)
  # Each permutation draws, within every stratum c, a random subset of the size of x's
  # share of c (argpartition of uniform keys: O(n) per draw) and sums the ranks there.
  rng = np.random.default_rng([int(seed), 2654435761])
  exceed = np.zeros(x.shape[0], np.int64)
  blocks = [(np.flatnonzero(strata == c), int(np.sum(strata[:n1] == c)))
            for c in range(int(strata.max()) + 1)]
  blocks = [(blk, k) for blk, k in blocks if k > 0]
  chunk = max(1, min(n_perm, (1 << 23) // max(x.shape[0] * n1 + n, 1)))
  done = 0
  while done < n_perm:
    b = min(chunk, n_perm - done)
    zb = np.zeros((x.shape[0], b))
    for blk, k in blocks:
      if k == len(blk):
        zb += ranks[:, blk].sum(1)[:, None]
        continue
      sel = np.argpartition(rng.random((b, len(blk))), k - 1, axis=1)[:, :k]
      zb += ranks[:, blk][:, sel].sum(-1)
    mx = (np.abs(zb) / sd[:, None]).max(axis=0)
    exceed += np.sum(mx[None, :] >= z_obs[:, None] - 1e-9, axis=1)
    done += b
  return (1.0 + exceed) / (1.0 + n_perm)


def empirical_p_values(
    scores: Any, reference: Any, alternative: str = 'two-sided'
) -> np.ndarray:
  """Per-record p-values of `scores` against a reference (null) sample.

  * ``'greater'`` (score unusually high): ``(1 + #{ref >= s}) / (1 + n_ref)``.
  * ``'less'`` (score unusually low): ``(1 + #{ref <= s}) / (1 + n_ref)``.
  * ``'two-sided'``: ``min(1, 2 * min(greater, less))``.

  If a score is exchangeable with the reference sample, each of these is a
  valid (super-uniform) p-value: ``P(p <= u) <= u`` for all u, with equality
  on the grid ``{1, ..., n_ref + 1} / (n_ref + 1)`` when there are no ties
  (for two-sided, when n_ref is odd). The p-values of different records share
  the reference, so they are dependent (positively; BH remains valid).

  Args:
    scores: scores to test, shape (n,).
    reference: reference scores drawn under the null, shape (n_ref,).
    alternative: ``'greater'``, ``'less'`` or ``'two-sided'``.

  Returns:
    float64 array of shape (n,) with values in [1 / (n_ref + 1), 1].
  """
  s = _as_1d(scores, 'scores')
  ref = _as_1d(reference, 'reference')
  _check_alternative(alternative)
  ref_sorted = np.sort(ref)
  n_ref = ref.size
  n_ge = n_ref - np.searchsorted(ref_sorted, s, side='left')
  n_le = np.searchsorted(ref_sorted, s, side='right')
  greater = (1.0 + n_ge) / (1.0 + n_ref)
  less = (1.0 + n_le) / (1.0 + n_ref)
  if alternative == 'greater':
    return greater
  if alternative == 'less':
    return less
  return np.minimum(1.0, 2.0 * np.minimum(greater, less))

