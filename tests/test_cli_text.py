"""A language model through the command line: train on text, unlearn, audit a checkpoint and a
log-prob file of a model the user runs themselves (issue 14, item 6)."""

import json
import os

import numpy as np
import pytest

from tests.cli_runner import run_cli

CONFIG = '--config=' + os.path.abspath(os.path.join(
    os.path.dirname(__file__), '..', 'experiments', 'configs', 'lm_synthetic.py')) + ':tiny'


def run(args, cwd):
  return run_cli(args, cwd, timeout=600)


def test_text_workdir_and_token_logprob_file(tmp_path):
  from jaxaudit import checkpoint, configs
  from jaxaudit.data.splits import load_split
  from jaxaudit.text.logprobs import export_token_logprobs
  w = str(tmp_path / 'w')
  r = run(['train', f'--workdir={w}', CONFIG], tmp_path)
  assert r.returncode == 0, r.stderr
  assert os.path.isdir(os.path.join(w, 'models', 'base'))           # the base LM, once
  r = run(['audit', f'--workdir={w}', '--target=original'], tmp_path)   # remembered config
  assert r.returncode == 0, r.stderr
  report = json.load(open(os.path.join(w, 'audits', 'original', 'report.json')))
  assert report['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
  assert report['sizes']['forget_groups'] == 4                       # people are the units

  # The user's own LM answers through a log-prob file (here: our original, top-8 exported).
  cfg = configs.base_config()
  cfg.update_from_flattened_dict({'dataset': 'text:synthetic', 'model': 'transformer',
                                  'text.num_people': 40, 'text.context': 48})
  ds = configs.load_data(cfg)
  split = load_split(os.path.join(w, 'split.npz'), ds)
  model, params, _ = checkpoint.restore_model(os.path.join(w, 'models', 'original'))
  idx = np.sort(np.concatenate([split.forget, split.ref, split.retain]))
  f = str(tmp_path / 'mu.npz')
  export_token_logprobs(model, params, ds, idx, f, topk=8, test_indices=split.test)
  r = run(['audit', f'--workdir={w}', f'--token_logprobs={f}', '--out=' + str(tmp_path / 'bb')],
          tmp_path)
  assert r.returncode == 0, r.stderr
  bb = json.load(open(tmp_path / 'bb' / 'report.json'))
  assert bb['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
  # The file answers the exact records only (no perturbed views, no knowledge probes), so
  # the test family differs; the per-person likelihoods of the same model are the same.
  assert bb['settings']['views'] == ['identity']
  for part in ('forget', 'ref'):
    assert bb['signals'][part]['phi_target'] == \
        pytest.approx(report['signals'][part]['phi_target'], rel=1e-4)

  # A file whose tokens are not the workdir's documents: one line, before any work.
  z = dict(np.load(f))
  z['tokens'] = z['tokens'].copy()
  z['tokens'][0, 1] = (z['tokens'][0, 1] + 1) % ds.num_classes
  bad = str(tmp_path / 'bad.npz')
  np.savez(bad, **z)
  r = run(['audit', f'--workdir={w}', f'--token_logprobs={bad}', '--out=' + str(tmp_path / 'x')],
          tmp_path)
  assert r.returncode != 0
  assert 'differ' in r.stderr and 'Traceback' not in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
