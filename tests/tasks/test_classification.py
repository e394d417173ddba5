import numpy as np
import pytest

from jaxaudit.tasks import classification as signals
from jaxaudit.errors import AuditError


def _naive_phi(logits, y):
  out = np.zeros(logits.shape[:-1])
  for idx in np.ndindex(*logits.shape[:-1]):
    z = logits[idx].astype(np.float64)
    p = np.exp(z - z.max()); p /= p.sum()
    yi = y[idx[-1]]
    out[idx] = np.log(p[yi]) - np.log(p.sum() - p[yi])
  return out


def test_phi_equals_naive_and_is_stable():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 20, 5)).astype(np.float32) * 3
  y = rng.integers(0, 5, 20)
  np.testing.assert_allclose(np.asarray(signals.logit_confidence(logits, y)), _naive_phi(logits, y),
                             rtol=1e-4, atol=1e-4)
  # Confident logits where 1 - p_y underflows in float32: still finite and exact.
  big = np.array([[60.0, 0.0, 0.0]], np.float32)
  phi = float(signals.logit_confidence(big, np.array([0]))[0])
  assert np.isfinite(phi) and abs(phi - (60.0 - np.log(2.0))) < 1e-4


def test_signals_against_naive():
  rng = np.random.default_rng(1)
  a, k, n, c = 2, 3, 7, 4
  tl = rng.normal(size=(a, n, c)).astype(np.float32)
  vl = rng.normal(size=(a, k, n, c)).astype(np.float32)
  y = rng.integers(0, c, n)
  s = signals.compute_signals(tl, vl, y)
  np.testing.assert_allclose(s.calibrated, _naive_phi(tl, y) - _naive_phi(vl, y).mean(1), atol=1e-4)
  pt = np.exp(tl) / np.exp(tl).sum(-1, keepdims=True)
  pv = np.exp(vl) / np.exp(vl).sum(-1, keepdims=True)
  kl = np.sum(pt[:, None] * (np.log(pt[:, None]) - np.log(pv)), -1)
  np.testing.assert_allclose(s.kl, kl, atol=1e-5)
  np.testing.assert_array_equal(s.agreement, (tl.argmax(-1)[:, None] == vl.argmax(-1)).astype(float))
  np.testing.assert_allclose(s.loss_target, -np.log(np.take_along_axis(pt, np.broadcast_to(
      y[None, :, None], (a, n, 1)), -1))[..., 0], atol=1e-5)


def test_views_are_deterministic_and_record_keyed():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6, 6, 1)).astype(np.float32)
  ids = np.array([10, 11, 12, 13])
  v1 = signals.query_views(x, ids, ('identity', 'shift_right', 'noise'), seed=3)
  v2 = signals.query_views(x[::-1], ids[::-1], ('identity', 'shift_right', 'noise'), seed=3)
  np.testing.assert_array_equal(v1, v2[:, ::-1])    # a record's view depends on its id only
  np.testing.assert_array_equal(v1[0], x)
  np.testing.assert_array_equal(v1[1][:, :, 1:], x[:, :, :-1])   # shifted right by one pixel
  with pytest.raises(AuditError, match='unknown view'):
    signals.query_views(x, ids, ('identity', 'rotate'))
  with pytest.raises(AuditError, match='image'):
    signals.query_views(x.reshape(4, -1), ids, ('identity', 'flip'))


def test_check_logits_errors():
  with pytest.raises(AuditError, match='NaN or inf'):
    signals.check_logits(np.array([[0.0, np.nan]]), 2, 'logits')
  with pytest.raises(AuditError, match=r'\(\.\.\., 3\)'):
    signals.check_logits(np.zeros((4, 2)), 3, 'logits')


def test_every_shift_view_translates_with_edge_padding():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 9, 8, 2)).astype(np.float32)
  ids = np.arange(3)
  names = tuple(signals.SHIFTS)
  out = signals.query_views(x, ids, ('identity',) + names, seed=0)
  assert out.shape == (1 + len(names),) + x.shape
  for a, name in enumerate(names, start=1):
    dy, dx = signals.SHIFTS[name]
    # Naive reference: out[i, j] = x[clip(i - dy), clip(j - dx)].
    ii = np.clip(np.arange(9) - dy, 0, 8)
    jj = np.clip(np.arange(8) - dx, 0, 7)
    np.testing.assert_array_equal(out[a], x[:, ii][:, :, jj], err_msg=name)
  assert signals.default_views((9, 8, 2)) == signals.IMAGE_VIEWS
  assert signals.default_views((9, 8, 2), flips=True)[-1] == 'flip'
