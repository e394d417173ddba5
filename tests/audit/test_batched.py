"""Tests for jaxaudit.audit.batched: the JAX statistics against the NumPy references.

Every function is compared with its reference in :mod:`jaxaudit.audit.stats`
(or :mod:`jaxaudit.audit.decision`) to 1e-6 on inputs with ties (values
rounded to one decimal) placed at random slots of a padded array whose
padding holds garbage; vmapped batches against per-request calls; padding
against no padding; and a second call of the same shapes compiles nothing.
The padded shapes are few and fixed so that the file compiles each program
once.
"""

from __future__ import annotations

import math

from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.audit import batched
from jaxaudit.audit import decision
from jaxaudit.audit import stats
from jaxaudit.compilation import count_compilations
from jaxaudit.errors import AuditError

# The padded sizes used throughout (one compile each). Y_PAD is above batched._COMPARE_ALL_MAX,
# so that the y side takes the binary search (X_PAD: the all-pairs comparison).
X_PAD, Y_PAD = 24, 80
TOL = dict(rtol=1e-6, atol=1e-6)
ALTS = ('two-sided', 'greater', 'less')
FEW = settings(max_examples=25, deadline=None)


def _pad(v, size, rng, garbage=True):
  """v placed at random slots of a (size,) float32 array; padding holds garbage."""
  v = np.asarray(v, np.float64)
  out = np.zeros(size, np.float32)
  if garbage:   # large values and copies of real values: they must not count
    out[:] = rng.normal(0, 100, size)
    if v.size:
      out[: size // 2] = rng.choice(v, size // 2)
  pos = np.sort(rng.choice(size, v.size, replace=False))
  mask = np.zeros(size, bool)
  mask[pos] = True
  out[pos] = v
  return out, mask


def _draw(rng, n1, n2, shift=0.3, decimals=1):
  x = np.round(rng.normal(shift, 1.0, n1), decimals)
  y = np.round(rng.normal(0.0, 1.0, n2), decimals)
  return x, y


def _cases(seed=0, n=8):
  """(x, y) pairs with ties: rounded normals, a heavily tied pair and an all-tied pair."""
  rng = np.random.default_rng(seed)
  out = [_draw(rng, int(rng.integers(2, X_PAD + 1)), int(rng.integers(2, Y_PAD + 1)))
         for _ in range(n)]
  out.append((rng.integers(0, 3, 10).astype(float), rng.integers(0, 3, 40).astype(float)))
  out.append((np.full(5, 0.7), np.full(9, 0.7)))
  return out


def _close(actual, expected, **kw):
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             **(TOL | kw))


# -----------------------------------------------------------------------------
# Two-sample statistics against stats.
# -----------------------------------------------------------------------------


def test_two_sample_statistics_match_numpy():
  rng = np.random.default_rng(1)
  for x, y in _cases():
    xp, xm = _pad(x, X_PAD, rng)
    yp, ym = _pad(y, Y_PAD, rng)
    _close(batched.auc_masked(xp, xm, yp, ym), stats.auc(x, y))
    for alt in ALTS:
      ref = stats.mann_whitney(x, y, alt, method='asymptotic')
      got = batched.mann_whitney_masked(xp, xm, yp, ym, alternative=alt)
      _close(got.u, ref.statistic)
      _close(got.p_value, ref.p_value)
      _close(got.auc, ref.auc)
      _close(np.asarray(batched.empirical_p_values_masked(xp, xm, yp, ym, alternative=alt))[xm],
             stats.empirical_p_values(x, y, alt))
    v10, v01 = stats._delong_components(x, y)
    comp = batched.delong_components_masked(xp, xm, yp, ym)
    _close(np.asarray(comp.v10)[xm], v10)
    _close(np.asarray(comp.v01)[ym], v01)
    assert not np.any(np.asarray(comp.v10)[~xm]) and not np.any(np.asarray(comp.v01)[~ym])
    _close(batched.delong_variance_masked(xp, xm, yp, ym), stats.delong_variance(x, y))
    for level in (0.95, 0.8):
      _close(batched.auc_ci_masked(xp, xm, yp, ym, level),
             stats.auc_confidence_interval(x, y, level))


