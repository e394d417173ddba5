"""The study sweep (experiments/sweep.py), its resumability, and `jaxaudit report`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import sweep
from experiments.configs import sweep_local
from jaxaudit.errors import ConfigError
from jaxaudit.report import study

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config():
  c = sweep_local.get_config('tiny')
  c.peers.lira_shadows = 4
  c.peers.rmia_refs = 1
  return c


# ----------------------------------------------------------------------------- plan + table


def test_plan_cells_and_forget_settings():
  c = sweep_local.get_config('local')
  cells = sweep.plan_cells(c)
  assert len({x.key for x in cells}) == len(cells)
  methods = {x.method for x in cells}
  assert {'retrain', 'finetune', 'gradient_ascent', 'neggrad_plus', 'random_label', 'fisher',
          'influence', 'msg', 'ct', 'scrub'} <= methods
  assert sweep.parse_forget('random10') == ('random', 0.1)
  assert sweep.parse_forget('class3+5') == ('classes', (3, 5))
  with pytest.raises(ConfigError, match='randomPCT'):
    sweep.parse_forget('half')
  cfg = sweep.cell_config(c, 'digits_mlp', 'class3', 2)
  assert cfg.split.forget_classes == '3' and cfg.seed == 2 and cfg.split.seed == 2
  assert sweep.base_method(c, 'gradient_ascent_early') == 'gradient_ascent'


def test_results_file_tolerates_a_truncated_last_line(tmp_path):
  path = str(tmp_path / 'r.jsonl')
  sweep.append_row(path, {'key': 'a', 'x': float('nan')})
  sweep.append_row(path, {'key': 'b', 'x': np.float32(1.5)})
  with open(path, 'a') as f:
    f.write('{"key": "c", "x"')          # a crash while writing
  rows = sweep.read_results(path, repair=True)
  assert [r['key'] for r in rows] == ['a', 'b'] and rows[0]['x'] is None
  with open(path) as f:
    assert f.read().endswith('1.5}\n')    # the partial line was cut off
  with open(path, 'a') as f:
    f.write('not json\n{"key": "d"}\n')
  with pytest.raises(ConfigError, match='line 3'):
    sweep.read_results(path)


# ----------------------------------------------------------------------------- end to end


def _run(workdir, max_cells=None):
  return sweep.run_sweep(tiny_config(), str(workdir), max_cells=max_cells, log=lambda s: None)


@pytest.mark.slow
def test_tiny_sweep_resumes_to_the_same_table(tmp_path):
  full = _run(tmp_path / 'a')
  assert [r['method'] for r in full] == ['retrain', 'gradient_ascent']
  for r in full:
    assert r['error'] is None, r['error']
    assert r['ours']['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
    assert set(r['peers']) == {'population_mia', 'lira', 'rmia', 'heuristics'}
    assert r['accuracy']['unlearned'] and r['accuracy']['retrain']
    assert r['cost']['retrain']['wall_ratio'] == 1.0 and r['cost']['ours']['models'] == 2
  # Interrupted after one cell, then a crash while writing, then a restart.
  part = _run(tmp_path / 'b', max_cells=1)
  assert len(part) == 1
  res = tmp_path / 'b' / 'results.jsonl'
  with open(res, 'a') as f:
    f.write('{"key": "digits_mlp/random30/s0/gradient_ascent", "trunc')
  resumed = _run(tmp_path / 'b')
  assert len(resumed) == 2
  on_disk = sweep.read_results(str(res))
  assert [sweep.stable_row(r) for r in on_disk] == [
      sweep.stable_row(json.loads(json.dumps(sweep.clean_json(r)))) for r in full]
  # A further restart has nothing to do.
  assert len(_run(tmp_path / 'b')) == 2 and len(sweep.read_results(str(res))) == 2


def test_one_cell_end_to_end(tmp_path):
  """Fast real subset: one cell (1-epoch models), our audit + the cheap peers, one row."""
  c = tiny_config()
  c.methods = 'gradient_ascent'
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  c.entries.digits_mlp.config.train.epochs = 1
  c.entries.digits_mlp.config.audit.verifier_epochs = 1
  lines = []
  rows = sweep.run_sweep(c, str(tmp_path), log=lines.append)
  assert len(rows) == 1 and rows[0]['error'] is None
  r = rows[0]
  assert r['key'] == 'digits_mlp/random30/s0/gradient_ascent' and r['family'] == 'de-optimisation'
  assert set(r['peers']) == {'population_mia', 'heuristics'}
  assert 0.0 <= r['ours']['p_value'] <= 1.0 and r['sizes']['forget'] > 0
  assert r['cost']['ours']['flops'] > 0 and r['cost']['retrain']['flops'] > 0
  assert any('1/1 cells' in l and 'ETA' in l for l in lines)
  assert len(sweep.read_results(str(tmp_path / 'results.jsonl'))) == 1


def test_sisa_cell_audits_the_ensemble(tmp_path):
  """A SISA entry: the sweep trains the SISA original, unlearns it and audits the ensemble
  as one black box; the per-model peers (U-LiRA) say why they do not apply."""
  c = tiny_config()
  c.methods = 'sisa'
  c.peers.rmia_refs = 0
  c.peers.heuristics = False
  c.peers.ulira_methods = 'sisa'
  cfg = c.entries.digits_mlp.config
  cfg.train.epochs = 1
  cfg.audit.verifier_epochs = 1
  cfg.sisa.shards, cfg.sisa.slices = 2, 1
  rows = sweep.run_sweep(c, str(tmp_path), log=lambda s: None)
  assert len(rows) == 1 and rows[0]['error'] is None, rows[0].get('error')
  r = rows[0]
  assert r['ours']['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
  assert 0.0 <= r['ours']['p_value'] <= 1.0
  assert 'error' not in r['peers']['population_mia'] and 'error' not in r['peers']['lira']
  assert r['peers']['ulira']['error'].startswith('not applicable')
  assert os.path.isdir(os.path.join(r['provenance']['workdir'], 'models', 'sisa'))


def test_failing_method_gives_an_error_row(tmp_path):
  c = tiny_config()
  c.methods = 'ct'     # CT needs conv kernels; the MLP entry makes it fail
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  c.peers.heuristics = False
  c.entries.digits_mlp.config.train.epochs = 1
  c.entries.digits_mlp.config.audit.verifier_epochs = 1
  rows = sweep.run_sweep(c, str(tmp_path), log=lambda s: None)
  assert len(rows) == 1 and rows[0]['error'].startswith('unlearn: ConfigError')
  assert 'conv' in rows[0]['error']


# ----------------------------------------------------------------------------- report


def synthetic_rows():
  rows = []
  cells = [('retrain', 'retraining', 'forgotten', None),
           ('finetune', 'fine-tuning', 'not_forgotten', 'remembers'),
           ('gradient_ascent', 'de-optimisation', 'not_forgotten', 'damaged'),
           ('fisher', 'curvature', 'not_forgotten', 'remembers_class')]
  for i, (m, fam, dec, dirn) in enumerate(cells):
    acc = dict(retain=0.99, forget=0.9 + 0.03 * i, test=0.95 - 0.1 * i, ref=0.95)
    rows.append(dict(
        key=f'digits_mlp/random30/s0/{m}', kind='sweep', entry='digits_mlp', data='digits',
        model='mlp', method=m, family=fam, forget='random30', seed=0, error=None,
        ours=dict(decision=dec, direction=dirn, p_value=0.5 / (1 + 10 * i),
                  effect_auc=0.5 + 0.05 * i, forgetting_score=1.0 - 0.5 * i,
                  forgetting_score_ci=[0.5 - i, 1.5 - i], power=0.9),
        accuracy=dict(unlearned=acc, retrain=dict(retain=0.99, forget=0.9, test=0.95, ref=0.95)),
        peers=dict(population_mia=dict(score=0.5, decision='forgotten'),
                   lira=dict(score=0.55, decision='not_forgotten' if i else 'forgotten'),
                   ulira=dict(score=0.6, decision='not_forgotten' if i else 'forgotten')),
        cost=dict(retrain=dict(models=1, flops=1e9, flops_ratio=1.0, wall_s=10.0, wall_ratio=1.0),
                  ours=dict(models=8, flops=5e8, flops_ratio=0.5, wall_s=4.0, wall_ratio=0.4),
                  ulira=dict(models=16, flops=8e9, flops_ratio=8.0, wall_s=90.0, wall_ratio=9.0))))
  rows.append(dict(key='digits_mlp/random30/s0/diverged', kind='sweep', entry='digits_mlp',
                   method='scrub', family='distillation', forget='random30', seed=0,
                   error='diverged: NaN', diverged=True))
  for f, dec in (('honest_retrain', 'forgotten'), ('mask_scale', 'not_forgotten')):
    rows.append(dict(key=f'mnist/random10/s0/fake:{f}', kind='fake', fake=f, seed=0,
                     ours=dict(decision=dec, direction=None),
                     peers=dict(lira=dict(decision='forgotten')),
                     accuracy=dict(fake=dict(forget=1.0, test=0.95))))
  return rows


def test_report_tables_from_synthetic_rows():
  rows = synthetic_rows()
  t = study.study_tables(rows)
  ag = study.agreement([r for r in rows if r.get('kind') == 'sweep'])
  assert ag['ours'] == dict(cells=4, agree=4, rate=1.0, no_decision=0)
  assert ag['lira']['rate'] == 1.0 and ag['population_mia']['agree'] == 1
  cost = {(c['auditor']): c for c in study.cost_summary(rows)}
  assert cost['ours']['wall_ratio'] == pytest.approx(0.4)
  fakes = dict((b[0], b) for b in t['fakes'][1])
  assert fakes['mask_scale'][2] == '1/1' and fakes['honest_retrain'][2] == '0/1'
  assert study.category(rows[1]) == 'remembers' and study.category(rows[4]) == 'diverged'
  assert study.category(rows[3]) == 'remembers_class'


def test_report_command_renders(tmp_path):
  path = tmp_path / 'results.jsonl'
  with open(path, 'w') as f:
    for r in synthetic_rows():
      f.write(json.dumps(r) + '\n')
    f.write('{"key": "trunc')         # ignored
  out = tmp_path / 'report'
  proc = subprocess.run([sys.executable, '-m', 'jaxaudit.cli', 'report', f'--results={path}',
                         f'--out={out}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  names = set(os.listdir(out))
  assert {'report.md', 'report.html', 'decisions.png', 'scores.png', 'accuracy.png',
          'agreement.png', 'cost.png', 'fakes.png'} <= names
  md = (out / 'report.md').read_text()
  assert '| retraining | 1 | 1 |' in md and 'mask_scale' in md and '![' in md
  page = (out / 'report.html').read_text()
  assert page.count('data:image/png;base64,') == 6 and '<table>' in page
  with pytest.raises(ConfigError, match='does not exist'):
    study.render_report(str(tmp_path / 'none.jsonl'), str(out))
  assert (out / 'report.md').exists()     # the previous report is intact
