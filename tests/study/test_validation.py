"""The validation of the audit (jaxaudit.study.validation): setup, the shared fakes, the table."""

import numpy as np

from jaxaudit.study import fakes, validation


def test_the_fakes_are_the_fakes_module_s():
  assert validation.masked_fn is fakes.masked_fn
  assert validation.temperature_fn is fakes.temperature_fn


def test_setup_digits():
  ds, model, recipe, split_kw, ga_lr = validation.setup('digits')
  assert ds.name == 'digits' and recipe.epochs == 60 and ga_lr == 0.08
  assert split_kw == dict(ref_fraction=0.3, forget_fraction=0.3)


def _draw(r, retrain_decision):
  ours = lambda dec, p, direction=None: dict(
      decision=dec, direction=direction, p_value=p, tests=dict(exact=dict(p_value=p)),
      wall_time_s=1.0, models_trained=4)
  raw = lambda dec: dict(decision=dec, p_value=0.5, auc=0.5)
  peer = lambda dec: dict(score=0.5, decision=dec, cost=dict(models_trained=8, wall_time_s=2.0),
                          wall_time_s=2.0)
  return dict(draw=r, train_time_s=dict(verifiers=3.0, original_and_retrain=4.0),
              results=dict(
                  retrain=dict(ours=ours(retrain_decision, 0.1 + 0.15 * r),
                               raw_population=raw('forgotten'),
                               peers={p: peer('forgotten') for p in validation.DRAW_PEERS}),
                  original=dict(ours=ours('not_forgotten', 0.001, 'remembers'),
                                raw_population=raw('not_forgotten'))))


def test_summarise_rates_and_cost():
  rows = [_draw(r, 'forgotten' if r else 'not_forgotten') for r in range(5)]
  table = validation.summarise(rows, 0.05)
  lines = table.splitlines()
  assert lines[0] == 'draws: 5'
  retrain = next(l for l in lines if l.startswith('| retrain |'))
  assert '1/5 = 0.20' in retrain and '0.00 (n=5)' in retrain
  original = next(l for l in lines if l.startswith('| original |'))
  assert "5/5 = 1.00" in original and "{'remembers': 5}" in original and 'n/a' in original
  assert 'KS p = ' in table and '| lira | 8 | |' in table
  assert not any(l.startswith('| gradient_ascent |') for l in lines)


def test_masking_fake_of_a_draw_scales_exact_records():
  """The validation's masking fake: M's logits × 0.1 on the exact records of Du only."""
  import jax
  from jaxaudit.models import get_model, init_params
  from jaxaudit.train import predict_logits
  model = get_model('mlp', 3, hidden=(8,))
  params = init_params(model, jax.random.key(1), (4,))
  du = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
  other = du + 1.0
  fn = validation.masked_fn(model, params, du, mode='scale', scale=validation.MASK_FLATTEN)
  x = np.concatenate([du, other])
  want = np.array(predict_logits(model, params, x))
  want[:3] *= 0.1
  np.testing.assert_array_equal(fn(x), want)
