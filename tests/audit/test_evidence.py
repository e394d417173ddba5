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


def _logsm(z):
  z = np.asarray(z, np.float64)
  return z - np.log(np.sum(np.exp(z - z.max()))) - z.max()


def _naive_kl(p_logits, q_logits):
  lp, lq = _logsm(p_logits), _logsm(q_logits)
  return float(np.sum(np.exp(lp) * (lp - lq)))


def test_each_statistic_equals_a_naive_loop():
  rng = np.random.default_rng(0)
  sig, tl, vl, y = _set(rng, 40, a=4, k=3)
  cal = rng.normal(size=(4, 40))
  rs = evidence.RecordSet(cal, None, sig)
  got = evidence.compute(tuple(evidence.STATISTICS), rs)
  for i in range(40):
    mix = np.log(np.mean([np.exp(_logsm(vl[0, k, i])) for k in range(3)], axis=0))
    lt = _logsm(tl[0, i])
    assert got['kl_ensemble'][i] == pytest.approx(np.sum(np.exp(lt) * (lt - mix)), rel=1e-4,
                                                  abs=1e-5)
    agree = np.mean([np.argmax(vl[0, k, i]) == np.argmax(tl[0, i]) for k in range(3)])
    assert got['agreement'][i] == pytest.approx(agree)
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
  """The combined p-value over the default family keeps its level; a raw p is uniform."""
  rng = np.random.default_rng(0)
  ps, kl_p = [], []
  for _ in range(200):
    args, kw = _null_inputs(rng)
    r = ignorance_test(*args, FAST, **kw)
    assert set(r['tests']) == set(DEFAULT_STATISTICS)
    ps.append(r['p_value'])
    kl_p.append(r['tests']['kl_ensemble']['p_value'])
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
  assert 'kl_ensemble' in [k for k, t in r['tests'].items() if t['p_adjusted'] <= 0.05]
  # The φ statistics alone see nothing: the calibrated scores are exchangeable.
  r_phi = ignorance_test(cal[:, :n_du], cal[:, n_du:], None, np.zeros(n_du), np.zeros(n_ref),
                         TestSettings(n_boot=20, statistics=('exact',)))
  assert not r_phi['rejected']


def test_family_without_signals_or_neighbours():
  rng = np.random.default_rng(0)
  sig, *_ = _set(rng, 10)
  every = tuple(evidence.STATISTICS)
  assert evidence.family(every, 1, None) == ('exact', 'exact_spread')
  assert evidence.family(every, 3, None) == ('exact', 'neighbours', 'gap', 'exact_spread',
                                             'neighbours_spread', 'gap_spread')
  assert evidence.family(every, 1, sig) == ('exact', 'correct', 'kl', 'kl_ensemble', 'agreement',
                                            'exact_spread', 'kl_ensemble_spread')
  # A task without the ensemble divergence (Signals.kl_ensemble None) leaves it out.
  assert 'kl_ensemble' not in evidence.family(every, 3, sig._replace(kl_ensemble=None))


def test_critical_level_between_bonferroni_and_alpha():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(1, 300)), rng.normal(size=(1, 400))
  same = stats.maxt_critical_level(np.repeat(x, 4, 0), np.repeat(y, 4, 0), 0.05)
  assert same == pytest.approx(0.05, rel=0.05)
  ind = stats.maxt_critical_level(rng.normal(size=(4, 300)), rng.normal(size=(4, 400)), 0.05)
  sidak = 1 - 0.95 ** 0.25
  assert ind == pytest.approx(sidak, rel=0.1) and 0.05 / 4 <= ind <= 0.05


def test_spread_is_a_scale_test_on_the_pooled_median():
  """B_spread = |B − pooled median|: a Du squeezed around the centre is caught, a shifted
  one is not its business; both sets share one median."""
  rng = np.random.default_rng(2)
  du, ref = 0.4 * rng.normal(size=300), rng.normal(size=600)
  s_du, s_ref = evidence.with_spreads(('exact', 'exact_spread'), {'exact': du}, {'exact': ref})
  med = np.median(np.concatenate([du, ref]))
  np.testing.assert_allclose(s_du['exact_spread'], np.abs(du - med))
  np.testing.assert_allclose(s_ref['exact_spread'], np.abs(ref - med))
  assert stats.mann_whitney(s_du['exact_spread'], s_ref['exact_spread']).p_value < 1e-6
  assert stats.mann_whitney(du, ref).p_value > 0.01


def test_maxt_matches_a_permutation_reference_for_many_statistics():
  """The Monte Carlo max-T of 9 correlated statistics agrees with a permutation max-T."""
  rng = np.random.default_rng(5)
  base = rng.normal(size=(1, 700))
  pool = np.concatenate([base + 0.7 * rng.normal(size=(6, 700)), rng.normal(size=(3, 700))])
  pool[3] = np.round(pool[3])                    # ties
  pool[:, :200] += 0.08
  x, y = pool[:, :200], pool[:, 200:]
  p = [stats.mann_whitney(a, b).p_value for a, b in zip(x, y)]
  got = stats.maxt_adjusted_mwu(x, y, p)
  ref = stats.permutation_maxt_mwu(x, y, n_perm=4000, seed=1)
  np.testing.assert_allclose(got, ref, atol=0.03)
  assert np.all(got >= np.asarray(p) - 1e-12) and np.all(got <= 9 * np.asarray(p) + 1e-12)


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
