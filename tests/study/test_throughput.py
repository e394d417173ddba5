"""bench_audit's figures on digits (tiny sizes): every figure present and consistent."""

import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.study import throughput


@pytest.mark.slow
def test_bench_audit_reports_every_figure():
  res = throughput.bench_audit('digits', bank_size=12, loop_models=2, stream_requests=30,
                               stats_counts=(1, 10), log=lambda s: None)
  for key in ('retrain_s', 'audit_fresh_s', 'audit_bank_s', 'audit_bank_vs_retrain',
              'models_per_minute_bank', 'engine_vs_loop', 'stream_audits_per_hour',
              'records_per_second', 'scoring_fraction_of_peak', 'matmul_peak_flops'):
    assert res[key] > 0, key
  assert res['stream_requests'] == 30 and sum(res['stream_decisions'].values()) == 30
  assert [r['requests'] for r in res['statistics']] == [1, 10]
  assert abs(res['audit_bank_vs_retrain'] - res['audit_bank_s'] / res['retrain_s']) < 1e-9


def test_matmul_peak_is_a_rate():
  assert throughput.matmul_peak(n=128, repeats=2) > 1e6


@pytest.mark.slow
def test_device_axis_runs_one_process_per_count():
  from jaxaudit.study import device_scaling
  rows = device_scaling.bench_devices((1, 2), data='digits', k=3, epochs=1, train_size=200,
                                      score_records=256, log=lambda s: None)
  assert [r['devices'] for r in rows] == [1, 2]
  assert rows[0]['train_vs_first'] == 1.0 and rows[1]['models_per_minute'] > 0
  assert '3 members on 2 device(s)' in rows[1]['layout']
  with pytest.raises(ConfigError):
    device_scaling.bench_devices((0,), log=lambda s: None)
