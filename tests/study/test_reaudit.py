"""Re-auditing a sweep group (jaxaudit.study.reaudit): group names, targets, table rows."""

import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.study import reaudit


def test_parse_group():
  assert reaudit.parse_group('digits_mlp_class/class3/0') == ('digits_mlp_class', 'class3', 0)
  for bad in ('digits/class3', 'a/b/c', 'a/b/1/2'):
    with pytest.raises(ConfigError, match='ENTRY/FORGET/SEED'):
      reaudit.parse_group(bad)


def test_targets_of_an_empty_group(tmp_path):
  assert reaudit.targets_of(str(tmp_path)) == []


def test_display_row():
  assert reaudit.display_row(dict(target='x', error='NaN weights')) == dict(
      target='x', decision='error: NaN weights')
  row = dict(target='original', decision='not_forgotten (remembers)', p=0.01, p_record=0.2,
             class_acc=0.9, verifier_class_acc=[0.5, 0.7], acc_test=0.95, error=None)
  out = reaudit.display_row(row)
  assert list(out) == reaudit.COLS and out['verifier_class_acc'] == 0.7
