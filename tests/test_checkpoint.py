import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxaudit import checkpoint
from jaxaudit.errors import CheckpointError
from jaxaudit.models import get_model, init_params
from jaxaudit.train import stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _data_files(path):
  """Orbax's array data files of a checkpoint, largest first."""
  d = os.path.join(path, 'params', 'ocdbt.process_0', 'd')
  return sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize, reverse=True)


def _flip_byte(fpath, at=None):
  raw = bytearray(open(fpath, 'rb').read())
  raw[len(raw) // 2 if at is None else at] ^= 0x01
  with open(fpath, 'wb') as f:
    f.write(bytes(raw))


def _make_legacy(path):
  """Drops the integrity record, as in checkpoints saved before it existed."""
  meta = json.load(open(os.path.join(path, 'meta.json')))
  meta.pop('param_sha256'), meta.pop('param_files')
  json.dump(meta, open(os.path.join(path, 'meta.json'), 'w'))


def test_checksums_are_recorded_and_verified(tmp_path):
  p = _params()
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), p, dict(META, integrity='bogus',
                                                                param_sha256={'x': 'y'}))
  meta = json.load(open(os.path.join(path, 'meta.json')))
  assert meta['param_sha256'] == checkpoint.param_digests(p)
  assert set(meta['param_sha256']) == set(meta['param_shapes'])
  assert 'integrity' not in meta                       # derived fields are never copied
  for rel, (size, digest) in meta['param_files'].items():
    assert os.path.getsize(os.path.join(path, 'params', rel)) == size
  _, loaded = checkpoint.load_checkpoint(path)
  assert loaded['integrity'] == 'verified'
  _, _, loaded = checkpoint.restore_model(path)
  assert loaded['integrity'] == 'verified'


def test_leaf_digest_covers_dtype_shape_and_bytes():
  z = np.zeros(4, np.float32)
  digests = {checkpoint.leaf_digest(a) for a in
             (z, z.astype(np.int32), z.reshape(2, 2), z[:3], np.ones(4, np.float32))}
  assert len(digests) == 5
  assert checkpoint.leaf_digest(z) == checkpoint.leaf_digest(jax.numpy.zeros(4))
  assert checkpoint.leaf_digest(np.float32(1.5)) == checkpoint.leaf_digest(np.array(1.5, np.float32))
  big_endian = np.arange(6, dtype='>f4').reshape(2, 3)
  assert checkpoint.leaf_digest(big_endian) == checkpoint.leaf_digest(big_endian.astype('<f4'))


def test_flipped_weight_byte_is_a_clear_error(tmp_path):
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), _params(), META)
  _flip_byte(_data_files(path)[0])
  with pytest.raises(CheckpointError, match=r'checkpoint .*m is corrupt: .*SHA-256 mismatch') as e:
    checkpoint.load_checkpoint(path)
  assert '\n' not in str(e.value)
  with pytest.raises(CheckpointError, match='corrupt'):
    checkpoint.restore_model(path)


def test_changed_leaf_is_named(tmp_path):
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), _params(), META)
  meta = json.load(open(os.path.join(path, 'meta.json')))
  leaf = sorted(meta['param_sha256'])[1]
  meta['param_sha256'][leaf] = '0' * 64                 # as if the stored values had changed
  json.dump(meta, open(os.path.join(path, 'meta.json'), 'w'))
  with pytest.raises(CheckpointError, match=f'parameter leaf {re.escape(leaf)} differs'):
    checkpoint.load_checkpoint(path)


def test_deleted_or_truncated_data_file_is_a_clear_error(tmp_path):
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), _params(), META)
  victim = _data_files(path)[0]
  rel = os.path.relpath(victim, os.path.join(path, 'params'))
  os.remove(victim)
  with pytest.raises(CheckpointError, match=f'incomplete: .*params/{re.escape(rel)} is missing'):
    checkpoint.load_checkpoint(path)
  path2 = checkpoint.save_checkpoint(str(tmp_path / 'm2'), _params(), META)
  victim = _data_files(path2)[0]
  with open(victim, 'r+b') as f:
    f.truncate(10)
  with pytest.raises(CheckpointError, match='has 10 bytes'):
    checkpoint.load_checkpoint(path2)


def test_legacy_checkpoint_loads_unverified(tmp_path):
  p = _params()
  path = checkpoint.save_checkpoint(str(tmp_path / 'm'), p, META)
  _make_legacy(path)
  q, meta = checkpoint.load_checkpoint(path)
  assert meta['integrity'] == 'unverified'
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_array_equal(np.asarray(a), b)


# Loads broken checkpoints in a fresh interpreter; prints each error on stdout.
_LOAD_BROKEN = '''
import sys
from jaxaudit import checkpoint
from jaxaudit.errors import CheckpointError
for path in sys.argv[1:]:
  try:
    checkpoint.load_checkpoint(path)
    print('LOADED', path)
  except CheckpointError as e:
    print('ERROR', e)
'''


def test_broken_data_files_give_only_the_error_no_background_traceback(tmp_path):
  """Orbax/tensorstore reads of a broken tree left stray asyncio tracebacks on stderr."""
  paths = []
  for name, legacy, damage in (('deleted', False, 'delete'), ('legacy_deleted', True, 'delete'),
                               ('legacy_flipped_meta', True, 'flip_zarr'),
                               ('flipped_meta', False, 'flip_zarr')):
    path = checkpoint.save_checkpoint(str(tmp_path / name), _params(), META)
    if legacy:
      _make_legacy(path)
    if damage == 'delete':
      os.remove(_data_files(path)[0])
    else:  # the array metadata (.zarray) store: Orbax itself fails to decode it
      d = os.path.join(path, 'params', 'd')
      _flip_byte(os.path.join(d, sorted(os.listdir(d))[0]))
    paths.append(path)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  res = subprocess.run([sys.executable, '-c', _LOAD_BROKEN, *paths], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
  assert res.returncode == 0, res.stderr
  errors = res.stdout.splitlines()
  assert [line.split()[0] for line in errors] == ['ERROR'] * 4, res.stdout
  assert 'deleted is incomplete' in errors[0] and 'flipped_meta is corrupt' in errors[3]
  assert 'Traceback' not in res.stderr and 'Event loop is closed' not in res.stderr, res.stderr
  assert 'never retrieved' not in res.stderr, res.stderr
