"""Tests of jaxaudit.data.splits."""

from __future__ import annotations

import dataclasses
import os

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from jaxaudit.data import (dataset_from_arrays, load_split,
                           make_split, read_index_file, save_split, split_hash,
                           validate_split)
from jaxaudit.errors import SplitError

FIELDS = ('train', 'forget', 'retain', 'ref', 'test')


def _toy(n=400, n_test=120, classes=5, seed=0):
  rng = np.random.default_rng(seed)
  y_tr = rng.integers(0, classes, n)
  y_te = rng.integers(0, classes, n_test)
  x_tr = rng.normal(size=(n, 3)).astype(np.float32)
  x_te = rng.normal(size=(n_test, 3)).astype(np.float32)
  return dataset_from_arrays('toy', x_tr, y_tr, x_te, y_te)


@pytest.fixture(scope='module')
def toy():
  return _toy()


def _check_invariants(split, n, n_test):
  """Naive re-statement of the AuditSplit contract."""
  for f in FIELDS:
    a = getattr(split, f)
    assert a.dtype == np.int64 and a.ndim == 1, f
    assert np.all(np.diff(a) > 0), f'{f} not sorted/unique'
  train, forget, retain, ref = (set(split.train.tolist()),
                                set(split.forget.tolist()),
                                set(split.retain.tolist()),
                                set(split.ref.tolist()))
  assert forget and retain and ref
  assert forget | retain == train
  assert not forget & retain
  assert not ref & train
  assert all(0 <= i < n for i in train | ref)
  assert all(0 <= i < n_test for i in split.test.tolist())


def test_random_split_partitions_the_pool(toy):
  split = make_split(toy, seed=0)
  _check_invariants(split, 400, 120)
  validate_split(split, toy)
  assert split.ref.size == 40  # 10% of the pool.
  assert split.train.size == 360  # The rest.
  assert split.forget.size == 36  # 10% of D.
  assert split.retain.size == 324
  np.testing.assert_array_equal(split.test, np.arange(120))
  assert split.forget_mode == 'random' and split.forget_classes == ()
  assert split.dataset_fingerprint == toy.fingerprint
  assert split.seed == 0


def test_split_is_deterministic(toy):
  a = make_split(toy, seed=3, test_size=50)
  b = make_split(toy, seed=3, test_size=50)
  c = make_split(toy, seed=4, test_size=50)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert split_hash(a) == split_hash(b)
  assert not np.array_equal(a.forget, c.forget)
  assert not np.array_equal(a.ref, c.ref)
  assert split_hash(a) != split_hash(c)


def test_labels_input_gives_the_same_indices(toy):
  from_ds = make_split(toy, seed=5)
  from_labels = make_split((toy.y_train, toy.y_test), seed=5)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(from_ds, f), getattr(from_labels, f))
  assert from_labels.dataset_fingerprint == ''
  validate_split(from_labels, toy)  # Unbound split: no fingerprint check.


def test_draws_are_stratified(toy):
  split = make_split(toy, seed=1, ref_size=100, forget_size=100)
  y = np.asarray(toy.y_train)
  pool = np.bincount(y, minlength=5) / y.size
  for idx in (split.ref, split.forget):
    share = np.bincount(y[idx], minlength=5) / idx.size
    np.testing.assert_allclose(share, pool, atol=0.015)


def test_sizes_and_subsampling(toy):
  split = make_split(toy, seed=2, ref_size=50, train_size=200, forget_size=20,
                     test_size=30)
  _check_invariants(split, 400, 120)
  assert (split.ref.size, split.train.size, split.forget.size,
          split.test.size) == (50, 200, 20, 30)
  split = make_split(toy, seed=2, ref_fraction=0.25, forget_fraction=0.5)
  assert split.ref.size == 100 and split.forget.size == 150


def test_class_mode_removes_whole_classes(toy):
  split = make_split(toy, seed=0, forget_classes=[3, 1])
  _check_invariants(split, 400, 120)
  validate_split(split, toy)
  y = np.asarray(toy.y_train)
  assert split.forget_mode == 'classes' and split.forget_classes == (1, 3)
  np.testing.assert_array_equal(split.forget,
                                split.train[np.isin(y[split.train], [1, 3])])
  assert not np.isin(y[split.retain], [1, 3]).any()
  # The reference keeps those classes (class-matched non-members).
  assert np.isin(y[split.ref], [1, 3]).any()


