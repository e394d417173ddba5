"""The record statistics of issue 17: each against a naive reference, the family's
calibration under H0, its power against the fakes it targets, and its validators."""

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from scipy import stats as sps

from jaxaudit.audit import evidence, stats
from jaxaudit.audit.decision import DEFAULT_STATISTICS, TestSettings, ignorance_test
from jaxaudit.errors import AuditError
from jaxaudit.tasks.classification import compute_signals

FAST = TestSettings(n_boot=20)


def _logits(rng, a, n, c=5, scale=2.0):
  return (scale * rng.normal(size=(a, n, c))).astype(np.float32)


def _set(rng, n, a=3, k=3, c=5, shift=None):
  """Signals of one record set with random logits (Mu and K verifiers)."""
  y = rng.integers(0, c, n)
  tl = _logits(rng, a, n, c)
  vl = np.stack([_logits(rng, a, n, c) for _ in range(k)], axis=1)
  if shift is not None:
    tl = shift(tl, vl, y)
  return compute_signals(tl, vl, y), tl, vl, y


def _naive_kl(p_logits, q_logits):
  def logsm(z):
    z = np.asarray(z, np.float64)
    return z - np.log(np.sum(np.exp(z - z.max())) ) - z.max()
  lp, lq = logsm(p_logits), logsm(q_logits)
  return float(np.sum(np.exp(lp) * (lp - lq)))


def test_each_statistic_equals_a_naive_loop():
  rng = np.random.default_rng(0)
  sig, tl, vl, y = _set(rng, 40, a=4, k=3)
  cal = rng.normal(size=(4, 40))
  rs = evidence.RecordSet(cal, None, sig)
  got = evidence.compute(DEFAULT_STATISTICS, rs)
  for i in range(40):
    right_t = float(np.argmax(tl[0, i]) == y[i])
    right_v = np.mean([float(np.argmax(vl[0, k, i]) == y[i]) for k in range(3)])
    assert got['correct'][i] == pytest.approx(right_t - right_v)
    kl0 = np.mean([_naive_kl(tl[0, i], vl[0, k, i]) for k in range(3)])
    assert got['kl'][i] == pytest.approx(kl0, rel=1e-4, abs=1e-5)
    kln = np.mean([_naive_kl(tl[a, i], vl[a, k, i]) for a in range(1, 4) for k in range(3)])
    assert got['kl_neighbours'][i] == pytest.approx(kln, rel=1e-4, abs=1e-5)
    assert got['exact'][i] == cal[0, i]
    assert got['neighbours'][i] == pytest.approx(cal[1:, i].mean())
    assert got['gap'][i] == pytest.approx(cal[0, i] - cal[1:, i].mean())


def _null_inputs(rng, n_du=60, n_ref=90):
  """Exchangeable Du and D_ref: one population of records split at random."""
  sig, *_ = _set(rng, n_du + n_ref)
  cal = rng.normal(size=(3, n_du + n_ref)) + rng.normal(size=(1, n_du + n_ref))
  part = lambda s, sl: type(s)(*(np.asarray(f)[..., sl] for f in s))
  du, ref = slice(0, n_du), slice(n_du, None)
  ver = rng.normal(size=n_du + n_ref)
  return (cal[:, du], cal[:, ref], None, ver[du], ver[ref]), dict(
      signals_du=part(sig, du), signals_ref=part(sig, ref))


def test_family_p_values_uniform_under_the_null():
  """The combined p-value over six statistics keeps its level; each raw p is uniform."""
  rng = np.random.default_rng(0)
  ps, kl_p = [], []
  for _ in range(200):
    args, kw = _null_inputs(rng)
    r = ignorance_test(*args, FAST, **kw)
    assert set(r['tests']) == set(DEFAULT_STATISTICS)
    ps.append(r['p_value'])
    kl_p.append(r['tests']['kl']['p_value'])
  ps = np.array(ps)
  assert sps.kstest(kl_p, 'uniform').pvalue > 0.01
  k = int(np.sum(ps <= 0.05))
  assert sps.binomtest(k, 200, 0.05, alternative='greater').pvalue > 0.01, k
  # max-T is exact, not only conservative: the family p is not piled up at 1.
  assert np.mean(ps <= 0.5) > 0.3


