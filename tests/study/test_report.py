"""The study report (jaxaudit.report.study) on synthetic rows and through `jaxaudit report`."""

import json
import os
import subprocess
import sys

import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.report import study
from jaxaudit.study import schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
  head, body = t['rates']          # per data set × family over seeds, with intervals
  rates = {b[1]: dict(zip(head, b)) for b in body}
  assert rates['retraining']['forgotten'].startswith('1/1 [')
  assert rates['distillation']['errors'] == '1'
  assert rates['fine-tuning']['ulira_not_forgotten'] == '1/1'


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


def test_report_shares_the_study_schema():
  """The report's names are the study package's (no copies)."""
  assert study.PEER_NAMES is schema.PEER_NAMES and study.FAKE_AUDITORS is schema.FAKE_AUDITORS
  assert study.FAMILY_ORDER is schema.FAMILY_ORDER and study.fake_flagged is schema.fake_flagged


def test_load_results_first_key_wins_and_errors(tmp_path):
  a, b = tmp_path / 'a.jsonl', tmp_path / 'b.jsonl'
  a.write_text('{"key": "x", "v": 1}\n{"key": "y", "v": 2}\n{"key": "tr')
  b.write_text('{"key": "x", "v": 3}\n{"key": "z", "v": 4}\n')
  rows = study.load_results([str(a), str(b)])
  assert [(r['key'], r['v']) for r in rows] == [('x', 1), ('y', 2), ('z', 4)]
  (tmp_path / 'nokey.jsonl').write_text('{"v": 1}\n')
  with pytest.raises(ConfigError, match='no "key"'):
    study.load_results(str(tmp_path / 'nokey.jsonl'))
  (tmp_path / 'empty.jsonl').write_text('\n')
  with pytest.raises(ConfigError, match='no results rows'):
    study.load_results(str(tmp_path / 'empty.jsonl'))
  (tmp_path / 'mid.jsonl').write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
  with pytest.raises(ConfigError, match='line 2 is not valid JSON'):
    study.load_results(str(tmp_path / 'mid.jsonl'))
  with pytest.raises(ConfigError, match='does not exist'):
    study.load_results(str(tmp_path / 'none.jsonl'))
