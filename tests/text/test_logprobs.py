"""Token-logprobs files: export from a TransformerLM, read, features, Target, validation."""

from __future__ import annotations

import numpy as np
import pytest

from jaxaudit.data import Dataset
from jaxaudit.errors import AuditError
from jaxaudit.text import logprobs as tl

V, T = 11, 8


def _rows(rng, n, lengths):
  x = np.full((n, T + 1), -1.0, np.float32)
  for i, length in enumerate(lengths):
    x[i, :length] = rng.integers(0, V, size=length)
  return x


def _y(x):
  return np.where(x[:, 1:] >= 0, x[:, 1:], -1).astype(np.int32)


@pytest.fixture(scope='module')
def setup():
  import jax
  from jaxaudit.models.transformer import TransformerLM
  rng = np.random.default_rng(0)
  x_train = _rows(rng, 6, [9, 9, 5, 2, 7, 9])
  x_test = _rows(rng, 5, [9, 4, 6, 9, 3])          # 5 and 6 rows: one shape bucket (8)
  ds = Dataset(name='toy', x_train=x_train, y_train=_y(x_train), x_test=x_test,
               y_test=_y(x_test), num_classes=V, input_shape=(T + 1,), source='test',
               fingerprint='0')
  model = TransformerLM(num_classes=V, width=16, depth=1, heads=2, context=T)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x_train[:1])['params']
  both = np.concatenate([x_train, x_test])
  feats = np.asarray(jax.jit(model.clone(output='features').apply)({'params': params}, both))
  return ds, model, params, feats[:6], feats[6:]


@pytest.fixture(scope='module')
def full_file(setup, tmp_path_factory):
  ds, model, params, _, _ = setup
  path = str(tmp_path_factory.mktemp('lp') / 'full.npz')
  tl.export_token_logprobs(model, params, ds, np.arange(6), path, topk=V,
                           test_indices=np.arange(5))
  return path


def test_round_trip_topk_full_vocab_equals_model_features(setup, full_file):
  ds, _, _, feats, test_feats = setup
  table = tl.read_token_logprobs(full_file)
  for test, ref in ((False, feats), (True, test_feats)):
    f = tl.features_from_logprobs(table, (ds.x_test if test else ds.x_train), test=test,
                                  vocab_size=V)
    assert f.shape == ref.shape == (len(ref), T, 5)
    np.testing.assert_array_equal(f[..., 4], ref[..., 4])
    np.testing.assert_allclose(f[..., 0], ref[..., 0], atol=1e-5)
    np.testing.assert_allclose(f[..., 1:3], ref[..., 1:3], atol=1e-4)
    np.testing.assert_array_equal(f[..., 3], ref[..., 3])


def test_partial_topk_and_no_topk(setup, full_file, tmp_path):
  _, _, _, feats, _ = setup
  valid = feats[..., 4] > 0
  t = _table(full_file)           # the top 3 of a full-vocabulary file = an export with topk=3
  t['topk_ids'], t['topk_logprobs'] = t['topk_ids'][..., :3], t['topk_logprobs'][..., :3]
  f3 = tl.features_from_logprobs(tl.read_token_logprobs(_save(tmp_path, t, 'k3.npz')),
                                 vocab_size=V)
  np.testing.assert_allclose(f3[..., 0], feats[..., 0], atol=1e-5)
  np.testing.assert_array_equal(f3[..., 3], feats[..., 3])
  assert np.all(np.isfinite(f3[..., 1:3])) and np.all(f3[valid][:, 2] > 0)
  np.testing.assert_allclose(f3[..., 1], feats[..., 1], atol=0.5)    # a rough estimate
  for k in ('topk_ids', 'topk_logprobs', 'test_topk_ids', 'test_topk_logprobs'):
    t.pop(k)
  t0 = tl.read_token_logprobs(_save(tmp_path, t, 'k0.npz'))
  assert 'topk_ids' not in t0
  f0 = tl.features_from_logprobs(t0)
  np.testing.assert_allclose(f0[..., 0], feats[..., 0], atol=1e-5)
  assert np.isnan(f0[valid][:, 1:3]).all() and (f0[valid][:, 3] == -1).all()
  assert (f0[~valid] == 0).all()


def test_topk_moments_uniform_tail_is_exact_for_a_uniform_tail():
  p = np.array([0.5, 0.3, 0.1, 0.1])
  mu = np.sum(p * np.log(p))
  sigma = np.sqrt(np.sum(p * np.log(p) ** 2) - mu ** 2)
  m, s = tl.topk_moments(np.log(p[:2]), vocab_size=4)
  np.testing.assert_allclose([m, s], [mu, sigma], rtol=1e-12)
  m, s = tl.topk_moments(np.log(p), vocab_size=4)             # k = V: exact
  np.testing.assert_allclose([m, s], [mu, sigma], rtol=1e-12)


class _Task:
  def check_outputs(self, outputs, name, *, allow_nonfinite=False):
    return np.asarray(outputs, np.float32)


def test_target_from_token_logprobs(setup, full_file):
  ds, _, _, feats, test_feats = setup
  target = tl.target_from_token_logprobs(full_file, ds)
  assert target.is_table and target.name == 'full'
  ids = np.array([4, 0, 2])
  out = target.logits(None, ids, ('identity',), _Task())
  assert out.shape == (1, 3, T, 5)
  np.testing.assert_allclose(out[0], feats[ids], atol=1e-4)
  out = target.logits(None, np.array([1]), ('identity',), _Task(), test=True)
  np.testing.assert_allclose(out[0], test_feats[[1]], atol=1e-4)