def test_an_output_rewrite_on_du_is_caught_as_altered():
  """Du's outputs replaced by the verifiers' mean (φ unchanged on average): KL catches it."""
  rng = np.random.default_rng(3)
  n_du, n_ref = 150, 300
  y = rng.integers(0, 5, n_du + n_ref)
  vl = np.stack([_logits(rng, 1, n_du + n_ref) for _ in range(3)], axis=1)
  tl = _logits(rng, 1, n_du + n_ref)
  tl[:, :n_du] = vl[:, :, :n_du].mean(1)       # the fake: Du answered like the verifiers
  sig = compute_signals(tl, vl, y)
  part = lambda sl: type(sig)(*(np.asarray(f)[..., sl] for f in sig))
  cal = np.zeros((1, n_du + n_ref)) + rng.normal(size=(1, n_du + n_ref))
  r = ignorance_test(cal[:, :n_du], cal[:, n_du:], None, np.zeros(n_du), np.zeros(n_ref), FAST,
                     signals_du=part(slice(0, n_du)), signals_ref=part(slice(n_du, None)))
  assert r['rejected'] and r['direction'] == 'altered', (r['tests'], r['direction'])
  assert 'kl' in [k for k, t in r['tests'].items() if t['p_adjusted'] <= 0.05]
  # The φ statistics alone see nothing: the calibrated scores are exchangeable.
  r_phi = ignorance_test(cal[:, :n_du], cal[:, n_du:], None, np.zeros(n_du), np.zeros(n_ref),
                         TestSettings(n_boot=20, statistics=('exact',)))
  assert not r_phi['rejected']


def test_family_without_signals_or_neighbours():
  assert evidence.family(DEFAULT_STATISTICS, 1, False) == ('exact',)
  assert evidence.family(DEFAULT_STATISTICS, 3, False) == ('exact', 'neighbours', 'gap')
  assert evidence.family(DEFAULT_STATISTICS, 1, True) == ('exact', 'correct', 'kl')


def test_critical_level_between_bonferroni_and_alpha():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(1, 300)), rng.normal(size=(1, 400))
  same = stats.maxt_critical_level(np.repeat(x, 4, 0), np.repeat(y, 4, 0), 0.05)
  assert same == pytest.approx(0.05, rel=0.05)
  ind = stats.maxt_critical_level(rng.normal(size=(4, 300)), rng.normal(size=(4, 400)), 0.05)
  sidak = 1 - 0.95 ** 0.25
  assert ind == pytest.approx(sidak, rel=0.1) and 0.05 / 4 <= ind <= 0.05


def test_constant_statistic_leaves_the_family():
  """A constant statistic (p = 1 under any labelling) does not cost the others power."""
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(2, 200)), rng.normal(size=(2, 300))
  x[0] += 0.25
  x[1], y[1] = 0.0, 0.0
  p = [stats.mann_whitney(a, b).p_value for a, b in zip(x, y)]
  adj = stats.maxt_adjusted_mwu(x, y, p)
  assert adj[1] == 1.0 and adj[0] == pytest.approx(p[0])


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list(evidence.STATISTICS) + ['bogus', 'phi']), max_size=8))
def test_statistic_names_validator(names):
  ok = (len(names) > 0 and names[0] == 'exact' and len(set(names)) == len(names)
        and all(n in evidence.STATISTICS for n in names))
  if ok:
    assert evidence.check_names(names) == tuple(names)
    assert TestSettings(statistics=tuple(names)).statistics == tuple(names)
  else:
    with pytest.raises(AuditError):
      evidence.check_names(names)
    with pytest.raises(AuditError):
      TestSettings(statistics=tuple(names))
