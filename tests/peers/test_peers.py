"""Tests for jaxaudit.peers: the result type, shared pieces, the registry, the auditors.

The score tables are checked against reference implementations in
test_lira.py, test_rmia.py, test_population.py and test_neurips23.py; the
heuristics against naive loops here; the auditors end to end on a tiny digits setup, where an
"original" MLP (trained on D, Du included) must look more member-like on Du
than a model retrained without Du. Every model is trained once per module (a
few compiled programs), so the file stays fast on two CPU cores.
"""

from __future__ import annotations

import importlib
import json
import math

from hypothesis import given, settings, strategies as st
import jax
import numpy as np
import pytest
from scipy import stats as sps

from jaxaudit.audit import Target
from jaxaudit import peers
from jaxaudit.peers import base
from jaxaudit.data import make_split
from jaxaudit.errors import AuditError, ConfigError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_ensemble, unstack

NUM_SHADOWS = 8
population_lib = importlib.import_module('jaxaudit.peers.population')


# -----------------------------------------------------------------------------
# Fixtures: one split, two targets and one shadow ensemble for the module.
# -----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def setup(digits):
  """Small overfitting setup: |D| = 400, |Du| = 80, |D_ref| = 100, MLP (32,)."""
  split = make_split(digits, seed=0, train_size=400, ref_size=100, forget_size=80,
                     test_size=200)
  model = get_model('mlp', digits.num_classes, hidden=(32,))
  recipe = Recipe(epochs=100, batch_size=64, learning_rate=1e-2)
  res = train_ensemble(model, digits.x_train, digits.y_train, [split.train, split.retain],
                       [0, 1], recipe)
  original = Target.from_params(model, unstack(res.params, 0), name='original')
  retrained = Target.from_params(model, unstack(res.params, 1), name='retrained')
  shadows = peers.train_shadows(model, digits, recipe, np.union1d(split.train, split.ref),
                                num_shadows=NUM_SHADOWS, seed=0, tag='lira-shadows')
  return dict(data=digits, split=split, model=model, recipe=recipe, original=original,
              retrained=retrained, shadows=shadows)


def _json_roundtrip(result: peers.PeerResult) -> dict:
  d = result.to_dict()
  assert json.loads(json.dumps(d)) == d
  return d


# -----------------------------------------------------------------------------
# Naive references.
# -----------------------------------------------------------------------------


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# -----------------------------------------------------------------------------
# Shadow plans and the result type.
# -----------------------------------------------------------------------------


