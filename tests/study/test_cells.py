"""The plan of a sweep (jaxaudit.study.cells) and its results file (jaxaudit.io_utils)."""

import numpy as np
import pytest

from experiments.configs import sweep_local
from jaxaudit import io_utils
from jaxaudit.errors import ConfigError
from jaxaudit.study import cells


def test_plan_cells_and_forget_settings():
  c = sweep_local.get_config('local')
  plan = cells.plan_cells(c)
  assert len({x.key for x in plan}) == len(plan)
  methods = {x.method for x in plan}
  assert {'retrain', 'finetune', 'gradient_ascent', 'neggrad_plus', 'random_label', 'fisher',
          'influence', 'msg', 'ct', 'scrub'} <= methods
  assert cells.parse_forget('random10') == ('random', 0.1)
  assert cells.parse_forget('class3+5') == ('classes', (3, 5))
  with pytest.raises(ConfigError, match='randomPCT'):
    cells.parse_forget('half')
  cfg = cells.cell_config(c, 'digits_mlp', 'class3', 2)
  assert cfg.split.forget_classes == '3' and cfg.seed == 2 and cfg.split.seed == 2
  assert cells.base_method(c, 'gradient_ascent_early') == 'gradient_ascent'
  # CT (conv kernels only) runs on MNIST through the CNN entry, never on an MLP entry.
  m = {(x.entry, x.method) for x in cells.plan_cells(sweep_local.get_config('mnist'))}
  assert ('mnist_cnn', 'ct') in m and ('mnist_mlp', 'ct') not in m


def test_results_file_tolerates_a_truncated_last_line(tmp_path):
  path = str(tmp_path / 'r.jsonl')
  io_utils.append_jsonl(path, {'key': 'a', 'x': float('nan')})
  io_utils.append_jsonl(path, {'key': 'b', 'x': np.float32(1.5)})
  with open(path, 'a') as f:
    f.write('{"key": "c", "x"')          # a crash while writing
  rows = io_utils.read_jsonl(path, repair=True)
  assert [r['key'] for r in rows] == ['a', 'b'] and rows[0]['x'] is None
  with open(path) as f:
    assert f.read().endswith('1.5}\n')    # the partial line was cut off
  with open(path, 'a') as f:
    f.write('not json\n{"key": "d"}\n')
  with pytest.raises(ConfigError, match='line 3'):
    io_utils.read_jsonl(path)


def test_cell_keys_lists_and_applies():
  cell = cells.Cell('digits_mlp', 'random30', 0, 'finetune')
  assert cell.key == 'digits_mlp/random30/s0/finetune'
  assert cell.group == ('digits_mlp', 'random30', 0)
  assert cells.as_list('a, b,,c') == ['a', 'b', 'c'] and cells.as_list(3, int) == [3]
  assert cells.as_list(None) == [] and cells.as_list(('1', '2'), int) == [1, 2]
  assert cells.applies('all', 'x') and cells.applies('x,y', 'y') and not cells.applies('', 'x')
  assert cells.group_dir('/w', ('e', 'class3', 1)) == '/w/runs/e-class3-s1'


def test_tuned_settings_feed_plain_methods_not_aliases(tmp_path):
  from jaxaudit import io_utils
  from experiments.configs import sweep_local
  c = sweep_local.get_config('tiny')
  io_utils.write_json(str(tmp_path / 'tuning' / 'gradient_ascent.json'),
                      {'hparams': {'lr': 0.3, 'epochs': 2}})
  explicit = cells.method_hparams(c, 'digits_mlp', 'gradient_ascent')   # the config's own
  alias = cells.method_hparams(c, 'digits_mlp', 'gradient_ascent_early')
  c.tuned_dir = str(tmp_path)
  # Tuned settings first, the config's explicit ones on top.
  assert cells.method_hparams(c, 'digits_mlp', 'gradient_ascent') == \
      {'lr': 0.3, 'epochs': 2, **explicit}
  # An alias is a deliberate variant: its own settings, never the tuned ones.
  assert cells.method_hparams(c, 'digits_mlp', 'gradient_ascent_early') == alias
  assert 'lr' not in cells.method_hparams(c, 'digits_mlp', 'finetune')   # not tuned: untouched
