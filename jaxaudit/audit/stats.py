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

from collections.abc import Callable, Sequence
import math
from typing import Any, NamedTuple

import numpy as np
from scipy import special
from scipy import stats as sps

from jaxaudit.errors import AuditError

__all__ = [
    'TestResult',
    'auc',
    'auc_confidence_interval',
    'benjamini_hochberg',
    'bh_adjusted',
    'binomial_power',
    'binomial_test_greater',
    'bonferroni_adjusted',
    'bootstrap_ci',
    'clopper_pearson',
    'combine_bonferroni',
    'combine_cauchy',
    'maxt_adjusted_mwu',
    'permutation_maxt_mwu',
    'delong_variance',
    'empirical_p_values',
    'indiscernibility',
    'ks_2samp',
    'logistic_cv_accuracy',
    'mann_whitney',
    'mwu_power',
    'neurips23_epsilon',
    'neurips23_epsilons',
    'neurips23_final_score',
    'neurips23_forget_score',
    'rank_transform',
    'roc_curve',
    'tpr_at_fpr',
]

_ALTERNATIVES = ('two-sided', 'greater', 'less')
# Largest sample size for which `mann_whitney` uses the exact null law.
_EXACT_MAX_N = 20
# Below this p the Cauchy transform tan((0.5 - p) pi) is replaced by 1/(p pi).
_CAUCHY_SMALL_P = 1e-15
# Above this statistic the Cauchy tail 0.5 - arctan(t)/pi is replaced by
# 1/(t pi).
_CAUCHY_LARGE_T = 1e15


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


def _check_closed_unit(value: Any, name: str) -> float:
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


def rank_transform(x: Any) -> np.ndarray:
  """Mid-ranks of a sample (1-based; tied values share their average rank).

  Args:
    x: scores, shape (n,).

  Returns:
    float64 array of shape (n,) with values in [1, n]; ranks sum to
    n (n + 1) / 2.
  """
  return sps.rankdata(_as_1d(x, 'x'), method='average')


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
  DeLong variance is then 0); use :func:`bootstrap_ci` or more data there.

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
  a = _check_closed_unit(auc_alt, 'auc_alt')
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
# Bootstrap.
# -----------------------------------------------------------------------------


def bootstrap_ci(
    stat_fn: Callable[..., Any],
    samples: Sequence[Any],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    nan_policy: str = 'raise',
) -> tuple[float, float]:
  """Percentile bootstrap confidence interval of a scalar statistic.

  Each array of `samples` is resampled with replacement along axis 0,
  independently of the others (a stratified bootstrap, as is right for two
  independent samples such as members and non-members). Draws come from
  ``np.random.default_rng(seed)`` in a fixed order, so the result is
  deterministic.

  Args:
    stat_fn: ``stat_fn(*resampled) -> scalar``; called `n_boot` times.
    samples: tuple of k arrays, each of shape (n_i, ...) with n_i >= 1 and
      finite values.
    level: confidence level in (0, 1).
    n_boot: number of bootstrap replicates (>= 2).
    seed: seed of the NumPy generator.
    nan_policy: what to do when `stat_fn` returns NaN/inf on some replicates
      (e.g. a ratio whose denominator vanishes on a resample): ``'raise'``
      raises AuditError; ``'omit'`` drops those replicates (at least 2 must
      remain), which conditions the interval on the statistic being defined.

  Returns:
    ``(lo, hi)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    the bootstrap distribution (linear interpolation).
  """
  if not callable(stat_fn):
    raise AuditError(f'stat_fn must be callable; got {type(stat_fn).__name__}')
  if isinstance(samples, np.ndarray) or not isinstance(samples, (tuple, list)):
    raise AuditError('samples must be a tuple of arrays, e.g. (pos, neg)')
  if not samples:
    raise AuditError('samples is empty; pass at least one array')
  level = _check_open_unit(level, 'level')
  n_boot = _check_int(n_boot, 'n_boot', minimum=2)
  if nan_policy not in ('raise', 'omit'):
    raise AuditError(
        f"nan_policy must be 'raise' or 'omit'; got {nan_policy!r}"
    )
  arrays = []
  for i, s in enumerate(samples):
    arr = _as_float_array(s, f'samples[{i}]')
    if arr.ndim == 0:
      raise AuditError(f'samples[{i}] must have at least 1 dimension')
    if arr.shape[0] == 0:
      raise AuditError(f'samples[{i}] is empty')
    _check_finite(arr, f'samples[{i}]')
    arrays.append(arr)
  rng = np.random.default_rng(seed)
  stats_ = np.empty(n_boot, dtype=np.float64)
  for b in range(n_boot):
    resampled = [
        a[rng.integers(0, a.shape[0], size=a.shape[0])] for a in arrays
    ]
    value = np.asarray(stat_fn(*resampled), dtype=np.float64)
    if value.size != 1:
      raise AuditError(
          f'stat_fn must return a scalar; got shape {value.shape}'
      )
    stats_[b] = value.reshape(())
  finite = np.isfinite(stats_)
  n_bad = int(np.sum(~finite))
  if n_bad and (nan_policy == 'raise' or n_bad > n_boot - 2):
    raise AuditError(
        f'stat_fn returned non-finite values on {n_bad} of {n_boot} bootstrap '
        f"replicates (nan_policy={nan_policy!r})"
    )
  stats_ = stats_[finite]
  lo, hi = np.quantile(stats_, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)


