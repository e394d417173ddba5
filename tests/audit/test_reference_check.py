"""The reference check, the forgetting score's bounds and the report's wording (synthetic, fast)."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxaudit.audit import stats
from jaxaudit.audit.decision import (TestSettings, forgetting_score, forgetting_score_ci,
                                     ignorance_test, loo_statistics, reference_check)
from jaxaudit.errors import AuditError


def _family(rng, n_du=80, n_ref=160, t=6, shift=0.0):
  """T correlated per-record scores of Du and D_ref; D_ref shifted by ``shift`` on all."""
  z = rng.normal(size=(1, n_du + n_ref)) + 0.7 * rng.normal(size=(t, n_du + n_ref))
  z[:, n_du:] += shift
  return {f's{j}': (z[j, :n_du], z[j, n_du:]) for j in range(t)}


def test_permutation_maxt_matches_numpy_reference_for_one_statistic():
  """T = 1: the permutation p-value ≈ an independent NumPy permutation of the mean rank."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=40) + 0.4, rng.normal(size=60)
  p = stats.permutation_maxt_mwu(x[None], y[None], n_perm=4000, seed=1)[0]
  pooled = np.concatenate([x, y])
  ranks = sps.rankdata(pooled)
  obs = abs(ranks[:40].mean() - ranks.mean())
  g = np.random.default_rng(2)
  null = np.array([abs(ranks[g.permutation(100)[:40]].mean() - ranks.mean())
                   for _ in range(4000)])
  p_ref = (1 + np.sum(null >= obs - 1e-12)) / 4001
  assert abs(p - p_ref) < 0.02, (p, p_ref)
  assert abs(p - sps.mannwhitneyu(x, y).pvalue) < 0.03


def test_permutation_maxt_is_deterministic_and_stratified():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(3, 50)), rng.normal(size=(3, 70))
  sx, sy = rng.integers(0, 3, 50), rng.integers(0, 3, 70)
  a = stats.permutation_maxt_mwu(x, y, strata_x=sx, strata_y=sy, n_perm=300, seed=5)
  b = stats.permutation_maxt_mwu(x, y, strata_x=sx, strata_y=sy, n_perm=300, seed=5)
  np.testing.assert_array_equal(a, b)
  assert np.all((a > 0) & (a <= 1))
  with pytest.raises(AuditError, match='together'):
    stats.permutation_maxt_mwu(x, y, strata_x=sx)


def test_reference_check_uniform_under_null_and_fires_on_shift():
  rng = np.random.default_rng(4)
  p = np.array([reference_check(_family(rng), alpha=0.01, n_perm=199, seed=i)['p_value']
                for i in range(150)])
  # Super-uniform family p-values: firing rate at 0.05 and 0.2 within binomial noise.
  for level in (0.05, 0.2):
    k = int(np.sum(p <= level))
    assert sps.binomtest(k, len(p), level, alternative='greater').pvalue > 0.01, (level, k)
  assert sps.kstest(p, 'uniform').pvalue > 0.001
  r = reference_check(_family(rng, shift=0.6), alpha=0.01, n_perm=199)
  assert not r['ok'] and r['p_value'] <= 0.01 and r['n_statistics'] == 6
  assert set(r['statistics']) == {f's{j}' for j in range(6)}
  rb = reference_check(_family(rng, shift=0.6), alpha=0.01, combine='bonferroni')
  assert not rb['ok'] and rb['combine'] == 'Bonferroni'


def test_reference_check_errors():
  with pytest.raises(AuditError, match='at least one'):
    reference_check({}, alpha=0.01)
  with pytest.raises(AuditError, match='NaN or inf'):
    reference_check({'a': (np.array([np.nan, 1.0]), np.zeros(3))}, alpha=0.01)
  with pytest.raises(AuditError, match='combine'):
    reference_check({'a': (np.ones(3), np.zeros(3))}, alpha=0.01, combine='holm')
  with pytest.raises(AuditError, match='self_check'):
    TestSettings(self_check=('inputs', 'bogus'))


def test_loo_statistics_valid_under_null_and_shapes():
  """Verifiers that never saw Du nor D_ref: LOO p-values are uniform over draws."""
  rng = np.random.default_rng(6)
  ps = []
  for _ in range(120):
    n = 150
    diff = rng.normal(size=(1, 1, n))                         # record difficulty
    phi = diff + 0.5 * rng.normal(size=(3, 4, n))             # (A, K, n)
    mem = rng.normal(size=(1, 1, 60)) + 0.5 * rng.normal(size=(3, 4, 60))
    st = loo_statistics({'forget': phi[..., :50], 'ref': phi[..., 50:], 'members': mem})
    assert set(st) == {f'loo{k}_{s}' for k in range(4) for s in ('exact', 'neighbours', 'gap')}
    assert st['loo0_exact'][0].shape == (50,) and st['loo0_exact'][1].shape == (100,)
    ps.append(stats.mann_whitney(*st['loo2_exact']).p_value)
  assert sps.kstest(ps, 'uniform').pvalue > 0.001
  with pytest.raises(AuditError, match='K >= 2'):
    loo_statistics({'forget': np.zeros((1, 1, 5)), 'ref': np.zeros((1, 1, 5))})