def test_all_tied_gives_p_one_and_empty_sample_gives_nan():
  rng = np.random.default_rng(2)
  xp, xm = _pad(np.full(4, 1.5), X_PAD, rng)
  yp, ym = _pad(np.full(7, 1.5), Y_PAD, rng)
  for alt in ALTS:
    got = batched.mann_whitney_masked(xp, xm, yp, ym, alternative=alt)
    assert float(got.p_value) == 1.0 and float(got.auc) == 0.5
  none = np.zeros(X_PAD, bool)
  assert math.isnan(float(batched.mann_whitney_masked(xp, none, yp, ym).p_value))
  assert math.isnan(float(batched.auc_masked(xp, none, yp, ym)))
  one = np.zeros(X_PAD, bool)
  one[3] = True
  assert math.isnan(float(batched.delong_variance_masked(xp, one, yp, ym)))


def test_large_reference_precision():
  """n2 = 5000 reference records, the bench's size: float32 still agrees to 1e-6."""
  rng = np.random.default_rng(3)
  y = np.round(rng.normal(0, 1, 5000), 1)
  yp, ym = _pad(y, 5008, rng)
  for n1 in (20, 3):
    x = np.round(rng.normal(0.4, 1, n1), 1)
    xp, xm = _pad(x, X_PAD, rng)
    ref = stats.mann_whitney(x, y, method='asymptotic')
    got = batched.mann_whitney_masked(xp, xm, yp, ym)
    _close(got.u, ref.statistic)
    _close(got.p_value, ref.p_value)
    _close(got.auc, ref.auc)
    _close(batched.delong_variance_masked(xp, xm, yp, ym), stats.delong_variance(x, y),
           rtol=1e-5, atol=1e-9)
    _close(np.asarray(batched.empirical_p_values_masked(xp, xm, yp, ym,
                                                        alternative='greater'))[xm],
           stats.empirical_p_values(x, y, 'greater'))


def test_large_reference_extreme_ties():
  """Binary-like scores (nearly all tied): the tie term has no cancellation to lose."""
  rng = np.random.default_rng(12)
  y = np.ones(5000)
  y[rng.choice(5000, 3, replace=False)] = 0.0
  yp, ym = _pad(y, 5008, rng)
  for x in (np.ones(20), np.r_[np.zeros(2), np.ones(18)], rng.integers(0, 2, 20).astype(float)):
    xp, xm = _pad(x, X_PAD, rng)
    for alt in ALTS:
      ref = stats.mann_whitney(x, y, alt, method='asymptotic')
      got = batched.mann_whitney_masked(xp, xm, yp, ym, alternative=alt)
      _close([got.u, got.p_value], [ref.statistic, ref.p_value])
    _close(batched.delong_variance_masked(xp, xm, yp, ym), stats.delong_variance(x, y),
           rtol=1e-5, atol=1e-9)


def test_histogram_path_for_huge_references(monkeypatch):
  """Above _LIMB_MAX_N2 the tie term's y side is summed per position; same results."""
  monkeypatch.setattr(batched, '_LIMB_MAX_N2', 0)
  rng = np.random.default_rng(13)
  for x, y in _cases(seed=13, n=3):
    xp, xm = _pad(x, X_PAD, rng)
    yp, ym = _pad(y, Y_PAD + 1, rng)     # a new shape: traced with the patched limit
    for alt in ALTS:
      ref = stats.mann_whitney(x, y, alt, method='asymptotic')
      got = batched.mann_whitney_masked(xp, xm, yp, ym, alternative=alt)
      _close([got.u, got.p_value], [ref.statistic, ref.p_value])


