"""Language-model peers: Min-K%++ MIA, MUSE PrivLeak, TOFU truth ratio and forget quality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as sps

from jaxaudit.audit import stats
from jaxaudit.errors import AuditError
from jaxaudit.peers import language as lang


def _features(logp, mu, sigma):
  """(n, T) arrays -> (n, T, 5) features, every position valid."""
  logp = np.asarray(logp, np.float64)
  return np.stack([logp, np.broadcast_to(mu, logp.shape), np.broadcast_to(sigma, logp.shape),
                   np.zeros_like(logp), np.ones_like(logp)], -1)


def test_minkpp_mia_auc_equals_jaxaudits_auc_and_hand_scores():
  # T = 5, k = 0.2: each record scores its single lowest (logp - mu) / sigma.
  ff = _features([[-1, -2, -1, -1, -1], [-1, -1, -1, -1, -0.5], [-3, -1, -1, -1, -1]], -1.0, 2.0)
  fh = _features([[-4, -1, -1, -1, -1], [-2, -1, -1, -1, -1]], -1.0, 2.0)
  res = lang.minkpp_mia(ff, fh, k=0.2)
  np.testing.assert_allclose(res['scores_forget'], [-0.5, 0.0, -1.0])
  np.testing.assert_allclose(res['scores_holdout'], [-1.5, -0.5])
  pairs = [(a > b) + 0.5 * (a == b) for a in [-0.5, 0.0, -1.0] for b in [-1.5, -0.5]]
  assert res['auc'] == pytest.approx(np.mean(pairs)) == pytest.approx(4.5 / 6)
  assert res['auc'] == stats.auc(res['scores_forget'], res['scores_holdout'])
  assert (res['n_forget'], res['n_holdout'], res['k']) == (3, 2, 0.2)


def test_minkpp_mia_refuses_missing_moments_and_empty_records():
  ff = _features([[-1.0, -2.0]], np.nan, np.nan)
  with pytest.raises(AuditError, match=r'features_forget: non-finite .* then is unavailable'):
    lang.minkpp_mia(ff, _features([[-1.0, -1.0]], -1.0, 1.0))
  empty = _features([[-1.0, -2.0]], -1.0, 1.0)
  empty[..., 4] = 0
  with pytest.raises(AuditError, match=r'features_holdout: record 0 has no valid token'):
    lang.minkpp_mia(_features([[-1.0, -1.0]], -1.0, 1.0), empty)
  with pytest.raises(AuditError, match=r'must have shape \(n, T, 5\)'):
    lang.minkpp_mia(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def test_privleak_arithmetic():
  assert lang.privleak(0.75, 0.5) == pytest.approx(50.0)
  assert lang.privleak(0.5, 0.5) == 0.0
  assert lang.privleak(0.4, 0.5) == pytest.approx(-20.0)
  with pytest.raises(AuditError, match=r'auc_retrain must lie in \(0, 1\]'):
    lang.privleak(0.5, 0.0)
  with pytest.raises(AuditError, match=r'auc_unlearned must lie in \[0, 1\]'):
    lang.privleak(1.5, 0.5)


def test_truth_ratio_by_hand():
  lt = np.log([0.5, 0.2])
  lf = np.log([[0.2, 0.1], [0.4, 0.3]])
  np.testing.assert_allclose(lang.truth_ratios(lt, lf), [0.15 / 0.5, 0.35 / 0.2])
  # lengths: P^(1/len); two-token true answer, three-token false answers
  r = lang.truth_ratios(lt, lf, len_true=2, len_false=3)
  hand = [np.mean(np.asarray(f) ** (1 / 3)) / t ** 0.5 for t, f in
          ((0.5, [0.2, 0.1]), (0.2, [0.4, 0.3]))]
  np.testing.assert_allclose(r, hand)
  # a missing false answer (NaN) is left out of the mean; none at all -> NaN
  r = lang.truth_ratios(np.log([0.5, 0.5]), [[math.log(0.2), np.nan], [np.nan, np.nan]])
  np.testing.assert_allclose(r[0], 0.4)
  assert np.isnan(r[1])
  with pytest.raises(AuditError, match=r'log-probs must be <= 0'):
    lang.truth_ratios([0.5], [[-1.0]])


def test_forget_quality_is_scipys_ks_p_value():
  rng = np.random.default_rng(0)
  a, b = rng.lognormal(size=40), rng.lognormal(0.5, size=30)
  assert lang.forget_quality(a, b) == pytest.approx(sps.ks_2samp(a, b).pvalue, rel=1e-12)
  assert lang.forget_quality(a, a) == pytest.approx(1.0)
  assert lang.forget_quality(np.append(a, np.nan), b) == lang.forget_quality(a, b)


def test_lm_peer_report_combines_the_three():
  rng = np.random.default_rng(1)
  fu = _features(rng.normal(-2, 1, (12, 6)).clip(max=0), -2.0, 1.0)
  hu = _features(rng.normal(-3, 1, (10, 6)).clip(max=0), -2.0, 1.0)
  fr = _features(rng.normal(-3, 1, (12, 6)).clip(max=0), -2.0, 1.0)
  hr = _features(rng.normal(-3, 1, (10, 6)).clip(max=0), -2.0, 1.0)
  au = np.log(rng.dirichlet(np.ones(4), 20))
  ar = np.log(rng.dirichlet(np.ones(4), 20))
  rep = lang.lm_peer_report(fu, hu, fr, hr, au, ar, k=0.5, retrain_wall_time_s=3.0)
  a_u, a_r = lang.minkpp_mia(fu, hu, 0.5)['auc'], lang.minkpp_mia(fr, hr, 0.5)['auc']
  assert rep['minkpp_auc'] == dict(unlearned=a_u, retrain=a_r)
  assert rep['privleak'] == pytest.approx(lang.privleak(a_u, a_r))
  fq = lang.forget_quality(lang.truth_ratios(au[:, 0], au[:, 1:]),
                           lang.truth_ratios(ar[:, 0], ar[:, 1:]))
  assert rep['forget_quality'] == pytest.approx(fq)
  assert rep['decision'] == ('forgotten' if fq >= 0.05 else 'not_forgotten')
  assert rep['cost']['models_trained'] == 1 and rep['cost']['wall_time_s'] >= 3.0
  assert rep['sizes'] == dict(forget=12, holdout=10, questions=dict(unlearned=20, retrain=20))
  rep = lang.lm_peer_report(fu, hu, fr, hr)
  assert rep['forget_quality'] is None and rep['decision'] is None
  with pytest.raises(AuditError, match=r'must be given together'):
    lang.lm_peer_report(fu, hu, fr, hr, au)


def test_answer_logprobs_matches_the_models_logits_and_compiles_once():
  import jax
  from jaxaudit.compilation import count_compilations
  from jaxaudit.models.transformer import TransformerLM
  from jaxaudit.text.dataset import KnowledgeProbes
  v, t = 13, 6
  rng = np.random.default_rng(2)
  x = rng.integers(0, v, (6, t + 1)).astype(np.float32)
  x[3, 5:] = -1
  model = TransformerLM(num_classes=v, width=16, depth=1, heads=2, context=t,
                        output='features')
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])['params']
  pos = np.array([0, 2, 5, 3, 1, 4], np.int32)
  false = rng.integers(0, v, (6, 3)).astype(np.int32)
  false[1, 2] = -1
  probes = KnowledgeProbes(tokens=x, answer_pos=pos, answer=x[np.arange(6), pos + 1].astype(
      np.int32), group=np.zeros(6, np.int64), false_answers=false)
  out = lang.answer_logprobs(model, params, probes)
  logits = np.asarray(jax.jit(model.clone(output='logits').apply)({'params': params}, x),
                      np.float64)
  row = logits[np.arange(6), pos]
  lp = row - np.log(np.exp(row).sum(-1, keepdims=True))
  cand = np.concatenate([probes.answer[:, None], false], 1)
  ref = np.where(cand >= 0, np.take_along_axis(lp, np.maximum(cand, 0), 1), np.nan)
  assert out.shape == (6, 4)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  sub = probes._replace(**{k: getattr(probes, k)[:5] for k in probes._fields})
  with count_compilations() as c:
    out5 = lang.answer_logprobs(model, params, sub)      # Q = 5 and 6 share a shape bucket
  assert c.count == 0, c.names
  np.testing.assert_allclose(out5, out[:5], atol=1e-6)
  with pytest.raises(AuditError, match=r'answer_pos must be'):
    lang.answer_logprobs(model, params, probes._replace(answer_pos=pos + 6))
