import json
import os

import jax
import numpy as np
import pytest

from jaxaudit import checkpoint
from jaxaudit.errors import CheckpointError
from jaxaudit.models import get_model, init_params
from jaxaudit.train import stack

META = dict(model='mlp', model_kwargs={'hidden': [16]}, num_classes=10, input_shape=[8, 8, 1],
            dataset='digits', dataset_fingerprint='abc', split_hash='def', ensemble_size=None)


def _params(seed=0):
  return init_params(get_model('mlp', 10, hidden=(16,)), jax.random.key(seed), (8, 8, 1))


def test_round_trip_is_exact(tmp_path):
  p = _params()
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), p, META)
  q, meta = checkpoint.load_checkpoint(path, expect={'model': 'mlp', 'num_classes': 10})
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert meta['dataset'] == 'digits'
  model, r, _ = checkpoint.restore_model(path)
  assert model == get_model('mlp', 10, hidden=(16,))
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(r)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_ensemble_round_trip(tmp_path):
  p = stack([_params(0), _params(1), _params(2)])
  path = checkpoint.save_checkpoint(str(tmp_path / 'e'), p, dict(META, ensemble_size=3))
  _, q, meta = checkpoint.restore_model(path)
  assert meta['ensemble_size'] == 3
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_mismatch_is_a_clear_error(tmp_path):
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), _params(), META)
  with pytest.raises(CheckpointError, match="model: checkpoint has 'mlp', expected 'cnn'"):
    checkpoint.load_checkpoint(path, expect={'model': 'cnn'})
  with pytest.raises(CheckpointError, match='dataset_fingerprint'):
    checkpoint.load_checkpoint(path, expect={'dataset_fingerprint': 'zzz'})
  other = jax.eval_shape(lambda: init_params(get_model('mlp', 10, hidden=(8,)), jax.random.key(0),
                                             (8, 8, 1)))
  with pytest.raises(CheckpointError, match='another model'):
    checkpoint.load_checkpoint(path, target=other)


def test_missing_and_corrupt(tmp_path):
  with pytest.raises(CheckpointError, match='no checkpoint'):
    checkpoint.load_checkpoint(str(tmp_path / 'nothing'))
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), _params(), META)
  with open(os.path.join(path, 'meta.json'), 'w') as f:
    f.write('{not json')
  with pytest.raises(CheckpointError, match='corrupt'):
    checkpoint.load_checkpoint(path)
  path2 = checkpoint.save_checkpoint(str(tmp_path / 'm2'), _params(), META)
  meta = json.load(open(os.path.join(path2, 'meta.json')))
  meta['model_kwargs'] = {'hidden': [8]}
  json.dump(meta, open(os.path.join(path2, 'meta.json'), 'w'))
  with pytest.raises(CheckpointError):
    checkpoint.restore_model(path2)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / 'm')
  checkpoint.save_checkpoint(path, _params(0), META)
  checkpoint.save_checkpoint(path, _params(1), META)
  q, _ = checkpoint.load_checkpoint(path)
  for a, b in zip(jax.tree.leaves(_params(1)), jax.tree.leaves(q)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert sorted(os.listdir(tmp_path)) == ['m']
  with pytest.raises(CheckpointError, match='overwrite=False'):
    checkpoint.save_checkpoint(path, _params(0), META, overwrite=False)