def test_padding_never_changes_the_result():
  rng = np.random.default_rng(4)
  x, y = _draw(rng, 9, 30)
  xa, xam = _pad(x, X_PAD, rng, garbage=False)
  ya, yam = _pad(y, Y_PAD, rng, garbage=False)
  xb, xbm = _pad(x, X_PAD, rng)
  yb, ybm = _pad(y, Y_PAD, rng)
  for fn in (batched.auc_masked, batched.delong_variance_masked, batched.auc_ci_masked,
             batched.mann_whitney_masked):
    np.testing.assert_array_equal(np.asarray(fn(xa, xam, ya, yam)),
                                  np.asarray(fn(xb, xbm, yb, ybm)))
  pa = np.asarray(batched.empirical_p_values_masked(xa, xam, ya, yam))
  pb = np.asarray(batched.empirical_p_values_masked(xb, xbm, yb, ybm))
  np.testing.assert_array_equal(pa[xam], pb[xbm])
  assert np.all(pa[~xam] == 1.0)
  np.testing.assert_array_equal(np.asarray(batched.bh_adjusted(pa, xam))[xam],
                                np.asarray(batched.bh_adjusted(pb, xbm))[xbm])


def test_invalid_arguments_raise_when_traced():
  x, m = np.zeros(4, np.float32), np.ones(4, bool)
  with pytest.raises(AuditError, match='alternative'):
    batched.mann_whitney_masked(x, m, x, m, alternative='bigger')
  with pytest.raises(AuditError, match='x_mask'):
    batched.auc_masked(x, m[:3], x, m)
  with pytest.raises(AuditError, match='boolean'):
    batched.auc_masked(x, m.astype(int), x, m)
  with pytest.raises(AuditError, match='1-D'):
    batched.auc_masked(x[None], m[None], x, m)


# -----------------------------------------------------------------------------
# Property tests.
# -----------------------------------------------------------------------------

_tied = st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 1))


@FEW
@given(x=st.lists(_tied, min_size=2, max_size=X_PAD), y=st.lists(_tied, min_size=2, max_size=Y_PAD),
       seed=st.integers(0, 2**16))
def test_auc_and_mann_whitney_property(x, y, seed):
  rng = np.random.default_rng(seed)
  x, y = np.asarray(x), np.asarray(y)
  xp, xm = _pad(x, X_PAD, rng)
  yp, ym = _pad(y, Y_PAD, rng)
  _close(batched.auc_masked(xp, xm, yp, ym), stats.auc(x, y))
  got = batched.mann_whitney_masked(xp, xm, yp, ym)
  ref = stats.mann_whitney(x, y, method='asymptotic')
  _close([got.u, got.p_value], [ref.statistic, ref.p_value])
  _close(batched.auc_ci_masked(xp, xm, yp, ym, 0.95), stats.auc_confidence_interval(x, y))


@FEW
@given(s=st.lists(_tied, min_size=1, max_size=X_PAD), ref=st.lists(_tied, min_size=1, max_size=Y_PAD),
       alternative=st.sampled_from(ALTS), seed=st.integers(0, 2**16))
def test_empirical_p_values_property(s, ref, alternative, seed):
  rng = np.random.default_rng(seed)
  s, ref = np.asarray(s), np.asarray(ref)
  sp, sm = _pad(s, X_PAD, rng)
  rp, rm = _pad(ref, Y_PAD, rng)
  got = np.asarray(batched.empirical_p_values_masked(sp, sm, rp, rm, alternative=alternative))
  _close(got[sm], stats.empirical_p_values(s, ref, alternative))
  assert np.all(got[~sm] == 1.0)


def _bh_adjusted_reference(p):
  m = p.size
  order = np.argsort(p)
  adj = np.minimum.accumulate((m * p[order] / np.arange(1, m + 1))[::-1])[::-1]
  out = np.empty(m)
  out[order] = np.minimum(adj, 1.0)
  return out


def _near_threshold(p, q, rel=1e-5):
  m = p.size
  thr = q * np.arange(1, m + 1) / m
  return np.any(np.abs(p[:, None] - thr[None, :]) <= rel * thr[None, :])


