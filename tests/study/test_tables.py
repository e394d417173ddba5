"""Tables, durations and costs printed by the scripts (jaxaudit.study.tables / cost)."""

import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.study import cost, script, tables


def test_format_table_and_durations():
  t = tables.format_table([dict(a=1.23456, b=None), dict(a='x', b=2)], ['a', 'b'])
  assert t.splitlines() == ['| a | b |', '|---|---|', '| 1.23 |  |', '| x | 2 |']
  assert tables.fmt_duration(65) == '1m05s' and tables.fmt_duration(3720) == '1h02m'
  assert tables.fmt_duration(-3) == '0m00s'


def test_verdict_and_decision_summary():
  rows = [dict(key='a', kind='sweep', error=None, ours=dict(decision='not_forgotten',
                                                            direction='remembers', p_value=0.01),
               accuracy=dict(unlearned=dict(forget=1.0, test=0.9))),
          dict(key='b', kind='sweep', error='unlearn: boom'),
          dict(key='c', kind='fake')]
  assert tables.verdict(rows[0]) == 'not_forgotten (remembers)'
  assert tables.verdict(rows[1]) == 'unlearn: boom' and tables.verdict({}) == '?'
  s = tables.decision_summary(rows).splitlines()
  assert len(s) == 4 and s[2].startswith('| a | not_forgotten (remembers) | 0.01 |')


def test_train_flops_and_cost_table():
  f = dict(step=10.0, batch_size=32)
  assert cost.train_flops(f, 64, 3) == 60.0 and cost.train_flops(f, 65, 1) == 30.0
  rows = [dict(entry='e', cost=dict(ours=dict(models=4, flops_ratio=0.5, wall_ratio=0.2,
                                              wall_s=2.0))),
          dict(entry='e', cost=dict(ours=dict(models=4, flops_ratio=1.5, wall_ratio=None,
                                              wall_s=4.0)))]
  assert cost.cost_table(rows) == [dict(entry='e', auditor='ours', cells=2, models=4.0,
                                        flops_ratio=1.0, wall_ratio=0.2, wall_s=3.0)]


def test_check_main_args():
  class F:
    config = None
    workdir = 'w'
  with pytest.raises(ConfigError, match='--config required'):
    script.check_main_args(['prog'], F, ('config', 'workdir'))
  with pytest.raises(ConfigError, match='unexpected arguments'):
    script.check_main_args(['prog', 'extra'], F)
  script.check_main_args(['prog'], F, ('workdir',))


def test_verdict_rates_count_decisions_with_exact_intervals():
  from jaxaudit.audit.stats import clopper_pearson
  def row(method, decision, direction=None, error=None, pop='forgotten'):
    r = dict(method=method, family='f-' + method, error=error,
             accuracy=dict(unlearned=dict(forget=0.5)))
    if not error:
      r['ours'] = dict(decision=decision, direction=direction)
      r['peers'] = dict(population_mia=dict(decision=pop))
    return r
  rows = ([row('a', 'forgotten')] * 3 + [row('a', 'not_forgotten', 'remembers', pop='not_forgotten')]
          + [row('a', 'inconclusive'), row('a', None, error='unlearn: boom'), row('b', 'forgotten')])
  a, b = tables.verdict_rates(rows)
  lo, hi = clopper_pearson(3, 5)
  assert a['forgotten'] == f'3/5 [{lo:.2f}, {hi:.2f}]' and a['errors'] == 1
  assert a['not_forgotten'] == '1 (remembers 1)' and a['inconclusive'] == 1
  assert a['population_mia_not_forgotten'] == '1/5' and a['acc_du'] == 0.5
  assert b['method'] == 'b' and b['cells'] == 1
  assert a['ulira_not_forgotten'] == '–'          # no U-LiRA in these rows
  rows[0] = dict(rows[0], peers=dict(rows[0]['peers'], ulira=dict(decision='not_forgotten')))
  rows[1] = dict(rows[1], peers=dict(rows[1]['peers'], ulira=dict(decision='forgotten')))
  assert tables.verdict_rates(rows)[0]['ulira_not_forgotten'] == '1/2'
  fam = tables.verdict_rates(rows, by='family')
  assert [f['family'] for f in fam] == ['f-a', 'f-b']
