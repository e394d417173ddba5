"""Tests of jaxaudit.data.tfds_io: TFDS import/read without TensorFlow."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from jaxaudit.data import import_npz, list_prepared, load_dataset
from jaxaudit.data import tfds_io
from jaxaudit.errors import DataError

MNIST = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared',
                     'data', 'mnist.npz')


def _synthetic(tmp_path, name='syn.npz', shape=(30, 6, 5), dtype=np.uint8,
               n_test=11, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  if np.dtype(dtype) == np.uint8:
    x_tr = rng.integers(0, 256, shape, dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test,) + shape[1:], dtype=np.uint8)
  else:
    x_tr = rng.normal(size=shape).astype(dtype)
    x_te = rng.normal(size=(n_test,) + shape[1:]).astype(dtype)
  # Labels in a scrambled order, so that any reordering would show.
  y_tr = rng.integers(0, classes, shape[0])
  y_te = rng.integers(0, classes, n_test)
  y_tr[:classes] = np.arange(classes)
  path = str(tmp_path / name)
  np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
  return path, (x_tr, y_tr, x_te, y_te)


def test_tensorflow_is_not_needed():
  assert 'tensorflow' not in sys.modules


@pytest.mark.parametrize('shape,dtype,key', [
    ((30, 6, 5), np.uint8, 'image'),
    ((30, 4, 3, 2), np.uint8, 'image'),
    ((30, 7), np.float32, 'x'),
])
def test_synthetic_round_trip(tmp_path, shape, dtype, key):
  npz, raw = _synthetic(tmp_path, shape=shape, dtype=dtype)
  data_dir = str(tmp_path / 'tfds')
  path = import_npz('syn_data', npz, data_dir)
  assert path == os.path.join(data_dir, 'syn_data', '1.0.0')
  assert os.path.isfile(os.path.join(path, 'dataset_info.json'))
  assert os.listdir(data_dir) == ['syn_data']  # No temporary leftovers.
  assert 'tensorflow' not in sys.modules

  # Raw records come back bit for bit, in order.
  prepared = tfds_io.read_prepared('syn_data', data_dir)
  x_tr = raw[0] if raw[0].ndim != 3 else raw[0][..., None]
  x_te = raw[2] if raw[2].ndim != 3 else raw[2][..., None]
  np.testing.assert_array_equal(prepared.x_train, x_tr)
  np.testing.assert_array_equal(prepared.x_test, x_te)
  assert prepared.x_train.dtype == x_tr.dtype
  np.testing.assert_array_equal(prepared.y_train, raw[1])
  np.testing.assert_array_equal(prepared.y_test, raw[3])
  assert prepared.num_classes == 4
  with open(os.path.join(path, 'features.json')) as f:
    assert f'"{key}"' in f.read()

  from_tfds = load_dataset('syn_data', data_dir=data_dir)
  from_npz = load_dataset(npz)
  assert from_tfds.fingerprint == from_npz.fingerprint
  assert from_tfds.source == f'tfds:{path}'
  assert from_tfds.num_classes == from_npz.num_classes == 4
  assert from_tfds.input_shape == from_npz.input_shape
  np.testing.assert_array_equal(from_tfds.x_train, from_npz.x_train)
  np.testing.assert_array_equal(from_tfds.y_test, from_npz.y_test)


def test_mnist_slice_round_trip(tmp_path):
  if not os.path.isfile(MNIST):
    pytest.skip(f'shared MNIST file not found at {MNIST}')
  with np.load(MNIST, allow_pickle=False) as z:
    arrays = dict(x_train=z['x_train'][:500], y_train=z['y_train'][:500],
                  x_test=z['x_test'][:200], y_test=z['y_test'][:200])
  npz = str(tmp_path / 'mnist_small.npz')
  np.savez(npz, **arrays)
  data_dir = str(tmp_path / 'tfds')
  # 'mnist' is also a TFDS built-in name: the import must not clash with it.
  import_npz('mnist', npz, data_dir)
  from_tfds = load_dataset('mnist', data_dir=data_dir)
  from_npz = load_dataset(npz)
  assert from_tfds.fingerprint == from_npz.fingerprint
  assert from_tfds.x_train.shape == (500, 28, 28, 1)
  assert from_tfds.x_test.shape == (200, 28, 28, 1)
  assert from_tfds.num_classes == 10
  prepared = tfds_io.read_prepared('mnist', data_dir)
  np.testing.assert_array_equal(prepared.x_train, arrays['x_train'])
  np.testing.assert_array_equal(prepared.y_train, arrays['y_train'])
  np.testing.assert_array_equal(prepared.x_test, arrays['x_test'])
  np.testing.assert_array_equal(prepared.y_test, arrays['y_test'])


def test_num_classes_comes_from_the_class_label(tmp_path):
  npz, _ = _synthetic(tmp_path, classes=3)
  data_dir = str(tmp_path / 'tfds')
  import_npz('syn', npz, data_dir, num_classes=12)
  assert load_dataset('syn', data_dir=data_dir).num_classes == 12
  assert load_dataset(npz).num_classes == 3


def test_existing_dataset_needs_overwrite(tmp_path):
  npz_a, _ = _synthetic(tmp_path, 'a.npz', seed=1)
  npz_b, _ = _synthetic(tmp_path, 'b.npz', seed=2)
  data_dir = str(tmp_path / 'tfds')
  import_npz('syn', npz_a, data_dir)
  with pytest.raises(DataError, match='exists already; pass overwrite=True'):
    import_npz('syn', npz_b, data_dir)
  assert (load_dataset('syn', data_dir=data_dir).fingerprint ==
          load_dataset(npz_a).fingerprint)
  import_npz('syn', npz_b, data_dir, overwrite=True)
  assert (load_dataset('syn', data_dir=data_dir).fingerprint ==
          load_dataset(npz_b).fingerprint)
  assert sorted(os.listdir(data_dir)) == ['syn']


@pytest.mark.parametrize('name,pattern', [
    ('Bad-Name', 'invalid TFDS data set name'),
    ('1abc', 'invalid TFDS data set name'),
    ('digits', 'built-in data set name'),
    ('shakespeare_speakers', 'built-in data set name'),
])
def test_import_rejects_bad_names(tmp_path, name, pattern):
  npz, _ = _synthetic(tmp_path)
  with pytest.raises(DataError, match=pattern):
    import_npz(name, npz, str(tmp_path / 'tfds'))


def test_import_rejects_float64(tmp_path):
  npz, _ = _synthetic(tmp_path, shape=(30, 3), dtype=np.float64)
  with pytest.raises(DataError, match='float64, which TFDS serialises as '
                     'float32'):
    import_npz('syn', npz, str(tmp_path / 'tfds'))


def test_import_validates_arrays(tmp_path):
  path = str(tmp_path / 'bad.npz')
  np.savez(path, x_train=np.zeros((4, 3), np.float32), y_train=np.arange(4),
           x_test=np.zeros((2, 4), np.float32), y_test=np.arange(2))
  with pytest.raises(DataError, match='differ in per-example shape'):
    import_npz('syn', path, str(tmp_path / 'tfds'))
  assert not os.path.exists(tmp_path / 'tfds' / 'syn')


def test_corrupt_dataset_is_detected(tmp_path):
  npz, _ = _synthetic(tmp_path)
  data_dir = str(tmp_path / 'tfds')
  path = import_npz('syn', npz, data_dir)
  meta = os.path.join(path, 'metadata.json')
  with open(meta, 'w') as f:
    json.dump({'jaxaudit_fingerprint': '0' * 64}, f)
  with pytest.raises(DataError, match='is corrupt'):
    load_dataset('syn', data_dir=data_dir)


def test_versions_and_listing(tmp_path):
  npz, _ = _synthetic(tmp_path)
  data_dir = str(tmp_path / 'tfds')
  import_npz('syn', npz, data_dir)
  assert list_prepared(data_dir) == ['syn']
  assert list_prepared(str(tmp_path / 'absent')) == []
  ds = load_dataset('syn:1.0.0', data_dir=data_dir)
  assert ds.fingerprint == load_dataset(npz).fingerprint
  with pytest.raises(DataError, match='no prepared version 2.0.0'):
    load_dataset('syn:2.0.0', data_dir=data_dir)
  with pytest.raises(DataError, match=r"'other' is not prepared.*"
                     r'Prepared there: syn'):
    load_dataset('other', data_dir=data_dir)
  with pytest.raises(DataError, match='malformed TFDS data set name'):
    load_dataset('../syn', data_dir=data_dir)


def test_non_array_record_format_is_explained(tmp_path):
  npz, _ = _synthetic(tmp_path)
  data_dir = str(tmp_path / 'tfds')
  path = import_npz('syn', npz, data_dir)
  info_path = os.path.join(path, 'dataset_info.json')
  with open(info_path) as f:
    info = json.load(f)
  info['fileFormat'] = 'tfrecord'
  with open(info_path, 'w') as f:
    json.dump(info, f)
  with pytest.raises(DataError, match="stored as 'tfrecord'.*array_record"):
    load_dataset('syn', data_dir=data_dir)
