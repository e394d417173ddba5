"""Tests for LiRA's score table (jaxaudit.peers.lira.lira_scores).

``reference_lira`` is written here from the published code's rules
(tensorflow/privacy research/mi_lira_2021 plot.py, ``generate_ours`` and
``generate_ours_offline``): per side the first k shadows of every record (k the
smallest count), the median, np.std (ddof 0) per record or over every value
(fixed variance; online from the IN values for both sides), σ + 1e-30, and the
offline score −log N(φ; μ_out, σ_out). ``naive_legacy_lira`` is the
pre-reference jaxaudit rule (mean, ddof 1, pooled σ, one-sided offline).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxaudit import peers
from jaxaudit.errors import AuditError
# The package exports the function ``lira``, which shadows the submodule.
lira_lib = importlib.import_module('jaxaudit.peers.lira')


def reference_lira(phi_t, phi_s, mask, *, online, fixed):
  a_n, s_n, n = phi_s.shape
  dat_in = [[phi_s[:, s, i] for s in range(s_n) if mask[s, i]] for i in range(n)]
  dat_out = [[phi_s[:, s, i] for s in range(s_n) if not mask[s, i]] for i in range(n)]
  k_in = min(len(d) for d in dat_in)
  k_out = min(len(d) for d in dat_out)
  dat_in = np.array([d[:k_in] for d in dat_in]) if k_in else None     # (n, k, A)
  dat_out = np.array([d[:k_out] for d in dat_out])
  out = np.zeros(n)
  for i in range(n):
    mu_out = np.median(dat_out[i], 0)
    if online:
      mu_in = np.median(dat_in[i], 0)
      if fixed:
        sd_in = sd_out = np.std(dat_in)
      else:
        sd_in, sd_out = np.std(dat_in[i], 0), np.std(dat_out[i], 0)
      score = (sps.norm.logpdf(phi_t[:, i], mu_in, sd_in + 1e-30)
               - sps.norm.logpdf(phi_t[:, i], mu_out, sd_out + 1e-30))
    else:
      sd_out = np.std(dat_out) if fixed else np.std(dat_out[i], 0)
      score = -sps.norm.logpdf(phi_t[:, i], mu_out, sd_out + 1e-30)
    out[i] = np.mean(score)
  return out


def naive_legacy_lira(phi_t, phi_s, mask, *, online, fixed):
  a_n, s_n, n = phi_s.shape

  def groups(a, i, side):
    return [phi_s[a, s, i] for s in range(s_n) if bool(mask[s, i]) == side]

  def pooled_sd(a, side):
    ss, dof = 0.0, 0
    for i in range(n):
      vals = groups(a, i, side)
      mu = sum(vals) / len(vals)
      ss += sum((v - mu)**2 for v in vals)
      dof += len(vals) - 1
    return math.sqrt(ss / dof)

  out = np.zeros(n)
  for i in range(n):
    total = 0.0
    for a in range(a_n):
      st = {}
      for side in (True, False):
        vals = groups(a, i, side)
        mu = sum(vals) / len(vals)
        st[side] = (mu, pooled_sd(a, side) if fixed else float(np.std(vals, ddof=1)))
      t = phi_t[a, i]
      if online:
        total += sps.norm.logpdf(t, *st[True]) - sps.norm.logpdf(t, *st[False])
      else:
        mu, sd = st[False]
        total += -sps.norm.logsf((t - mu) / sd)
    out[i] = total / a_n
  return out


def _unbalanced(seed, a=2, s=7, n=9, integer=False):
  rng = np.random.default_rng(seed)
  mask = np.zeros((s, n), bool)
  for i in range(n):   # 2..5 IN shadows per record.
    mask[rng.choice(s, rng.integers(2, 6), replace=False), i] = True
  if integer:          # ties everywhere, medians between values
    phi_s = rng.integers(-2, 3, size=(a, s, n)).astype(float) + 3.0 * mask[None]
    phi_t = rng.integers(-2, 5, size=(a, n)).astype(float)
  else:
    phi_s = rng.normal(size=(a, s, n)) + 3.0 * mask[None]
    phi_t = rng.normal(size=(a, n)) * 2.0
  return phi_t, phi_s, mask


@pytest.mark.parametrize('integer', [False, True])
@pytest.mark.parametrize('online,fixed', [(True, True), (True, False), (False, True),
                                          (False, False)])
def test_default_matches_reference(online, fixed, integer):
  phi_t, phi_s, mask = _unbalanced(0, integer=integer)
  variance = 'global' if fixed else 'per_record'
  got = peers.lira_scores(phi_t, phi_s, mask, online=online, variance=variance)
  want = reference_lira(phi_t, phi_s, mask, online=online, fixed=fixed)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('online,fixed', [(True, True), (True, False), (False, True),
                                          (False, False)])
def test_legacy_options_match_old_rule(online, fixed):
  phi_t, phi_s, mask = _unbalanced(0)
  opts = dict(lira_lib.LEGACY_OPTIONS)
  if not fixed:
    opts['variance'] = 'per_record'
  got = peers.lira_scores(phi_t, phi_s, mask, online=online, **opts)
  want = naive_legacy_lira(phi_t, phi_s, mask, online=online, fixed=fixed)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_offline_two_sided_scores_both_tails():
  rng = np.random.default_rng(1)
  s, n = 8, 3
  mask = peers.plan_halves(n, s, seed=0)
  phi_s = rng.normal(size=(1, s, n))
  phi_t = np.array([[8.0, -8.0, 0.0]])
  two = peers.lira_scores(phi_t, phi_s, mask, online=False)
  one = peers.lira_scores(phi_t, phi_s, mask, online=False, offline_test='one_sided')
  assert two[0] > two[2] and two[1] > two[2]          # far on either side = member-like
  assert one[0] > one[2] > one[1]                      # one-sided: only above


def test_scores_order_members_first():
  rng = np.random.default_rng(1)
  s, n = 8, 40
  mask = peers.plan_halves(n, s, seed=0)
  phi_s = rng.normal(size=(1, s, n)) + 4.0 * mask[None]
  member = np.arange(n) < n // 2
  phi_t = rng.normal(size=(1, n)) + 4.0 * member[None]
  scores = peers.lira_scores(phi_t, phi_s, mask)
  assert scores[member].mean() > scores[~member].mean() + 5.0


def test_errors():
  with pytest.raises(AuditError, match='does not match'):
    peers.lira_scores(np.zeros((1, 5)), np.zeros((1, 4, 6)), np.ones((4, 6), bool))
  with pytest.raises(AuditError, match='in_mask must have shape'):
    peers.lira_scores(np.zeros((1, 5)), np.zeros((1, 4, 5)), np.ones((3, 5), bool))
  with pytest.raises(AuditError, match='NaN or inf'):
    peers.lira_scores(np.full((1, 5), np.nan), np.zeros((1, 4, 5)), np.ones((4, 5), bool))
  with pytest.raises(AuditError, match='no IN shadow'):
    peers.lira_scores(np.zeros((1, 2)), np.zeros((1, 4, 2)), np.zeros((4, 2), bool))
  with pytest.raises(AuditError, match='center must be one of'):
    peers.lira_scores(np.zeros((1, 2)), np.zeros((1, 4, 2)), np.eye(4, 2, dtype=bool),
                      center='mode')
  with pytest.raises(AuditError, match='variance must be one of'):
    peers.lira_scores(np.zeros((1, 2)), np.zeros((1, 4, 2)), np.eye(4, 2, dtype=bool),
                      variance='fixed')
