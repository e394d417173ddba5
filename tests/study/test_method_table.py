"""jaxaudit.study.method_table: every method through the real CLI, resumable table."""

import os

import numpy as np
import pytest

from jaxaudit.io_utils import append_jsonl as append_row, read_jsonl as read_results
from jaxaudit.study import method_table as cli_methods
from jaxaudit.errors import ConfigError


def test_config_args_forwards_only_config_flags():
  argv = ['--config=experiments/configs/mnist_cnn.py:local', '--workdir=runs/x',
          '--config.train.epochs=2', '--methods=finetune', '--config.split.train_size', '2000',
          '--hparam=finetune:epochs=1']
  assert cli_methods.config_args(argv) == [
      '--config=experiments/configs/mnist_cnn.py:local', '--config.train.epochs=2',
      '--config.split.train_size', '2000']
  assert cli_methods.config_args(['--config', 'a.py:tiny', '--workdir=w']) == ['--config',
                                                                                'a.py:tiny']
  assert cli_methods.config_args(['--workdir=w']) == []


def test_method_hparams_and_row_keys():
  hp = cli_methods.parse_method_hparams(['cfw:lr=0.001', 'cfw:noise_std=0.1', 'scrub:alpha=1'])
  assert hp == {'cfw': ['lr=0.001', 'noise_std=0.1'], 'scrub': ['alpha=1']}
  assert cli_methods.row_key('cfw', hp['cfw']) == 'cfw[lr=0.001,noise_std=0.1]'
  assert cli_methods.row_key('finetune', []) == 'finetune'
  with pytest.raises(ConfigError, match='METHOD:NAME=VALUE'):
    cli_methods.parse_method_hparams(['lr=0.1'])


def test_table_uses_the_last_row_of_each_method(tmp_path):
  path = str(tmp_path / 'rows.jsonl')
  append_row(path, dict(key='sisa', kind='cli_methods', method='sisa', family='retraining',
                        status='failed', exit_code=1, wall_s=1.0, note='x'))
  append_row(path, dict(key='finetune', kind='cli_methods', method='finetune',
                        family='fine-tuning', status='ok', exit_code=0, wall_s=3.0, method_s=1.0,
                        accuracy=dict(retain=1.0, forget=0.99, ref=0.95, test=0.9), note=''))
  append_row(path, dict(key='sisa', kind='cli_methods', method='sisa', family='retraining',
                        status='skipped', exit_code=1, wall_s=2.0, note=cli_methods.SISA_NOTE))
  rows = cli_methods.latest_rows(read_results(path))
  assert [r['status'] for r in rows] == ['skipped', 'ok']
  table = cli_methods.markdown_table(rows, {'data': 'digits'})
  assert '- data: digits' in table
  assert '| finetune | fine-tuning | ok | 0 | 3.0 | 1.0 | 100.0 | 99.0 | 95.0 | 90.0 |  |' in table
  assert 'needs SISA original' in table


def test_pretrain_records_never_touch_du(digits, digits_split):
  from jaxaudit.pipeline import pretrain_records
  idx, source = pretrain_records(digits, digits_split, 'auto', None, 0)
  assert source == 'retain'   # digits' pool is D ∪ D_ref: nothing unused, so Dr
  np.testing.assert_array_equal(idx, np.sort(digits_split.retain))
  idx, source = pretrain_records(digits, digits_split, 'ref', None, 0)
  assert source == 'ref' and set(idx.tolist()) <= set(digits_split.ref.tolist())

  from jaxaudit.data import make_split
  small = make_split(digits, seed=0, ref_fraction=0.15, train_size=400, forget_size=40)
  idx, source = pretrain_records(digits, small, 'auto', 100, 0)
  assert source == 'unused' and idx.size == 100
  assert not np.intersect1d(idx, np.union1d(small.train, small.ref)).size
  with pytest.raises(ConfigError, match='pretrain_source'):
    pretrain_records(digits, small, 'test', None, 0)


@pytest.mark.slow
def test_cli_methods_end_to_end_and_resume(tmp_path):
  """Two methods through the CLI on tiny digits; sisa is skipped; a rerun runs nothing."""
  from jaxaudit.commands import common
  workdir = str(tmp_path / 'wd')
  cfg_args = [f'--config={common.DEFAULT_CONFIG}:tiny', '--config.train.epochs=2']
  from jaxaudit.commands import default_config
  config = default_config.get_config('tiny')
  config.train.epochs = 2
  logs = []
  rows, table = cli_methods.run_all(config, workdir, cfg_args,
                                    methods=['warmstart_finetune', 'sisa'],
                                    hparams={'warmstart_finetune': ['epochs=1']},
                                    log=logs.append)
  by = {r['method']: r for r in rows}
  assert by['warmstart_finetune']['key'] == 'warmstart_finetune[epochs=1]'
  assert by['warmstart_finetune']['status'] == 'ok'
  assert by['warmstart_finetune']['exit_code'] == 0
  assert by['warmstart_finetune']['finite'] is True
  assert set(by['warmstart_finetune']['accuracy']) == {'retain', 'forget', 'ref', 'test'}
  assert by['sisa']['status'] in ('skipped', 'ok')
  from jaxaudit import checkpoint
  meta = checkpoint.load_meta(os.path.join(workdir, 'models', 'pretrained'))
  assert meta['kind'] == 'pretrained' and meta['pretrain_source'] == 'retain'
  assert open(os.path.join(workdir, cli_methods.TABLE_FILE)).read().strip() == table
  n = len(read_results(os.path.join(workdir, cli_methods.RESULTS_FILE)))
  logs.clear()
  cli_methods.run_all(config, workdir, cfg_args, methods=['warmstart_finetune'],
                      hparams={'warmstart_finetune': ['epochs=1']}, log=logs.append)
  assert any('done already' in s for s in logs)
  assert len(read_results(os.path.join(workdir, cli_methods.RESULTS_FILE))) == n