def test_ignorance_test_uses_the_given_reference_check():
  rng = np.random.default_rng(7)
  du, ref = rng.normal(size=(2, 100)), rng.normal(size=(2, 200))
  bad = reference_check(_family(rng, n_du=100, n_ref=200, shift=1.0), alpha=0.01, n_perm=199)
  r = ignorance_test(du, ref, None, np.zeros(100), np.zeros(200), TestSettings(n_boot=20),
                     reference=bad)
  assert r['decision'] == 'invalid_reference' and r['reference_check'] is bad


def test_forgetting_score_bounded_with_interval_inside():
  rng = np.random.default_rng(8)
  for shift in (-1.5, -0.3, 0.0, 0.5, 1.0, 2.5):
    ref = rng.normal(size=200)
    mem = rng.normal(size=150) + 0.3            # weakly separated members: a wide ratio
    du = rng.normal(size=120) + shift
    fs = forgetting_score(du, ref, mem)
    lo, hi = forgetting_score_ci(du, ref, mem, n_boot=100, seed=1)
    assert 0.0 <= fs <= 1.0
    if np.isfinite(lo):
      assert 0.0 <= lo <= hi <= 1.0
  # Unclipped ratio leaves [0, 1] where the clipped score does not.
  ref, mem = rng.normal(size=300), rng.normal(size=300) + 1.0
  assert forgetting_score(rng.normal(size=300) - 1.0, ref, mem, clip=False) > 1.0
  assert forgetting_score(rng.normal(size=300) - 1.0, ref, mem) == 1.0
  # Members not separated from D_ref: undefined.
  assert np.isnan(forgetting_score(rng.normal(size=50), ref, ref.copy()))


def _result(**details):
  from jaxaudit.audit.runner import AuditResult
  base = dict(target='t', tests={'exact': dict(auc=0.5, p_value=0.5, p_adjusted=0.9),
                                 'neighbours': dict(auc=0.5, p_value=0.6, p_adjusted=0.9),
                                 'gap': dict(auc=0.5, p_value=0.7, p_adjusted=0.9)},
              alpha=0.05, combine='maxt', n_tests=3, sizes={'forget': 10},
              reference_check=reference_check(_family(np.random.default_rng(0)), alpha=0.01,
                                              n_perm=99),
              forgetting_score_method='FS = clipped')
  base.update(details)
  return AuditResult(decision='forgotten', direction=None, p_value=0.5, effect_auc=0.5,
                     effect_auc_ci=[0.4, 0.6], forgetting_score=1.0, forgetting_score_ci=[0.8, 1.0],
                     power=0.9, flagged_records=[], details=base)


def test_report_states_the_adjustment_used():
  from jaxaudit.audit.report import markdown
  md = markdown(_result())
  assert 'max-T' in md and 'over 3 statistics' in md and 'Bonferroni over 3' not in md
  assert '## Reference check' in md and 'permutation max-T' in md and '| s0 |' in md
  assert '## Forgetting score' in md and 'FS = clipped' in md
  md = markdown(_result(combine='bonferroni'))
  assert 'Bonferroni over 3 statistics' in md
  md = markdown(_result(class_level=dict(classes=[3], accuracy=0.1, n=10, verifier_accuracy=[0.0],
                                         threshold=0.05, p_value=0.3, power=0.9)))
  assert 'then Bonferroni with the class-level test' in md


def test_combine_reports_the_bonferroni_fallback_of_maxt():
  """max-T falls back to Bonferroni below 20 records: the result (and report) say so."""
  rng = np.random.default_rng(9)
  small = ignorance_test(rng.normal(size=(2, 10)), rng.normal(size=(2, 30)), None, np.zeros(10),
                         np.zeros(30), TestSettings(n_boot=20))
  assert small['combine'] == 'bonferroni' and small['n_tests'] == 6   # φ statistics + spreads
  big = ignorance_test(rng.normal(size=(2, 40)), rng.normal(size=(2, 60)), None, np.zeros(40),
                       np.zeros(60), TestSettings(n_boot=20))
  assert big['combine'] == 'maxt'
  one = ignorance_test(rng.normal(size=(1, 40)), rng.normal(size=(1, 60)), None, np.zeros(40),
                       np.zeros(60), TestSettings(n_boot=20, statistics=('exact',)))
  from jaxaudit.audit.report import combination_text
  assert combination_text(dict(n_tests=one['n_tests'], combine=one['combine'])) == \
      'one statistic, no adjustment'