@FEW
@given(p=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=16),
       q=st.sampled_from([0.05, 0.1, 0.2]), seed=st.integers(0, 2**16))
def test_benjamini_hochberg_property(p, q, seed):
  rng = np.random.default_rng(seed)
  p = np.asarray(p)
  pp, pm = _pad(p, 16, rng, garbage=False)
  pp[~pm] = rng.uniform(0, 1, int((~pm).sum()))       # padding that would be rejected
  expected = stats.benjamini_hochberg(p, q)
  # float64 (local x64): the same decision bit for bit, even on a threshold.
  with jax.enable_x64(True):
    pp64 = pp.astype(np.float64)
    pp64[pm] = p
    got64 = np.asarray(batched.benjamini_hochberg_masked(pp64, pm, q))
    _close(np.asarray(batched.bh_adjusted(pp64, pm))[pm], _bh_adjusted_reference(p), rtol=1e-12,
           atol=1e-12)
  np.testing.assert_array_equal(got64[pm], expected)
  assert not got64[~pm].any()
  # float32: equal unless a p-value lies within float32 rounding of its threshold.
  assume(not _near_threshold(p, q))
  got = np.asarray(batched.benjamini_hochberg_masked(pp, pm, q))
  np.testing.assert_array_equal(got[pm], expected)
  assert not got[~pm].any()
  adj = np.asarray(batched.bh_adjusted(pp, pm))
  _close(adj[pm], _bh_adjusted_reference(p))
  np.testing.assert_array_equal(adj[pm] <= q, expected)
  _close(batched.simes(pp, pm), np.min(_bh_adjusted_reference(p)))


def test_simes_and_bh_adjusted_examples():
  p = np.array([0.01, 0.04, 0.03, 0.2, 1.0, 0.0])
  pp, pm = _pad(p, 16, np.random.default_rng(5))
  _close(batched.simes(pp, pm), min(6 * np.sort(p) / np.arange(1, 7)))
  _close(np.asarray(batched.bh_adjusted(pp, pm))[pm], _bh_adjusted_reference(p))
  assert float(batched.simes(pp, np.zeros(16, bool))) == 1.0


# -----------------------------------------------------------------------------
# Max-T and the rank correlation.
# -----------------------------------------------------------------------------


def _family(rng, t=4, n1=30, n2=40, shift=0.5):
  base_x = rng.normal(shift, 1, n1)
  base_y = rng.normal(0, 1, n2)
  x = np.round(np.stack([base_x + rng.normal(0, s, n1) for s in np.linspace(0.2, 2, t)]), 1)
  y = np.round(np.stack([base_y + rng.normal(0, s, n2) for s in np.linspace(0.2, 2, t)]), 1)
  return x, y


def _pad_rows(a, size, rng):
  pos = np.sort(rng.choice(size, a.shape[1], replace=False))
  out = rng.normal(0, 50, (a.shape[0], size))
  out[:, pos] = a
  mask = np.zeros(size, bool)
  mask[pos] = True
  return out, mask


def test_rank_correlation_matches_numpy():
  rng = np.random.default_rng(6)
  x, y = _family(rng)
  xp, xm = _pad_rows(x, 36, rng)
  yp, ym = _pad_rows(y, 48, rng)
  corr, ok = batched.rank_correlation_masked(xp, xm, yp, ym)
  assert bool(ok) and corr.dtype == jnp.float64
  _close(corr, stats._rank_correlation(x, y), rtol=1e-12, atol=1e-12)
  x[1] = 0.3
  y[1] = 0.3
  xp[1, xm] = 0.3
  yp[1, ym] = 0.3
  assert stats._rank_correlation(x, y) is None
  assert not bool(batched.rank_correlation_masked(xp, xm, yp, ym)[1])