# -----------------------------------------------------------------------------
# ROC.
# -----------------------------------------------------------------------------


def roc_curve(
    pos: Any, neg: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Empirical ROC curve of the rule "predict positive iff score >= t".

  Args:
    pos: scores of the positives, shape (n1,).
    neg: scores of the negatives, shape (n2,).

  Returns:
    ``(fpr, tpr, thresholds)``, each of shape (m + 1,) where m is the number of
    distinct pooled scores. ``thresholds[0] = +inf`` (nothing predicted
    positive, fpr = tpr = 0), followed by the distinct scores in decreasing
    order; the last threshold is the smallest score (fpr = tpr = 1). ``fpr``
    and ``tpr`` are non-decreasing.
  """
  pos = _as_1d(pos, 'pos')
  neg = _as_1d(neg, 'neg')
  thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
  pos_sorted = np.sort(pos)
  neg_sorted = np.sort(neg)
  # Number of scores >= t is n - #{score < t}.
  tp = pos.size - np.searchsorted(pos_sorted, thresholds, side='left')
  fp = neg.size - np.searchsorted(neg_sorted, thresholds, side='left')
  tpr = np.concatenate([[0.0], tp / pos.size])
  fpr = np.concatenate([[0.0], fp / neg.size])
  return fpr, tpr, np.concatenate([[np.inf], thresholds])


def tpr_at_fpr(scores_pos: Any, scores_neg: Any, fpr: float) -> float:
  """Largest TPR of a threshold rule whose FPR is at most `fpr`.

  The rule predicts "positive" iff score >= t (higher score = positive); no
  randomisation between thresholds, so the result is conservative and exact
  for the empirical samples. With n2 negatives, an `fpr` below 1/n2 only
  allows thresholds above every negative score.

  Args:
    scores_pos: scores of the positives, shape (n1,).
    scores_neg: scores of the negatives, shape (n2,).
    fpr: the false-positive budget, in [0, 1].

  Returns:
    The TPR in [0, 1].
  """
  target = _check_closed_unit(fpr, 'fpr')
  fprs, tprs, _ = roc_curve(scores_pos, scores_neg)
  # fprs[0] == 0, so at least one threshold is admissible.
  return float(np.max(tprs[fprs <= target]))


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
  p0 = _check_closed_unit(p0, 'p0')
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
  p0 = _check_closed_unit(p0, 'p0')
  p1 = _check_closed_unit(p1, 'p1')
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


def bh_adjusted(p_values: Any) -> np.ndarray:
  """Benjamini-Hochberg adjusted p-values (q-values).

  ``adj_(i) = min_{j >= i} m p_(j) / j`` over the sorted p-values, clipped to
  1 and returned in the original order. Hypothesis i is rejected by the BH
  procedure at FDR level q iff ``adj_i <= q``.

  Args:
    p_values: p-values in [0, 1], shape (m,).

  Returns:
    float64 array of shape (m,), each entry >= the raw p-value and <= 1, and
    monotone in the raw p-values.
  """
  p = _as_p_values(p_values)
  m = p.size
  order = np.argsort(p, kind='stable')
  # p * (m / j) >= p exactly in floating point, since m / j >= 1.
  scaled = p[order] * (m / np.arange(1, m + 1))
  adj_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
  adj = np.empty(m, dtype=np.float64)
  adj[order] = np.minimum(adj_sorted, 1.0)
  return adj


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


def maxt_adjusted_mwu(x: Any, y: Any, p_values: Any, *, min_size: int = 20) -> np.ndarray:
  """Single-step max-T adjusted p-values of T two-sided Mann–Whitney tests on one split.

  The T statistics compare the same records (``x`` one set, ``y`` the other)
  under T scores. Under exchangeability of the two sets the standardised
  rank sums are jointly asymptotically normal, with the correlation matrix of
  the pooled rank vectors (the permutation covariance of rank sums is
  proportional to it). The adjusted p-value of test j is
  ``P(max_i |Z_i| >= |z_j|)`` for Z ~ N(0, R), |z_j| the normal quantile of its
  two-sided p-value; it is capped by Bonferroni ``T p_j`` (which it never
  exceeds in exact arithmetic, so the cap only absorbs the ~1e-5 absolute error
  of SciPy's multivariate normal integral, fixed seed: deterministic). Correlated statistics thus cost less than
  Bonferroni's factor T. Falls back to Bonferroni when either set has fewer
  than ``min_size`` records (where exact MWU p-values are not normal quantiles).

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
  t = p.size
  bonf = bonferroni_adjusted(p)
  if t == 1 or min(x.shape[1], y.shape[1]) < min_size:
    return bonf
  ranks = np.stack([sps.rankdata(r) for r in np.concatenate([x, y], axis=1)])
  ranks -= ranks.mean(1, keepdims=True)
  norm = np.sqrt(np.sum(ranks * ranks, axis=1))
  if np.any(norm == 0):   # a constant statistic: its test has no evidence, keep Bonferroni
    return bonf
  corr = (ranks @ ranks.T) / np.outer(norm, norm)
  corr = 0.5 * (corr + corr.T) + 1e-9 * np.eye(t)
  mvn = sps.multivariate_normal(mean=np.zeros(t), cov=corr, allow_singular=True)
  out = np.empty(t)
  for j in range(t):
    z = float(sps.norm.isf(p[j] / 2.0))
    if not np.isfinite(z) or z <= 0:
      out[j] = bonf[j] if p[j] > 0 else 0.0
      continue
    inside = mvn.cdf(np.full(t, z), lower_limit=np.full(t, -z),
                     rng=np.random.default_rng(12345))
    out[j] = min(bonf[j], max(p[j], 1.0 - float(inside)))
  return out


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
  is_x = np.zeros(n, bool)
  is_x[:n1] = True
  order0 = np.argsort(strata, kind='stable')
  # Within each stratum block of the stratum-sorted pool, the first n1_c
  # positions of a random order are "x".
  blocks = np.split(np.arange(n), np.cumsum(np.bincount(strata)[:-1]))
  take = np.zeros(n, bool)
  for s_id, blk in enumerate(blocks):
    take[blk[:int(np.sum(is_x & (strata == s_id)))]] = True
  rng = np.random.default_rng([int(seed), 2654435761])
  exceed = np.zeros(x.shape[0], np.int64)
  chunk = max(1, min(n_perm, (1 << 24) // max(n, 1)))
  ranks_s = ranks[:, order0]
  strata_s = strata[order0]
  done = 0
  while done < n_perm:
    b = min(chunk, n_perm - done)
    keys = rng.random((b, n)) + 2.0 * strata_s[None, :]
    perm = np.argsort(keys, axis=1)            # within-stratum shuffles of the sorted pool
    ind = np.zeros((b, n), np.float64)
    np.put_along_axis(ind, perm[:, take], 1.0, axis=1)
    zb = np.abs(ranks_s @ ind.T) / sd[:, None]  # (T, b)
    mx = zb.max(axis=0)
    exceed += np.sum(mx[None, :] >= z_obs[:, None] - 1e-9, axis=1)
    done += b
  return (1.0 + exceed) / (1.0 + n_perm)


def combine_cauchy(p_values: Any, weights: Any = None) -> float:
  """Cauchy combination test (Liu & Xie 2020, "ACAT").

  ``T = sum_i w_i tan((1/2 - p_i) pi)`` with weights normalised to sum to 1;
  the combined p-value is the standard Cauchy tail ``1/2 - arctan(T) / pi``.
  Exact for independent p-values and asymptotically valid (for small p) under
  arbitrary dependence. Numerics: for ``p_i < 1e-15`` the term is replaced by
  its expansion ``1 / (p_i pi)``, and for ``T > 1e15`` the tail by
  ``1 / (T pi)``, so tiny p-values are not lost to rounding. Any ``p_i = 0``
  with positive weight gives 0. A ``p_i = 1`` contributes
  ``tan(-pi/2)`` evaluated in float64 (about -1.6e16), i.e. it pulls the
  result towards 1, as in the reference implementation.

  Args:
    p_values: p-values in [0, 1], shape (m,).
    weights: optional non-negative weights, shape (m,), not all zero. Default:
      equal weights.

  Returns:
    The combined p-value in [0, 1].
  """
  p = _as_p_values(p_values)
  if weights is None:
    w = np.full(p.size, 1.0 / p.size)
  else:
    w = _as_1d(weights, 'weights')
    if w.size != p.size:
      raise AuditError(
          f'weights has length {w.size} but p_values has length {p.size}'
      )
    if np.any(w < 0.0):
      raise AuditError('weights must be non-negative')
    total = float(np.sum(w))
    if total <= 0.0:
      raise AuditError('weights must not all be zero')
    w = w / total
  active = w > 0.0
  p, w = p[active], w[active]
  if np.any(p == 0.0):
    return 0.0
  small = p < _CAUCHY_SMALL_P
  terms = np.empty_like(p)
  with np.errstate(over='ignore'):  # Subnormal p: the term is +inf, p -> 0.
    terms[small] = 1.0 / (p[small] * np.pi)
    terms[~small] = np.tan((0.5 - p[~small]) * np.pi)
    t = float(np.sum(w * terms))
  if t > _CAUCHY_LARGE_T:
    result = 1.0 / (t * np.pi)
  else:
    result = 0.5 - math.atan(t) / math.pi
  return float(min(max(result, 0.0), 1.0))


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


# -----------------------------------------------------------------------------
# Population MIA (DeepUnlearn protocol).
# -----------------------------------------------------------------------------


def _fit_logistic_1d(
    x: np.ndarray, y: np.ndarray, l2: float
) -> tuple[float, float]:
  """Newton's method for ``min sum log(1 + exp(-s_i (w x_i + b))) + l2/2 w^2``.

  `x` should be roughly standardised; `y` in {0, 1}; s_i = 2 y_i - 1. The
  bias is not penalised. Uses a backtracking line search, so it converges
  (slowly, towards large |w|) even on separable data, where `l2` keeps the
  optimum finite.
  """
  s = 2.0 * y - 1.0
  design = np.stack([x, np.ones_like(x)], axis=1)  # (n, 2)
  reg = np.array([l2, 0.0])

  def loss(theta):
    margins = s * (design @ theta)
    return float(np.sum(np.logaddexp(0.0, -margins)) + 0.5 * l2 * theta[0]**2)

  theta = np.zeros(2)
  current = loss(theta)
  for _ in range(100):
    z = design @ theta
    prob = special.expit(z)
    grad = design.T @ (prob - y) + reg * theta
    weights = prob * (1.0 - prob)
    hess = (design * weights[:, None]).T @ design + np.diag(reg)
    hess += 1e-12 * np.eye(2)
    step = np.linalg.solve(hess, grad)
    t = 1.0
    while True:
      candidate = theta - t * step
      new = loss(candidate)
      if new <= current - 1e-4 * t * float(grad @ step) or t < 1e-10:
        break
      t *= 0.5
    theta = candidate
    decrease = current - new
    current = new
    if abs(decrease) <= 1e-12 * max(1.0, abs(current)):
      break
  return float(theta[0]), float(theta[1])


def _stratified_folds(
    labels: np.ndarray, n_splits: int, rng: np.random.Generator
) -> list[np.ndarray]:
  """Test-index sets of `n_splits` stratified folds (shuffled per class)."""
  folds = [[] for _ in range(n_splits)]
  for c in (0, 1):
    idx = rng.permutation(np.nonzero(labels == c)[0])
    for f, chunk in enumerate(np.array_split(idx, n_splits)):
      folds[f].append(chunk)
  return [np.sort(np.concatenate(f)) for f in folds]


def logistic_cv_accuracy(
    scores_pos: Any,
    scores_neg: Any,
    *,
    n_splits: int = 10,
    seed: int = 0,
    l2: float = 1e-6,
) -> float:
  """Population membership-inference accuracy (the DeepUnlearn protocol).

  Steps: (1) the larger class is subsampled without replacement to the size
  m of the smaller one, using ``np.random.default_rng(seed)``; (2) the 2m
  records are split into `n_splits` stratified folds (each class shuffled by
  the same generator and cut into near-equal chunks); (3) on each fold a 1-D
  logistic regression ``P(pos | s) = sigmoid(w s + b)`` is fitted on the
  other folds by Newton's method with a tiny L2 penalty `l2` on w (scores are
  standardised with the training folds' mean and std first); a record is
  predicted positive iff ``w s + b > 0``; (4) the result is the mean of the
  per-fold test accuracies. Deterministic for a given seed.

  Args:
    scores_pos: scores of the positive class (e.g. losses on Du, label 1),
      shape (n1,).
    scores_neg: scores of the negative class (e.g. losses on test data, label
      0), shape (n2,).
    n_splits: number of folds, >= 2; min(n1, n2) must be >= n_splits.
    seed: seed of the NumPy generator used for subsampling and folds.
    l2: L2 penalty on the slope (on standardised scores), >= 0.

  Returns:
    Mean cross-validated accuracy in [0, 1]; about 0.5 when the classes are
    indistinguishable.
  """
  pos = _as_1d(scores_pos, 'scores_pos')
  neg = _as_1d(scores_neg, 'scores_neg')
  n_splits = _check_int(n_splits, 'n_splits', minimum=2)
  l2 = float(l2)
  if not l2 >= 0.0:
    raise AuditError(f'l2 must be >= 0; got {l2!r}')
  m = min(pos.size, neg.size)
  if m < n_splits:
    raise AuditError(
        f'each class needs at least n_splits={n_splits} scores; '
        f'got {pos.size} positive and {neg.size} negative'
    )
  rng = np.random.default_rng(seed)
  if pos.size > m:
    pos = pos[np.sort(rng.choice(pos.size, size=m, replace=False))]
  if neg.size > m:
    neg = neg[np.sort(rng.choice(neg.size, size=m, replace=False))]
  x = np.concatenate([pos, neg])
  y = np.concatenate([np.ones(m), np.zeros(m)])
  accuracies = []
  for test_idx in _stratified_folds(y, n_splits, rng):
    train = np.ones(x.size, dtype=bool)
    train[test_idx] = False
    mean = float(np.mean(x[train]))
    std = float(np.std(x[train]))
    if std <= 0.0:
      std = 1.0
    w, b = _fit_logistic_1d((x[train] - mean) / std, y[train], l2)
    pred = (w * (x[test_idx] - mean) / std + b) > 0.0
    accuracies.append(float(np.mean(pred == (y[test_idx] == 1.0))))
  return float(np.mean(accuracies))


def indiscernibility(acc: float) -> float:
  """DeepUnlearn indiscernibility ``1 - |acc - 0.5| / 0.5``.

  Args:
    acc: an attack accuracy in [0, 1].

  Returns:
    1 for a chance-level attack (acc = 0.5), 0 for a perfect (or perfectly
    inverted) one.
  """
  a = _check_closed_unit(acc, 'acc')
  return 1.0 - abs(a - 0.5) / 0.5


# -----------------------------------------------------------------------------
# NeurIPS 2023 unlearning challenge score.
# -----------------------------------------------------------------------------


def neurips23_epsilon(
    unlearned_scores: Any,
    retrained_scores: Any,
    delta: float = 1e-5,
    *,
    epsilon_cap: float | None = 50.0,
) -> float:
  """Per-example empirical epsilon of the NeurIPS 2023 unlearning challenge.

  For one forget example, the scores (e.g. logit-scaled confidences) it gets
  under N_u unlearned and N_r retrained models are compared by every
  single-threshold rule: "unlearned iff score >= t" and "unlearned iff
  score < t", for t at -inf, +inf and between consecutive distinct pooled
  scores (this is every distinct rule, so the maximum is exact rather than
  over a grid). With FPR = fraction of retrained classified as unlearned and
  FNR = fraction of unlearned classified as retrained,

    eps_t = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)

  and ``eps = max(0, max_t eps_t)``. Conventions (those of the challenge's
  evaluation code):
    * FPR = FNR = 0 (perfect separation) gives eps = inf;
    * thresholds with exactly one of FPR, FNR equal to 0 are skipped (too few
      samples to estimate the rate), as is a term whose log argument
      ``1 - delta - rate`` is <= 0;
    * if no threshold survives (e.g. all scores equal) eps = 0;
    * the result is capped at `epsilon_cap` (50 in the challenge; None keeps
      inf).
  Differences from the challenge: it also searched a family of two-threshold
  (interval) rules and, when one distribution's range was < 1% of the
  other's, set eps to the cap directly; neither is done here.

  Args:
    unlearned_scores: scores of the example under the unlearned models,
      shape (N_u,), N_u >= 1.
    retrained_scores: scores under the retrained models, shape (N_r,).
    delta: the delta of (eps, delta)-unlearning, in (0, 1).
    epsilon_cap: upper bound applied to the result (> 0), or None.

  Returns:
    The empirical epsilon, in [0, epsilon_cap].
  """
  u = np.sort(_as_1d(unlearned_scores, 'unlearned_scores'))
  r = np.sort(_as_1d(retrained_scores, 'retrained_scores'))
  delta = _check_open_unit(delta, 'delta')
  if epsilon_cap is not None and not float(epsilon_cap) > 0.0:
    raise AuditError(f'epsilon_cap must be > 0 or None; got {epsilon_cap!r}')
  n_u, n_r = u.size, r.size
  cuts = np.concatenate([np.unique(np.concatenate([u, r])), [np.inf]])
  # Rule A, "unlearned iff score >= cut": FN = #{u < cut}, FP = #{r >= cut}.
  fn_a = np.searchsorted(u, cuts, side='left')
  fp_a = n_r - np.searchsorted(r, cuts, side='left')
  # Rule B, "unlearned iff score < cut", is the complement of rule A.
  fn = np.concatenate([fn_a, n_u - fn_a])
  fp = np.concatenate([fp_a, n_r - fp_a])
  if np.any((fn == 0) & (fp == 0)):
    eps = math.inf
  else:
    keep = (fn > 0) & (fp > 0)
    fnr = fn[keep] / n_u
    fpr = fp[keep] / n_r
    with np.errstate(divide='ignore', invalid='ignore'):
      arg1 = 1.0 - delta - fpr
      arg2 = 1.0 - delta - fnr
      t1 = np.where(arg1 > 0.0, np.log(np.where(arg1 > 0, arg1, 1.0)), -np.inf)
      t2 = np.where(arg2 > 0.0, np.log(np.where(arg2 > 0, arg2, 1.0)), -np.inf)
      terms = np.maximum(t1 - np.log(fnr), t2 - np.log(fpr))
    eps = max(0.0, float(np.max(terms))) if terms.size else 0.0
  if epsilon_cap is not None:
    eps = min(eps, float(epsilon_cap))
  return float(eps)


def neurips23_epsilons(
    unlearned_scores: Any,
    retrained_scores: Any,
    delta: float = 1e-5,
    *,
    epsilon_cap: float | None = 50.0,
) -> np.ndarray:
  """:func:`neurips23_epsilon` for every forget example.

  Args:
    unlearned_scores: shape (N_u, n_examples); axis 0 is the model axis.
    retrained_scores: shape (N_r, n_examples).
    delta: see :func:`neurips23_epsilon`.
    epsilon_cap: see :func:`neurips23_epsilon`.

  Returns:
    float64 array of shape (n_examples,).
  """
  u = _as_float_array(unlearned_scores, 'unlearned_scores')
  r = _as_float_array(retrained_scores, 'retrained_scores')
  for arr, name in ((u, 'unlearned_scores'), (r, 'retrained_scores')):
    if arr.ndim != 2:
      raise AuditError(
          f'{name} must be 2-D (models, examples); got shape {arr.shape}'
      )
    if arr.size == 0:
      raise AuditError(f'{name} is empty; got shape {arr.shape}')
  if u.shape[1] != r.shape[1]:
    raise AuditError(
        f'unlearned_scores has {u.shape[1]} examples but retrained_scores '
        f'has {r.shape[1]}'
    )
  return np.array([
      neurips23_epsilon(u[:, i], r[:, i], delta, epsilon_cap=epsilon_cap)
      for i in range(u.shape[1])
  ])


def neurips23_forget_score(
    epsilons: Any,
    *,
    num_models: int = 512,
    max_epsilon: float | None = None,
    bin_width: float = 0.5,
) -> float:
  """Forgetting quality F of the NeurIPS 2023 challenge from per-example eps.

  As in the challenge's evaluation code: the range ``[0, max_epsilon)`` is cut
  into ``K = floor(max_epsilon / bin_width)`` bins of width `bin_width`; an
  example whose eps falls in bin ``k = floor(eps / bin_width) < K`` earns
  ``2**-k`` points (1 for eps < 0.5, 1/2 for eps in [0.5, 1), ...), and an
  example with ``eps >= K * bin_width`` (including inf) earns 0. F is the mean
  over examples. The default ``max_epsilon = ceil(log(num_models - 1))`` is the
  largest finite eps the threshold attack can certify with num_models models
  per side: 7 for the challenge's 512, i.e. 14 bins over [0, 7). (A simpler
  variant, ``2**-min(floor(eps/0.5), 13)``, differs only for eps >= 6.5 and
  never gives 0.)

  Args:
    epsilons: per-example epsilons, shape (n_examples,), each >= 0 (+inf
      allowed).
    num_models: models per side used to estimate the epsilons (>= 3); sets
      the default `max_epsilon`.
    max_epsilon: overrides the upper end of the binned range (> 0).
    bin_width: bin width (> 0).

  Returns:
    F in [0, 1]; 1 means every example has eps < bin_width.
  """
  eps = _as_float_array(epsilons, 'epsilons')
  if eps.ndim != 1:
    raise AuditError(f'epsilons must be 1-D; got shape {eps.shape}')
  if eps.size == 0:
    raise AuditError('epsilons is empty')
  if np.any(np.isnan(eps)):
    raise AuditError('epsilons contains NaN')
  if np.any(eps < 0.0):
    raise AuditError('epsilons must be >= 0')
  num_models = _check_int(num_models, 'num_models', minimum=3)
  if not float(bin_width) > 0.0 or not math.isfinite(float(bin_width)):
    raise AuditError(f'bin_width must be a positive number; got {bin_width!r}')
  if max_epsilon is None:
    max_epsilon = float(math.ceil(math.log(num_models - 1)))
  elif not float(max_epsilon) > 0.0 or not math.isfinite(float(max_epsilon)):
    raise AuditError(
        f'max_epsilon must be a positive number; got {max_epsilon!r}'
    )
  n_bins = int(math.floor(float(max_epsilon) / float(bin_width) + 1e-9))
  with np.errstate(invalid='ignore'):
    k = np.floor(eps / float(bin_width))
  points = np.where(k < n_bins, np.exp2(-np.minimum(k, n_bins)), 0.0)
  return float(np.mean(points))


def neurips23_final_score(
    forget_score: float,
    ra_u: float,
    ra_r: float,
    ta_u: float,
    ta_r: float,
) -> float:
  """Final NeurIPS 2023 challenge score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

  Args:
    forget_score: forgetting quality F in [0, 1]
      (:func:`neurips23_forget_score`).
    ra_u: retain-set accuracy of the unlearned models, in [0, 1].
    ra_r: retain-set accuracy of the retrained models, in (0, 1].
    ta_u: test accuracy of the unlearned models, in [0, 1].
    ta_r: test accuracy of the retrained models, in (0, 1].

  Returns:
    The score (>= 0; may exceed F if the unlearned models are more accurate
    than the retrained ones).
  """
  f = _check_closed_unit(forget_score, 'forget_score')
  ra_u = _check_closed_unit(ra_u, 'ra_u')
  ra_r = _check_closed_unit(ra_r, 'ra_r')
  ta_u = _check_closed_unit(ta_u, 'ta_u')
  ta_r = _check_closed_unit(ta_r, 'ta_r')
  if ra_r == 0.0:
    raise AuditError('ra_r must be > 0 (it is a denominator)')
  if ta_r == 0.0:
    raise AuditError('ta_r must be > 0 (it is a denominator)')
  return f * (ra_u / ra_r) * (ta_u / ta_r)
