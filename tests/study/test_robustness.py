"""The robustness protocol on the tiny digits config: stages, stored statistics, the
offline family verdict (equal to the live audit's) and the selection rule."""

from __future__ import annotations

import numpy as np
import pytest

from jaxaudit.audit.decision import DEFAULT_STATISTICS
from jaxaudit.study import robustness
from experiments.configs import robustness as robustness_config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('robustness'))
  c = robustness_config.get_config('tiny')
  t = c.entries.digits_mlp.config
  t.model_kwargs.hidden = (128,)
  t.train.epochs = 40
  t.audit.verifier_epochs = 40
  return c, wd, robustness.run_protocol(c, wd, log=lambda s: None)


def test_offline_verdict_equals_the_live_audit(run):
  """Re-deciding a stored row with the audit's default family gives the audit's decision
  and p-value: the stored statistics are the tested ones."""
  c, wd, _ = run
  rows = []
  for st in robustness.stages(c):
    rows += robustness.run_stage(c, wd, st, log=lambda s: None)
  assert len(rows) == 5
  for r in rows:
    v = robustness.family_verdict(r, robustness.load_statistics(r), DEFAULT_STATISTICS)
    assert v['decision'] == r['ours']['decision'], r['fake']
    assert v['p_value'] == pytest.approx(r['ours']['p_value'], rel=1e-9, abs=1e-12)


def test_report_has_both_phases_and_a_chosen_family(run):
  _, _, out = run
  assert out['chosen'] in robustness.CANDIDATE_FAMILIES
  assert {s['family'] for s in out['candidates']} == set(robustness.CANDIDATE_FAMILIES)
  assert {t['fake'] for t in out['development']} == {'honest_retrain', 'noop', 'adaptive_kl'}
  assert {t['fake'] for t in out['confirmation']} == {'honest_retrain', 'adaptive_correct'}
  noop = next(t for t in out['development'] if t['fake'] == 'noop')
  assert noop['caught'] == 1 and noop['draws'] == 1
  assert '## Family selection' in out['markdown'] and 'Confirmation' in out['markdown']
  # Every stored statistic has a mean AUC per fake; the retrain distance covers M and the fake.
  assert {a['fake'] for a in out['aucs']} >= {'honest_retrain', 'noop', 'adaptive_kl'}
  assert all(0.0 <= v <= 1.0 for a in out['aucs'] for v in a['auc'].values())
  assert {d['model'] for d in out['retrain_distance']} == {'original', 'adaptive_correct'}
  assert all(np.isfinite(d['kl_retrain_du']) and d['kl_retrain_du'] >= 0
             for d in out['retrain_distance'])


def test_selection_rule_prefers_detection_then_fewer_false_alarms():
  c = lambda f, n90, mean, fa, k: dict(family=f, cells_at_90=n90, mean_detection=mean,
                                       fa_rate=fa, statistics=list(range(k)))
  cands = [c('a', 5, 0.90, 0.1, 2), c('b', 5, 0.90, 0.0, 3), c('c', 4, 0.99, 0.0, 1),
           c('d', 5, 0.90, 0.0, 4), c('e', 5, 0.85, 0.0, 1)]
  assert max(cands, key=robustness.selection_key)['family'] == 'b'


@pytest.mark.parametrize('spec', ['development/x/random30/0', 'testing/x/random30/0/all',
                                  'development/x/random30/0/forged'])
def test_bad_stage_specs_are_clear_errors(spec):
  with pytest.raises(ValueError):
    robustness.parse_stage(spec)