def test_index_mode(toy):
  idx = [7, 3, 250, 399, 0]
  split = make_split(toy, seed=0, forget_indices=idx, train_size=100)
  _check_invariants(split, 400, 120)
  validate_split(split, toy)
  assert split.forget_mode == 'indices'
  np.testing.assert_array_equal(split.forget, sorted(idx))
  assert not np.isin(split.ref, idx).any()
  assert split.train.size == 100 and np.isin(idx, split.train).all()
  # Without train_size, D is everything but D_ref.
  split = make_split(toy, seed=0, forget_indices=idx)
  assert split.train.size + split.ref.size == 400


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(forget_indices=[1, 1, 2]), 'forget_indices: 1 duplicated'),
    (dict(forget_indices=[1, 400]), r'forget_indices: index 400 is out of '
     r'range \[0, 400\)'),
    (dict(forget_indices=[-1, 4]), 'forget_indices: negative index'),
    (dict(forget_indices=[]), 'forget_indices: is empty'),
    (dict(forget_indices=[1.5]), 'forget_indices: indices must be integers'),
    (dict(forget_indices=[1], forget_classes=[0]), 'not both'),
    (dict(forget_classes=[9]), r'forget_classes: index 9 is out of range'),
    (dict(forget_classes=[0, 1, 2, 3, 4]), 'retain set would be empty'),
    (dict(forget_classes=[1], forget_size=3), 'forget_size only applies'),
    (dict(ref_fraction=0.0), 'ref_fraction must lie strictly between'),
    (dict(ref_fraction=1.0), 'ref_fraction must lie strictly between'),
    (dict(ref_size=399), 'leaves too few'),
    (dict(ref_size=0), 'ref_size must be >= 1'),
    (dict(forget_size=360), 'forget_size must be <= 359'),
    (dict(forget_fraction=1.5), 'forget_fraction must lie strictly'),
    (dict(train_size=1), 'train_size must be >= 2'),
    (dict(train_size=361), 'train_size must be <= 360'),
    (dict(test_size=0), 'test_size must be >= 1'),
    (dict(test_size=121), 'test_size must be <= 120'),
    (dict(seed=-1), 'seed must be >= 0'),
    (dict(seed=1.0), 'seed must be an integer'),
])
def test_make_split_rejects_bad_arguments(toy, kwargs, pattern):
  kwargs.setdefault('seed', 0)
  with pytest.raises(SplitError, match=pattern):
    make_split(toy, **kwargs)


def test_make_split_rejects_bad_inputs():
  with pytest.raises(SplitError, match='needs a Dataset or a pair'):
    make_split(np.arange(10), seed=0)
  with pytest.raises(SplitError, match='y_train: labels must be a 1-D integer'):
    make_split((np.zeros((10, 2), int), np.zeros(3, int)), seed=0)
  with pytest.raises(SplitError, match='at least 3'):
    make_split((np.zeros(2, int), np.zeros(3, int)), seed=0)
  with pytest.raises(SplitError, match='D has no record of forget_classes'):
    make_split((np.array([0, 0, 0, 0, 0, 1]), np.zeros(3, int)), seed=0,
               ref_size=1, train_size=2, forget_classes=[1])


# --------------------------------------------------------------------------
# validate_split


def _replace(split, **changes):
  return dataclasses.replace(split, **changes)


@pytest.fixture(scope='module')
def good(toy):
  return make_split(toy, seed=0)


@pytest.mark.parametrize('mutate,pattern', [
    (lambda s: _replace(s, forget=np.sort(np.r_[s.forget, s.forget[:1]])),
     'forget: 1 duplicated indices'),
    (lambda s: _replace(s, test=np.r_[s.test, 120]),
     r'test: index 120 is out of range \[0, 120\)'),
    (lambda s: _replace(s, ref=np.r_[s.ref, 10_000]),
     r'ref: index 10000 is out of range'),
    (lambda s: _replace(s, forget=np.zeros((0,), np.int64),
                        retain=s.train), 'forget is empty'),
    (lambda s: _replace(s, retain=np.zeros((0,), np.int64)), 'retain is empty'),
    (lambda s: _replace(s, ref=np.zeros((0,), np.int64)), 'ref is empty'),
    (lambda s: _replace(s, forget=np.sort(np.r_[s.forget, s.ref[0]])),
     'forget is not a subset of train'),
    (lambda s: _replace(s, retain=s.retain[1:]),
     'retain is not equal to train minus forget'),
    (lambda s: _replace(s, ref=np.union1d(s.ref, s.train[:2])),
     'ref overlaps train in 2 indices'),
    (lambda s: _replace(s, train=s.train[::-1].copy()),
     'train: indices are not sorted'),
    (lambda s: _replace(s, forget=s.forget.astype(np.float64)),
     'forget: must be a 1-D integer index array'),
    (lambda s: _replace(s, ref=np.r_[-1, s.ref]), 'ref: negative index'),
    (lambda s: _replace(s, forget_mode='bogus'), "forget_mode 'bogus'"),
    (lambda s: _replace(s, dataset_fingerprint='f' * 64),
     'fingerprint ffffffffffff'),
])
def test_validate_split_catches(toy, good, mutate, pattern):
  with pytest.raises(SplitError, match=pattern):
    validate_split(mutate(good), toy)


