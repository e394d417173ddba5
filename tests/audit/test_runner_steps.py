"""The audit runner's named steps, each on a small real request, and their composition."""

import dataclasses

import numpy as np
import pytest

from jaxaudit.audit import AuditSettings, Target, audit
from jaxaudit.audit import runner
from jaxaudit.data import make_split
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_model

SETTINGS = AuditSettings(num_verifiers=3, ref_sample=300, member_sample=200, test_sample=200)


@pytest.fixture(scope='module')
def request_(digits):
  split = make_split(digits, seed=1, ref_fraction=0.3, forget_fraction=0.2)
  model = get_model('mlp', digits.num_classes, hidden=(64,))
  recipe = Recipe(epochs=8)
  mu = train_model(model, digits.x_train, digits.y_train, split.retain, 0, recipe).params
  return split, model, recipe, Target.from_params(model, mu, name='retrain')


def test_steps_compose_to_audit(digits, request_):
  split, model, recipe, target = request_
  memo = {}
  p = runner.plan(target, digits, split, recipe=recipe, settings=SETTINGS)
  assert p.views[0] == 'identity' and len(p.views) == 14      # image neighbourhood
  assert p.ref_matched and len(p.ref_idx) <= SETTINGS.ref_sample
  assert np.all(np.isin(p.ref_idx, split.ref)) and np.all(np.isin(p.test_idx, split.test))
  v = runner.train_verifiers(p, model, SETTINGS, memo=memo)
  assert v.models_trained == 3 and len(v.candidates) == 1
  again = runner.train_verifiers(p, model, SETTINGS, memo=memo)
  assert again.models_trained == 0                           # memoised for the next target
  q = runner.query(p, v, target, model, SETTINGS, memo=memo)
  a, k = len(p.views), 3
  for name, (idx, xq, tl, vl) in q.sets.items():
    assert xq.shape == (a, len(idx), 8, 8, 1)
    assert tl.shape == (a, len(idx), 10) and vl.shape == (a, k, len(idx), 10)
  assert q.nonfinite == {'ref': 0, 'forget': 0, 'members': 0}
  sig = runner.signals(p, q)
  assert sig['forget'].phi_target.shape == (a, len(split.forget))
  acc = runner.accuracies(p, q, sig, target, model, SETTINGS, memo=memo)
  assert set(acc['target']) == {'retain_members', 'forget', 'ref', 'test'}
  assert len(acc['verifiers']['test']) == k
  cls = runner.extra_test(p, q, acc, target, model, SETTINGS, memo=memo)
  assert cls == (None, False)                                # random Du: no whole class
  res, cal, betas = runner.test(p, q, sig, acc, cls, SETTINGS)
  assert betas.shape == (a,) and set(cal) == set(q.sets)
  assert res['reference_check']['source'] == 'pool'
  result = runner.evidence(p, v, q, sig, acc, res, cal, betas, target, SETTINGS, 0.0)
  whole = audit(target, digits, split, verifier_model=model, recipe=recipe, settings=SETTINGS,
                memo=memo)
  assert (result.decision, result.direction) == (whole.decision, whole.direction)
  assert result.p_value == whole.p_value and result.forgetting_score == whole.forgetting_score
  assert result.details['tests'] == whole.details['tests']


def test_extra_test_step_is_the_whole_class_test(digits, request_):
  _, model, recipe, _ = request_
  split = make_split(digits, seed=2, ref_fraction=0.3, forget_classes=(3,))
  mu = train_model(model, digits.x_train, digits.y_train, split.retain, 0, recipe).params
  target = Target.from_params(model, mu)
  p = runner.plan(target, digits, split, recipe=recipe, settings=SETTINGS)
  v = runner.train_verifiers(p, model, SETTINGS)
  q = runner.query(p, v, target, model, SETTINGS)
  sig = runner.signals(p, q)
  acc = runner.accuracies(p, q, sig, target, model, SETTINGS)
  result, class_only = runner.extra_test(p, q, acc, target, model, SETTINGS)
  assert class_only and result['classes'] == [3] and 0 <= result['p_value'] <= 1
  assert result['held_out_records'] == int(np.sum(digits.y_train[split.ref] == 3))


def test_non_finite_outputs_stop_at_signals_with_a_collapse_verdict(digits, request_):
  split, model, recipe, _ = request_
  target = Target.from_fn(lambda x: np.full((len(x), 10), np.nan, np.float32), name='nan')
  settings = AuditSettings(num_verifiers=2, views=('identity',), ref_sample=100,
                           member_sample=50, test_sample=50)
  p = runner.plan(target, digits, split, recipe=recipe, settings=settings)
  v = runner.train_verifiers(p, model, settings)
  q = runner.query(p, v, target, model, settings)
  assert q.nonfinite['forget'] == len(split.forget)
  with pytest.raises(runner._Collapse):
    runner.signals(p, q)
  res = runner.collapse(p, v, q, q.nonfinite, target, settings, 0.0)
  assert (res.decision, res.direction) == ('not_forgotten', 'collapse')
  assert 'NaN or inf' in res.details['reason']


