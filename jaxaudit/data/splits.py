"""Audit splits: D_ref, D, Du, Dr and test as index sets, plus their files.

:func:`make_split` is a pure function of its arguments: the same labels and
seed give the same split on every machine. The draws, in this order, each use
``numpy.random.default_rng(seed)`` and are stratified by class (per-class
quotas by the largest-remainder rule, random records within a class):

1. D_ref: ``ref_size`` (or ``ref_fraction`` of the pool) records of the
   training pool, excluding explicit ``forget_indices``;
2. D: the rest of the pool (plus the forget_indices), optionally subsampled
   to ``train_size`` (always keeping the forget_indices);
3. Du ⊂ D: a random ``forget_size`` / ``forget_fraction`` of D (mode
   ``random``), every record of D in ``forget_classes`` (mode ``classes``),
   or the ``forget_indices`` (mode ``indices``); Dr = D \\ Du;
4. test: all test records or ``test_size`` of them.

Split files are ``.npz`` archives (no pickles) holding the index arrays, the
scalar fields and :func:`split_hash`; :func:`load_split` recomputes the hash,
so an edited or damaged file is rejected.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from typing import Any

import numpy as np

from jaxaudit import io_utils
from jaxaudit.data.types import AuditSplit, Dataset
from jaxaudit.data.validate import as_index_array, check_fraction, check_int
from jaxaudit.errors import SplitError

FORGET_MODES = ('random', 'classes', 'indices')
# Index arrays of an AuditSplit, in hash/file order.
ARRAY_FIELDS = ('train', 'forget', 'retain', 'ref', 'test')
SPLIT_FORMAT = 'jaxaudit.split.v1'

_SCALAR_KEYS = ('seed', 'forget_mode', 'forget_classes', 'dataset_fingerprint',
                'split_hash', 'format')
_INT64_MAX = np.iinfo(np.int64).max
_INT_TOKEN = re.compile(r'[+-]?\d+')


def _labels_of(dataset_or_labels: Any) -> tuple[np.ndarray, np.ndarray, int,
                                                  str]:
  """(y_train, y_test, num_classes, fingerprint) of a Dataset or label pair."""
  if isinstance(dataset_or_labels, Dataset):
    ds = dataset_or_labels
    return (np.asarray(ds.y_train, np.int64), np.asarray(ds.y_test, np.int64),
            int(ds.num_classes), ds.fingerprint)
  if (not isinstance(dataset_or_labels, (tuple, list)) or
      len(dataset_or_labels) != 2):
    raise SplitError(
        'make_split needs a Dataset or a pair (y_train, y_test) of label '
        f'arrays, got {type(dataset_or_labels).__name__}')
  ys = []
  for name, y in zip(('y_train', 'y_test'), dataset_or_labels):
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in 'iu'):
      raise SplitError(
          f'{name}: labels must be a 1-D integer array, got shape {y.shape} '
          f'dtype {y.dtype}')
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
      raise SplitError(f'{name}: negative label {int(y.min())}')
    ys.append(y)
  top = max((int(y.max()) for y in ys if y.size), default=0)
  return ys[0], ys[1], top + 1, ''


def _stratified_sample(rng: np.random.Generator, candidates: np.ndarray,
                       labels: np.ndarray, k: int) -> np.ndarray:
  """k records of ``candidates`` drawn per class in proportion to its size.

  Args:
    rng: the generator (consumed).
    candidates: sorted int64 ``(C,)`` indices into labels.
    labels: int64 ``(N,)`` class of every index.
    k: how many to draw, ``0 <= k <= C``.

  Returns:
    Sorted int64 ``(k,)`` subset of candidates.
  """
  total = candidates.size
  if k >= total:
    return candidates.copy()
  classes, inverse, counts = np.unique(labels[candidates], return_inverse=True,
                                       return_counts=True)
  quota = counts * k // total  # Exact integer arithmetic.
  remainder = counts * k % total
  short = k - int(quota.sum())
  if short:
    # Largest remainders first, ties broken at random.
    order = np.lexsort((rng.random(classes.size), -remainder))
    quota[order[:short]] += 1
  chosen = []
  for c in range(classes.size):
    if quota[c]:
      members = candidates[inverse == c]
      chosen.append(members[rng.permutation(members.size)[:quota[c]]])
  if not chosen:
    return np.zeros((0,), np.int64)
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def _round_fraction(fraction: float, n: int) -> int:
  """round(fraction * n), halves up, at least 1."""
  return max(1, int(np.floor(fraction * n + 0.5)))


def make_split(dataset_or_labels: Dataset | tuple[Any, Any], *, seed: int,
               ref_fraction: float = 0.1, ref_size: int | None = None,
               train_size: int | None = None, forget_fraction: float = 0.1,
               forget_size: int | None = None,
               forget_classes: Any = None, forget_indices: Any = None,
               test_size: int | None = None) -> AuditSplit:
  """Draws an audit split (see the module docstring for the procedure).

  Args:
    dataset_or_labels: a Dataset, or ``(y_train, y_test)`` int label arrays
      of shapes ``(N,)`` and ``(M,)`` (then ``dataset_fingerprint`` is ''
      and fingerprint checks are skipped for this split).
    seed: non-negative int seed of ``numpy.random.default_rng``.
    ref_fraction: size of D_ref as a fraction of the pool N (rounded, >= 1).
    ref_size: size of D_ref; overrides ref_fraction.
    train_size: subsample D to this many records (None: all the rest).
    forget_fraction: size of Du as a fraction of D (random mode).
    forget_size: size of Du (random mode); overrides forget_fraction.
    forget_classes: class ids; Du = every record of D in these classes.
    forget_indices: explicit pool indices of Du (unique, in ``[0, N)``); they
      are kept out of D_ref and always in D.
    test_size: subsample the test split to this many records (None: all).

  Returns:
    An AuditSplit whose index arrays are sorted int64; ``train``,
    ``forget``, ``retain``, ``ref`` index ``x_train`` and ``test`` indexes
    ``x_test``.

  Raises:
    SplitError: invalid arguments, or sizes that would leave D_ref, Du or Dr
      empty.
  """
  y_train, y_test, num_classes, fingerprint = _labels_of(dataset_or_labels)
  seed = check_int('seed', seed, minimum=0, maximum=_INT64_MAX,
                   error=SplitError)
  n = y_train.size
  if n < 3:
    raise SplitError(
        f'the training pool has {n} records; an audit split needs at least 3 '
        '(one each for D_ref, Du and Dr)')
  if forget_classes is not None and forget_indices is not None:
    raise SplitError('give forget_classes or forget_indices, not both')
  if forget_classes is not None:
    mode = 'classes'
  elif forget_indices is not None:
    mode = 'indices'
  else:
    mode = 'random'
  if mode != 'random' and forget_size is not None:
    raise SplitError(
        f'forget_size only applies to random forget sets, not mode {mode!r}')
  rng = np.random.default_rng(seed)

  pool = np.arange(n, dtype=np.int64)
  forced = np.zeros((0,), np.int64)
  if mode == 'indices':
    forced = np.sort(as_index_array('forget_indices', forget_indices,
                                    upper=n, error=SplitError))
  eligible = np.setdiff1d(pool, forced, assume_unique=True)

  # 1. D_ref.
  if ref_size is not None:
    k_ref = check_int('ref_size', ref_size, minimum=1, error=SplitError)
  else:
    k_ref = _round_fraction(
        check_fraction('ref_fraction', ref_fraction, error=SplitError), n)
  min_rest = 1 if mode == 'indices' else 2  # Room left for Du and Dr.
  if k_ref > eligible.size - min_rest:
    raise SplitError(
        f'D_ref of {k_ref} records leaves too few of the {eligible.size} '
        f'eligible pool records for D (need {min_rest} more); lower ref_size '
        'or ref_fraction')
  ref = _stratified_sample(rng, eligible, y_train, k_ref)
  rest = np.setdiff1d(eligible, ref, assume_unique=True)

  # 2. D.
  if train_size is None:
    train = np.union1d(rest, forced)
  else:
    available = rest.size + forced.size
    low = forced.size + 1 if mode == 'indices' else 2
    ts = check_int('train_size', train_size, minimum=low, maximum=available,
                   error=SplitError)
    train = np.union1d(forced,
                       _stratified_sample(rng, rest, y_train, ts - forced.size))

  # 3. Du and Dr.
  classes: tuple[int, ...] = ()
  if mode == 'random':
    if forget_size is not None:
      k_forget = check_int('forget_size', forget_size, minimum=1,
                           maximum=train.size - 1, error=SplitError)
    else:
      k_forget = _round_fraction(
          check_fraction('forget_fraction', forget_fraction, error=SplitError),
          train.size)
      if k_forget > train.size - 1:
        raise SplitError(
            f'forget_fraction={forget_fraction} of {train.size} records '
            'leaves the retain set empty')
    forget = _stratified_sample(rng, train, y_train, k_forget)
  elif mode == 'classes':
    cls = np.sort(as_index_array('forget_classes', forget_classes,
                                 upper=num_classes, error=SplitError))
    classes = tuple(int(c) for c in cls)
    forget = train[np.isin(y_train[train], cls)]
    if forget.size == 0:
      raise SplitError(f'D has no record of forget_classes {list(classes)}')
    if forget.size == train.size:
      raise SplitError(
          f'forget_classes {list(classes)} cover all of D; the retain set '
          'would be empty')
  else:
    forget = forced
  retain = np.setdiff1d(train, forget, assume_unique=True)

  # 4. Test.
  all_test = np.arange(y_test.size, dtype=np.int64)
  if test_size is None:
    test = all_test
  else:
    ts = check_int('test_size', test_size, minimum=1, maximum=y_test.size,
                   error=SplitError)
    test = _stratified_sample(rng, all_test, y_test, ts)

  return AuditSplit(
      train=train.astype(np.int64), forget=forget.astype(np.int64),
      retain=retain.astype(np.int64), ref=ref.astype(np.int64),
      test=test.astype(np.int64), seed=seed, forget_mode=mode,
      forget_classes=classes, dataset_fingerprint=fingerprint)


def validate_split(split: AuditSplit, dataset: Dataset | None = None) -> None:
  """Checks the invariants of an audit split.

  Args:
    split: the split to check.
    dataset: if given, also check index ranges against its sizes, the
      fingerprint (unless the split's is ''), and that a class-mode forget set
      is exactly D's records of those classes.

  Raises:
    SplitError: non-integer, unsorted, duplicated, negative or out-of-range
      indices; empty forget/retain/ref; forget not in train; retain not equal
      to train minus forget; ref overlapping train; unknown forget_mode; or a
      fingerprint mismatch with the dataset.
  """
  if not isinstance(split, AuditSplit):
    raise SplitError(f'expected an AuditSplit, got {type(split).__name__}')
  arrays = {}
  for field in ARRAY_FIELDS:
    a = np.asarray(getattr(split, field))
    if a.ndim != 1 or (a.size and a.dtype.kind not in 'iu'):
      raise SplitError(
          f'{field}: must be a 1-D integer index array, got shape {a.shape} '
          f'dtype {a.dtype}')
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
      raise SplitError(f'{field}: negative index {int(a.min())}')
    uniq, counts = np.unique(a, return_counts=True)
    if uniq.size != a.size:
      raise SplitError(
          f'{field}: {a.size - uniq.size} duplicated indices (e.g. '
          f'{int(uniq[counts > 1][0])})')
    if np.any(np.diff(a) < 0):
      raise SplitError(f'{field}: indices are not sorted ascending')
    arrays[field] = a
  for field in ('forget', 'retain', 'ref'):
    if arrays[field].size == 0:
      raise SplitError(f'{field} is empty; an audit needs at least one record')
  if split.forget_mode not in FORGET_MODES:
    raise SplitError(
        f'forget_mode {split.forget_mode!r} is not one of {FORGET_MODES}')
  if dataset is not None:
    limits = {'test': len(dataset.y_test)}
    for field in ARRAY_FIELDS:
      upper = limits.get(field, len(dataset.y_train))
      a = arrays[field]
      if a.size and a[-1] >= upper:
        raise SplitError(
            f'{field}: index {int(a[-1])} is out of range [0, {upper}) for '
            f'data set {dataset.name!r}')
    if split.dataset_fingerprint and (
        split.dataset_fingerprint != dataset.fingerprint):
      raise SplitError(
          f'the split was made for data with fingerprint '
          f'{split.dataset_fingerprint[:12]}... but data set {dataset.name!r} '
          f'has fingerprint {dataset.fingerprint[:12]}...')
  train, forget = arrays['train'], arrays['forget']
  outside = np.setdiff1d(forget, train, assume_unique=True)
  if outside.size:
    raise SplitError(
        f'forget is not a subset of train: {outside.size} indices (e.g. '
        f'{int(outside[0])}) are not in train')
  if not np.array_equal(arrays['retain'],
                        np.setdiff1d(train, forget, assume_unique=True)):
    raise SplitError('retain is not equal to train minus forget')
  overlap = np.intersect1d(arrays['ref'], train, assume_unique=True)
  if overlap.size:
    raise SplitError(
        f'ref overlaps train in {overlap.size} indices (e.g. '
        f'{int(overlap[0])}); the reference records must be unseen')
  if split.forget_mode == 'classes':
    if not split.forget_classes:
      raise SplitError("forget_mode 'classes' but forget_classes is empty")
    if dataset is not None:
      y = np.asarray(dataset.y_train)
      expected = train[np.isin(y[train], list(split.forget_classes))]
      if not np.array_equal(expected, forget):
        raise SplitError(
            f'forget is not exactly the train records of classes '
            f'{list(split.forget_classes)}')


def split_hash(split: AuditSplit) -> str:
  """sha256 hex digest of a split's index arrays and scalar fields.

  The arrays are hashed as int64 little-endian with their shapes; the seed,
  forget_mode, forget_classes and dataset_fingerprint as canonical JSON.
  """
  h = hashlib.sha256(SPLIT_FORMAT.encode() + b'\0')
  for field in ARRAY_FIELDS:
    a = np.ascontiguousarray(np.asarray(getattr(split, field)).astype('<i8'))
    h.update(f'{field}|{a.shape}\0'.encode())
    h.update(a)
  scalars = {
      'seed': int(split.seed),
      'forget_mode': str(split.forget_mode),
      'forget_classes': [int(c) for c in split.forget_classes],
      'dataset_fingerprint': str(split.dataset_fingerprint),
  }
  h.update(json.dumps(scalars, sort_keys=True).encode())
  return h.hexdigest()


def save_split(path: str | os.PathLike[str], split: AuditSplit) -> str:
  """Validates and writes a split to an ``.npz`` file atomically.

  The archive is written atomically (:func:`jaxaudit.io_utils.write_bytes`),
  so readers never see a partial file.

  Args:
    path: destination (written exactly there; no suffix is added).
    split: the split.

  Returns:
    ``path`` as a string.

  Raises:
    SplitError: the split is invalid (see :func:`validate_split`).
  """
  validate_split(split)
  path = os.fspath(path)
  payload = {f: np.asarray(getattr(split, f), np.int64) for f in ARRAY_FIELDS}
  payload.update(
      seed=np.asarray(split.seed, np.int64),
      forget_mode=np.asarray(str(split.forget_mode)),
      forget_classes=np.asarray(list(split.forget_classes), np.int64),
      dataset_fingerprint=np.asarray(str(split.dataset_fingerprint)),
      split_hash=np.asarray(split_hash(split)),
      format=np.asarray(SPLIT_FORMAT))
  buf = io.BytesIO()
  np.savez(buf, **payload)
  io_utils.write_bytes(path, buf.getvalue())
  return path


def load_split(path: str | os.PathLike[str],
               dataset: Dataset | None = None) -> AuditSplit:
  """Reads a split written by :func:`save_split` and checks it.

  Args:
    path: the split file.
    dataset: if given, the split must match its fingerprint and sizes.

  Returns:
    The AuditSplit (sorted int64 index arrays).

  Raises:
    SplitError: missing, unreadable or incomplete file; a stored hash that
      does not match the content (edited or corrupt file); or any failure of
      :func:`validate_split`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SplitError(f'split file not found: {path!r}')
  try:
    with open(path, 'rb') as fh:  # Opened here: numpy may leak it on errors.
      z = np.load(fh, allow_pickle=False)
      if not isinstance(z, np.lib.npyio.NpzFile):
        raise SplitError(f'{path!r} is not a jaxaudit split file (not npz)')
      with z:
        missing = [k for k in ARRAY_FIELDS + _SCALAR_KEYS if k not in z.files]
        if missing:
          raise SplitError(
              f'{path!r} is not a jaxaudit split file: missing {missing}')
        data = {k: z[k] for k in ARRAY_FIELDS + _SCALAR_KEYS}
  except SplitError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise SplitError(f'cannot read split file {path!r}: {e}') from e
  if str(data['format']) != SPLIT_FORMAT:
    raise SplitError(
        f'{path!r} has split format {str(data["format"])!r}; expected '
        f'{SPLIT_FORMAT!r}')
  for key in ARRAY_FIELDS + ('seed', 'forget_classes'):
    if data[key].size and data[key].dtype.kind not in 'iu':
      raise SplitError(f'{path!r}: {key} has dtype {data[key].dtype}, not int')
  if data['seed'].ndim != 0 or data['forget_classes'].ndim != 1:
    raise SplitError(f'{path!r}: seed or forget_classes has the wrong shape')
  split = AuditSplit(
      **{f: data[f].astype(np.int64) for f in ARRAY_FIELDS},
      seed=int(data['seed']), forget_mode=str(data['forget_mode']),
      forget_classes=tuple(int(c) for c in data['forget_classes']),
      dataset_fingerprint=str(data['dataset_fingerprint']))
  stored = str(data['split_hash'])
  computed = split_hash(split)
  if stored != computed:
    raise SplitError(
        f'{path!r}: content hash {computed[:12]}... does not match the stored '
        f'hash {stored[:12]}...; the file was edited or is corrupt')
  validate_split(split, dataset)
  return split


def _check_user_indices(path: str, arr: np.ndarray) -> np.ndarray:
  if arr.ndim > 1:
    raise SplitError(
        f'{path!r}: indices must be a 1-D array, got shape {arr.shape}')
  arr = arr.reshape(-1)
  if arr.size == 0:
    raise SplitError(f'{path!r}: holds no indices')
  if arr.dtype.kind not in 'iu':
    raise SplitError(
        f'{path!r}: indices must be integers, got dtype {arr.dtype} (cast '
        'whole-number floats with .astype(int) before saving)')
  if arr.dtype.kind == 'u' and arr.max() > _INT64_MAX:
    raise SplitError(f'{path!r}: index {arr.max()} is too large')
  arr = arr.astype(np.int64)
  if arr.min() < 0:
    pos = int(np.flatnonzero(arr < 0)[0])
    raise SplitError(
        f'{path!r}: negative index {int(arr[pos])} at position {pos}')
  return arr


def read_index_file(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads user-supplied record indices (e.g. a forget set).

  Formats: ``.npy`` (a 1-D integer array), ``.npz`` (an array named
  ``indices``), anything else as UTF-8 text with integers separated by
  newlines, commas or spaces (``#`` starts a comment).

  Args:
    path: the file.

  Returns:
    int64 ``(K,)`` non-negative indices in file order (duplicates are kept;
    :func:`make_split` rejects them).

  Raises:
    SplitError: missing/unreadable file, no indices, a non-integer token or
      dtype (with its line number for text), or a negative index.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SplitError(f'index file not found: {path!r}')
  ext = os.path.splitext(path)[1].lower()
  if ext in ('.npy', '.npz'):
    try:
      with open(path, 'rb') as fh:  # Opened here: numpy may leak it on errors.
        loaded = np.load(fh, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
          with loaded:
            if 'indices' not in loaded.files:
              raise SplitError(
                  f'{path!r}: no array named "indices" (it holds '
                  f'{sorted(loaded.files)})')
            arr = loaded['indices']
        else:
          arr = np.asarray(loaded)
    except SplitError:
      raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise SplitError(f'cannot read index file {path!r}: {e}') from e
    return _check_user_indices(path, arr)
  values = []
  try:
    with open(path, encoding='utf-8') as f:
      for lineno, line in enumerate(f, start=1):
        for token in re.split(r'[,\s]+', line.split('#', 1)[0].strip()):
          if not token:
            continue
          if not _INT_TOKEN.fullmatch(token):
            raise SplitError(
                f'{path!r} line {lineno}: {token!r} is not an integer index')
          value = int(token)
          if value < 0:
            raise SplitError(
                f'{path!r} line {lineno}: negative index {value}')
          if value > _INT64_MAX:
            raise SplitError(f'{path!r} line {lineno}: index {value} is too '
                             'large')
          values.append(value)
  except UnicodeDecodeError as e:
    raise SplitError(
        f'{path!r} is not a UTF-8 text file of indices (use .npy, .npz or '
        f'text): {e}') from e
  return _check_user_indices(path, np.asarray(values, np.int64))
