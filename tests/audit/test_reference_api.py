"""User reference sets, logits-file validation and the verdict on non-finite outputs (digits)."""

import json

import numpy as np
import pytest

from jaxaudit.audit import AuditSettings, Target, audit
from jaxaudit.audit import reference as ref_lib
from jaxaudit.audit.decision import TestSettings
from jaxaudit.audit.report import markdown, report_dict
from jaxaudit.data import validate_split
from jaxaudit.errors import AuditError


# --- reference API -----------------------------------------------------------------------------

def test_validate_reference_errors(digits):
  x = np.zeros((5,) + digits.input_shape, np.float32)
  y = np.arange(5) % 10
  xv, yv = ref_lib.validate_reference(x, y, digits)
  assert xv.dtype == np.float32 and yv.dtype == np.int32 and xv.shape == x.shape
  with pytest.raises(AuditError, match='shape'):
    ref_lib.validate_reference(np.zeros((5, 64)), y, digits)
  with pytest.raises(AuditError, match='one per input'):
    ref_lib.validate_reference(x, y[:4], digits)
  with pytest.raises(AuditError, match='integers'):
    ref_lib.validate_reference(x, y.astype(float), digits)
  with pytest.raises(AuditError, match=r'\[0, 10\)'):
    ref_lib.validate_reference(x, y + 7, digits)
  with pytest.raises(AuditError, match='numeric'):
    ref_lib.validate_reference(x.astype(str), y, digits)
  bad = x.copy()
  bad[2, 0, 0, 0] = np.nan
  with pytest.raises(AuditError, match='NaN or inf'):
    ref_lib.validate_reference(bad, y, digits)
  with pytest.raises(AuditError, match='at least 2'):
    ref_lib.validate_reference(x[:1], y[:1], digits)


def test_with_reference_appends_records(digits, digits_split):
  x = digits.x_train[digits_split.ref[:30]] + 0.1
  y = digits.y_train[digits_split.ref[:30]]
  ds, sp = ref_lib.with_reference(digits, digits_split, x, y)
  n0 = len(digits.x_train)
  np.testing.assert_array_equal(sp.ref, np.arange(n0, n0 + 30))
  for f in ('train', 'forget', 'retain', 'test'):
    np.testing.assert_array_equal(getattr(sp, f), getattr(digits_split, f))
  np.testing.assert_array_equal(ds.x_train[sp.ref], x.astype(np.float32))
  assert ds.fingerprint != digits.fingerprint and sp.dataset_fingerprint == ds.fingerprint
  validate_split(sp, ds)
  assert len(digits.x_train) == n0     # the original is untouched
  ds2, _ = ref_lib.with_reference(digits, digits_split, x, y)
  assert ds2.fingerprint == ds.fingerprint   # deterministic


def test_load_reference_file(digits, tmp_path):
  mean, std = ref_lib.dataset_standardisation(digits)
  idx = np.arange(20)
  raw = digits.x_train[idx] * std + mean                      # raw units: pixel counts / 16
  p = tmp_path / 'ref.npz'
  np.savez(p, x=raw[..., 0], y=digits.y_train[idx])             # (n, H, W) grey images
  x, y = ref_lib.load_reference_file(str(p), digits)
  np.testing.assert_allclose(x, digits.x_train[idx], atol=1e-5)
  np.testing.assert_array_equal(y, digits.y_train[idx])
  np.savez(p, x=digits.x_train[idx], y=digits.y_train[idx], units='standardised')
  x, _ = ref_lib.load_reference_file(str(p), digits)
  np.testing.assert_array_equal(x, digits.x_train[idx])
  with pytest.raises(AuditError, match='does not exist'):
    ref_lib.load_reference_file(str(tmp_path / 'none.npz'), digits)
  np.savez(p, x=raw)
  with pytest.raises(AuditError, match=r"lacks the array\(s\) \['y'\]"):
    ref_lib.load_reference_file(str(p), digits)
  np.savez(p, x=np.array([{'a': 1}] * 3, dtype=object), y=np.zeros(3, int))
  with pytest.raises(AuditError, match='cannot read|numeric'):
    ref_lib.load_reference_file(str(p), digits)
  np.savez(p, x=raw, y=digits.y_train[idx], units='kelvin')
  with pytest.raises(AuditError, match='units'):
    ref_lib.load_reference_file(str(p), digits)
  np.savez(p, x=raw, y=digits.y_train[idx] + 10)
  with pytest.raises(AuditError, match=r'ref.npz: reference labels'):
    ref_lib.load_reference_file(str(p), digits)
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(AuditError, match='cannot read'):
    ref_lib.load_reference_file(str(tmp_path / 'junk.npz'), digits)


