"""The command line as a user meets it: help, remembered configuration, --overwrite."""

import json
import os

import numpy as np
import pytest

from jaxaudit import cli
from tests.cli_runner import run_cli

TINY = '--config=' + os.path.abspath(os.path.join(
    os.path.dirname(__file__), '..', 'jaxaudit', 'commands', 'default_config.py')) + ':tiny'


def run(args, cwd):
  return run_cli(args, cwd)


def test_top_level_help_lists_every_command(tmp_path):
  r = run(['--help'], tmp_path)
  assert r.returncode == 0
  for name in cli.COMMANDS:
    assert f'  {name}' in r.stdout
  assert run(['bogus'], tmp_path).returncode == 2


@pytest.mark.parametrize('command,flags', [
    ('audit', ['--target', '--logits', '--out', '--overwrite', '--workdir', '--config']),
    ('unlearn', ['--method', '--hparam', '--name', '--init_checkpoint', '--overwrite']),
    ('train', ['--workdir', '--config', '--overwrite']),
    ('report', ['--results', '--out', '--title', '--overwrite']),
    ('data', ['--npz', '--data_dir', '--overwrite']),
    ('methods', ['--docs']),
    ('demo', ['--methods', '--workdir', '--tune', '--tune_trials']),
])
def test_command_help_lists_its_own_flags(command, flags, tmp_path):
  r = run([command, '--help'], tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith(f'usage: jaxaudit {command}')
  for flag in flags:
    assert f'\n  {flag}\n' in r.stdout, (flag, r.stdout)
  assert '--helpfull' not in r.stdout and '--alsologtostderr' not in r.stdout   # absl's own
  assert os.listdir(tmp_path) == []


def test_workdir_remembers_its_configuration(tmp_path):
  """train with overrides, then unlearn and audit without repeating them (issue item 9)."""
  w = str(tmp_path / 'w')
  r = run(['train', f'--workdir={w}', TINY, '--config.split.train_size=600',
           '--config.split.forget_size=120', '--config.train_retrain=False'], tmp_path)
  assert r.returncode == 0, r.stderr
  saved = json.load(open(os.path.join(w, 'config.json')))
  assert saved['split']['train_size'] == 600 and saved['model_kwargs']['hidden'] == [64]
  epochs = saved['train']['epochs']
  assert 'summary' in r.stdout and f'epoch {epochs}/{epochs}' in r.stdout
  r = run(['unlearn', f'--workdir={w}', '--method=retrain'], tmp_path)   # no --config at all
  assert r.returncode == 0, r.stderr
  assert '|D|=600 |Du|=120' in r.stdout
  # config.unlearn.hparams.gradient_ascent (lr 0.08 in the config) reaches the CLI; --hparam
  # adds to it.
  r = run(['unlearn', f'--workdir={w}', '--method=gradient_ascent', '--hparam=epochs=1'], tmp_path)
  assert r.returncode == 0, r.stderr
  meta = json.load(open(os.path.join(w, 'models', 'unlearned', 'gradient_ascent', 'meta.json')))
  assert meta['hparams']['lr'] == 0.08 and meta['hparams']['epochs'] == 1
  assert meta['method'] == 'gradient_ascent' and meta['wall_time_s'] > 0
  # An override that does not touch the models is allowed (the audit's settings).
  r = run(['audit', f'--workdir={w}', '--target=unlearned/retrain',
           '--config.audit.num_verifiers=2', '--config.audit.ref_sample=100'], tmp_path)
  assert r.returncode == 0, r.stderr
  assert 'decision:' in r.stdout
  report = json.load(open(os.path.join(w, 'audits', 'unlearned_retrain', 'report.json')))
  assert report['settings']['num_verifiers'] == 2
  # One that contradicts the models is refused by name.
  r = run(['unlearn', f'--workdir={w}', '--method=finetune', '--config.train.batch_size=32'],
          tmp_path)
  assert r.returncode != 0 and 'train.batch_size: 64 -> 32' in r.stderr, r.stderr


def test_a_config_field_can_be_cleared_and_train_overwrite_retrains(tmp_path):
  rng = np.random.default_rng(0)
  npz = str(tmp_path / 'small.npz')
  np.savez(npz, x_train=rng.random((300, 4), np.float32), y_train=rng.integers(0, 3, 300),
           x_test=rng.random((60, 4), np.float32), y_test=rng.integers(0, 3, 60))
  w = str(tmp_path / 'w')
  r = run(['train', f'--workdir={w}', TINY, '--config.dataset=small', f'--config.npz={npz}',
           '--config.train_retrain=False'], tmp_path)
  assert r.returncode == 0, r.stderr
  # --config.npz=None clears the field: back to the embedded digits, a new workdir.
  r = run(['train', f'--workdir={tmp_path}/w2', TINY, '--config.npz=None',
           '--config.train_retrain=False', '--config.train.epochs=1'], tmp_path)
  assert r.returncode == 0, r.stderr
  assert json.load(open(tmp_path / 'w2' / 'config.json'))['npz'] is None
  assert 'data digits' in r.stdout
  # Another seed on the first workdir: refused, then retrained with --overwrite.
  r = run(['train', f'--workdir={w}', '--config.seed=5'], tmp_path)
  assert r.returncode != 0 and 'seed: 0 -> 5' in r.stderr
  before = json.load(open(os.path.join(w, 'models', 'original', 'meta.json')))['created']
  r = run(['train', f'--workdir={w}', '--config.seed=5', '--overwrite'], tmp_path)
  assert r.returncode == 0, r.stderr
  meta = json.load(open(os.path.join(w, 'models', 'original', 'meta.json')))
  assert meta['seed'] == 5 and json.load(open(os.path.join(w, 'config.json')))['seed'] == 5
  del before


@pytest.mark.slow   # CLI wiring only: the same check runs in process in tests/audit/test_reference_api.py
def test_audit_with_a_user_reference_file(tmp_path):
  """--reference: the user's own held-out records; a shifted set is refused."""
  from jaxaudit.data import load_dataset, splits
  w = str(tmp_path / 'w')
  r = run(['train', f'--workdir={w}', TINY], tmp_path)
  assert r.returncode == 0, r.stderr
  ds = load_dataset('digits')
  split = splits.load_split(os.path.join(w, 'split.npz'), ds)
  x, y = ds.x_train[split.ref], ds.y_train[split.ref]
  np.savez(tmp_path / 'same.npz', x=x, y=y, units='standardised')
  np.savez(tmp_path / 'shifted.npz', x=x + 1.0, y=y, units='standardised')
  settings = ['--config.audit.num_verifiers=4']
  r = run(['audit', f'--workdir={w}', '--target=retrain', f'--reference={tmp_path}/same.npz',
           f'--out={tmp_path}/a1', *settings], tmp_path)
  assert r.returncode == 0, r.stderr
  same = json.load(open(tmp_path / 'a1' / 'report.json'))
  assert same['request']['reference'] == 'user'
  assert same['decision'] != 'invalid_reference'
  r = run(['audit', f'--workdir={w}', '--target=retrain', f'--reference={tmp_path}/shifted.npz',
           f'--out={tmp_path}/a2', *settings], tmp_path)
  assert r.returncode == 0, r.stderr
  assert json.load(open(tmp_path / 'a2' / 'report.json'))['decision'] == 'invalid_reference'


def test_audit_requests_one_verdict_each_and_resume(tmp_path):
  """`audit --requests`: validated before work (one line, no bank built), one verdict per
  request. Resume, the summary and `--bank` run in process:
  tests/test_pipeline.py::test_stream_audit_resumes_and_the_bank_audit_trains_nothing."""
  w = str(tmp_path / 'w')
  r = run(['train', f'--workdir={w}', TINY, '--config.split.train_size=600',
           '--config.split.forget_size=60', '--config.train_retrain=False',
           '--config.audit.bank_size=12', '--config.audit.ref_sample=200',
           '--config.audit.num_verifiers=3'], tmp_path)
  assert r.returncode == 0, r.stderr
  split = np.load(os.path.join(w, 'split.npz'))
  train, ref = split['train'], split['ref']
  reqs = tmp_path / 'requests.jsonl'
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(json.dumps({'id': 'a', 'records': [int(ref[0])]}) + '\n')
  r = run(['audit', f'--workdir={w}', '--target=original', f'--requests={bad}'], tmp_path)
  assert r.returncode == 1 and 'not in the training set D' in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(os.path.join(w, 'bank'))
  lines = [{'id': f'u{i}', 'records': [int(v) for v in train[5 * i:5 * i + 1 + i % 5]]}
           for i in range(4)]
  reqs.write_text(''.join(json.dumps(l) + '\n' for l in lines))
  r = run(['audit', f'--workdir={w}', '--target=original', f'--requests={reqs}'], tmp_path)
  assert r.returncode == 0, r.stderr
  out = os.path.join(w, 'streams', 'original')
  rows = [json.loads(l) for l in open(os.path.join(out, 'verdicts.jsonl'))]
  assert [x['id'] for x in rows] == ['u0', 'u1', 'u2', 'u3']
  assert all(x['decision'] in ('forgotten', 'not_forgotten', 'inconclusive') for x in rows)
  assert os.path.isfile(os.path.join(out, 'summary.md'))
