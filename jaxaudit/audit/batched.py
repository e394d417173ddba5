"""The audit's statistics as jitted JAX functions over padded, masked arrays.

Every function here works on ONE request (one forget set against one
reference) given as padded arrays with boolean masks (``True`` = a real
entry), has static shapes, uses no Python loop over data, and can be
``jax.vmap``-ped over requests or bootstrap replicates. The ``*_batched``
wrappers vmap over a leading request axis; a reference passed without that
axis is shared by all requests (sorted once per call, not once per request).
The NumPy/SciPy functions of :mod:`jaxaudit.audit.stats` (and
``forgetting_score_ci`` of :mod:`jaxaudit.audit.decision`) are the references;
the tests check agreement to 1e-6.

Masks may mark any subset of the slots (real entries need not come first).
Real entries must be finite (padding may hold anything); nothing inside a
compiled function can raise on data, so the shapes, the dtypes and the
option names are checked when a function is traced, and an empty sample
gives NaN (the references raise).

Cost. Both samples are sorted and x is placed among the sorted y by a
binary search, O((n1 + n2) log n2); everything on y's side is derived from
x's positions there (module helpers ``_sum_sq_dev_01`` and ``_tie_spread``),
so that per request the cost is O(n1 log n2) plus the sums over y that do not
depend on x. Under ``vmap`` with a shared reference those (the sort of y, y's
own tie counts and their sums) are computed once for all requests: R = 1000
requests of <= 32 records against 5000 reference scores take a few
milliseconds on a CPU (:mod:`jaxaudit.study.stats_bench`). No n1 x n2 matrix
is formed (samples of at most 64 padded slots are searched by comparing all
pairs, a smaller program).

Precision (``jax_enable_x64`` is off by default: float32 arithmetic).
  * Everything that the references obtain from ranks is computed from exact
    int32 counts: ``c_i = 2 #{y < x_i} + #{y == x_i}``, so ``2U = sum_i c_i``
    and the ties are exact (values are compared in their dtype: scores that
    differ in float64 but round to one float32 tie). Ratios of counts (the
    AUC, DeLong components, empirical p-values) take one float32 rounding
    (relative error 6e-8); the comparisons that decide a step (the forgetting
    score's ``AUC_mem > 0.51``) are made on the integers.
  * The Mann-Whitney variance is written as a sum of non-negative terms,
    ``n^3 - sum_g t_g^3 = sum_e (n - t_e)(n + t_e)`` over the pooled valid
    entries e (t_e the size of e's tie group), instead of the reference's
    ``(n + 1) - sum(t^3 - t) / (n (n - 1))``, whose cancellation float32
    could not afford (nearly constant, e.g. binary, scores); it is exactly 0
    when every value is tied (p = 1). The tie groups are counted in each
    sample (``#{x == v} + #{y == v}``), not by sorting the pooled vector: the
    same integers. The y entries not tied with any x are summed as "all y
    minus those tied with an x" in exact two-limb int32 arithmetic (up to
    ``_LIMB_MAX_N2`` reference slots; above, per y position, O(n2) per
    request). ``U - n1 n2 / 2`` is the integer ``(2U - n1 n2) / 2``. The
    DeLong variances sum squares of exact integer deviations
    ``n1 c_i - 2U``. So the float32 results agree with the float64
    references to ~1e-7 (the tests check 1e-6, at n2 = 5000 too).
  * Two functions are computed in float64 (under a local
    ``jax.enable_x64(True)``, whatever the global setting):
    :func:`maxt_adjusted`, whose Monte Carlo tail is a step function of
    ``isf(p / 2)`` (a float32 quantile moves it across a draw, an error of
    1 / D, often enough to matter at 1e-6), and
    :func:`rank_correlation_masked`, whose signed sums of rank products
    cancel (in float64 they are exact integers). They are per-family, small
    computations. Called inside an outer ``jit``/``vmap`` traced with x64
    off, their inputs have already been rounded to float32 there; call them
    eagerly (or under ``jax.enable_x64(True)``) for float64-faithful results.
  * Under ``jax.enable_x64(True)`` with float64 inputs every function
    computes in float64 and takes the references' step decisions
    (Benjamini-Hochberg thresholds, where a p-value may lie exactly on
    ``k q / m``) identically; in float32 such a decision can differ only for
    a p-value within float32 rounding (~6e-8 relative) of its threshold.
  * Limits of the int32 counts: ``n1 * n2 < 2**30`` per comparison.
"""

from __future__ import annotations

import fractions
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.scipy import special
import numpy as np

from jaxaudit.audit import decision as _decision
from jaxaudit.audit import stats as _stats
from jaxaudit.errors import AuditError

__all__ = [
    'ALTERNATIVES',
    'DeLongComponents',
    'MannWhitney',
    'RequestStatistics',
    'auc_ci_masked',
    'auc_ci_batched',
    'auc_masked',
    'auc_batched',
    'bh_adjusted',
    'benjamini_hochberg_masked',
    'benjamini_hochberg_batched',
    'bootstrap_auc_ci',
    'bootstrap_auc_ci_from_indices',
    'bootstrap_indices',
    'delong_components_masked',
    'delong_variance_masked',
    'delong_variance_batched',
    'empirical_p_values_masked',
    'empirical_p_values_batched',
    'forgetting_score_ci_from_indices',
    'forgetting_score_ci_masked',
    'mann_whitney_masked',
    'mann_whitney_batched',
    'maxt_adjusted',
    'maxt_adjusted_batched',
    'pad_requests',
    'rank_correlation_masked',
    'request_statistics',
    'request_statistics_batched',
    'simes',
]

ALTERNATIVES = ('two-sided', 'greater', 'less')


class MannWhitney(NamedTuple):
  """Result of :func:`mann_whitney_masked` (scalars; (R,) when batched).

  Attributes:
    u: the Mann-Whitney U of x (pairs with x > y, ties counting one half).
    p_value: the asymptotic p-value (tie- and continuity-corrected).
    auc: ``U / (n1 n2)``.
  """
  u: jax.Array
  p_value: jax.Array
  auc: jax.Array


class DeLongComponents(NamedTuple):
  """DeLong structural components (zero on padding).

  Attributes:
    v10: (n1_pad,) ``mean_j psi(x_i, y_j)`` for each valid x_i.
    v01: (n2_pad,) ``mean_i psi(x_i, y_j)`` for each valid y_j.
  """
  v10: jax.Array
  v01: jax.Array


class RequestStatistics(NamedTuple):
  """The per-request statistics of :func:`request_statistics`.

  Attributes:
    u, p_value, auc: the two-sided Mann-Whitney test of the records against
      the reference (scalars).
    delong_variance: DeLong variance of the AUC (NaN with fewer than 2 records).
    record_p: (n_pad,) empirical 'greater' p-values of each record against
      the reference (1 on padding).
    flagged: (n_pad,) Benjamini-Hochberg rejections of ``record_p`` at ``q``.
  """
  u: jax.Array
  p_value: jax.Array
  auc: jax.Array
  delong_variance: jax.Array
  record_p: jax.Array
  flagged: jax.Array