def test_validate_split_checks_class_mode(toy):
  split = make_split(toy, seed=0, forget_classes=[2])
  validate_split(split, toy)
  with pytest.raises(SplitError, match='not exactly the train records'):
    validate_split(_replace(split, forget=split.forget[1:],
                            retain=np.union1d(split.retain, split.forget[:1])),
                   toy)
  with pytest.raises(SplitError, match='forget_classes is empty'):
    validate_split(_replace(split, forget_classes=()))


def test_validate_split_needs_an_audit_split():
  with pytest.raises(SplitError, match='expected an AuditSplit'):
    validate_split({'train': np.arange(3)})


# --------------------------------------------------------------------------
# files


def test_save_load_round_trip(tmp_path, toy):
  split = make_split(toy, seed=9, forget_classes=[0, 4], test_size=40)
  path = str(tmp_path / 'split.npz')
  assert save_split(path, split) == path
  assert os.listdir(tmp_path) == ['split.npz']  # No temporary leftovers.
  loaded = load_split(path, toy)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(loaded, f), getattr(split, f))
    assert getattr(loaded, f).dtype == np.int64
  assert (loaded.seed, loaded.forget_mode, loaded.forget_classes,
          loaded.dataset_fingerprint) == (9, 'classes', (0, 4),
                                          toy.fingerprint)
  assert split_hash(loaded) == split_hash(split)
  # Saving again overwrites in place.
  save_split(path, make_split(toy, seed=10))
  assert load_split(path).seed == 10


def test_tampered_split_file_is_rejected(tmp_path, toy):
  path = str(tmp_path / 'split.npz')
  save_split(path, make_split(toy, seed=0))
  with np.load(path, allow_pickle=False) as z:
    content = {k: z[k] for k in z.files}
  # Move one record from retain to forget: still a consistent split, but
  # not the one that was saved.
  moved = content['retain'][0]
  content['forget'] = np.sort(np.r_[content['forget'], moved])
  content['retain'] = content['retain'][1:]
  np.savez(path, **content)
  with pytest.raises(SplitError, match='does not match the stored hash'):
    load_split(path)


def test_damaged_or_foreign_split_files(tmp_path, toy):
  path = tmp_path / 'split.npz'
  save_split(str(path), make_split(toy, seed=0))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(SplitError, match='cannot read split file'):
    load_split(str(path))
  other = str(tmp_path / 'other.npz')
  np.savez(other, train=np.arange(3))
  with pytest.raises(SplitError, match='not a jaxaudit split file'):
    load_split(other)
  with pytest.raises(SplitError, match='split file not found'):
    load_split(str(tmp_path / 'absent.npz'))


def test_load_split_checks_the_dataset(tmp_path, toy):
  path = str(tmp_path / 'split.npz')
  save_split(path, make_split(toy, seed=0))
  other = _toy(seed=1)
  with pytest.raises(SplitError, match='fingerprint'):
    load_split(path, other)


def test_save_split_validates(tmp_path, good):
  with pytest.raises(SplitError, match='ref overlaps train'):
    save_split(str(tmp_path / 's.npz'),
               _replace(good, ref=np.union1d(good.ref, good.train[:1])))
  assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------
# index files


@pytest.mark.parametrize('name,content', [
    ('idx.txt', '5\n3\n\n10\n'),
    ('idx.csv', '5, 3,10\n'),
    ('idx', '# forget set\n5 3  # two\n10\n'),
])
def test_read_index_text(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content)
  out = read_index_file(str(path))
  assert out.dtype == np.int64
  np.testing.assert_array_equal(out, [5, 3, 10])


def test_read_index_npy_npz(tmp_path):
  np.save(tmp_path / 'a.npy', np.array([4, 1, 2], np.int32))
  np.testing.assert_array_equal(read_index_file(tmp_path / 'a.npy'), [4, 1, 2])
  np.savez(tmp_path / 'b.npz', indices=np.array([9, 8], np.uint16))
  np.testing.assert_array_equal(read_index_file(tmp_path / 'b.npz'), [9, 8])