def test_maxt_adjusted_matches_numpy():
  rng = np.random.default_rng(7)
  for shift in (0.0, 0.5, 1.5):          # from p ~ uniform to the Bonferroni floor
    x, y = _family(rng, shift=shift)
    p = np.array([stats.mann_whitney(a, b).p_value for a, b in zip(x, y)])
    expected = stats.maxt_adjusted_mwu(x, y, p)
    null = stats._maxt_null(stats._rank_correlation(x, y))
    got = batched.maxt_adjusted(p, null)
    assert got.dtype == jnp.float64
    _close(got, expected, rtol=1e-12, atol=1e-12)
    # Padded family: two padding slots, and batched over two identical families.
    pp = np.concatenate([p, [0.5, 0.01]])
    mask = np.array([True] * p.size + [False, False])
    _close(np.asarray(batched.maxt_adjusted(pp, null, mask))[mask], expected, rtol=1e-12,
           atol=1e-12)
    both = batched.maxt_adjusted_batched(np.stack([pp, pp]), np.stack([null, null]),
                                         np.stack([mask, mask]))
    _close(np.asarray(both)[:, mask], np.stack([expected, expected]), rtol=1e-12, atol=1e-12)
  # Small sets: maxt_adjusted_mwu falls back to Bonferroni.
  x, y = _family(rng, n1=8, n2=9)
  p = np.array([stats.mann_whitney(a, b).p_value for a, b in zip(x, y)])
  _close(batched.maxt_adjusted(p, np.sort(rng.normal(size=100)), use_bonferroni=True),
         stats.maxt_adjusted_mwu(x, y, p), rtol=1e-12, atol=1e-12)


# -----------------------------------------------------------------------------
# Bootstrap intervals.
# -----------------------------------------------------------------------------


def _padded_indices(compact, mask):
  """(B, n_valid) indices into the valid entries -> (B, n_pad) indices into the padded array."""
  valid = np.flatnonzero(mask)
  out = np.tile(np.arange(mask.size), (compact.shape[0], 1))
  out[:, valid] = valid[compact]
  return out


def test_bootstrap_indices_resample_valid_entries_only():
  mask = np.zeros(20, bool)
  mask[[1, 4, 5, 11, 19]] = True
  idx = np.asarray(batched.bootstrap_indices(jax.random.key(0), mask, 300))
  assert idx.shape == (300, 20)
  assert np.all(mask[idx[:, mask]])
  np.testing.assert_array_equal(idx[:, ~mask], np.tile(np.flatnonzero(~mask), (300, 1)))
  assert set(np.unique(idx[:, mask])) == set(np.flatnonzero(mask))


def test_bootstrap_auc_ci_matches_numpy_with_the_same_indices():
  rng = np.random.default_rng(8)
  x, y = _draw(rng, 15, 50)
  xp, xm = _pad(x, X_PAD, rng)
  yp, ym = _pad(y, Y_PAD, rng)
  n_boot = 200
  bx = rng.integers(0, x.size, (n_boot, x.size))
  by = rng.integers(0, y.size, (n_boot, y.size))
  vals = [stats.auc(x[i], y[j]) for i, j in zip(bx, by)]
  expected = np.quantile(vals, [0.025, 0.975])
  got = batched.bootstrap_auc_ci_from_indices(xp, xm, yp, ym, _padded_indices(bx, xm),
                                              _padded_indices(by, ym), 0.95)
  _close(got, expected)
  lo, hi = batched.bootstrap_auc_ci(jax.random.key(1), xp, xm, yp, ym, n_boot=n_boot, level=0.95)
  assert 0 <= float(lo) <= stats.auc(x, y) <= float(hi) <= 1
  # The same key and mask give the same interval whatever the padding holds.
  xq = np.where(xm, xp, -xp)
  _close(batched.bootstrap_auc_ci(jax.random.key(1), xq, xm, yp, ym, n_boot=n_boot, level=0.95),
         (lo, hi),
         rtol=0, atol=0)


