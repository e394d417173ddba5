"""The language-model task: output checks, signals against naive loops, views, knowledge test."""

from __future__ import annotations

import types

import numpy as np
import pytest

from jaxaudit.audit.runner import AuditSettings
from jaxaudit.errors import AuditError
from jaxaudit.tasks.language import (F_ARGMAX, F_LOGP, F_VALID, LanguageModeling,
                                     perturb_tokens)

T, V = 6, 11


def _features(rng, shape, n_valid):
  """Random features (..., n, T, 5) with the first n_valid[i] positions of record i valid."""
  f = np.zeros(shape + (T, 5), np.float32)
  n = shape[-1]
  valid = np.arange(T)[None] < np.asarray(n_valid)[:, None]                     # (n, T)
  f[..., F_LOGP] = np.where(valid, -rng.exponential(1.0, shape + (T,)), 0)
  f[..., 1] = np.where(valid, -rng.exponential(2.0, shape + (T,)), 0)
  f[..., 2] = np.where(valid, rng.uniform(0.1, 2, shape + (T,)), 0)
  f[..., F_ARGMAX] = np.where(valid, rng.integers(0, V, shape + (T,)), 0)
  f[..., F_VALID] = np.broadcast_to(valid, shape + (T,))
  assert f.shape[-3] == n
  return f


def test_signals_match_naive_loops():
  rng = np.random.default_rng(0)
  a, k, n = 2, 3, 5
  n_valid = [6, 3, 1, 4, 5]
  ft = _features(rng, (a, n), n_valid)
  fv = _features(rng, (a, k, n), n_valid)
  targets = rng.integers(0, V, (n, T))
  s = LanguageModeling(V, T).signals(ft, fv, targets)
  for i in range(n):
    L = n_valid[i]
    for ai in range(a):
      phi_t = ft[ai, i, :L, F_LOGP].mean()
      phi_v = [fv[ai, j, i, :L, F_LOGP].mean() for j in range(k)]
      assert s.phi_target[ai, i] == pytest.approx(phi_t, rel=1e-6)
      assert s.calibrated[ai, i] == pytest.approx(phi_t - np.mean(phi_v), rel=1e-5, abs=1e-6)
      for j in range(k):
        agree = np.mean(ft[ai, i, :L, F_ARGMAX] == fv[ai, j, i, :L, F_ARGMAX])
        kl = np.mean(np.abs(ft[ai, i, :L, F_LOGP] - fv[ai, j, i, :L, F_LOGP]))
        assert s.agreement[ai, j, i] == pytest.approx(agree)
        assert s.kl[ai, j, i] == pytest.approx(kl, rel=1e-5)
      mix = np.log(np.mean([np.exp(fv[ai, j, i, :L, F_LOGP]) for j in range(k)], axis=0))
      assert s.kl_ensemble[ai, i] == pytest.approx(np.mean(np.abs(ft[ai, i, :L, F_LOGP] - mix)),
                                                   rel=1e-5)
    assert s.correct_target[i] == pytest.approx(np.mean(ft[0, i, :L, F_ARGMAX] == targets[i, :L]))
    assert s.loss_target[0, i] == pytest.approx(-ft[0, i, :L, F_LOGP].mean(), rel=1e-6)


def test_check_outputs():
  task = LanguageModeling(V, T)
  f = _features(np.random.default_rng(1), (1, 3), [6, 2, 4])
  assert task.check_outputs(f, 'x').dtype == np.float32
  with pytest.raises(AuditError, match=r'shape \(\.\.\., n, 6, 5\)'):
    task.check_outputs(f[..., :4], 'x')
  bad = f.copy()
  bad[0, 0, 0, F_LOGP] = 0.5
  with pytest.raises(AuditError, match='must be <= 0'):
    task.check_outputs(bad, 'x')
  bad = f.copy()
  bad[0, 1, 0, F_LOGP] = np.nan
  with pytest.raises(AuditError, match='NaN or inf'):
    task.check_outputs(bad, 'x')
  assert task.nonfinite(task.check_outputs(bad, 'x', allow_nonfinite=True)).tolist() == \
      [False, True, False]
  bad[0, 1, 5, F_LOGP] = np.nan        # NaN at an invalid (padding) position is not an output
  assert not task.nonfinite(f).any()


def test_perturbed_views_are_deterministic_per_record():
  rng = np.random.default_rng(2)
  x = rng.integers(0, V, (8, T + 1)).astype(np.float32)
  x[3, 4:] = -1
  ids = np.arange(100, 108)
  a = perturb_tokens(x, ids, 'perturb', V, seed=5)
  b = perturb_tokens(x[::-1], ids[::-1], 'perturb', V, seed=5)[::-1]   # another set order
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, perturb_tokens(x, ids, 'perturb_1', V, seed=5))
  np.testing.assert_array_equal(a[:, 0], x[:, 0])               # the first token is kept
  np.testing.assert_array_equal(a[3, 4:], -1)                   # padding is kept
  assert 0 < np.mean(a != x) < 0.5


def test_paraphrase_view_falls_back_to_the_record():
  x = np.arange(4 * (T + 1), dtype=np.float32).reshape(4, T + 1) % V
  para = np.full((4, T + 1), -1, np.float32)
  para[1] = 7
  task = LanguageModeling(V, T, neighbours={'paraphrase': para})
  assert task.default_views((T + 1,)) == ('identity', 'perturb', 'paraphrase')
  out = task.query_views(x[[1, 2]], np.array([1, 2]), ('identity', 'paraphrase'))
  np.testing.assert_array_equal(out[1, 0], para[1])
  np.testing.assert_array_equal(out[1, 1], x[2])
  with pytest.raises(AuditError, match='unknown language-model view'):
    task.query_views(x, np.arange(4), ('identity', 'flip'))


def test_knowledge_test_compares_answers_at_the_probe_positions():
  probes = types.SimpleNamespace(
      tokens=np.zeros((4, T + 1), np.float32), answer_pos=np.array([1, 2, 3, 1]),
      answer=np.array([5, 6, 7, 8]), group=np.array([0, 0, 1, 2]),
      false_answers=np.zeros((4, 2), int))
  groups = np.array([0, 0, 1, 1, 2])
  task = LanguageModeling(V, T, knowledge=probes, groups=groups)
  split = types.SimpleNamespace(forget=np.array([0, 1]))               # group 0 only
  settings = AuditSettings()
  assert task.needs_unseen_verifiers(None, split, settings)

  def query(idx, name, inputs=None):
    assert name == 'knowledge' and inputs.shape == (2, T + 1)
    tl = np.zeros((2, T, 5), np.float32)
    tl[0, 1, F_ARGMAX] = 5          # right
    tl[1, 2, F_ARGMAX] = 1          # wrong
    vl = np.zeros((3, 2, T, 5), np.float32)
    return tl, vl

  out, covers_all = task.extra_test(None, split, settings, query, None)
  assert not covers_all
  assert out['correct_target'].tolist() == [True, False]
  assert out['correct_verifiers'].shape == (3, 2) and not out['correct_verifiers'].any()
  assert out['direction'] == 'remembers_knowledge' and out['people'] == 1
  no_test = AuditSettings(class_test=False)
  assert task.extra_test(None, split, no_test, query, None) == (None, False)


def test_test_units_are_the_test_groups():
  task = LanguageModeling(11, 4, test_groups=np.array([5, 5, 7]))
  np.testing.assert_array_equal(task.test_units(np.array([2, 0])), [7, 5])
  assert LanguageModeling(11, 4).test_units(np.array([0])) is None