@pytest.mark.parametrize('name,content,pattern', [
    ('a.txt', '1\n2.5\n', r"line 2: '2.5' is not an integer"),
    ('b.txt', '1,x\n', r"line 1: 'x' is not an integer"),
    ('c.txt', '3\n-4\n', 'line 2: negative index -4'),
    ('d.txt', '# nothing\n', 'holds no indices'),
])
def test_read_index_text_errors(tmp_path, name, content, pattern):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(SplitError, match=pattern):
    read_index_file(str(path))


def test_read_index_array_errors(tmp_path):
  np.save(tmp_path / 'f.npy', np.array([1.0, 2.0]))
  with pytest.raises(SplitError, match='must be integers, got dtype float64'):
    read_index_file(tmp_path / 'f.npy')
  np.save(tmp_path / 'n.npy', np.array([1, -2]))
  with pytest.raises(SplitError, match='negative index -2 at position 1'):
    read_index_file(tmp_path / 'n.npy')
  np.save(tmp_path / 'm.npy', np.zeros((2, 2), int))
  with pytest.raises(SplitError, match='must be a 1-D array'):
    read_index_file(tmp_path / 'm.npy')
  np.savez(tmp_path / 'k.npz', forget=np.arange(3))
  with pytest.raises(SplitError, match=r'no array named "indices".*forget'):
    read_index_file(tmp_path / 'k.npz')
  with pytest.raises(SplitError, match='index file not found'):
    read_index_file(tmp_path / 'absent.txt')
  (tmp_path / 'bin.txt').write_bytes(b'\xff\xfe\x00')
  with pytest.raises(SplitError, match='not a UTF-8 text file'):
    read_index_file(tmp_path / 'bin.txt')


def test_index_file_feeds_make_split(tmp_path, toy):
  path = tmp_path / 'forget.txt'
  path.write_text('12\n40\n7\n')
  split = make_split(toy, seed=0, forget_indices=read_index_file(path))
  np.testing.assert_array_equal(split.forget, [7, 12, 40])


# --------------------------------------------------------------------------
# property test


@st.composite
def _split_args(draw):
  n = draw(st.integers(10, 300))
  classes = draw(st.integers(2, 6))
  label_seed = draw(st.integers(0, 2**32 - 1))
  rng = np.random.default_rng(label_seed)
  y_tr = rng.integers(0, classes, n)
  y_te = rng.integers(0, classes, draw(st.integers(1, 50)))
  kwargs = dict(seed=draw(st.integers(0, 2**63 - 1)))
  ref_size = draw(st.integers(1, n // 3))
  if draw(st.booleans()):
    kwargs['ref_size'] = ref_size
  else:
    kwargs['ref_fraction'] = draw(st.floats(0.01, 0.33))
  mode = draw(st.sampled_from(['random', 'classes', 'indices']))
  if mode == 'random':
    if draw(st.booleans()):
      kwargs['forget_size'] = draw(st.integers(1, n // 3))
    else:
      kwargs['forget_fraction'] = draw(st.floats(0.01, 0.9))
  elif mode == 'classes':
    y_tr[:classes] = np.arange(classes)  # Every class is present.
    kwargs['forget_classes'] = draw(st.lists(
        st.integers(0, classes - 1), min_size=1, max_size=classes - 1,
        unique=True))
  else:
    kwargs['forget_indices'] = draw(st.lists(
        st.integers(0, n - 1), min_size=1, max_size=n // 3, unique=True))
  if draw(st.booleans()):
    kwargs['test_size'] = draw(st.integers(1, y_te.size))
  return y_tr, y_te, mode, kwargs


@settings(max_examples=150, deadline=None)
@given(_split_args())
def test_make_split_properties(args):
  y_tr, y_te, mode, kwargs = args
  try:
    split = make_split((y_tr, y_te), **kwargs)
  except SplitError as e:
    # Only class mode may legitimately fail: D_ref can take every record of a
    # rare class, or the chosen classes can cover all of D.
    assert mode == 'classes', e
    return
  _check_invariants(split, y_tr.size, y_te.size)
  validate_split(split)
  assert split.forget_mode == mode
  if 'ref_size' in kwargs:
    assert split.ref.size == kwargs['ref_size']
  if 'forget_size' in kwargs:
    assert split.forget.size == kwargs['forget_size']
  if 'test_size' in kwargs:
    assert split.test.size == kwargs['test_size']
  else:
    np.testing.assert_array_equal(split.test, np.arange(y_te.size))
  if mode == 'indices':
    np.testing.assert_array_equal(split.forget,
                                  sorted(kwargs['forget_indices']))
  if mode == 'classes':
    in_classes = np.isin(y_tr[split.train], kwargs['forget_classes'])
    np.testing.assert_array_equal(split.forget, split.train[in_classes])
  again = make_split((y_tr, y_te), **kwargs)
  assert split_hash(again) == split_hash(split)
