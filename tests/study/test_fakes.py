"""jaxaudit.study.fakes on a small digits MLP: rows, fakes and resumability."""

from __future__ import annotations


import numpy as np
import pytest

from jaxaudit.study import fakes as fu
from experiments.configs import sweep_local


def small_config():
  """The tiny sweep config with a digits MLP that memorises (40 epochs, 128 units)."""
  c = sweep_local.get_config('tiny')
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  t = c.entries.digits_mlp.config
  t.model_kwargs.hidden = (128,)
  t.train.epochs = 40
  t.audit.verifier_epochs = 40
  c.fake.adaptive_epochs = 3
  return c


@pytest.fixture(scope='module')
def fake_run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('fakes'))
  c = small_config()
  c.fake.fakes = 'honest_retrain,noop,mask_scale,temperature,adaptive,adaptive_ce,adaptive_unseen'
  rows = fu.run_fakes(c, wd, [0], log=lambda s: None)
  return c, wd, rows


def test_every_fake_gives_a_row(fake_run):
  _, _, rows = fake_run
  by = {r['fake']: r for r in rows}
  assert set(by) == {'honest_retrain', 'noop', 'mask_scale', 'temperature', 'adaptive',
                     'adaptive_ce', 'adaptive_unseen'}
  for r in rows:
    assert r['error'] is None, (r['fake'], r['error'])
    assert 0.0 <= r['ours']['p_value'] <= 1.0
    assert {'population_mia', 'heuristics'} <= set(r['peers'])
  # M itself and the masked M are caught; the honest retrain is not.
  assert by['noop']['ours']['decision'] == 'not_forgotten'
  assert by['mask_scale']['ours']['decision'] == 'not_forgotten'
  assert by['mask_scale']['exact_hits'] >= by['mask_scale']['sizes']['forget']
  assert by['honest_retrain']['ours']['decision'] != 'not_forgotten'


def test_adaptive_keep_terms(fake_run):
  """Distillation from M keeps M's accuracy; the CE keep term gives some of it up."""
  _, _, rows = fake_run
  by = {r['fake']: r['accuracy']['fake'] for r in rows}
  noop = by['noop']
  assert abs(by['adaptive']['test'] - noop['test']) <= 0.02
  assert abs(by['adaptive_unseen']['test'] - noop['test']) <= 0.02
  assert by['adaptive_ce']['retain'] < by['adaptive']['retain']


def test_fakes_resume_without_recomputing(fake_run):
  c, wd, rows = fake_run
  lines = []
  again = fu.run_fakes(c, wd, [0], log=lines.append)
  assert [r['key'] for r in again] == [r['key'] for r in rows]
  assert not any(l.startswith('[fake] ') and '/7 |' in l for l in lines)   # nothing re-audited
  table = fu.detection_table(again)
  assert {t['fake'] for t in table} == {r['fake'] for r in rows}
  assert next(t for t in table if t['fake'] == 'noop')['ours'] == '1/1'


def test_unknown_fake_and_keep_are_clear_errors(tmp_path):
  c = small_config()
  c.fake.fakes = 'honest_retrain,forged_proof'
  with pytest.raises(ValueError, match='unknown fake'):
    fu.run_fakes(c, str(tmp_path), [0], log=lambda s: None)
  with pytest.raises(ValueError, match='keep must be'):
    fu.adaptive_params(None, 0, epochs=1, lr=1e-3, lam=1.0,
                       spec=fu.AdaptiveSpec(0, 'mse', 'verifiers'), log=print)
  with pytest.raises(ValueError, match='match must be'):
    fu.adaptive_params(None, 0, epochs=1, lr=1e-3, lam=1.0,
                       spec=fu.AdaptiveSpec(0, 'ce', 'verifiers', 'logits'), log=print)


def test_masked_fn_changes_only_exact_records():
  """The masking fake: exact Du inputs (by bytes) get scaled logits, others M's."""
  from jaxaudit.models import get_model, init_params
  import jax
  model = get_model('mlp', 3, hidden=(8,))
  params = init_params(model, jax.random.key(0), (4,))
  rng = np.random.default_rng(0)
  du = rng.standard_normal((5, 4)).astype(np.float32)
  other = rng.standard_normal((6, 4)).astype(np.float32)
  fn = fu.masked_fn(model, params, du, mode='scale', scale=0.25)
  from jaxaudit.train import predict_logits
  x = np.concatenate([du[:2], other, du[2:]])
  want = np.array(predict_logits(model, params, x))
  got = fn(x)
  hit = np.r_[np.ones(2, bool), np.zeros(6, bool), np.ones(3, bool)]
  np.testing.assert_allclose(got[hit], 0.25 * want[hit], rtol=1e-6)
  np.testing.assert_allclose(got[~hit], want[~hit], rtol=1e-6)
  assert fn.hits[0] == 5