def test_utility_test_units_join_d_ref_and_the_test_sample():
  from jaxaudit.tasks import Signals
  ref = Signals(*[None] * 6, correct_target=np.array([1.0, 0.5]),
                correct_verifiers=np.array([[0.5, 0.5], [1.0, 0.0]]))
  # No test records: D_ref alone.
  u_t, u_v = runner._unseen_utility(ref, None)
  np.testing.assert_array_equal(u_t, [1.0, 0.5])
  assert u_v.shape == (2, 2)
  # Test records of two units (groups 7 and 3): averaged per unit, appended after D_ref.
  test = (np.array([1.0, 0.0, 1.0]), np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]),
          np.array([7, 3, 7]))
  u_t, u_v = runner._unseen_utility(ref, test)
  np.testing.assert_allclose(u_t, [1.0, 0.5, 0.0, 1.0])            # units sorted: 3, then 7
  np.testing.assert_allclose(u_v, [[0.5, 0.5, 0.0, 0.5], [1.0, 0.0, 1.0, 1.0]])
  # Records that are their own units pass through.
  u_t, _ = runner._unseen_utility(ref, (test[0], test[1], None))
  np.testing.assert_allclose(u_t, [1.0, 0.5, 1.0, 0.0, 1.0])


def test_utility_reference_replaces_the_verifiers_rows():
  from jaxaudit.tasks import Signals
  ref = Signals(*[None] * 6, correct_target=np.array([1.0, 0.5]),
                correct_verifiers=np.array([[0.5, 0.5], [1.0, 0.0]]))
  test = (np.array([1.0, 0.0, 1.0]), np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]),
          np.array([7, 3, 7]))
  util = (np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]),            # U = 3 models, D_ref units
          np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]))   # test records
  u_t, u_v = runner._unseen_utility(ref, test, util)
  np.testing.assert_allclose(u_t, [1.0, 0.5, 0.0, 1.0])
  np.testing.assert_allclose(u_v, [[1.0, 1.0, 1.0, 0.5], [0.0, 1.0, 0.0, 0.0],
                                   [1.0, 0.0, 0.0, 1.0]])
  _, u_v = runner._unseen_utility(ref, None, util)                  # no test records: D_ref
  np.testing.assert_array_equal(u_v, util[0])


@pytest.mark.parametrize('kw, match', [(dict(utility_ratio=0.1), 'above the verifiers'),
                                       (dict(utility_ratio=1.0), 'utility_ratio'),
                                       (dict(utility_ratio=0.5, utility_models=1), '>= 2')])
def test_utility_settings_are_checked(kw, match):
  from jaxaudit.errors import AuditError
  with pytest.raises(AuditError, match=match):
    AuditSettings(**kw)


def test_utility_reference_sees_a_loss_the_verifiers_cannot(digits, request_):
  """Mu trained on 15% of Dr is as useful as the verifiers (their utility test passes it)
  but below models on 60% of Dr (the utility reference flags it); the honest retrain
  passes both. The utility models never train on Du, D_ref or Mu's member reference."""
  split, model, recipe, retrain = request_
  base = AuditSettings(num_verifiers=3, views=('identity',), ref_sample=300, member_sample=200,
                       test_sample=360)
  strong = dataclasses.replace(base, utility_ratio=0.6, utility_models=2)
  rng = np.random.default_rng(5)
  small = np.sort(rng.choice(split.retain, int(0.15 * len(split.retain)), replace=False))
  weak = Target.from_params(
      model, train_model(model, digits.x_train, digits.y_train, small, 1, recipe).params,
      name='weak')
  memo = {}
  p = runner.plan(weak, digits, split, recipe=recipe, settings=strong)
  v = runner.train_verifiers(p, model, strong, memo=memo)
  assert v.models_trained == 3 + 2 and v.utility.subsets.shape == (2, round(0.6 * len(
      split.retain)))
  used = np.unique(v.utility.subsets)
  assert not np.isin(used, np.concatenate([split.forget, split.ref, v.utility.members])).any()
  np.testing.assert_array_equal(v.utility.members, v.candidates[0].members)
  out = {}
  for name, settings in (('verifiers', base), ('utility', strong)):
    for t in (weak, retrain):
      r = audit(t, digits, split, verifier_model=model, recipe=recipe, settings=settings,
                memo=memo if settings is strong else None)
      out[name, t.name] = r.details['utility_test']
  assert not out['verifiers', 'weak']['collapse'] and out['verifiers', 'weak']['reference'] == \
      'verifiers'
  assert out['utility', 'weak']['collapse'], out['utility', 'weak']
  assert out['utility', 'weak']['reference'] == '2 models on 0.6 of Dr'
  assert not out['utility', 'retrain']['collapse'] and not out['verifiers', 'retrain']['collapse']
  # The reference's mean is the utility models' (reported under accuracy.utility_models).
  assert out['utility', 'weak']['mean_verifiers'] > out['verifiers', 'weak']['mean_verifiers']