@pytest.mark.parametrize('num_shadows', [2, 5, 16])
def test_plan_halves_is_balanced(num_shadows):
  m = peers.plan_halves(500, num_shadows, seed=3)
  assert m.shape == (num_shadows, 500) and m.dtype == bool
  np.testing.assert_array_equal(m.sum(0), num_shadows // 2)
  frac = m.sum(1) / 500
  assert np.all(np.abs(frac - (num_shadows // 2) / num_shadows) < 0.1)
  np.testing.assert_array_equal(m, peers.plan_halves(500, num_shadows, seed=3))
  assert not np.array_equal(m, peers.plan_halves(500, num_shadows, seed=4))


def test_shadow_in_matrix(setup):
  sh, split = setup['shadows'], setup['split']
  assert sh.num_models == NUM_SHADOWS
  np.testing.assert_array_equal(sh.population, np.union1d(split.train, split.ref))
  np.testing.assert_array_equal(sh.in_matrix.sum(0), NUM_SHADOWS // 2)
  assert np.all(np.abs(sh.in_matrix.mean(1) - 0.5) < 0.1)
  mask = sh.in_mask(split.forget)
  assert mask.shape == (NUM_SHADOWS, len(split.forget))
  np.testing.assert_array_equal(mask.sum(0), NUM_SHADOWS // 2)
  with pytest.raises(AuditError, match='not in the shadow population'):
    sh.in_mask(split.test[:3] + 10_000)
  leaves = jax.tree.leaves(sh.params)
  assert all(l.shape[0] == NUM_SHADOWS for l in leaves)


def test_peer_result_to_dict_and_validation():
  r = peers.PeerResult(name='x', score=np.float32(0.5), decision=None, rule='none',
                       details=dict(a=np.arange(3), b=(np.float64(1.5), np.int64(2)),
                                    c={1: np.bool_(True)}),
                       cost=dict(models_trained=np.int64(3), wall_time_s=1))
  d = _json_roundtrip(r)
  assert d['details'] == dict(a=[0, 1, 2], b=[1.5, 2], c={'1': True})
  assert d['cost'] == dict(models_trained=3, wall_time_s=1.0)
  with pytest.raises(AuditError, match='decision'):
    peers.PeerResult(name='x', score=0.5, decision='maybe', rule='', details={}, cost={})


def test_registry():
  assert set(peers.PEERS) == {'population_mia', 'lira', 'ulira', 'rmia', 'neurips23',
                              'heuristics'}
  assert all(callable(f) for f in peers.PEERS.values())


def test_get_peer_binds_and_checks_options():
  p = peers.get_peer('lira', online=False, num_shadows=8)
  assert p.name == 'lira' and p.fn is peers.PEERS['lira']
  assert dict(p.options) == dict(online=False, num_shadows=8)
  assert repr(p) == 'Peer(lira, online=False, num_shadows=8)'
  assert peers.peer_options('rmia')['tie'] == 'strict'
  with pytest.raises(ConfigError, match="unknown peer auditor 'liraa'"):
    peers.get_peer('liraa')
  with pytest.raises(ConfigError, match=r"peer 'lira' has no option\(s\) \['onlin'\]"):
    peers.get_peer('lira', onlin=False)
  with pytest.raises(ConfigError, match='unknown peer auditor'):
    peers.peer_options('nope')


def test_get_peer_calls_with_bound_options(monkeypatch):
  seen = {}

  def fake(target, *, alpha=0.05, seed=0):
    seen.update(target=target, alpha=alpha, seed=seed)
    return 'result'

  monkeypatch.setitem(peers.PEERS, 'fake', fake)
  p = peers.get_peer('fake', alpha=0.01)
  assert p('mu', seed=3) == 'result'
  assert seen == dict(target='mu', alpha=0.01, seed=3)
  assert p('mu', alpha=0.2) and seen['alpha'] == 0.2     # call-time keywords win


def test_from_config_forms():
  ml_collections = pytest.importorskip('ml_collections')
  one = peers.from_config({'type': 'rmia', 'tie': 'inclusive'})
  assert one.name == 'rmia' and dict(one.options) == {'tie': 'inclusive'}
  cfg = ml_collections.ConfigDict(dict(
      lira={}, lira_offline=dict(type='lira', online=False),
      pop=dict(name='population_mia', **population_lib.LEGACY_OPTIONS)))
  runs = peers.from_config(cfg)
  assert list(runs) == ['lira', 'lira_offline', 'pop']
  assert runs['lira'].name == 'lira' and not runs['lira'].options
  assert dict(runs['lira_offline'].options) == {'online': False}
  assert runs['pop'].name == 'population_mia' and runs['pop'].options['cv'] == 'kfold'
  with pytest.raises(ConfigError, match="peer run 'x': unknown peer auditor 'x'"):
    peers.from_config({'x': {}})
  with pytest.raises(ConfigError, match="peer run 'lira': peer 'lira' has no option"):
    peers.from_config({'lira': {'fixed_variance': True}})
  with pytest.raises(ConfigError, match='must be a mapping'):
    peers.from_config(['lira'])
  with pytest.raises(ConfigError, match='must be a mapping'):
    peers.from_config({'lira': 3})


# -----------------------------------------------------------------------------
# ROC helpers of the membership report.
# -----------------------------------------------------------------------------


def naive_tpr_at_fpr(pos, neg, target):
  best = 0.0
  for t in sorted(set(pos) | set(neg)) + [math.inf]:
    fpr = sum(1 for b in neg if b >= t) / len(neg)
    tpr = sum(1 for a in pos if a >= t) / len(pos)
    if fpr <= target:
      best = max(best, tpr)
  return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-6, 6), min_size=1, max_size=12),
       st.lists(st.integers(-6, 6), min_size=1, max_size=12), st.floats(0.0, 1.0))
def test_tpr_at_fpr_matches_threshold_sweep(pos, neg, target):
  assert base.tpr_at_fpr(pos, neg, target) == pytest.approx(naive_tpr_at_fpr(pos, neg, target))


def test_roc_curve_and_low_fpr_budget():
  fpr, tpr, thr = base.roc_curve([3.0, 2.0, 2.0], [2.0, 1.0])
  np.testing.assert_array_equal(thr, [np.inf, 3.0, 2.0, 1.0])
  np.testing.assert_allclose(tpr, [0.0, 1 / 3, 1.0, 1.0])
  np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
  pos = np.arange(100.0)
  neg = np.arange(100.0) - 50.0
  assert base.tpr_at_fpr(pos, neg, 0.0) == pytest.approx(0.5)
  assert base.tpr_at_fpr(pos, neg, 0.1) == pytest.approx(0.6)
  with pytest.raises(AuditError, match=r'fpr must be in \[0, 1\]'):
    base.tpr_at_fpr(pos, neg, 1.5)


# -----------------------------------------------------------------------------
# NeurIPS 2023 from logits, and the heuristics against naive loops.
# -----------------------------------------------------------------------------


def test_neurips23_identical_vs_separated():
  rng = np.random.default_rng(0)
  n_models, n, c = 64, 20, 5
  labels = rng.integers(0, c, n)
  base_logits = rng.normal(size=(n, c)) * 2.0
  same_u = base_logits + rng.normal(size=(n_models, n, c))
  same_r = base_logits + rng.normal(size=(n_models, n, c))
  acc = dict(ra_u=0.9, ra_r=0.95, ta_u=0.8, ta_r=0.85)
  same = peers.neurips23_epsilon(same_u, same_r, labels, **acc)
  sep_u = same_u.copy()
  sep_u[..., :] -= 20.0 * np.eye(c)[labels][None]   # unlearned: true label far lower
  sep = peers.neurips23_epsilon(sep_u, same_r, labels, **acc)
  eps_same = np.asarray(same.details['epsilons'])
  eps_sep = np.asarray(sep.details['epsilons'])
  # The threshold estimate is biased upwards by the sampling noise of 64
  # models per side, but stays far below the separated case.
  assert eps_same.shape == (n,) and eps_same.max() < 3.0
  assert eps_sep.min() >= 50.0     # perfectly separated: the cap
  assert same.details['forget_score'] > 0.1 and sep.details['forget_score'] == 0.0
  ratio = (0.9 / 0.95) * (0.8 / 0.85)
  assert same.score == pytest.approx(same.details['forget_score'] * ratio)
  assert same.decision is None and sep.score == 0.0
  _json_roundtrip(same)


def test_heuristics_match_naive():
  rng = np.random.default_rng(0)
  k, c = 3, 4
  sizes = dict(forget=15, retain=12, test=10, ref=14)
  tl = {s: rng.normal(size=(n, c)) * 2 for s, n in sizes.items()}
  vl = {s: rng.normal(size=(k, n, c)) * 2 for s, n in sizes.items()}
  ys = {s: rng.integers(0, c, n) for s, n in sizes.items()}
  bp = {s: (rng.normal(size=(n, c)), rng.normal(size=(n, c))) for s, n in sizes.items()}
  res = peers.heuristics(tl, vl, ys, baseline_logits_pair=bp)
  for s in sizes:
    pt = _softmax(tl[s])
    pbar = _softmax(vl[s]).mean(0)
    kl = np.mean([sum(pt[i, j] * math.log(pt[i, j] / pbar[i, j]) for j in range(c))
                  for i in range(sizes[s])])
    agree = np.mean([np.argmax(pt[i]) == np.argmax(pbar[i]) for i in range(sizes[s])])
    cons = np.mean([(np.argmax(pt[i]) == ys[s][i]) == (np.argmax(pbar[i]) == ys[s][i])
                    for i in range(sizes[s])])
    base_agree = np.mean(np.argmax(bp[s][0], -1) == np.argmax(bp[s][1], -1))
    got = res.details['sets'][s]
    assert got['kl'] == pytest.approx(kl, rel=1e-9)
    assert got['agreement'] == pytest.approx(agree)
    assert got['consistency'] == pytest.approx(cons)
    assert got['gap'] == pytest.approx(abs(agree - base_agree))
  assert res.score == pytest.approx(res.details['sets']['forget']['kl'])
  assert res.decision is None
  # KS on the truth ratio p_Mu(y|x) / mean_k p_Mv(y|x), Du vs D_ref.
  def truth(s):
    pt, pbar = _softmax(tl[s]), _softmax(vl[s]).mean(0)
    rows = np.arange(sizes[s])
    return pt[rows, ys[s]] / pbar[rows, ys[s]]
  want = sps.ks_2samp(truth('forget'), truth('ref'))
  assert res.details['ks']['p_value'] == pytest.approx(want.pvalue)
  assert res.details['ks']['statistic'] == pytest.approx(want.statistic)
  _json_roundtrip(res)


def test_heuristics_defaults_and_ks_rule():
  rng = np.random.default_rng(1)
  c, k = 3, 2
  y = {'forget': rng.integers(0, c, 40), 'ref': rng.integers(0, c, 40)}
  vl = {s: rng.normal(size=(k, 40, c)) for s in y}
  # Mu is very confident on Du only: truth ratios separate, KS rejects.
  tl = {'forget': 8.0 * np.eye(c)[y['forget']], 'ref': rng.normal(size=(40, c))}
  res = peers.heuristics(tl, vl, y, ks_rule=True)
  assert res.decision == 'not_forgotten' and res.details['ks']['p_value'] < 0.05
  assert res.details['baseline'] == 'first two verifiers'
  base = np.mean(np.argmax(vl['forget'][0], -1) == np.argmax(vl['forget'][1], -1))
  got = res.details['sets']['forget']
  assert got['gap'] == pytest.approx(abs(got['agreement'] - base))
  # One verifier: no baseline, no gap; no 'ref': no KS.
  res1 = peers.heuristics({'forget': tl['forget']}, {'forget': vl['forget'][:1]},
                          {'forget': y['forget']})
  assert 'gap' not in res1.details['sets']['forget'] and res1.details['ks'] is None


# -----------------------------------------------------------------------------
# Auditors end to end: original (trained on Du) vs retrained (never saw Du).
# -----------------------------------------------------------------------------


def test_population_mia_original_vs_retrained(setup):
  d, split = setup['data'], setup['split']
  orig = peers.population_mia(setup['original'], d, split)
  ret = peers.population_mia(setup['retrained'], d, split)
  for r in (orig, ret):
    assert 0.0 <= r.score <= 1.0 and r.cost['models_trained'] == 0
    assert r.details['indiscernibility'] == pytest.approx(1 - abs(r.score - 0.5) / 0.5)
    assert r.decision in ('forgotten', 'not_forgotten')
    assert 0.0 <= r.details['p_value'] <= 1.0
    _json_roundtrip(r)
  assert orig.score > ret.score
  assert orig.details['mean_loss']['forget'] < ret.details['mean_loss']['forget']
  perm = peers.population_mia(setup['retrained'], d, split, test='permutation',
                              n_permutations=20)
  assert perm.score == ret.score
  assert 1 / 21 <= perm.details['p_value'] <= 1.0


def test_lira_original_vs_retrained(setup):
  kw = dict(dataset=setup['data'], split=setup['split'], model=setup['model'],
            recipe=setup['recipe'], shadows=setup['shadows'])
  # Offline, the reference's two-sided density test does not separate the two
  # models on this tiny setup (AUC 0.516 vs 0.515 with 8 shadows); the
  # one-sided option does (0.615 vs 0.512). Both are reported, the
  # separation is checked with the one-sided option.
  for online, opts in ((True, {}), (False, {'offline_test': 'one_sided'}),
                       (False, {})):
    orig = peers.lira(setup['original'], online=online, **opts, **kw)
    ret = peers.lira(setup['retrained'], online=online, **opts, **kw)
    for r in (orig, ret):
      assert 0.0 <= r.score <= 1.0
      assert r.cost['models_trained'] == NUM_SHADOWS
      assert set(r.details['tpr_at_fpr']) == {'0.01', '0.001'}
      assert r.details['views'] == ['identity', 'shift_right']
      assert len(r.details['scores']['forget']) == len(setup['split'].forget)
      _json_roundtrip(r)
    if online or opts:
      assert orig.score > max(0.55, ret.score + 0.05), (online, orig.score, ret.score)
      assert orig.decision == 'not_forgotten' and ret.decision == 'forgotten'
  # IN shadows are more confident on their members than OUT shadows.
  sp = orig.details['shadow_phi']
  assert sp['mean_in'] > sp['mean_out']


def test_lira_on_a_logits_table_uses_the_views_it_holds(setup, tmp_path):
  d, split = setup['data'], setup['split']
  idx = np.concatenate([split.forget, split.ref])
  logits = base.target_logits(setup['original'], d, idx, ('identity',))[0]
  path = str(tmp_path / 'original.npz')
  np.savez(path, indices=idx, logits=logits)
  table = Target.from_logits_file(path)
  kw = dict(dataset=d, split=split, model=setup['model'], recipe=setup['recipe'],
            shadows=setup['shadows'])
  from_table = peers.lira(table, **kw)          # default views, reduced to 'identity'
  direct = peers.lira(setup['original'], views=('identity',), **kw)
  assert from_table.details['views'] == ['identity']
  assert from_table.score == pytest.approx(direct.score)
  assert from_table.details['p_value'] == pytest.approx(direct.details['p_value'])


def test_ulira_noop_unlearning_and_calls(setup):
  split, sh = setup['split'], setup['shadows']
  calls = []

  def noop(params, key, forget_indices, retain_indices):
    calls.append((np.asarray(forget_indices), np.asarray(retain_indices)))
    return params

  kw = dict(dataset=setup['data'], split=split, model=setup['model'], recipe=setup['recipe'],
            shadows=sh)
  orig = peers.ulira(setup['original'], unlearn_fn=noop, **kw)
  assert len(calls) == NUM_SHADOWS
  candidates = np.concatenate([split.forget, split.ref])
  for s, (f, r) in enumerate(calls):
    half = sh.population[sh.in_matrix[s]]
    np.testing.assert_array_equal(f, np.sort(np.intersect1d(half, candidates)))
    np.testing.assert_array_equal(r, np.setdiff1d(half, f))
  ret = peers.ulira(setup['retrained'], unlearn_fn=lambda p, k, f: p, **kw)
  # No-op unlearning: the unlearned shadows are LiRA's, the score is online LiRA's.
  lira_orig = peers.lira(setup['original'], **kw)
  assert orig.score == pytest.approx(lira_orig.score)
  assert orig.score > ret.score + 0.05
  assert orig.cost['models_trained'] == 2 * NUM_SHADOWS
  assert orig.details['unlearning_runs'] == NUM_SHADOWS
  assert not ret.details['retain_indices_passed'] and orig.details['retain_indices_passed']
  _json_roundtrip(orig)
  with pytest.raises(AuditError, match='structure'):
    peers.ulira(setup['original'], unlearn_fn=lambda p, k, f: {'x': 0}, **kw)


def test_rmia_original_vs_retrained(setup, tmp_path):
  kw = dict(dataset=setup['data'], split=setup['split'], model=setup['model'],
            recipe=setup['recipe'], num_refs=4, cache_dir=str(tmp_path))
  orig = peers.rmia(setup['original'], **kw)
  ret = peers.rmia(setup['retrained'], **kw)      # Reference models from the cache.
  assert not orig.details['from_cache'] and ret.details['from_cache']
  assert ret.details['trained_now'] == 0 and ret.cost['models_trained'] == 4
  assert orig.details['cache_key'] == ret.details['cache_key']
  for r in (orig, ret):
    assert 0.0 <= r.score <= 1.0
    s = np.asarray(r.details['scores']['forget'] + r.details['scores']['ref'])
    assert np.all((s >= 0) & (s <= 1))
    _json_roundtrip(r)
  assert orig.score > max(0.55, ret.score + 0.05), (orig.score, ret.score)
  online = peers.rmia(setup['original'], dataset=setup['data'], split=setup['split'],
                      model=setup['model'], recipe=setup['recipe'], offline=False,
                      shadows=setup['shadows'], population='ref')
  assert online.details['num_refs'] == NUM_SHADOWS and online.score > 0.55


def test_neurips23_audit_trains_retrained_and_caches(setup, tmp_path):
  d, split = setup['data'], setup['split']
  recipe = setup['recipe'].replace(epochs=20)
  model = setup['model']
  shadows3 = jax.tree.map(lambda p: p[:3], setup['shadows'].params)
  res = peers.neurips23_audit(shadows3, d, split, model, recipe, cache_dir=str(tmp_path))
  assert res.cost['models_trained'] == 3 and not res.details['from_cache']
  assert res.decision is None and 0.0 <= res.details['forget_score'] <= 1.0
  assert res.score >= 0.0
  _json_roundtrip(res)
  # The retrained group scored against itself (loaded from the cache): ε = 0.
  params, _, _, cached = base.train_cached(model, d, recipe, [split.retain] * 3, seed=0,
                                           tag='neurips23-retrained', cache_dir=str(tmp_path))
  assert cached
  same = peers.neurips23_audit(params, d, split, model, recipe, cache_dir=str(tmp_path))
  assert same.details['from_cache']
  assert same.details['forget_score'] == 1.0 and same.score == pytest.approx(1.0)


# -----------------------------------------------------------------------------
# Bad input.
# -----------------------------------------------------------------------------


def test_bad_inputs_raise(setup):
  d, split, model, recipe = setup['data'], setup['split'], setup['model'], setup['recipe']
  orig = setup['original']
  with pytest.raises(AuditError, match='num_shadows'):
    peers.train_shadows(model, d, recipe, split.train, num_shadows=1)
  with pytest.raises(AuditError, match='num_shadows'):
    peers.lira(orig, d, split, model, recipe, num_shadows=1)
  with pytest.raises(AuditError, match='num_shadows'):
    peers.ulira(orig, d, split, model, recipe, lambda p, k, f: p, num_shadows=True)
  with pytest.raises(AuditError, match='num_refs'):
    peers.rmia(orig, d, split, model, recipe, num_refs=0)
  with pytest.raises(AuditError, match='target must be'):
    peers.population_mia('model', d, split)
  with pytest.raises(AuditError, match='alpha'):
    peers.lira(orig, d, split, model, recipe, shadows=setup['shadows'], alpha=1.5)
  with pytest.raises(AuditError, match='views'):
    peers.lira(orig, d, split, model, recipe, shadows=setup['shadows'], views=('flip',))
  nan_target = Target.from_fn(lambda x: np.full((len(x), 10), np.nan, np.float32))
  with pytest.raises(AuditError, match='NaN'):
    peers.population_mia(nan_target, d, split)
  with pytest.raises(AuditError, match='NaN'):
    peers.lira(nan_target, d, split, model, recipe, shadows=setup['shadows'])
  # NeurIPS 2023.
  acc = dict(ra_u=0.9, ra_r=0.9, ta_u=0.9, ta_r=0.9)
  good = np.zeros((4, 6, 3), np.float32)
  with pytest.raises(AuditError, match='must agree'):
    peers.neurips23_epsilon(good, np.zeros((4, 5, 3), np.float32), np.zeros(6, int), **acc)
  bad = good.copy()
  bad[1, 2, 0] = np.nan
  with pytest.raises(AuditError, match='NaN'):
    peers.neurips23_epsilon(bad, good, np.zeros(6, int), **acc)
  with pytest.raises(AuditError, match='at least 3 models'):
    peers.neurips23_epsilon(good[:2], good, np.zeros(6, int), **acc)
  with pytest.raises(AuditError, match='forget_labels'):
    peers.neurips23_epsilon(good, good, np.zeros(5, int), **acc)
  with pytest.raises(AuditError, match='stacked'):
    peers.neurips23_audit({'a': np.zeros((3, 2)), 'b': np.zeros((4, 2))}, d, split, model,
                          recipe)
  # Heuristics.
  with pytest.raises(AuditError, match='same sets'):
    peers.heuristics({'forget': np.zeros((3, 2))}, {'ref': np.zeros((1, 3, 2))},
                     {'forget': np.zeros(3, int)})
  with pytest.raises(AuditError, match=r'\(K, n, C\)'):
    peers.heuristics({'forget': np.zeros((3, 2))}, {'forget': np.zeros((1, 4, 2))},
                     {'forget': np.zeros(3, int)})
  with pytest.raises(AuditError, match='NaN'):
    peers.heuristics({'forget': np.full((3, 2), np.nan)}, {'forget': np.zeros((1, 3, 2))},
                     {'forget': np.zeros(3, int)})
  with pytest.raises(AuditError, match='ks_rule'):
    peers.heuristics({'forget': np.zeros((3, 2))}, {'forget': np.zeros((1, 3, 2))},
                     {'forget': np.zeros(3, int)}, ks_rule=True)