# -----------------------------------------------------------------------------
# Trace-time checks and small helpers.
# -----------------------------------------------------------------------------


def _alternative_code(alternative: str) -> int:
  """The index of ``alternative`` in ALTERNATIVES: a traced argument, so that the three
  alternatives share one compiled program."""
  if alternative not in ALTERNATIVES:
    raise AuditError(f'alternative must be one of {ALTERNATIVES}; got {alternative!r}')
  return ALTERNATIVES.index(alternative)


def _check_sample(v: Any, mask: Any, name: str) -> tuple[jax.Array, jax.Array]:
  """A 1-D value array and its same-shape boolean mask (trace-time checks)."""
  v, mask = jnp.asarray(v), jnp.asarray(mask)
  if v.ndim != 1:
    raise AuditError(f'{name} must be 1-D (padded); got shape {v.shape}')
  if mask.shape != v.shape:
    raise AuditError(f'{name}_mask must have the shape of {name} {v.shape}; got {mask.shape}')
  if mask.dtype != jnp.bool_:
    raise AuditError(f'{name}_mask must be boolean; got dtype {mask.dtype}')
  if jnp.issubdtype(v.dtype, jnp.complexfloating) or not (
      jnp.issubdtype(v.dtype, jnp.floating) or jnp.issubdtype(v.dtype, jnp.integer)):
    raise AuditError(f'{name} must be real-valued; got dtype {v.dtype}')
  if not jnp.issubdtype(v.dtype, jnp.floating):
    v = v.astype(jnp.result_type(float))
  return v, mask


def _common(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, Any]:
  """x and y in their common float dtype (the dtype of every float result)."""
  dt = jnp.result_type(x.dtype, y.dtype)
  return x.astype(dt), y.astype(dt), dt


def _count(mask: jax.Array) -> jax.Array:
  return jnp.sum(mask, dtype=jnp.int32)


def _sorted_masked(v: jax.Array, mask: jax.Array) -> jax.Array:
  """v sorted ascending with its padding moved to the end as +inf."""
  return jnp.sort(jnp.where(mask, v, jnp.inf))


# Sorted arrays up to this length are searched by comparing with every entry
# (O(n m), a small program); longer ones by a binary search.
_COMPARE_ALL_MAX = 64


