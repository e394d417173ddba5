"""Tests of jaxaudit.data.datasets and jaxaudit.data.validate."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxaudit.data import datasets
from jaxaudit.data import (Dataset, dataset_from_arrays, fingerprint_arrays,
                           load_dataset, validate_arrays)
from jaxaudit.errors import DataError, JaxAuditError

# sha256 of the canonical raw digits arrays: pins the embedded split and the
# fingerprint scheme (a change here invalidates every saved split).
DIGITS_FINGERPRINT = (
    'e66697e8f124705a8ce9c6e9bd7a78d812ec7efa6e6fe46b67c2dc832b32003d')


def _arrays(shape=(12, 4, 4), dtype=np.uint8, n_test=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  if np.dtype(dtype).kind == 'u':
    x_tr = rng.integers(0, 256, (shape[0],) + shape[1:]).astype(dtype)
    x_te = rng.integers(0, 256, (n_test,) + shape[1:]).astype(dtype)
  else:
    x_tr = rng.normal(2.0, 3.0, shape).astype(dtype)
    x_te = rng.normal(2.0, 3.0, (n_test,) + shape[1:]).astype(dtype)
  y_tr = np.arange(shape[0]) % classes
  y_te = np.arange(n_test) % classes
  return x_tr, y_tr, x_te, y_te


def _write_npz(path, x_tr, y_tr, x_te, y_te, **extra):
  np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
           **extra)
  return str(path)


# --------------------------------------------------------------------------
# digits (embedded)


def test_digits_shapes_and_classes():
  ds = load_dataset('digits')
  assert isinstance(ds, Dataset)
  assert ds.name == 'digits' and ds.source == 'embedded:sklearn'
  assert ds.x_train.shape == (1442, 8, 8, 1)
  assert ds.x_test.shape == (355, 8, 8, 1)
  assert ds.input_shape == (8, 8, 1) and ds.is_image
  assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.num_classes == 10
  assert set(np.unique(ds.y_train)) == set(range(10))
  assert set(np.unique(ds.y_test)) == set(range(10))
  # Standardised with the training statistics.
  np.testing.assert_allclose(ds.x_train.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(ds.x_train.std(), 1.0, atol=1e-5)


def test_digits_is_deterministic():
  a, b = load_dataset('digits'), load_dataset('digits')
  assert a.fingerprint == b.fingerprint == DIGITS_FINGERPRINT
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)


def test_digits_split_is_stratified():
  ds = load_dataset('digits')
  counts_tr = np.bincount(ds.y_train, minlength=10)
  counts_te = np.bincount(ds.y_test, minlength=10)
  np.testing.assert_array_equal(counts_te, (counts_tr + counts_te) // 5)


def test_digits_fast_reader_matches_sklearn():
  sk_datasets = pytest.importorskip('sklearn.datasets')
  images, labels = datasets._read_sklearn_digits()
  bunch = sk_datasets.load_digits()
  np.testing.assert_array_equal(images, bunch.images)
  np.testing.assert_array_equal(labels, bunch.target)


def test_dataset_arrays_are_read_only():
  ds = load_dataset('digits')
  with pytest.raises(ValueError):
    ds.x_train[0, 0, 0, 0] = 1.0


# --------------------------------------------------------------------------
# npz


@pytest.mark.parametrize('shape,dtype,input_shape', [
    ((12, 5, 4), np.uint8, (5, 4, 1)),
    ((12, 5, 4, 3), np.uint8, (5, 4, 3)),
    ((12, 7), np.float32, (7,)),
])
def test_npz_loader_shapes(tmp_path, shape, dtype, input_shape):
  raw = _arrays(shape, dtype)
  path = _write_npz(tmp_path / 'toy.npz', *raw)
  ds = load_dataset(path)
  assert ds.name == 'toy'
  assert ds.source == f'npz:{os.path.abspath(path)}'
  assert ds.input_shape == input_shape
  assert ds.x_train.shape == (12,) + input_shape
  assert ds.x_test.shape == (6,) + input_shape
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 3
  assert ds.is_image == (len(input_shape) == 3)

  # Naive reference: scale uint8, then per-channel (last axis) train stats.
  x_tr = raw[0].astype(np.float64).reshape((12,) + input_shape)
  x_te = raw[2].astype(np.float64).reshape((6,) + input_shape)
  if dtype == np.uint8:
    x_tr, x_te = x_tr / 255.0, x_te / 255.0
  axes = tuple(range(x_tr.ndim - 1))
  mean, std = x_tr.mean(axis=axes), x_tr.std(axis=axes)
  np.testing.assert_allclose(ds.x_train, (x_tr - mean) / std, atol=1e-5)
  np.testing.assert_allclose(ds.x_test, (x_te - mean) / std, atol=1e-5)
  np.testing.assert_array_equal(ds.y_train, raw[1])


def test_npz_keyword_names_the_dataset(tmp_path):
  path = _write_npz(tmp_path / 'file.npz', *_arrays())
  ds = load_dataset('mine', npz=path)
  assert ds.name == 'mine'
  assert ds.fingerprint == load_dataset(path).fingerprint


def test_npz_loader_accepts_pathlike(tmp_path):
  _write_npz(tmp_path / 'x.npz', *_arrays())
  ds = load_dataset(tmp_path / 'x.npz')
  assert ds.name == 'x'


def test_npz_loader_does_not_modify_inputs():
  raw = _arrays((10, 3), np.float32)
  copies = [a.copy() for a in raw]
  dataset_from_arrays('t', *raw)
  for a, b in zip(raw, copies):
    np.testing.assert_array_equal(a, b)


def test_constant_channel_uses_std_floor():
  x_tr, y_tr, x_te, y_te = _arrays((10, 3), np.float32)
  x_tr[:, 1] = 5.0
  x_te[:, 1] = 5.0
  ds = dataset_from_arrays('t', x_tr, y_tr, x_te, y_te)
  assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
  np.testing.assert_array_equal(ds.x_train[:, 1], 0.0)


def test_num_classes_given_and_inferred():
  raw = _arrays((10, 3), np.float32, classes=3)
  assert dataset_from_arrays('t', *raw).num_classes == 3
  assert dataset_from_arrays('t', *raw, num_classes=7).num_classes == 7


# --------------------------------------------------------------------------
# fingerprint


def test_fingerprint_uses_canonical_raw_form():
  x_tr, y_tr, x_te, y_te = _arrays((10, 4, 4), np.uint8)
  a = dataset_from_arrays('a', x_tr, y_tr, x_te, y_te)
  b = dataset_from_arrays('b', x_tr[..., None], y_tr.astype(np.int32),
                          x_te[..., None], y_te.astype(np.uint8))
  assert a.fingerprint == b.fingerprint
  assert a.fingerprint == fingerprint_arrays(
      x_tr[..., None], y_tr.astype(np.int64), x_te[..., None],
      y_te.astype(np.int64))


def test_fingerprint_changes_with_data_dtype_and_shape():
  x_tr, y_tr, x_te, y_te = _arrays((10, 4), np.float32)
  base = fingerprint_arrays(x_tr, y_tr, x_te, y_te)
  x2 = x_tr.copy()
  x2[3, 1] += 1.0
  y2 = y_tr.copy()
  y2[0] = 2
  assert fingerprint_arrays(x2, y_tr, x_te, y_te) != base
  assert fingerprint_arrays(x_tr, y2, x_te, y_te) != base
  assert fingerprint_arrays(x_tr.astype(np.float64), y_tr, x_te, y_te) != base
  assert fingerprint_arrays(x_tr.reshape(10, 2, 2), y_tr, x_te, y_te) != base
  # Moving a record from train to test changes it too.
  assert fingerprint_arrays(x_tr[1:], y_tr[1:], np.concatenate(
      [x_tr[:1], x_te]), np.concatenate([y_tr[:1], y_te])) != base


# --------------------------------------------------------------------------
# errors


def test_unknown_dataset_without_data_dir_lists_options():
  with pytest.raises(DataError, match=r"unknown data set 'nope'.*digits"):
    load_dataset('nope')


def test_missing_data_dir(tmp_path):
  with pytest.raises(DataError, match=r'data_dir .* does not exist'):
    load_dataset('nope', data_dir=str(tmp_path / 'absent'))


def test_dataset_not_prepared_says_how_to_import(tmp_path):
  with pytest.raises(DataError,
                     match=r"'nope' is not prepared.*jaxaudit data import"):
    load_dataset('nope', data_dir=str(tmp_path))


def test_errors_are_value_errors():
  with pytest.raises(ValueError):
    load_dataset('nope')
  assert issubclass(DataError, JaxAuditError)


def test_npz_file_missing(tmp_path):
  with pytest.raises(DataError, match='npz file not found'):
    load_dataset(str(tmp_path / 'absent.npz'))


def test_npz_missing_key(tmp_path):
  x_tr, y_tr, x_te, _ = _arrays()
  path = str(tmp_path / 'bad.npz')
  np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te)
  with pytest.raises(DataError, match='lacks y_test'):
    load_dataset(path)


def test_npz_with_pickled_objects_is_rejected(tmp_path):
  x_tr, y_tr, x_te, y_te = _arrays()
  path = str(tmp_path / 'obj.npz')
  obj = np.empty(len(y_tr), dtype=object)
  obj[:] = [int(v) for v in y_tr]
  np.savez(path, x_train=x_tr, y_train=obj, x_test=x_te, y_test=y_te)
  with pytest.raises(DataError, match='cannot read npz file.*allow_pickle'):
    load_dataset(path)


def test_npz_not_an_archive(tmp_path):
  path = tmp_path / 'junk.npz'
  path.write_bytes(b'not a zip file')
  with pytest.raises(DataError, match='cannot read npz'):
    load_dataset(str(path))


def _bad(**changes):
  arrays = dict(zip(('x_train', 'y_train', 'x_test', 'y_test'),
                    _arrays((10, 4, 4), np.float32)))
  arrays.update(changes)
  return arrays


_F32 = np.float32
_I64 = np.int64


@pytest.mark.parametrize('changes,pattern', [
    (dict(x_train=np.zeros((10,), _F32)), r'x_train: shape \(10,\)'),
    (dict(x_test=np.zeros((6, 2, 2, 2, 2), _F32)),
     'x_test: shape .* rank 5'),
    (dict(x_test=np.zeros((6, 4, 5), _F32)), 'differ in per-example shape'),
    (dict(x_test=np.zeros((6, 4, 4), np.float16)), 'differ in dtype'),
    (dict(x_train=np.full((10, 4, 4), 'a')),
     'x_train: dtype <U1 is not numeric'),
    (dict(y_train=np.zeros((10, 1), _I64)),
     r'y_train: shape \(10, 1\) is not 1-D'),
    (dict(y_test=np.zeros((6,), _F32)),
     'y_test: dtype float32 is not an integer'),
    (dict(y_train=np.zeros((9,), _I64)),
     'y_train: has 9 labels but the features have 10'),
    (dict(y_train=np.array([0, 1, 2, -1, 0, 1, 2, 0, 1, 2])),
     'y_train: has negative labels'),
    (dict(x_train=np.zeros((0, 4, 4), _F32), y_train=np.zeros((0,), _I64)),
     r'x_train: is empty'),
    (dict(x_test=np.zeros((0, 4, 4), _F32), y_test=np.zeros((0,), _I64)),
     r'x_test: is empty'),
    (dict(x_train=np.zeros((10, 0), _F32), x_test=np.zeros((6, 0), _F32)),
     'zero-sized axis'),
    (dict(y_train=np.zeros((10,), _I64), y_test=np.zeros((6,), _I64)),
     'at least 2 classes'),
])
def test_bad_arrays_raise(changes, pattern):
  with pytest.raises(DataError, match=pattern):
    dataset_from_arrays('t', **_bad(**changes))


def test_labels_out_of_range_for_num_classes():
  with pytest.raises(DataError, match=r'y_train: label 2 is out of range for '
                     r'num_classes=2'):
    dataset_from_arrays('t', **_bad(), num_classes=2)


@pytest.mark.parametrize('value,name', [(np.nan, 'NaN'), (np.inf, 'inf')])
def test_non_finite_features(value, name):
  x = _bad()['x_test'].copy()
  x[4, 1, 2] = value
  with pytest.raises(DataError, match=rf'x_test: contains non-finite values.*'
                     rf'{"1 NaN" if name == "NaN" else "1 inf"}.*example 4'):
    dataset_from_arrays('t', **_bad(x_test=x))


def test_bad_npz_arrays_raise_on_load(tmp_path):
  x_tr, y_tr, x_te, y_te = _arrays((10, 3), np.float32)
  y_tr = y_tr.copy()
  y_tr[0] = 9
  path = _write_npz(tmp_path / 'bad.npz', x_tr, y_tr, x_te, y_te)
  ds = load_dataset(path)  # num_classes inferred: 10; fine.
  assert ds.num_classes == 10
  x_tr[2, 1] = np.nan
  path = _write_npz(tmp_path / 'nan.npz', x_tr, y_tr, x_te, y_te)
  with pytest.raises(DataError, match='x_train: contains non-finite'):
    load_dataset(path)


def test_bad_name_and_num_classes():
  with pytest.raises(DataError, match='name must be a non-empty string'):
    dataset_from_arrays('', **_bad())
  with pytest.raises(DataError, match='num_classes must be an integer'):
    dataset_from_arrays('t', **_bad(), num_classes=2.5)
  with pytest.raises(DataError, match='data set name must be a string'):
    load_dataset(3)


def test_validate_arrays_returns_canonical_form():
  x_tr, y_tr, x_te, y_te = _arrays((10, 4, 4), np.uint8)
  out = validate_arrays(x_tr, y_tr.astype(np.uint8), x_te, y_te)
  assert out[0].shape == (10, 4, 4, 1) and out[0].dtype == np.uint8
  assert out[1].dtype == np.int64 and out[3].dtype == np.int64
  assert out[4] == 3
  big_endian = x_tr.astype('>u2')
  out = validate_arrays(big_endian, y_tr, x_te.astype('>u2'), y_te)
  assert out[0].dtype == np.dtype('<u2')
  np.testing.assert_array_equal(out[0][..., 0], x_tr)
