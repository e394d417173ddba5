"""The one peer dispatch (jaxaudit.study.peers): argument lists, summaries, failures."""

import pytest

from jaxaudit import peers
from jaxaudit.peers import PeerResult
from jaxaudit.study import peers as dispatch


def _result(name, **details):
  return PeerResult(name=name, score=0.5, decision='forgotten', rule='r', details=details,
                    cost=dict(models_trained=2, wall_time_s=1.5))


@pytest.fixture
def calls(monkeypatch):
  """Replaces the peer auditors by recorders: name -> (args, kwargs) of the last call."""
  seen = {}

  def recorder(name, **details):
    def fn(*args, **kwargs):
      seen[name] = (args, kwargs)
      return _result(name, **details)
    return fn
  monkeypatch.setattr(peers, 'population_mia', recorder('population_mia', p_value=0.2))
  monkeypatch.setattr(peers, 'lira', recorder('lira', auc=0.6, trained_now=1))
  monkeypatch.setattr(peers, 'rmia', recorder('rmia'))
  monkeypatch.setattr(peers, 'ulira', recorder('ulira'))
  monkeypatch.setattr(peers, 'heuristics_audit', recorder(
      'heuristics', sets=dict(forget=dict(gap=0.1, agreement=0.9)), ks=dict(p_value=0.03)))
  monkeypatch.setattr(peers, 'neurips23_audit', recorder('neurips23', retrain_s=4.0,
                                                         cache_key='k'))
  return seen


def _request(**kw):
  base = dict(dataset='ds', split='sp', model='m', recipe='rc', seed=3)
  base.update(kw)
  return dispatch.PeerRequest(**base)


def test_arguments_of_each_peer(calls):
  tgt = object()
  req = _request(alpha=0.01, cache_dir='/c', shadows='S', rmia_refs=2, verifier_params='V',
                 num_verifiers=4, unlearn_fn='U', unlearned_group=lambda: ('G', 7.0),
                 neurips23_models=3)
  out = dispatch.run_peers(tgt, req, dispatch.PEER_NAMES)
  assert calls['population_mia'] == ((tgt, 'ds', 'sp'), dict(seed=3, alpha=0.01))
  assert calls['lira'] == ((tgt, 'ds', 'sp', 'm', 'rc'), dict(seed=3, shadows='S', alpha=0.01))
  assert calls['rmia'] == ((tgt, 'ds', 'sp', 'm', 'rc'),
                           dict(num_refs=2, seed=3, cache_dir='/c', alpha=0.01))
  assert calls['heuristics'] == ((tgt, 'ds', 'sp', 'm', 'V'),
                                 dict(seed=3, ks_rule=True, alpha=0.01))
  assert calls['ulira'] == ((tgt, 'ds', 'sp', 'm', 'rc', 'U'),
                            dict(shadows='S', seed=3, alpha=0.01))
  assert calls['neurips23'] == (('G', 'ds', 'sp', 'm', 'rc'), dict(seed=3, cache_dir='/c'))
  assert list(out) == list(dispatch.PEER_NAMES)
  assert out['population_mia'] == dict(score=0.5, decision='forgotten', models=2, wall_s=1.5,
                                       p_value=0.2)
  assert out['lira']['trained_now'] == 1 and out['lira']['auc'] == 0.6
  assert out['heuristics'] == dict(score=0.5, decision='forgotten', models=4, wall_s=1.5,
                                   p_value=0.03, gap=0.1, agreement=0.9)
  assert out['neurips23'] == dict(score=0.5, decision='forgotten', models=6, wall_s=1.5,
                                  unlearn_group_s=7.0, retrain_group_s=4.0,
                                  retrain_cache_key='k')


def test_lira_without_shadows_trains_its_own_and_alpha_defaults(calls):
  dispatch.run_peers('t', _request(num_shadows=8, cache_dir='/c'), ['lira'])
  assert calls['lira'][1] == dict(seed=3, num_shadows=8, cache_dir='/c')   # no alpha: default


def test_summaries(calls):
  req = _request(verifier_params='V', num_verifiers=4)
  fake = dispatch.run_peers('t', req, ['heuristics'], summary=dispatch.fake_summary)
  assert fake['heuristics'] == dict(score=0.5, decision='forgotten', models=2, wall_s=1.5)
  val = dispatch.run_peers('t', req, ['rmia'], summary=dispatch.validation_summary)
  assert set(val['rmia']) == {'score', 'decision', 'cost', 'wall_time_s'}
  assert val['rmia']['cost'] == dict(models_trained=2, wall_time_s=1.5)


def test_failures_are_recorded_or_raised(calls, monkeypatch):
  def boom(*a, **k):
    raise RuntimeError('no memory')
  monkeypatch.setattr(peers, 'rmia', boom)
  lines = []
  out = dispatch.run_peers('t', _request(), ['rmia', 'population_mia'], log=lines.append)
  assert out['rmia']['error'] == 'RuntimeError: no memory' and 'score' in out['population_mia']
  assert lines == ['peer rmia failed: no memory']
  with pytest.raises(RuntimeError, match='no memory'):
    dispatch.run_peers('t', _request(), ['rmia'], catch=False)
  with pytest.raises(ValueError, match='unknown peer'):
    dispatch.run_peers('t', _request(), ['oracle'], catch=False)
