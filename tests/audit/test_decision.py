"""The ignorance test on synthetic scores: calibrated under H0, powerful under H1."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxaudit.audit.decision import (TestSettings, matched_sample, forgetting_score,
                                     ignorance_test, utility_test)
from jaxaudit.errors import AuditError

FAST = TestSettings(n_boot=50)


def _null_draw(rng, n_du=60, n_ref=90, n_mem=80, views=3):
  """Exchangeable Du and D_ref: one population split at random."""
  pop = rng.normal(size=(views, n_du + n_ref)) + rng.normal(size=(1, n_du + n_ref))
  ver = rng.normal(size=n_du + n_ref)
  mem = rng.normal(size=(views, n_mem)) + 1.0
  return pop[:, :n_du], pop[:, n_du:], mem, ver[:n_du], ver[n_du:]


def test_p_values_uniform_under_exchangeable_null():
  rng = np.random.default_rng(0)
  def draw():   # no member sample: power/bootstrap are not needed for the p-values
    du, ref, _, vdu, vref = _null_draw(rng)
    return du, ref, None, vdu, vref
  results = [ignorance_test(*draw(), FAST) for _ in range(400)]
  p = np.array([r['tests']['exact']['p_value'] for r in results])
  assert sps.kstest(p, 'uniform').pvalue > 0.01
  # The combined decision's false-alarm rate is at most alpha (Bonferroni).
  k = int(np.sum([r['rejected'] for r in results]))
  assert sps.binomtest(k, 400, 0.05, alternative='greater').pvalue > 0.01, k


def test_remembered_and_damaged_directions():
  rng = np.random.default_rng(1)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=200, n_ref=300)
  r = ignorance_test(du + 0.8, ref, mem, vdu, vref, FAST)
  assert r['decision'] == 'not_forgotten' and r['direction'] == 'remembers'
  assert r['effect_auc'] > 0.6 and r['forgetting_score'] < 0.8
  r = ignorance_test(du - 0.8, ref, mem, vdu, vref, FAST)
  assert r['decision'] == 'not_forgotten' and r['direction'] == 'damaged'
  assert r['effect_auc'] < 0.4 and r['forgetting_score'] == 1.0   # clipped to [0, 1] (issue 11)
  r = ignorance_test(du, ref, mem, vdu, vref, FAST)
  assert r['decision'] == 'forgotten' and r['power'] >= 0.8
  lo, hi = r['power_ci']                       # the power estimate's own uncertainty
  assert 0 <= lo <= r['power'] <= hi <= 1


def test_per_record_evidence_goes_below_the_empirical_floor():
  rng = np.random.default_rng(6)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=100, n_ref=200)
  du = du.copy()
  du[:, :3] += 12.0
  p = np.asarray(ignorance_test(du, ref, mem, vdu, vref, FAST)['per_record']['p_value'])
  assert np.all(p[:3] < 1 / 201) and np.all(p[3:] >= 1 / 201)


def test_masking_is_detected_as_remembering():
  """Exact inputs suppressed, neighbours still familiar: the fake of output masking."""
  rng = np.random.default_rng(2)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=200, n_ref=300)
  du = du.copy()
  du[0] -= 1.0      # exact view masked
  du[1:] += 1.0     # neighbours remembered
  r = ignorance_test(du, ref, mem, vdu, vref, FAST)
  assert r['decision'] == 'not_forgotten'
  assert r['direction'] == 'remembers' and r['exact_inputs_masked']


def test_inconclusive_without_power_and_invalid_reference():
  rng = np.random.default_rng(3)
  du, ref, _, vdu, vref = _null_draw(rng, n_du=30, n_ref=30)
  weak_members = rng.normal(size=(3, 40)) + 0.05
  r = ignorance_test(du, ref, weak_members, vdu, vref, FAST)
  assert r['decision'] == 'inconclusive' and r['power'] < 0.8
  r = ignorance_test(du, ref, None, vdu, vref, FAST)
  assert r['decision'] == 'inconclusive'
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=200, n_ref=300)
  r = ignorance_test(du, ref, mem, vdu + 1.0, vref, FAST)   # verifiers see Du differently
  assert r['decision'] == 'invalid_reference' and not r['reference_check']['ok']


def test_collapse_flag():
  rng = np.random.default_rng(4)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=200, n_ref=300)
  u_v = (rng.random((2, 300)) < 0.9).astype(float)
  r = ignorance_test(du, ref, mem, vdu, vref, FAST,
                     utility_ref=((rng.random(300) < 0.3).astype(float), u_v))
  assert r['utility_collapse'] and r['decision'] == 'not_forgotten' and r['direction'] == 'collapse'
  assert r['utility_test']['p_value'] < 1e-6
  # Mu more useful than the verifiers (an honest model trained on all of Dr): no collapse.
  r = ignorance_test(du, ref, mem, vdu, vref, FAST,
                     utility_ref=((rng.random(300) < 0.97).astype(float), u_v))
  assert not r['utility_collapse'] and r['direction'] != 'collapse'
  assert r['utility_test']['p_value'] > 0.5


def test_utility_test_equals_scipy_paired_t_test():
  rng = np.random.default_rng(11)
  for n, k in ((5, 1), (40, 4), (300, 8)):
    u_t = rng.random(n)
    u_v = rng.random((k, n))
    r = utility_test(u_t, u_v, margin=0.03, alpha=0.01)
    ref = sps.ttest_1samp(u_t - u_v.mean(0) + 0.03, 0.0, alternative='less')
    assert abs(r['p_value'] - ref.pvalue) < 1e-10
    lo, hi = r['difference_ci']
    assert lo < r['difference'] < hi and r['collapse'] == (ref.pvalue <= 0.01)


def test_utility_test_uniform_at_the_boundary_and_edge_cases():
  rng = np.random.default_rng(12)
  # Mu exchangeable with the verifiers (the boundary of H0): p-values uniform.
  p = np.array([utility_test((rng.random(200) < 0.7).astype(float),
                             (rng.random((4, 200)) < 0.7).astype(float))['p_value']
                for _ in range(600)])
  assert sps.kstest(p, 'uniform').pvalue > 0.01
  assert abs(np.mean(p <= 0.05) - 0.05) < 0.03
  # Constant differences: the sign decides; bad input is refused with one line.
  assert utility_test(np.zeros(5), np.ones((2, 5)))['collapse']
  assert not utility_test(np.ones(5), np.ones((2, 5)))['collapse']
  with pytest.raises(AuditError, match='non-finite'):
    utility_test(np.array([np.nan, 1.0]), np.ones((2, 2)))
  with pytest.raises(AuditError, match='at least one verifier'):
    utility_test(np.ones(3), np.ones((0, 3)))
  with pytest.raises(AuditError, match='utility_alpha'):
    TestSettings(utility_alpha=1.5)
  with pytest.raises(AuditError, match='collapse_margin'):
    TestSettings(collapse_margin=-0.1)


def test_per_record_evidence_finds_planted_leaks():
  rng = np.random.default_rng(5)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=100, n_ref=2000)
  du = du.copy()
  du[:, :10] += 10.0
  r = ignorance_test(du, ref, mem, vdu, vref, FAST)
  flagged = np.flatnonzero(r['per_record']['flagged'])
  assert set(range(10)) <= set(flagged.tolist()) and len(flagged) <= 13


def test_forgetting_score_anchors():
  rng = np.random.default_rng(6)
  ref = rng.normal(size=5000)
  mem = rng.normal(size=5000) + 1.0
  assert abs(forgetting_score(rng.normal(size=5000), ref, mem)) - 1 < 0.05
  assert abs(forgetting_score(rng.normal(size=5000) + 1.0, ref, mem)) < 0.05


def test_matched_sample():
  y_du = np.array([3] * 10 + [5] * 30)
  pool = np.arange(1000)
  y_pool = np.arange(1000) % 10
  idx, matched = matched_sample(y_du, pool, y_pool, 200, 0)
  assert matched
  counts = np.bincount(y_pool[idx], minlength=10)
  assert abs(counts[3] * 3 - counts[5]) <= 3 and counts.sum() == counts[3] + counts[5]
  idx, matched = matched_sample(np.array([3, 3]), pool[y_pool != 3], y_pool[y_pool != 3], 50, 0)
  assert not matched and len(idx) == 50


def test_bad_scores():
  with pytest.raises(AuditError, match='NaN or inf'):
    ignorance_test(np.array([[np.nan, 1.0]]), np.zeros((1, 3)), None, np.zeros(2), np.zeros(3), FAST)
  with pytest.raises(AuditError, match='at least 2'):
    ignorance_test(np.zeros((1, 1)), np.zeros((1, 3)), None, np.zeros(1), np.zeros(3), FAST)
  with pytest.raises(AuditError, match='alpha'):
    TestSettings(alpha=1.5)


def test_regression_calibration_removes_output_scale():
  from jaxaudit.audit.decision import regression_calibrate
  rng = np.random.default_rng(7)
  v = {k: rng.normal(size=(2, n)) for k, n in (('forget', 50), ('ref', 80))}
  u = {k: 0.3 * v[k] + 0.1 * rng.normal(size=v[k].shape) for k in v}
  cal, betas = regression_calibrate(u, v)
  u_all = np.concatenate([u['forget'], u['ref']], 1)
  v_all = np.concatenate([v['forget'], v['ref']], 1)
  ref_beta = [np.polyfit(v_all[a], u_all[a], 1)[0] for a in range(2)]
  np.testing.assert_allclose(betas, ref_beta, rtol=1e-8)
  np.testing.assert_allclose(cal['ref'], u['ref'] - betas[:, None] * v['ref'])
  # A global rescaling of Mu's scores rescales the calibrated scores: ranks unchanged.
  cal3, _ = regression_calibrate({k: x / 3 for k, x in u.items()}, v)
  np.testing.assert_allclose(cal3['forget'], cal['forget'] / 3, atol=1e-12)


def test_class_level_test_against_naive_binomial():
  from jaxaudit.audit.decision import utility_level_test as class_level_test
  rng = np.random.default_rng(7)
  ct = rng.random(40) < 0.3
  cv = rng.random((3, 40)) < 0.05
  r = class_level_test(ct, cv, alpha=0.05, margin=0.05)
  p0 = min(1.0, cv.mean(1).max() + 0.05)
  k = int(ct.sum())
  naive = sum(sps.binom.pmf(j, 40, p0) for j in range(k, 41))
  np.testing.assert_allclose(r['p_value'], naive, rtol=1e-9)
  assert r['threshold'] == pytest.approx(p0) and r['n'] == 40 and r['power'] > 0.99
  with pytest.raises(AuditError, match='correctness'):
    class_level_test(ct, cv[:, :10], alpha=0.05, margin=0.05)


def test_class_level_decisions():
  """Whole-class forgetting: the record test has no signal; the class test decides."""
  from jaxaudit.audit.decision import utility_level_test as class_level_test
  rng = np.random.default_rng(8)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=30, n_ref=30)
  weak_members = rng.normal(size=(3, 40)) + 0.05          # record test: no power
  never_saw = rng.random((4, 50)) < 0.0
  remembers = class_level_test(rng.random(50) < 0.97, never_saw, alpha=0.05, margin=0.05)
  r = ignorance_test(du, ref, weak_members, vdu, vref, FAST,
                     extra_test=dict(remembers, direction='remembers_class'), extra_only=True)
  assert r['decision'] == 'not_forgotten' and r['direction'] == 'remembers_class'
  assert r['p_value'] <= 2 * remembers['p_value'] + 1e-12
  ignorant = class_level_test(rng.random(50) < 0.0, never_saw, alpha=0.05, margin=0.05)
  r = ignorance_test(du, ref, weak_members, vdu, vref, FAST, extra_test=ignorant,
                     extra_only=True)
  assert r['decision'] == 'forgotten' and r['class_level']['power'] >= 0.8
  # Not every Du record is in a forgotten class: the class test alone is no evidence.
  r = ignorance_test(du, ref, weak_members, vdu, vref, FAST, extra_test=ignorant,
                     extra_only=False)
  assert r['decision'] == 'inconclusive'



def _naive_maxt(x, y, b=3000, seed=0):
  """Permutation max-T over standardised rank sums (independent reference)."""
  rng = np.random.default_rng(seed)
  pooled = np.concatenate([x, y], axis=1)
  n, n1 = pooled.shape[1], x.shape[1]
  ranks = np.stack([sps.rankdata(r) for r in pooled])
  mu, sd = n1 * (n + 1) / 2, np.sqrt(n1 * (n - n1) * (n + 1) / 12)
  z = lambda idx: np.abs(ranks[:, idx].sum(1) - mu) / sd
  obs = z(np.arange(n1))
  mx = np.array([z(rng.permutation(n)[:n1]).max() for _ in range(b)])
  return np.array([(1 + np.sum(mx >= o)) / (b + 1) for o in obs])


def test_maxt_adjustment_matches_permutation_max_t():
  from jaxaudit.audit import stats
  rng = np.random.default_rng(7)
  base = rng.normal(size=(1, 300))
  pooled = np.concatenate([base, base + 0.6 * rng.normal(size=(1, 300)),
                           rng.normal(size=(1, 300))])
  pooled[:, :120] += np.array([[0.15], [0.1], [0.0]])   # some signal in Du
  x, y = pooled[:, :120], pooled[:, 120:]
  raw = [stats.mann_whitney(a, b).p_value for a, b in zip(x, y)]
  adj = stats.maxt_adjusted_mwu(x, y, raw)
  ref = _naive_maxt(x, y)
  np.testing.assert_allclose(adj, ref, atol=0.03)
  assert np.all(adj >= np.asarray(raw) - 1e-12) and np.all(adj <= np.minimum(1, 3 * np.asarray(raw)))
  # Correlated statistics cost less than Bonferroni's factor 3.
  assert adj[0] < 3 * raw[0] * 0.9
  # Too few records: Bonferroni.
  small = stats.maxt_adjusted_mwu(x[:, :10], y[:, :10], raw)
  np.testing.assert_allclose(small, np.minimum(1, 3 * np.asarray(raw)))


def test_neighbour_residual_is_a_pooled_least_squares_fit_and_label_free():
  from jaxaudit.audit.decision import neighbour_residual
  rng = np.random.default_rng(8)
  a = 4
  sizes = {'forget': 50, 'ref': 70, 'members': 40}
  pt = {k: rng.normal(size=(a, n)) for k, n in sizes.items()}
  pv = {k: rng.normal(size=(a, n)) for k, n in sizes.items()}
  res = neighbour_residual(pt, pv)
  # Naive: one lstsq on the pooled design (intercept, verifier views, v0^2, Mu neighbour mean).
  names = list(sizes)
  u = np.concatenate([pt[k] for k in names], 1)
  v = np.concatenate([pv[k] for k in names], 1)
  design = np.column_stack([np.ones(u.shape[1]), v.T, v[0] ** 2, u[1:].mean(0)])
  coef, *_ = np.linalg.lstsq(design, u[0], rcond=None)
  naive = u[0] - design @ coef
  np.testing.assert_allclose(np.concatenate([res[k] for k in names]), naive, atol=1e-6)
  # Relabelling records between Du and D_ref leaves every record's residual unchanged.
  perm = rng.permutation(120)
  both_t = np.concatenate([pt['forget'], pt['ref']], 1)[:, perm]
  both_v = np.concatenate([pv['forget'], pv['ref']], 1)[:, perm]
  res2 = neighbour_residual({'forget': both_t[:, :50], 'ref': both_t[:, 50:],
                             'members': pt['members']},
                            {'forget': both_v[:, :50], 'ref': both_v[:, 50:],
                             'members': pv['members']})
  np.testing.assert_allclose(np.concatenate([res2['forget'], res2['ref']]),
                             np.concatenate([res['forget'], res['ref']])[perm], atol=1e-9)
  assert neighbour_residual({'f': pt['forget'][:1]}, {'f': pv['forget'][:1]}) is None


def test_fitted_gap_keeps_the_false_alarm_rate():
  """Null draws through neighbour_residual + max-T: rejections at most about alpha."""
  from jaxaudit.audit.decision import neighbour_residual
  rng = np.random.default_rng(9)
  rej = []
  for _ in range(300):
    pt = rng.normal(size=(3, 150)) + rng.normal(size=(1, 150))
    pv = 0.5 * pt + rng.normal(size=(3, 150))
    gap = neighbour_residual({'forget': pt[:, :60], 'ref': pt[:, 60:]},
                             {'forget': pv[:, :60], 'ref': pv[:, 60:]})
    r = ignorance_test(pt[:, :60], pt[:, 60:], None, pv[0, :60], pv[0, 60:], FAST,
                       gap_du=gap['forget'], gap_ref=gap['ref'])
    rej.append(r['rejected'])
  k = int(np.sum(rej))
  assert sps.binomtest(k, 300, 0.05, alternative='greater').pvalue > 0.01, k


def test_bonferroni_option_and_bad_gap_input():
  rng = np.random.default_rng(10)
  du, ref, mem, vdu, vref = _null_draw(rng, n_du=200, n_ref=300)
  r = ignorance_test(du + 0.5, ref, mem, vdu, vref, TestSettings(n_boot=50, combine='bonferroni'))
  n = len(r['tests'])     # the φ statistics and their spreads (no task signals here)
  assert n == 6
  for t in r['tests'].values():
    assert t['p_adjusted'] == pytest.approx(min(1.0, n * t['p_value']))
  with pytest.raises(AuditError, match='together'):
    ignorance_test(du, ref, mem, vdu, vref, FAST, gap_du=np.zeros(200))
  with pytest.raises(AuditError, match='shapes'):
    ignorance_test(du, ref, mem, vdu, vref, FAST, gap_du=np.zeros(5), gap_ref=np.zeros(300))
  with pytest.raises(AuditError, match='combine'):
    TestSettings(combine='fisher')