def _below(sorted_ref: jax.Array, queries: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(#{ref < q}, #{ref <= q}) for each query, int32, against a `_sorted_masked` ref.

  Both counts come from one binary search over the queries twice (strict and
  non-strict comparison), ceil(log2(n + 1)) vectorised steps: one loop in the
  compiled program where ``jnp.searchsorted`` would need one per side.
  """
  n = sorted_ref.shape[0]
  if n <= _COMPARE_ALL_MAX:
    lt = jnp.sum(sorted_ref[None, :] < queries[:, None], axis=1, dtype=jnp.int32)
    le = jnp.sum(sorted_ref[None, :] <= queries[:, None], axis=1, dtype=jnp.int32)
    return lt, le
  m = queries.shape[0]
  q = jnp.concatenate([queries, queries])
  strict = jnp.arange(2 * m) < m

  def step(_, state):
    lo, hi = state                       # the count lies in [lo, hi]
    mid = (lo + hi) // 2
    v = sorted_ref[jnp.minimum(mid, n - 1)]
    counted = jnp.where(strict, v < q, v <= q) & (lo < hi)
    return jnp.where(counted, mid + 1, lo), jnp.where(counted | (lo >= hi), hi, mid)

  lo0 = jnp.zeros(2 * m, jnp.int32)
  lo, _ = jax.lax.fori_loop(0, int(n).bit_length(), step, (lo0, jnp.full(2 * m, n, jnp.int32)))
  return lo[:m], lo[m:]


class _Pair(NamedTuple):
  """Rank information of two masked samples, from x's side only (O(n1 log n))."""
  x_mask: jax.Array   # (n1_pad,) bool
  n1: jax.Array       # int32 valid x
  n2: jax.Array       # int32 valid y
  order_x: jax.Array  # (n1_pad,) the permutation that sorts x (padding last)
  xs: jax.Array       # (n1_pad,) sorted x, padding +inf at the end
  ys: jax.Array       # (n2_pad,) sorted y, padding +inf at the end
  lt: jax.Array       # (n1_pad,) int32 #{y < x_i}
  le: jax.Array       # (n1_pad,) int32 #{y <= x_i}
  tie_xx: jax.Array   # (n1_pad,) int32 #{x == x_i} (0 on padding)
  c10: jax.Array      # (n1_pad,) int32 2#{y < x_i} + #{y == x_i}, 0 on padding
  u2: jax.Array       # int32 2U = sum c10 = sum c01
  tie_x: jax.Array    # (n1_pad,) int32 size of x_i's tie group in the pooled sample


def _pair(x, x_mask, y, y_mask) -> _Pair:
  """Sorts both samples and places x among them (y's side follows from these)."""
  x_inf = jnp.where(x_mask, x, jnp.inf)
  order_x = jnp.argsort(x_inf)
  ys = _sorted_masked(y, y_mask)
  lt, le = _below(ys, x)
  xs = x_inf[order_x]
  lt_xx, le_xx = _below(xs, x)
  tie_xx = jnp.where(x_mask, le_xx - lt_xx, 0)
  c10 = jnp.where(x_mask, lt + le, 0)
  tie_x = jnp.where(x_mask, tie_xx + (le - lt), 0)
  return _Pair(x_mask, _count(x_mask), _count(y_mask), order_x, xs, ys, lt, le, tie_xx, c10,
               jnp.sum(c10), tie_x)


def _y_valid(p: _Pair) -> jax.Array:
  """(n2_pad,) bool: the valid entries of the sorted y (they come first)."""
  return jnp.arange(p.ys.shape[0], dtype=jnp.int32) < p.n2


def _y_tie_counts(p: _Pair) -> jax.Array:
  """(n2_pad,) int32 #{y == y_(k)} for the sorted y (y only: computed once when shared)."""
  lt, le = _below(p.ys, p.ys)
  return jnp.where(_y_valid(p), le - lt, 0)


def _y_side_by_position(p: _Pair) -> tuple[jax.Array, jax.Array]:
  """(c01, tie_y) for each sorted y position k, O(n2) per request (0 on padding).

  ``#{x < y_(k)} = #{i: le_i <= k}`` and ``#{x <= y_(k)} = #{i: lt_i <= k}``:
  a histogram of x's 2 n1 positions and a cumulative sum.
  """
  n2_pad = p.ys.shape[0]

  def at_or_below(pos):
    hist = jnp.zeros(n2_pad + 1, jnp.int32).at[jnp.where(p.x_mask, pos, n2_pad)].add(1)
    return jnp.cumsum(hist)[:n2_pad]

  x_lt_y, x_le_y = at_or_below(p.le), at_or_below(p.lt)
  valid = _y_valid(p)
  c01 = jnp.where(valid, 2 * p.n1 - x_lt_y - x_le_y, 0)
  tie_y = jnp.where(valid, (x_le_y - x_lt_y) + _y_tie_counts(p), 0)
  return c01, tie_y


def _auc_from(p: _Pair, dt) -> jax.Array:
  return p.u2.astype(dt) / (2 * p.n1.astype(dt) * p.n2.astype(dt))


def _sum_sq_dev_10(p: _Pair, dt) -> jax.Array:
  """sum_i (n1 c10_i - 2U)^2 over valid x: squares of exact integers."""
  e = jnp.where(p.x_mask, p.n1 * p.c10 - p.u2, 0).astype(dt)
  return jnp.sum(e * e)


def _sum_sq_dev_01(p: _Pair, dt) -> jax.Array:
  """sum_k (n2 c01_k - 2U)^2 over valid y, from x's side in O(n1 log n1).

  ``c01_k = #{b > k}`` over the multiset of x's positions ``b in {lt_i, le_i}``
  (padding at 0, never > k). Between consecutive sorted positions
  ``b_(m) <= k < b_(m+1)`` (``b_(0) = 0``, ``b_(M+1) = n2``) it is ``M - m``.
  """
  bps = jnp.sort(jnp.concatenate([jnp.where(p.x_mask, p.lt, 0), jnp.where(p.x_mask, p.le, 0)]))
  m_total = bps.shape[0]
  zero = jnp.zeros(1, jnp.int32)
  edges = jnp.concatenate([zero, bps.astype(jnp.int32), p.n2[None]])
  lengths = (edges[1:] - edges[:-1]).astype(dt)                 # (M + 1,)
  values = m_total - jnp.arange(m_total + 1, dtype=jnp.int32)   # c01 on segment m
  e = (p.n2 * values - p.u2).astype(dt)
  return jnp.sum(lengths * e * e)


def _delong_var_from(p: _Pair, dt) -> jax.Array:
  """S10 / n1 + S01 / n2 (ddof = 1); NaN when a sample has fewer than 2 entries."""
  n1, n2 = p.n1.astype(dt), p.n2.astype(dt)
  # v10_i = c10_i / (2 n2); v10_i - mean = (n1 c10_i - 2U) / (2 n1 n2), likewise v01.
  den = (2 * n1 * n2) ** 2
  var = (_sum_sq_dev_10(p, dt) / (den * (n1 - 1)) / n1
         + _sum_sq_dev_01(p, dt) / (den * (n2 - 1)) / n2)
  return jnp.where((p.n1 >= 2) & (p.n2 >= 2), var, jnp.nan)


# Reference sizes up to which the tie term's y side is summed from x's side with
# exact two-limb int32 sums (above: an O(n2) histogram per request).
_LIMB_MAX_N2 = 46340


def _limb_bits(n2_pad: int) -> int | None:
  """Bits b of the low limb so that sums of w >> b and w & (2^b - 1) over w <= n2^2 fit int32."""
  if n2_pad > _LIMB_MAX_N2:
    return None
  b = 0
  while (n2_pad ** 3) >> b >= 2 ** 31:
    b += 1
  return b if n2_pad * (2 ** b) < 2 ** 31 else None


def _tie_spread(p: _Pair, dt) -> jax.Array:
  """``n^3 - sum_g t_g^3 = sum_e (n - t_e)(n + t_e)`` over the pooled valid entries e.

  A sum of non-negative terms (no cancellation), exactly 0 when all values tie.
  The terms of the x entries are summed directly. A y entry tied with some x
  value v lies in the y tie group [lt, le) of v, with one t for the whole
  group: summed once per distinct x value. The other y entries have
  ``t_k = r_k`` (y's own tie count): their sum is that over all y minus that
  over the groups tied with x, in exact two-limb integers. So the cost per
  request is O(n1 log n1) plus sums over y that do not depend on x.
  """
  n_int = p.n1 + p.n2

  def terms(t, mask):   # (n - t)(n + t): a product of two exact integers, rounded once
    return jnp.where(mask, (n_int - t).astype(dt) * (n_int + t).astype(dt), 0)

  s_x = jnp.sum(terms(p.tie_x, p.x_mask))
  bits = _limb_bits(p.ys.shape[0])
  if bits is None:
    _, tie_y = _y_side_by_position(p)
    return s_x + jnp.sum(terms(tie_y, _y_valid(p)))
  # One representative per distinct valid x value: the first of its run in sorted x.
  lt_s, le_s = p.lt[p.order_x], p.le[p.order_x]
  tie_s = p.tie_xx[p.order_x]                          # x tied with it
  j = jnp.arange(lt_s.shape[0], dtype=jnp.int32)
  prev = jnp.concatenate([jnp.full(1, -jnp.inf, p.xs.dtype), p.xs[:-1]])
  first = (j < p.n1) & (p.xs != prev)
  r = jnp.where(first, le_s - lt_s, 0)                 # y tied with this x value
  t = r + tie_s
  s_hit = jnp.sum(jnp.where(first, r.astype(dt) * terms(t, first), 0))
  # y not tied with any x: (n - r_k)(n + r_k) = w_k + 2 n1 n2 + n1^2, w_k = (n2 - r_k)(n2 + r_k).
  r_y = _y_tie_counts(p)
  w_y = jnp.where(_y_valid(p), (p.n2 - r_y) * (p.n2 + r_y), 0)
  w_r = (p.n2 - r) * (p.n2 + r)
  low = 2 ** bits - 1
  hi = jnp.sum(w_y >> bits) - jnp.sum(r * (w_r >> bits))
  lo = jnp.sum(w_y & low) - jnp.sum(r * (w_r & low))
  count = (p.n2 - jnp.sum(r)).astype(dt)
  n1f, n2f = p.n1.astype(dt), p.n2.astype(dt)
  s_rest = hi.astype(dt) * (2 ** bits) + lo.astype(dt) + count * (2 * n1f * n2f + n1f * n1f)
  return s_x + s_hit + s_rest


def _mwu_from(p: _Pair, code, dt) -> MannWhitney:
  """The test's result; ``code`` indexes ALTERNATIVES (traced)."""
  n1, n2 = p.n1.astype(dt), p.n2.astype(dt)
  n = n1 + n2
  spread = _tie_spread(p, dt)
  var = n1 * n2 * spread / (12 * n * (n - 1))
  sd = jnp.sqrt(jnp.where(spread > 0, var, 1))
  d = p.u2 - p.n1 * p.n2          # 2 (U - n1 n2 / 2), an exact integer
  # The continuity-corrected distance from the mean, (|U - mu| - 1/2) for two-sided.
  num = jnp.select([code == 0, code == 1], [jnp.abs(d) - 1, d - 1], -d - 1)
  factor = jnp.where(code == 0, 2, 1).astype(dt)
  pval = factor * special.ndtr(-(num.astype(dt) / 2) / sd)
  pval = jnp.where(spread > 0, jnp.clip(pval, 0, 1), 1)
  empty = (p.n1 == 0) | (p.n2 == 0)
  return MannWhitney(u=p.u2.astype(dt) / 2, p_value=jnp.where(empty, jnp.nan, pval).astype(dt),
                     auc=_auc_from(p, dt))


def _request_axis(v: jax.Array, base_ndim: int) -> int | None:
  """0 if v carries a leading request axis, None if it is shared."""
  v = jnp.asarray(v)
  if v.ndim == base_ndim + 1:
    return 0
  if v.ndim == base_ndim:
    return None
  raise AuditError(f'expected {base_ndim}-D (shared) or {base_ndim + 1}-D (per request) '
                   f'arrays; got shape {v.shape}')


# -----------------------------------------------------------------------------
# AUC, DeLong and the Mann-Whitney test.
# -----------------------------------------------------------------------------


@jax.jit
def auc_masked(x, x_mask, y, y_mask) -> jax.Array:
  """AUC ``P(x > y) + 0.5 P(x == y)`` over the valid entries (ties exact).

  Sort + searchsorted, O((n1 + n2) log(n1 + n2)) time and O(n1 + n2) memory.

  Args:
    x: (n1_pad,) scores of the positive sample.
    x_mask: (n1_pad,) bool, True for real entries.
    y: (n2_pad,) scores of the negative sample.
    y_mask: (n2_pad,) bool.
  Returns:
    () the AUC, ``U / (n1 n2)`` (NaN if a sample is empty); equals
    :func:`jaxaudit.audit.stats.auc` on the valid entries.
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, dt = _common(x, y)
  lt, le = _below(_sorted_masked(y, y_mask), x)
  u2 = jnp.sum(jnp.where(x_mask, lt + le, 0))
  return u2.astype(dt) / (2 * _count(x_mask).astype(dt) * _count(y_mask).astype(dt))


@jax.jit
def delong_components_masked(x, x_mask, y, y_mask) -> DeLongComponents:
  """DeLong structural components of the AUC (``stats._delong_components``).

  Args:
    x: (n1_pad,) positive scores; x_mask (n1_pad,) bool.
    y: (n2_pad,) negative scores; y_mask (n2_pad,) bool.
  Returns:
    :class:`DeLongComponents` with v10 (n1_pad,) and v01 (n2_pad,), zero on
    padding; ``psi(a, b) = 1[a > b] + 0.5 1[a == b]``.
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, dt = _common(x, y)
  p = _pair(x, x_mask, y, y_mask)
  v10 = p.c10.astype(dt) / (2 * p.n2.astype(dt))
  c01_sorted, _ = _y_side_by_position(p)
  order = jnp.argsort(jnp.where(y_mask, y, jnp.inf))     # sorted position -> slot
  c01 = jnp.zeros_like(c01_sorted).at[order].set(c01_sorted)
  v01 = c01.astype(dt) / (2 * p.n1.astype(dt))
  return DeLongComponents(jnp.where(x_mask, v10, 0), jnp.where(y_mask, v01, 0))


@jax.jit
def delong_variance_masked(x, x_mask, y, y_mask) -> jax.Array:
  """DeLong variance of the empirical AUC, ``S10 / n1 + S01 / n2`` (ddof = 1).

  Args:
    x: (n1_pad,) positive scores; x_mask (n1_pad,) bool (n1 >= 2 valid).
    y: (n2_pad,) negative scores; y_mask (n2_pad,) bool (n2 >= 2 valid).
  Returns:
    () the variance, equal to :func:`jaxaudit.audit.stats.delong_variance`
    (NaN when a sample has fewer than 2 valid entries).
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, dt = _common(x, y)
  return _delong_var_from(_pair(x, x_mask, y, y_mask), dt)


@jax.jit
def auc_ci_masked(x, x_mask, y, y_mask, level=0.95) -> tuple[jax.Array, jax.Array]:
  """Wald interval ``auc +/- z_{(1+level)/2} sqrt(Var_DeLong)`` clipped to [0, 1].

  Args:
    x: (n1_pad,) positive scores; x_mask (n1_pad,) bool (n1 >= 2 valid).
    y: (n2_pad,) negative scores; y_mask (n2_pad,) bool (n2 >= 2 valid).
    level: () confidence level in (0, 1) (traced: any level, one program).
  Returns:
    (lo, hi) scalars, equal to :func:`jaxaudit.audit.stats.auc_confidence_interval`.
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, dt = _common(x, y)
  p = _pair(x, x_mask, y, y_mask)
  a = _auc_from(p, dt)
  var = _delong_var_from(p, dt)
  half = special.ndtri(0.5 + jnp.asarray(level, dt) / 2) * jnp.sqrt(jnp.maximum(var, 0))
  return jnp.maximum(0, a - half), jnp.minimum(1, a + half)


@jax.jit
def _mann_whitney(x, x_mask, y, y_mask, code) -> MannWhitney:
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, dt = _common(x, y)
  return _mwu_from(_pair(x, x_mask, y, y_mask), code, dt)


def mann_whitney_masked(x, x_mask, y, y_mask, alternative: str = 'two-sided') -> MannWhitney:
  """Asymptotic Mann-Whitney U test of x against y over the valid entries.

  As ``stats.mann_whitney(..., method='asymptotic')``: normal approximation
  with mean ``n1 n2 / 2``, tie-corrected variance
  ``n1 n2 / 12 ((n + 1) - sum(t^3 - t) / (n (n - 1)))`` (t over the tie groups
  of the pooled valid values) and continuity correction 0.5; p = 1 when every
  value is tied.

  Args:
    x: (n1_pad,) first sample; x_mask (n1_pad,) bool.
    y: (n2_pad,) second sample; y_mask (n2_pad,) bool.
    alternative: 'two-sided', 'greater' (x tends to be larger) or 'less'; the
      three share one compiled program.
  Returns:
    :class:`MannWhitney` (u, p_value, auc) scalars; p_value is NaN if a
    sample is empty.
  """
  return _mann_whitney(x, x_mask, y, y_mask, _alternative_code(alternative))


# -----------------------------------------------------------------------------
# Bootstrap intervals.
# -----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('n_boot',))
def bootstrap_indices(key, mask, n_boot: int) -> jax.Array:
  """Resampling indices: each valid slot gets a valid entry drawn with replacement.

  A resample is ``v[idx[b]]`` with the SAME mask: its valid slots hold
  uniform draws from the valid entries, its padding slots point at
  themselves. So resamples keep the padded shape and the count.

  Args:
    key: a PRNG key.
    mask: (n_pad,) bool.
    n_boot: replicates B (static).
  Returns:
    (B, n_pad) int32 indices into the padded array.
  """
  mask = jnp.asarray(mask)
  if mask.ndim != 1 or mask.dtype != jnp.bool_:
    raise AuditError(f'mask must be a 1-D boolean array; got {mask.dtype} {mask.shape}')
  n_pad = mask.shape[0]
  valid_pos = jnp.argsort(~mask, stable=True).astype(jnp.int32)   # valid slots first, in order
  draws = jax.random.randint(key, (n_boot, n_pad), 0, jnp.maximum(_count(mask), 1))
  slots = jnp.arange(n_pad, dtype=jnp.int32)
  return jnp.where(mask[None, :], valid_pos[draws], slots[None, :])


def _percentile_interval(vals: jax.Array, level) -> tuple[jax.Array, jax.Array]:
  level = jnp.asarray(level, vals.dtype)
  qs = jnp.stack([(1 - level) / 2, (1 + level) / 2])
  lo_hi = jnp.quantile(vals, qs)
  return lo_hi[0], lo_hi[1]


@jax.jit
def bootstrap_auc_ci_from_indices(x, x_mask, y, y_mask, x_idx, y_idx,
                                  level=0.95) -> tuple[jax.Array, jax.Array]:
  """Percentile bootstrap interval of the AUC for given resampling indices.

  Args:
    x: (n1_pad,) positive scores; x_mask (n1_pad,) bool.
    y: (n2_pad,) negative scores; y_mask (n2_pad,) bool.
    x_idx: (B, n1_pad) int indices (:func:`bootstrap_indices`).
    y_idx: (B, n2_pad) int indices.
    level: () coverage in (0, 1).
  Returns:
    (lo, hi): the ``(1 -/+ level) / 2`` quantiles (linear interpolation, as
    ``np.quantile``) of the B replicate AUCs.
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  y, y_mask = _check_sample(y, y_mask, 'y')
  x, y, _ = _common(x, y)
  vals = jax.vmap(auc_masked, in_axes=(0, None, 0, None))(x[x_idx], x_mask, y[y_idx], y_mask)
  return _percentile_interval(vals, level)


@functools.partial(jax.jit, static_argnames=('n_boot',))
def bootstrap_auc_ci(key, x, x_mask, y, y_mask, n_boot: int = 500,
                     level=0.95) -> tuple[jax.Array, jax.Array]:
  """Percentile bootstrap interval of the AUC (each sample resampled independently).

  Args:
    key: PRNG key.
    x: (n1_pad,) positive scores; x_mask (n1_pad,) bool.
    y: (n2_pad,) negative scores; y_mask (n2_pad,) bool.
    n_boot: replicates B (static); the B AUCs are computed in one vmap.
    level: () coverage in (0, 1).
  Returns:
    (lo, hi) scalars.
  """
  kx, ky = jax.random.split(key)
  return bootstrap_auc_ci_from_indices(
      x, x_mask, y, y_mask, bootstrap_indices(kx, jnp.asarray(x_mask), n_boot),
      bootstrap_indices(ky, jnp.asarray(y_mask), n_boot), level)


def _forgetting_score(du, du_mask, ref, ref_mask, mem, mem_mask) -> jax.Array:
  """``decision.forgetting_score`` (clipped), NaN where AUC_mem <= 0.51."""
  dt = jnp.result_type(du.dtype, ref.dtype, mem.dtype)
  ys = _sorted_masked(ref, ref_mask)
  n_ref = _count(ref_mask)

  def excess(v, mask):
    """(2U - n n_ref, n): 2 n n_ref (AUC - 1/2), an exact integer."""
    lt, le = _below(ys, v)
    n = _count(mask)
    return jnp.sum(jnp.where(mask, lt + le, 0)) - n * n_ref, n

  p_mem, n_mem = excess(mem, mem_mask)
  q_du, n_du = excess(du, du_mask)
  # AUC_mem > 1/2 + a/b (MIN_MEMBER_SEPARATION = 0.01 = 1/100)  <=>  P / (2 n_mem n_ref) > a/b
  # <=>  P b > 2 a n_mem n_ref  <=>  P > floor(2 a n_mem n_ref / b) for an integer P.
  sep = fractions.Fraction(str(_decision.MIN_MEMBER_SEPARATION))
  defined = p_mem > (2 * sep.numerator * n_mem * n_ref) // sep.denominator
  # (AUC_mem - AUC_du) / (AUC_mem - 1/2) = 1 - (Q / n_du) / (P / n_mem).
  ratio = (q_du.astype(dt) / n_du.astype(dt)) / (p_mem.astype(dt) / n_mem.astype(dt))
  return jnp.where(defined, jnp.clip(1 - ratio, 0, 1), jnp.nan)


def _forgetting_scores_by_counts(du, du_mask, ref, ref_mask, mem, mem_mask, du_idx, ref_idx,
                                 mem_idx) -> jax.Array:
  """(B,) clipped forgetting scores of B resamples, without sorting any resample.

  A resample is a vector of counts (how often each record was drawn). D_ref is
  sorted once; where each score of Du and of the members falls in it
  (``searchsorted``, left and right) is fixed, so a replicate's rank sums are
  a cumulative sum of its D_ref counts read at those positions, weighted by
  the other set's counts: O(n) per replicate, exact integer arithmetic, the
  same values as :func:`_forgetting_score` on the gathered resample.
  """
  dt = jnp.result_type(du.dtype, ref.dtype, mem.dtype)
  b = du_idx.shape[0]
  rows = jnp.arange(b)[:, None]

  def counts(idx, mask):                 # (B, n_pad): draws of each slot, valid slots only
    return jnp.zeros(idx.shape, jnp.int32).at[rows, idx].add(
        jnp.broadcast_to(mask[None, :], idx.shape).astype(jnp.int32))

  order = jnp.argsort(jnp.where(ref_mask, ref, jnp.inf))
  ys = jnp.where(ref_mask, ref, jnp.inf)[order]
  cum = jnp.concatenate([jnp.zeros((b, 1), jnp.int32),
                         jnp.cumsum(counts(ref_idx, ref_mask)[:, order], axis=1)], axis=1)
  n_ref = _count(ref_mask)

  def excess(v, mask, idx):
    """(B,) 2 n n_ref (AUC - 1/2) of each replicate (exact integers), and n."""
    lt = jnp.searchsorted(ys, v, side='left')
    le = jnp.searchsorted(ys, v, side='right')
    w = counts(idx, mask)
    n = _count(mask)
    return jnp.sum(w * (cum[:, lt] + cum[:, le]), axis=1) - n * n_ref, n

  p_mem, n_mem = excess(mem, mem_mask, mem_idx)
  q_du, n_du = excess(du, du_mask, du_idx)
  sep = fractions.Fraction(str(_decision.MIN_MEMBER_SEPARATION))
  defined = p_mem > (2 * sep.numerator * n_mem * n_ref) // sep.denominator
  ratio = (q_du.astype(dt) / n_du.astype(dt)) / (p_mem.astype(dt) / n_mem.astype(dt))
  return jnp.where(defined, jnp.clip(1 - ratio, 0, 1), jnp.nan)


@jax.jit
def forgetting_score_ci_from_indices(du, du_mask, ref, ref_mask, mem, mem_mask, du_idx,
                                     ref_idx, mem_idx, level=0.95
                                     ) -> tuple[jax.Array, jax.Array]:
  """``decision.forgetting_score_ci`` for given resampling indices.

  Each replicate b scores ``du[du_idx[b]]``, ``ref[ref_idx[b]]`` and
  ``mem[mem_idx[b]]`` (masks unchanged, see :func:`bootstrap_indices`);
  replicates with AUC_mem <= 0.51 are dropped, and if more than half are the
  interval is (nan, nan).

  Args:
    du: (n_du_pad,) exact-view calibrated scores of Du; du_mask bool.
    ref: (n_ref_pad,) the same for D_ref; ref_mask bool.
    mem: (n_mem_pad,) the same for Mu's members; mem_mask bool.
    du_idx: (B, n_du_pad) int indices; ref_idx (B, n_ref_pad); mem_idx (B, n_mem_pad).
    level: () coverage in (0, 1).
  Returns:
    (lo, hi) with 0 <= lo <= hi <= 1, or (nan, nan).
  """
  du, du_mask = _check_sample(du, du_mask, 'du')
  ref, ref_mask = _check_sample(ref, ref_mask, 'ref')
  mem, mem_mask = _check_sample(mem, mem_mask, 'mem')
  vals = _forgetting_scores_by_counts(du, du_mask, ref, ref_mask, mem, mem_mask, du_idx,
                                      ref_idx, mem_idx)
  n_boot = vals.shape[0]
  finite = jnp.sum(jnp.isfinite(vals))
  level = jnp.asarray(level, vals.dtype)
  lo_hi = jnp.nanquantile(vals, jnp.stack([(1 - level) / 2, (1 + level) / 2]))
  keep = finite >= n_boot / 2
  return jnp.where(keep, lo_hi[0], jnp.nan), jnp.where(keep, lo_hi[1], jnp.nan)


@functools.partial(jax.jit, static_argnames=('n_boot',))
def forgetting_score_ci_masked(key, du, du_mask, ref, ref_mask, mem, mem_mask,
                               n_boot: int = 500, level=0.95) -> tuple[jax.Array, jax.Array]:
  """Percentile-bootstrap interval of the clipped forgetting score, replicates vmapped.

  The JAX port of :func:`jaxaudit.audit.decision.forgetting_score_ci`: Du,
  D_ref and the members resampled independently (the same D_ref resample in
  both AUCs of a replicate).

  Args:
    key: PRNG key (split in three, one per set).
    du: (n_du_pad,) scores of Du; du_mask bool.
    ref: (n_ref_pad,) scores of D_ref; ref_mask bool.
    mem: (n_mem_pad,) scores of the members; mem_mask bool.
    n_boot: replicates B (static).
    level: () coverage.
  Returns:
    (lo, hi) in [0, 1], or (nan, nan) when more than half the replicates are undefined.
  """
  k1, k2, k3 = jax.random.split(key, 3)
  return forgetting_score_ci_from_indices(
      du, du_mask, ref, ref_mask, mem, mem_mask,
      bootstrap_indices(k1, jnp.asarray(du_mask), n_boot),
      bootstrap_indices(k2, jnp.asarray(ref_mask), n_boot),
      bootstrap_indices(k3, jnp.asarray(mem_mask), n_boot), level)


# -----------------------------------------------------------------------------
# Multiple testing.
# -----------------------------------------------------------------------------


def _sorted_p(p, mask):
  order = jnp.argsort(jnp.where(mask, p, jnp.inf))
  m = _count(mask)
  ks = jnp.arange(1, p.shape[0] + 1, dtype=jnp.int32)
  return order, p[order], m, ks


@jax.jit
def benjamini_hochberg_masked(p, mask, q=0.05) -> jax.Array:
  """Benjamini-Hochberg step-up rejections at FDR ``q`` among the valid p-values.

  Args:
    p: (n_pad,) p-values in [0, 1]; mask (n_pad,) bool.
    q: () target FDR in (0, 1).
  Returns:
    (n_pad,) bool, True for rejected hypotheses (False on padding); equal to
    :func:`jaxaudit.audit.stats.benjamini_hochberg` on the valid entries.
  """
  p, mask = _check_sample(p, mask, 'p')
  _, ps, m, ks = _sorted_p(p, mask)
  thr = jnp.asarray(q, p.dtype) * ks.astype(p.dtype) / m.astype(p.dtype)
  below = (ps <= thr) & (ks <= m)
  last = jnp.max(jnp.where(below, ks - 1, -1))
  cutoff = ps[jnp.maximum(last, 0)]
  return mask & (last >= 0) & (p <= cutoff)


@jax.jit
def bh_adjusted(p, mask) -> jax.Array:
  """Benjamini-Hochberg adjusted p-values ``min(1, min_{j >= i} m p_(j) / j)``.

  Rejecting those <= q is :func:`benjamini_hochberg_masked` at q.

  Args:
    p: (n_pad,) p-values in [0, 1]; mask (n_pad,) bool.
  Returns:
    (n_pad,) adjusted p-values in the input order (1 on padding).
  """
  p, mask = _check_sample(p, mask, 'p')
  order, ps, m, ks = _sorted_p(p, mask)
  ratio = jnp.where(ks <= m, m.astype(p.dtype) * ps / ks.astype(p.dtype), jnp.inf)
  adj = jnp.minimum(jax.lax.cummin(ratio, reverse=True), 1)
  out = jnp.zeros_like(p).at[order].set(adj)
  return jnp.where(mask, out, 1)


@jax.jit
def simes(p, mask) -> jax.Array:
  """Simes' global p-value ``min_i m p_(i) / i`` (the global test consistent with BH).

  Args:
    p: (n_pad,) p-values in [0, 1]; mask (n_pad,) bool.
  Returns:
    () the combined p-value in [0, 1] (1 when no entry is valid).
  """
  p, mask = _check_sample(p, mask, 'p')
  _, ps, m, ks = _sorted_p(p, mask)
  ratio = jnp.where(ks <= m, m.astype(p.dtype) * ps / ks.astype(p.dtype), jnp.inf)
  return jnp.minimum(jnp.min(ratio), 1)


# -----------------------------------------------------------------------------
# Max-T (float64 inside).
# -----------------------------------------------------------------------------


def _as_x64(v):
  """v as a float64 array if it is floating (inside an enable_x64 block), else as is."""
  v = jnp.asarray(v)
  return v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v


@jax.jit
def _maxt_core(p, null_sorted, mask, use_bonferroni):
  t = _count(mask).astype(p.dtype)
  bonf = jnp.minimum(1, t * p)
  z = -special.ndtri(p / 2)                     # sps.norm.isf(p / 2)
  d = null_sorted.shape[0]
  tail = 1 - jnp.searchsorted(null_sorted, z, side='left').astype(p.dtype) / d
  out = jnp.minimum(jnp.maximum(p, tail), bonf)
  out = jnp.where(bonf < _stats.MAXT_BONFERRONI_BELOW, bonf, out)
  out = jnp.where(use_bonferroni, bonf, out)
  return jnp.where(mask, out, 1)


def maxt_adjusted(p, null_sorted, mask=None, use_bonferroni=False) -> jax.Array:
  """Single-step max-T adjusted p-values, as in ``stats.maxt_adjusted_mwu``.

  ``min(T p, max(p, P(max|Z| >= isf(p / 2))))`` with the tail estimated from
  the sorted Monte Carlo draws; the Bonferroni bound ``min(1, T p)`` itself
  where it is below ``stats.MAXT_BONFERRONI_BELOW``. Computed in float64
  (module docstring). The caller does what ``maxt_adjusted_mwu`` does
  before its Monte Carlo step: statistics constant over the pooled records
  leave the family (mask them out; their adjusted p is 1), and the draws are
  ``stats._maxt_null(corr)`` of the live statistics' rank correlation
  (:func:`rank_correlation_masked`); ``use_bonferroni`` where it falls back
  to Bonferroni (a set smaller than ``min_size``).

  Args:
    p: (T_pad,) two-sided p-values.
    null_sorted: (D,) sorted draws of max_i |Z_i| (``stats._maxt_null``).
    mask: (T_pad,) bool, the live statistics (default: all); T = their count.
    use_bonferroni: () bool, return ``min(1, T p)`` instead.
  Returns:
    (T_pad,) float64 adjusted p-values (1 on padding).
  """
  with jax.enable_x64(True):
    p = _as_x64(p)
    if p.ndim != 1:
      raise AuditError(f'p must be 1-D; got shape {p.shape}')
    null_sorted = _as_x64(null_sorted)
    if null_sorted.ndim != 1 or null_sorted.shape[0] < 1:
      raise AuditError(f'null_sorted must be a non-empty 1-D array; got {null_sorted.shape}')
    mask = jnp.ones(p.shape, bool) if mask is None else jnp.asarray(mask)
    if mask.shape != p.shape or mask.dtype != jnp.bool_:
      raise AuditError(f'mask must be boolean of shape {p.shape}; got {mask.dtype} {mask.shape}')
    return _maxt_core(p, null_sorted, mask, jnp.asarray(use_bonferroni, bool))


def maxt_adjusted_batched(p, null_sorted, mask=None, use_bonferroni=False) -> jax.Array:
  """:func:`maxt_adjusted` for R families at once (float64 inside, vmapped).

  Args:
    p: (R, T_pad) two-sided p-values.
    null_sorted: (R, D) sorted draws per family, or (D,) shared.
    mask: (R, T_pad) bool live statistics (default: all).
    use_bonferroni: (R,) or () bool.
  Returns:
    (R, T_pad) float64 adjusted p-values.
  """
  with jax.enable_x64(True):
    p, null_sorted = _as_x64(p), _as_x64(null_sorted)
    if p.ndim != 2:
      raise AuditError(f'p must be (R, T_pad); got shape {p.shape}')
    mask = jnp.ones(p.shape, bool) if mask is None else jnp.asarray(mask)
    if mask.shape != p.shape or mask.dtype != jnp.bool_:
      raise AuditError(f'mask must be boolean of shape {p.shape}; got {mask.dtype} {mask.shape}')
    use = jnp.broadcast_to(jnp.asarray(use_bonferroni, bool), p.shape[:1])
    null_axis = _request_axis(null_sorted, 1)
    return jax.vmap(_maxt_core, in_axes=(0, null_axis, 0, 0))(p, null_sorted, mask, use)


@jax.jit
def _rank_corr_core(x, x_mask, y, y_mask):
  pooled = jnp.concatenate([x, y], axis=1)            # (T, n_pad)
  mask = jnp.concatenate([x_mask, y_mask])
  n = _count(mask)

  def doubled_centred_ranks(row):
    lt, le = _below(_sorted_masked(row, mask), row)
    # 2 (midrank - (n + 1) / 2) = 2 lt + (le - lt) + 1 - (n + 1) = lt + le - n.
    return jnp.where(mask, lt + le - n, 0).astype(x.dtype)

  d = jax.vmap(doubled_centred_ranks)(pooled)
  gram = d @ d.T
  norm = jnp.sqrt(jnp.diagonal(gram))
  corr = gram / jnp.outer(norm, norm)
  t = x.shape[0]
  return 0.5 * (corr + corr.T) + 1e-9 * jnp.eye(t, dtype=x.dtype), jnp.all(norm > 0)


def rank_correlation_masked(x, x_mask, y, y_mask) -> tuple[jax.Array, jax.Array]:
  """(T, T) correlation of the pooled mid-rank vectors of T statistics.

  As ``stats._rank_correlation`` (symmetrised, plus 1e-9 on the diagonal),
  in float64 (exact integer rank products; module docstring).

  Args:
    x: (T, n1_pad) statistics of the first set (one row per statistic).
    x_mask: (n1_pad,) bool, the first set's real records (shared by the rows).
    y: (T, n2_pad) statistics of the second set.
    y_mask: (n2_pad,) bool.
  Returns:
    (corr (T, T) float64, ok ()) where ok is False if some statistic is
    constant over the pooled records (the reference then returns None; corr
    holds NaN there).
  """
  with jax.enable_x64(True):
    x, y = _as_x64(x), _as_x64(y)
    x_mask, y_mask = jnp.asarray(x_mask), jnp.asarray(y_mask)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
      raise AuditError(f'expected (T, n1) and (T, n2); got {x.shape}, {y.shape}')
    if x_mask.shape != x.shape[1:] or y_mask.shape != y.shape[1:] or \
        x_mask.dtype != jnp.bool_ or y_mask.dtype != jnp.bool_:
      raise AuditError(f'masks must be boolean of shapes {x.shape[1:]} and {y.shape[1:]}; got '
                       f'{x_mask.dtype} {x_mask.shape}, {y_mask.dtype} {y_mask.shape}')
    return _rank_corr_core(x, x_mask, y, y_mask)


# -----------------------------------------------------------------------------
# Empirical p-values.
# -----------------------------------------------------------------------------


@jax.jit
def _empirical_p_values(s, s_mask, ref, ref_mask, code) -> jax.Array:
  s, s_mask = _check_sample(s, s_mask, 's')
  ref, ref_mask = _check_sample(ref, ref_mask, 'ref')
  s, ref, dt = _common(s, ref)
  lt, le = _below(_sorted_masked(ref, ref_mask), s)
  n_ref = _count(ref_mask)
  den = (1 + n_ref).astype(dt)
  greater = (1 + n_ref - lt).astype(dt) / den
  less = (1 + le).astype(dt) / den
  out = jnp.select([code == 1, code == 2], [greater, less],
                   jnp.minimum(1, 2 * jnp.minimum(greater, less)))
  return jnp.where(s_mask, out, 1)


def empirical_p_values_masked(s, s_mask, ref, ref_mask, alternative: str = 'two-sided'
                              ) -> jax.Array:
  """Per-record p-values of ``s`` against a reference sample (``stats.empirical_p_values``).

  ``'greater'``: ``(1 + #{ref >= s}) / (1 + n_ref)``; ``'less'``:
  ``(1 + #{ref <= s}) / (1 + n_ref)``; ``'two-sided'``: ``min(1, 2 min(both))``.

  Args:
    s: (n_pad,) scores to test; s_mask (n_pad,) bool.
    ref: (n_ref_pad,) reference scores; ref_mask (n_ref_pad,) bool.
    alternative: 'greater', 'less' or 'two-sided' (one compiled program for all).
  Returns:
    (n_pad,) p-values (1 on padding).
  """
  return _empirical_p_values(s, s_mask, ref, ref_mask, _alternative_code(alternative))


# -----------------------------------------------------------------------------
# One request's statistics, and the batched wrappers.
# -----------------------------------------------------------------------------


@jax.jit
def request_statistics(x, x_mask, ref, ref_mask, q=0.05) -> RequestStatistics:
  """The per-request statistics of an audit request, in one program.

  The two-sided Mann-Whitney test and DeLong variance of the records'
  scores against the reference, each record's empirical 'greater' p-value
  and the Benjamini-Hochberg flags at ``q`` (what
  :func:`jaxaudit.audit.decision.ignorance_test` computes per record).

  Args:
    x: (n_pad,) the request's record scores; x_mask (n_pad,) bool.
    ref: (n_ref_pad,) reference scores; ref_mask (n_ref_pad,) bool.
    q: () the FDR of the flags.
  Returns:
    :class:`RequestStatistics` (scalars and (n_pad,) arrays).
  """
  x, x_mask = _check_sample(x, x_mask, 'x')
  ref, ref_mask = _check_sample(ref, ref_mask, 'ref')
  x, ref, dt = _common(x, ref)
  pair = _pair(x, x_mask, ref, ref_mask)
  mw = _mwu_from(pair, 0, dt)
  var = _delong_var_from(pair, dt)
  rec_p = _empirical_p_values(x, x_mask, ref, ref_mask, ALTERNATIVES.index('greater'))
  flagged = benjamini_hochberg_masked(rec_p, x_mask, q)
  return RequestStatistics(mw.u, mw.p_value, mw.auc, var, rec_p, flagged)


def _vmap_requests(fn, x, x_mask, y, y_mask, *rest):
  ax = _request_axis(y, 1)
  if _request_axis(x, 1) != 0:
    raise AuditError(f'x must carry a leading request axis (R, n_pad); got {jnp.shape(x)}')
  return jax.vmap(fn, in_axes=(0, 0, ax, ax) + (None,) * len(rest))(x, x_mask, y, y_mask, *rest)


@jax.jit
def auc_batched(x, x_mask, y, y_mask) -> jax.Array:
  """:func:`auc_masked` per request: x, x_mask (R, n1_pad); y, y_mask (n2_pad,) shared
  or (R, n2_pad). Returns (R,)."""
  return _vmap_requests(auc_masked, x, x_mask, y, y_mask)


@jax.jit
def delong_variance_batched(x, x_mask, y, y_mask) -> jax.Array:
  """:func:`delong_variance_masked` per request (shapes as :func:`auc_batched`); (R,)."""
  return _vmap_requests(delong_variance_masked, x, x_mask, y, y_mask)


@jax.jit
def auc_ci_batched(x, x_mask, y, y_mask, level=0.95) -> tuple[jax.Array, jax.Array]:
  """:func:`auc_ci_masked` per request (shapes as :func:`auc_batched`); (lo (R,), hi (R,))."""
  return _vmap_requests(auc_ci_masked, x, x_mask, y, y_mask, level)


@jax.jit
def _mann_whitney_batched(x, x_mask, y, y_mask, code) -> MannWhitney:
  return _vmap_requests(_mann_whitney, x, x_mask, y, y_mask, code)


def mann_whitney_batched(x, x_mask, y, y_mask, alternative: str = 'two-sided') -> MannWhitney:
  """:func:`mann_whitney_masked` per request (shapes as :func:`auc_batched`); fields (R,)."""
  return _mann_whitney_batched(x, x_mask, y, y_mask, _alternative_code(alternative))


@jax.jit
def _empirical_p_values_batched(s, s_mask, ref, ref_mask, code) -> jax.Array:
  return _vmap_requests(_empirical_p_values, s, s_mask, ref, ref_mask, code)


def empirical_p_values_batched(s, s_mask, ref, ref_mask, alternative: str = 'two-sided'
                               ) -> jax.Array:
  """:func:`empirical_p_values_masked` per request: s, s_mask (R, n_pad); ref, ref_mask
  (n_ref_pad,) shared or (R, n_ref_pad). Returns (R, n_pad)."""
  return _empirical_p_values_batched(s, s_mask, ref, ref_mask, _alternative_code(alternative))


@jax.jit
def benjamini_hochberg_batched(p, mask, q=0.05) -> jax.Array:
  """:func:`benjamini_hochberg_masked` per request: p, mask (R, n_pad) -> (R, n_pad) bool."""
  return jax.vmap(benjamini_hochberg_masked, in_axes=(0, 0, None))(p, mask, q)


@jax.jit
def request_statistics_batched(x, x_mask, ref, ref_mask, q=0.05) -> RequestStatistics:
  """:func:`request_statistics` for R requests against one reference, in one program.

  Args:
    x: (R, n_pad) record scores of each request; x_mask (R, n_pad) bool.
    ref: (n_ref_pad,) shared reference (sorted once) or (R, n_ref_pad); ref_mask alike.
    q: () FDR of the flags.
  Returns:
    :class:`RequestStatistics` with a leading (R,) axis.
  """
  return _vmap_requests(request_statistics, x, x_mask, ref, ref_mask, q)


def pad_requests(arrays: Sequence[Any], size: int | None = None, *,
                 dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """Host-side: stacks 1-D arrays of different lengths into (R, size) + mask.

  Args:
    arrays: R 1-D array-likes.
    size: the padded length (default: the longest); must be >= every length.
    dtype: dtype of the values (float32: what the compiled functions get).
  Returns:
    (values (R, size) zero-padded, mask (R, size) bool).
  """
  arrays = [np.asarray(a).reshape(-1) for a in arrays]
  longest = max((a.size for a in arrays), default=0)
  size = longest if size is None else int(size)
  if size < longest:
    raise AuditError(f'size {size} is shorter than the longest array ({longest})')
  values = np.zeros((len(arrays), size), dtype)
  mask = np.zeros((len(arrays), size), bool)
  for i, a in enumerate(arrays):
    values[i, :a.size] = a
    mask[i, :a.size] = True
  return values, mask