def _decision_indices(sizes, n_boot, seed):
  """The indices decision.forgetting_score_ci_reference draws (same generator, same order)."""
  rng = np.random.default_rng([int(seed), 15485863])
  draws = [[], [], []]
  for _ in range(n_boot):
    for k, n in enumerate(sizes):
      draws[k].append(rng.integers(0, n, n))
  return [np.asarray(d) for d in draws]


@pytest.mark.parametrize('du_shift,mem_shift,expect_nan', [
    (0.0, 1.0, False),     # interior lower end
    (0.5, 1.0, False),     # interior upper end
    (0.3, 0.05, False),    # 46 of 200 replicates undefined (dropped)
    (0.3, -0.5, True),     # most replicates undefined: (nan, nan)
])
def test_forgetting_score_ci_matches_decision(du_shift, mem_shift, expect_nan):
  rng = np.random.default_rng(9)
  du = np.round(rng.normal(du_shift, 1, 18), 1)
  ref = np.round(rng.normal(0, 1, 50), 1)
  mem = np.round(rng.normal(mem_shift, 1, 20), 1)
  n_boot, seed = 200, 3
  expected = decision.forgetting_score_ci_reference(du, ref, mem, n_boot=n_boot, seed=seed)
  _close(decision.forgetting_score_ci(du, ref, mem, n_boot=n_boot, seed=seed), expected)
  idx = _decision_indices((du.size, ref.size, mem.size), n_boot, seed)
  padded = [_pad(v, size, rng) for v, size in ((du, X_PAD), (ref, Y_PAD), (mem, X_PAD))]
  args = [a for pair in padded for a in pair]
  got = batched.forgetting_score_ci_from_indices(
      *args, *[_padded_indices(i, m) for i, (_, m) in zip(idx, padded)], 0.95)
  assert math.isnan(expected[0]) == expect_nan
  if expect_nan:
    assert all(math.isnan(float(v)) for v in got)
  else:
    _close(got, expected)
  lo, hi = batched.forgetting_score_ci_masked(jax.random.key(0), *args, n_boot=n_boot)
  assert math.isnan(float(lo)) == expect_nan
  if not expect_nan:
    assert 0 <= float(lo) <= float(hi) <= 1


# -----------------------------------------------------------------------------
# Batches, compilation.
# -----------------------------------------------------------------------------


def _requests(rng, r=5):
  xs = [np.round(rng.normal(0.3, 1, int(rng.integers(1, X_PAD + 1))), 1) for _ in range(r)]
  xs[0] = xs[0][:1]           # a one-record request: DeLong undefined
  xp, xm = zip(*[_pad(x, X_PAD, rng) for x in xs])
  return xs, np.stack(xp), np.stack(xm)