def _table(path):
  return dict(np.load(path))


def _save(tmp_path, table, name='bad.npz'):
  p = str(tmp_path / name)
  np.savez(p, **table)
  return p


def _tokens_disagree(t):
  t['tokens'] = t['tokens'].copy()
  t['tokens'][3, 1] = (t['tokens'][3, 1] + 1) % V


def _shifted(t):
  t['logprobs'] = t['logprobs'].copy()
  t['logprobs'][0] = np.roll(t['logprobs'][0], 1)    # record 0 is full length


def _pad_inside(t):
  t['tokens'] = t['tokens'].copy()
  t['tokens'][0, 2] = -1


def _unsorted(t):
  t['topk_logprobs'] = t['topk_logprobs'][..., ::-1].copy()
  t['topk_ids'] = t['topk_ids'][..., ::-1].copy()


CASES = [
    (lambda t: t.pop('tokens'), r"lacks the array 'tokens'"),
    (lambda t: t.pop('logprobs'), r"lacks the array 'logprobs'"),
    (lambda t: t.update(logits=np.zeros(3)), r"unknown array\(s\) \['logits'\]"),
    (lambda t: t.update(indices=t['indices'].astype(np.float64)), r'indices must be a 1-D integer'),
    (lambda t: t.update(indices=np.zeros(6, np.int64)), r'indices must hold unique'),
    (lambda t: t.update(tokens=t['tokens'].astype(np.float32)), r'tokens must be an integer'),
    (lambda t: t.update(tokens=t['tokens'][:5]), r'tokens must have shape \(6, L\)'),
    (lambda t: t.update(logprobs=np.zeros((6, T + 1))), r'logprobs must have shape \(6, 8\)'),
    (lambda t: t.update(logprobs=np.zeros((6, T), np.int64)), r'logprobs must be a floating'),
    (lambda t: t.update(logprobs=-t['logprobs']), r'positive log-prob .* record 0 position 0'),
    (lambda t: t.update(logprobs=np.where(np.arange(T) == 1, np.nan, t['logprobs'])),
     r'logprobs holds nan at record 0 position 1'),
    (_pad_inside, r'record 0 has a token after padding at position 3'),
    (_shifted, r'logprobs disagree with topk_logprobs at record 0 position 0'),
    (_unsorted, r'topk_logprobs must be sorted in descending order'),
    (lambda t: t.pop('topk_ids'), r'topk_ids and topk_logprobs must be given together'),
    (lambda t: t.pop('test_tokens'), r"test records need \['test_tokens'\]"),
    (lambda t: t.update(topk_logprobs=t['topk_logprobs'] + 0.5), r'positive log-prob|sum to'),
]


@pytest.mark.parametrize('edit,match', CASES)
def test_invalid_files(full_file, tmp_path, edit, match):
  t = _table(full_file)
  edit(t)
  with pytest.raises(AuditError, match=match):
    tl.read_token_logprobs(_save(tmp_path, t))


def test_tokens_must_equal_the_data_sets(setup, full_file, tmp_path):
  ds = setup[0]
  t = _table(full_file)
  _tokens_disagree(t)
  p = _save(tmp_path, t)
  with pytest.raises(AuditError, match=r'tokens of record 3 differ .* at position 1'):
    tl.target_from_token_logprobs(p, ds)
  t = _table(full_file)
  t['test_tokens'] = t['test_tokens'].copy()
  t['test_tokens'][2, 0] = (t['test_tokens'][2, 0] + 1) % V
  with pytest.raises(AuditError, match=r'tokens of test record 2 differ .* at position 0'):
    tl.target_from_token_logprobs(_save(tmp_path, t), ds)
  t = _table(full_file)
  t['indices'] = t['indices'] + 1
  with pytest.raises(AuditError, match=r'index\(es\) beyond the data set'):
    tl.target_from_token_logprobs(_save(tmp_path, t), ds)
  t = _table(full_file)
  for k in ('tokens', 'test_tokens'):
    t[k] = np.concatenate([t[k], -np.ones((len(t[k]), 1), t[k].dtype)], 1)
  for k in ('logprobs', 'test_logprobs'):
    t[k] = np.concatenate([t[k], np.full((len(t[k]), 1), np.nan, t[k].dtype)], 1)
  for k in ('topk_ids', 'test_topk_ids', 'topk_logprobs', 'test_topk_logprobs'):
    t[k] = np.concatenate([t[k], t[k][:, -1:]], 1)
  with pytest.raises(AuditError, match=r'length L=10 .* T\+1=9'):
    tl.target_from_token_logprobs(_save(tmp_path, t), ds)
  with pytest.raises(AuditError, match=r'does not exist'):
    tl.target_from_token_logprobs(str(tmp_path / 'none.npz'), ds)


def test_write_refuses_an_invalid_table(full_file, tmp_path):
  t = tl.read_token_logprobs(full_file)
  p = tmp_path / 'w.npz'
  with pytest.raises(AuditError, match=r'positive log-prob'):
    tl.write_token_logprobs(str(p), t['indices'], t['tokens'], -np.nan_to_num(t['logprobs']) + 1)
  assert not p.exists()
  tl.write_token_logprobs(str(p), t['indices'], t['tokens'], t['logprobs'])
  assert sorted(np.load(p).files) == ['indices', 'logprobs', 'tokens']


def test_hf_example_names_the_writer():
  assert 'write_token_logprobs(' in tl.HF_EXAMPLE and 'topk_logprobs=' in tl.HF_EXAMPLE
  compile(tl.HF_EXAMPLE, 'HF_EXAMPLE', 'exec')