# --- logits files ------------------------------------------------------------------------------

def _save(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_logits_file_refuses_float_indices_and_malformed_views(tmp_path):
  n, c = 6, 10
  good = dict(indices=np.arange(n), logits=np.zeros((n, c), np.float32))
  Target.from_logits_file(_save(tmp_path / 'ok.npz', **good))
  cases = [
      (dict(good, indices=np.arange(n) + 0.5), 'integer'),
      (dict(good, indices=np.arange(n).astype(np.float64)), 'integer'),   # integral floats too
      (dict(good, indices=np.arange(n) - 1), 'negative'),
      (dict(good, indices=np.zeros(n, int)), 'unique'),
      (dict(good, logits=np.zeros((n, c), np.int64)), 'floating'),
      (dict(good, logits=np.zeros((n + 1, c), np.float32)), 'shape'),
      (dict(good, test_indices=np.arange(3)), 'together'),
      (dict(good, test_indices=np.arange(3), test_logits=np.zeros((3, c + 1), np.float32)),
       'classes'),
      (dict(good, view_names=np.array(['noise'])), 'together'),
      (dict(good, view_names=np.array(['noise']), view_logits=np.zeros((2, n, c), np.float32)),
       'shape'),
      (dict(good, view_names=np.array(['noise', 'flip']),
            view_logits=np.zeros((2, n - 1, c), np.float32)), 'shape'),
      (dict(good, view_names=np.array(['noise']), view_logits=np.zeros((1, n, c), np.int32)),
       'floating'),
      (dict(good, view_names=np.array(['noise']), view_logits=np.zeros((1, n, c + 2), np.float32)),
       'classes'),
      (dict(good, view_names=np.array([1.0]), view_logits=np.zeros((1, n, c), np.float32)),
       'strings'),
      (dict(good, view_names=np.array(['blur']), view_logits=np.zeros((1, n, c), np.float32)),
       'unknown view'),
      (dict(good, view_names=np.array(['noise', 'noise']),
            view_logits=np.zeros((2, n, c), np.float32)), 'unique'),
  ]
  for i, (arrays, msg) in enumerate(cases):
    with pytest.raises(AuditError, match=msg):
      Target.from_logits_file(_save(tmp_path / f'bad{i}.npz', **arrays))
  t = Target.from_logits_file(_save(tmp_path / 'views.npz', **good, view_names=np.array([b'noise']),
                                    view_logits=np.ones((1, n, c), np.float32)))
  assert t.available_views() == ('identity', 'noise')
  out = t.logits(None, np.arange(3), ('identity', 'noise'), c)
  assert out.shape == (2, 3, c) and np.all(out[1] == 1)


# --- end to end on digits: NaN verdict, user references ----------------------------------------

@pytest.fixture(scope='module')
def trained(digits, digits_split):
  import jax
  from jaxaudit.models import get_model
  from jaxaudit.train import Recipe, train_model
  model = get_model('mlp', digits.num_classes, digits.input_shape, hidden=(64,))
  recipe = Recipe(epochs=8, batch_size=64, learning_rate=3e-3)
  params = train_model(model, digits.x_train, digits.y_train, digits_split.retain,
                       jax.random.key(1), recipe).params
  settings = AuditSettings(num_verifiers=2, ref_sample=300, member_sample=150,
                           views=('identity', 'noise'), test=TestSettings(n_boot=20))
  return model, recipe, params, settings


def test_nonfinite_outputs_get_a_collapse_verdict(digits, digits_split, trained):
  model, recipe, _, settings = trained
  nan_fn = lambda x: np.full((len(x), 10), np.nan, np.float32)
  r = audit(Target.from_fn(nan_fn, 'diverged'), digits, digits_split, verifier_model=model,
            recipe=recipe, settings=settings)
  assert r.decision == 'not_forgotten' and r.direction == 'collapse'
  nf = r.details['nonfinite_outputs']
  assert nf['forget']['records'] == nf['forget']['of'] == len(digits_split.forget)
  assert 'NaN or inf' in r.details['reason'] and np.isnan(r.p_value)
  md = markdown(r)
  assert 'NaN or inf' in md and 'collapse' in md and 'no test was run' in md
  json.dumps(report_dict(r), allow_nan=False)           # NaN -> null
  assert 'collapse' in r.summary()
  # One bad record is enough; a wrong class count stays an error.
  def one_nan(x):
    out = np.zeros((len(x), 10), np.float32)
    out[:1] = np.inf
    return out
  r = audit(Target.from_fn(one_nan), digits, digits_split, verifier_model=model, recipe=recipe,
            settings=settings)
  assert r.decision == 'not_forgotten' and r.direction == 'collapse'
  with pytest.raises(AuditError, match='one column per class'):
    audit(Target.from_fn(lambda x: np.zeros((len(x), 7), np.float32)), digits, digits_split,
          verifier_model=model, recipe=recipe, settings=settings)


def test_user_reference_same_pool_passes_and_shifted_is_refused(digits, digits_split, trained):
  model, recipe, params, settings = trained
  tgt = Target.from_params(model, params, 'retrain')
  ref = (digits.x_train[digits_split.ref], digits.y_train[digits_split.ref])
  memo = {}
  kw = dict(verifier_model=model, recipe=recipe, settings=settings, memo=memo)
  r0 = audit(tgt, digits, digits_split, **kw)
  r1 = audit(tgt, digits, digits_split, reference=ref, **kw)
  assert r1.details['request']['reference'] == 'user'
  assert r1.details['reference_check']['source'] == 'user'
  # Same records as the pool's D_ref: the same exact-view statistic (the noise views of the
  # appended records are drawn from their new pool indices, so the others differ slightly).
  assert r1.decision == r0.decision
  assert r1.details['tests']['exact']['p_value'] == pytest.approx(r0.details['tests']['exact']['p_value'])
  assert r1.details['reference_check']['ok']
  rc = r1.details['reference_check']
  assert {'verifiers_phi', 'loo0_exact', 'loo1_gap', 'input_mean', 'input_roughness'} <= set(
      rc['statistics'])
  shifted = (ref[0] + 1.0, ref[1])                        # +1 standard deviation everywhere
  r2 = audit(tgt, digits, digits_split, reference=shifted, **kw)
  assert r2.decision == 'invalid_reference' and not r2.details['reference_check']['ok']
  md = markdown(r2)
  assert 'user-supplied reference set' in md and 'FAILED' in md
  # Determinism: same seed, same decision and p-values.
  r3 = audit(tgt, digits, digits_split, reference=shifted, **kw)
  assert r3.p_value == r2.p_value and r3.details['reference_check'] == r2.details['reference_check']
  with pytest.raises(AuditError, match='pair'):
    audit(tgt, digits, digits_split, reference=ref[0], **kw)
  with pytest.raises(AuditError, match=r'\[0, 10\)'):
    audit(tgt, digits, digits_split, reference=(ref[0], ref[1] + 10), **kw)