def test_batched_equals_per_request():
  rng = np.random.default_rng(10)
  xs, xp, xm = _requests(rng)
  y = np.round(rng.normal(0, 1, 50), 1)
  yp, ym = _pad(y, Y_PAD, rng)
  as_np = lambda tree: jax.tree.map(np.asarray, tree)
  per = [as_np(batched.mann_whitney_masked(a, m, yp, ym)) for a, m in zip(xp, xm)]
  mw = as_np(batched.mann_whitney_batched(xp, xm, yp, ym))
  _close(np.stack(mw, 1), np.array(per, np.float64), rtol=1e-7, atol=1e-7)
  by_hand = jax.vmap(batched.mann_whitney_masked, in_axes=(0, 0, None, None))(xp, xm, yp, ym)
  _close(np.stack(by_hand, 1), np.array(per, np.float64), rtol=1e-7, atol=1e-7)
  _close(batched.auc_batched(xp, xm, yp, ym),
         [batched.auc_masked(a, m, yp, ym) for a, m in zip(xp, xm)], rtol=1e-7, atol=1e-7)
  # A reference per request (R, n2_pad) gives the same as the shared one.
  _close(batched.auc_batched(xp, xm, np.tile(yp, (len(xs), 1)), np.tile(ym, (len(xs), 1))),
         mw.auc, rtol=1e-7, atol=1e-7)
  var = batched.delong_variance_batched(xp, xm, yp, ym)
  _close(var, [batched.delong_variance_masked(a, m, yp, ym) for a, m in zip(xp, xm)],
         rtol=1e-7, atol=1e-9, equal_nan=True)
  lo, hi = batched.auc_ci_batched(xp, xm, yp, ym, 0.9)
  _close(np.stack([lo, hi], 1), [batched.auc_ci_masked(a, m, yp, ym, 0.9) for a, m in zip(xp, xm)],
         rtol=1e-7, atol=1e-7, equal_nan=True)
  emp = np.asarray(batched.empirical_p_values_batched(xp, xm, yp, ym, alternative='greater'))
  bh = np.asarray(batched.benjamini_hochberg_batched(emp, xm, 0.2))
  req = as_np(batched.request_statistics_batched(xp, xm, yp, ym, 0.2))
  for i, x in enumerate(xs):
    e = stats.empirical_p_values(x, y, 'greater')
    _close(emp[i][xm[i]], e)
    _close(req.record_p[i][xm[i]], e)
    np.testing.assert_array_equal(bh[i][xm[i]], stats.benjamini_hochberg(e, 0.2))
    np.testing.assert_array_equal(req.flagged[i][xm[i]], stats.benjamini_hochberg(e, 0.2))
    assert not req.flagged[i][~xm[i]].any()
    ref = stats.mann_whitney(x, y, method='asymptotic')
    _close([req.u[i], req.p_value[i], req.auc[i]], [ref.statistic, ref.p_value, ref.auc])
    if x.size >= 2:
      _close(req.delong_variance[i], stats.delong_variance(x, y))
    else:
      assert math.isnan(req.delong_variance[i])


def test_second_call_with_the_same_shapes_does_not_compile():
  rng = np.random.default_rng(11)
  _, xp, xm = _requests(rng)
  yp, ym = _pad(np.round(rng.normal(0, 1, 50), 1), Y_PAD, rng)

  def run(xp, xm, yp, ym, q, level):
    out = [batched.request_statistics_batched(xp, xm, yp, ym, q),
           batched.empirical_p_values_batched(xp, xm, yp, ym, alternative='less'),
           batched.mann_whitney_masked(xp[1], xm[1], yp, ym, alternative='greater'),
           batched.auc_ci_masked(xp[1], xm[1], yp, ym, level),
           batched.bh_adjusted(xp[1], xm[1]),
           batched.maxt_adjusted(np.array([0.01, 0.2]), np.sort(rng.normal(size=100)))]
    jax.block_until_ready(out)

  with count_compilations() as c:
    run(xp, xm, yp, ym, 0.05, 0.95)
    batched.auc_masked(xp[0, :7], xm[0, :7], yp, ym)     # a new shape: the counter counts
  assert c.count >= 1
  _, xp2, xm2 = _requests(rng)
  yp2, ym2 = _pad(np.round(rng.normal(0, 1, 41), 1), Y_PAD, rng)
  with count_compilations() as c:
    run(xp2, xm2, yp2, ym2, 0.1, 0.9)      # new data, new q and level: same programs
    for alt in ALTS:                        # the alternatives share one program
      batched.mann_whitney_masked(xp2[0], xm2[0], yp2, ym2, alternative=alt)
      batched.empirical_p_values_batched(xp2, xm2, yp2, ym2, alternative=alt)
  assert c.count == 0, c.names


def test_stats_bench_runs():
  from jaxaudit.study.stats_bench import bench_statistics
  rows = bench_statistics(request_counts=(1, 10), n_ref=200)
  assert [r['requests'] for r in rows] == [1, 10]
  for r in rows:
    assert r['numpy_s'] > 0 and r['jax_s'] > 0 and r['compile_s'] > 0
    assert r['ratio'] == pytest.approx(r['numpy_s'] / r['jax_s'])
    assert r['max_abs_diff'] < 1e-6
