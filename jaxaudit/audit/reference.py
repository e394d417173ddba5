"""A user-supplied reference set D_ref: records that no model trained on.

By default the audit draws D_ref from the data set's own pool (the split's
``ref`` indices). A user who holds other held-out records can pass them
instead (``audit(..., reference=(x_ref, y_ref))`` or, from a file,
:func:`load_reference_file`). :func:`with_reference` appends the records to a
*copy* of the pool and returns a (dataset, split) pair whose ``ref`` indexes
exactly those records; Du, Dr, D and the test split are untouched (their pool
indices keep their meaning, so verifier sets trained for the original split
stay valid for it).

Units. ``Dataset.x_train`` is standardised per channel with the training
statistics. The API arguments ``x_ref`` are in those *dataset units*; a
reference *file* holds raw records like the data set's source (uint8 pixels or
the source's float features) unless it says ``units='standardised'``, and
:func:`load_reference_file` standardises them with the statistics recomputed
from the data set's raw source (:func:`dataset_standardisation`).

Whether the reference is exchangeable with Du is *not* assumed: the audit's
reference check (:func:`jaxaudit.audit.decision.reference_check`) refuses a
reference that differs (``invalid_reference``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from jaxaudit import io_utils
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError, DataError

_TAG = b'jaxaudit.reference.v1\0'
UNITS = ('raw', 'standardised')


def validate_reference(x_ref, y_ref, dataset: Dataset, *, min_size: int = 2
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Checks user reference records against a data set.

  Args:
    x_ref: (n, *dataset.input_shape) numeric inputs in dataset units, finite.
    y_ref: (n,) integer labels in [0, dataset.num_classes).
    dataset: the audited data set.
    min_size: the least n accepted.
  Returns:
    (x float32 (n, *input_shape), y int32 (n,)), new arrays.
  Raises:
    AuditError: naming the first problem found.
  """
  if not isinstance(dataset, Dataset):
    raise AuditError(f'expected a Dataset, got {type(dataset).__name__}')
  try:
    x = np.asarray(x_ref)
    y = np.asarray(y_ref)
  except Exception as e:  # ragged lists and the like
    raise AuditError(f'reference records must be arrays: {e}') from e
  shape = tuple(dataset.input_shape)
  if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
    raise AuditError(f'reference inputs must have shape (n, {", ".join(map(str, shape))}) like '
                     f'the data set {dataset.name!r}; got {x.shape}')
  if x.dtype.kind not in 'biuf':
    raise AuditError(f'reference inputs must be numeric, got dtype {x.dtype}')
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise AuditError(f'reference labels must have shape ({x.shape[0]},) (one per input); '
                     f'got {y.shape}')
  if y.size and y.dtype.kind not in 'iu':
    raise AuditError(f'reference labels must be integers, got dtype {y.dtype}')
  if x.shape[0] < min_size:
    raise AuditError(f'the reference needs at least {min_size} records, got {x.shape[0]}')
  x = x.astype(np.float32)
  bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
  if bad.any():
    raise AuditError(f'reference inputs hold NaN or inf values in {int(bad.sum())} record(s), '
                     f'e.g. at positions {np.flatnonzero(bad)[:5].tolist()}')
  if int(y.min()) < 0 or int(y.max()) >= dataset.num_classes:
    raise AuditError(f'reference labels must lie in [0, {dataset.num_classes}); got range '
                     f'[{int(y.min())}, {int(y.max())}]')
  return x, y.astype(np.int32)


def with_reference(dataset: Dataset, split: AuditSplit, x_ref, y_ref
                   ) -> tuple[Dataset, AuditSplit]:
  """A (dataset, split) whose D_ref is the given records.

  Args:
    dataset: the data set the split indexes (pool of N records).
    split: the audit request.
    x_ref: (n, *input_shape) reference inputs in dataset units.
    y_ref: (n,) integer labels.
  Returns:
    (dataset', split'): dataset' has the pool x_train (N + n, ...) with the
    records appended (test split unchanged) and a fingerprint derived from the
    original's and the records' bytes; split' has ``ref = arange(N, N + n)``
    and the original train/forget/retain/test.
  """
  x, y = validate_reference(x_ref, y_ref, dataset)
  h = hashlib.sha256(_TAG)
  h.update(dataset.fingerprint.encode())
  for a in (x, y):
    h.update(f'|{a.dtype.str}|{a.shape}\0'.encode())
    h.update(np.ascontiguousarray(a))
  fp = h.hexdigest()
  n0 = int(dataset.x_train.shape[0])
  xt = np.concatenate([dataset.x_train, x])
  yt = np.concatenate([dataset.y_train, y]).astype(dataset.y_train.dtype)
  for a in (xt, yt):
    a.setflags(write=False)
  ds = dataclasses.replace(dataset, x_train=xt, y_train=yt, fingerprint=fp,
                           source=f'{dataset.source}+reference:{fp[:12]}')
  sp = dataclasses.replace(split, ref=np.arange(n0, n0 + len(x), dtype=np.int64),
                           dataset_fingerprint=fp)
  return ds, sp


def _raw_train(dataset: Dataset) -> np.ndarray:
  """The raw training inputs of a data set, re-read from its source."""
  src = dataset.source
  from jaxaudit.data import datasets as ds_lib  # pylint: disable=g-import-not-at-top
  if src.startswith('npz:'):
    raw = ds_lib.read_npz(src[4:])
  elif src == 'embedded:sklearn' and dataset.name == 'digits':
    # The raw arrays of load_digits (pixel counts / 16, every fifth image of a class to test).
    images, labels = ds_lib._read_sklearn_digits()  # pylint: disable=protected-access
    test = np.zeros(labels.shape, bool)
    for c in np.unique(labels):
      test[np.flatnonzero(labels == c)[4::5]] = True
    x = (images / 16.0).astype(np.float32)[..., np.newaxis]
    raw = (x[~test], labels[~test], x[test], labels[test])
  elif src.startswith('tfds:'):
    from jaxaudit.data import tfds_io  # pylint: disable=g-import-not-at-top
    p = tfds_io.read_prepared(os.path.basename(src[5:].rstrip('/')),
                              os.path.dirname(src[5:].rstrip('/')))
    raw = (p.x_train, p.y_train, p.x_test, p.y_test)
  else:
    raise AuditError(f'cannot recover the raw units of data set {dataset.name!r} (source '
                     f"{src!r}); give the reference file in dataset units (units='standardised')")
  from jaxaudit.data import validate  # pylint: disable=g-import-not-at-top
  xtr, ytr, xte, yte, _ = validate.validate_arrays(*raw, dataset.num_classes)
  if ds_lib.fingerprint_arrays(xtr, ytr, xte, yte) != dataset.fingerprint:
    raise AuditError(f'the source {src!r} of data set {dataset.name!r} changed since it was '
                     'loaded (fingerprint mismatch); cannot standardise a raw reference')
  return xtr


def dataset_standardisation(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """The per-channel (mean, std) that map raw inputs to dataset units.

  Recomputed from the data set's raw source (npz, embedded digits or a
  prepared TFDS copy), checked against its fingerprint, exactly as
  :func:`jaxaudit.data.dataset_from_arrays` computed them.

  Args:
    dataset: a Dataset loaded from a file, TFDS or the embedded digits.
  Returns:
    (mean (C,), std (C,)) float32, C = the last input axis; dataset units are
    ``(float32(raw) [/255 for uint8] - mean) / std``.
  """
  from jaxaudit.data import datasets as ds_lib  # pylint: disable=g-import-not-at-top
  xtr = _raw_train(dataset)
  f = ds_lib._to_float32(xtr)  # pylint: disable=protected-access
  mean, std = ds_lib.channel_moments(f)
  return mean.astype(np.float32), np.maximum(std, ds_lib.STD_FLOOR).astype(np.float32)


def standardise(x_raw, dataset: Dataset, moments: tuple[np.ndarray, np.ndarray] | None = None
                ) -> np.ndarray:
  """Raw inputs (n, ...) -> dataset units (n, ...) float32 (uint8 is scaled by 1/255 first).

  Args:
    x_raw: (n, *raw_shape) raw inputs like the data set's source ((n, H, W) grey
      images get their channel axis).
    dataset: the data set.
    moments: (mean, std) from :func:`dataset_standardisation` (recomputed if None).
  """
  x = np.asarray(x_raw)
  if x.dtype.kind not in 'biuf':
    raise AuditError(f'reference inputs must be numeric, got dtype {x.dtype}')
  shape = tuple(dataset.input_shape)
  if x.ndim == len(shape) and len(shape) == 3 and shape[-1] == 1 and x.shape[1:] == shape[:2]:
    x = x[..., None]   # (n, H, W) grey images, as sources store them
  if x.shape[1:] != shape:
    raise AuditError(f'reference inputs must have shape (n, {", ".join(map(str, shape))}); '
                     f'got {x.shape}')
  f = np.divide(x, np.float32(255.0), dtype=np.float32) if x.dtype == np.uint8 \
      else x.astype(np.float32)
  mean, std = moments if moments is not None else dataset_standardisation(dataset)
  return (f - mean) / std


def load_reference_file(path: str, dataset: Dataset, *, units: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Reads a reference set from an ``.npz`` (no pickles).

  The file holds ``x`` (n, *input_shape) (grey images may be (n, H, W)) and
  ``y`` (n,) integer labels in [0, C), and optionally a scalar string
  ``units``: ``raw`` (default: like the data set's source, e.g. uint8 pixels)
  or ``standardised`` (already in dataset units, like ``Dataset.x_train``).

  Args:
    path: the ``.npz`` file.
    dataset: the audited data set.
    units: overrides the file's ``units``.
  Returns:
    (x float32 (n, *input_shape) in dataset units, y int32 (n,)), ready for
    ``audit(..., reference=(x, y))``.
  Raises:
    AuditError: missing/unreadable file, missing arrays, bad shapes, dtypes,
      labels or non-finite values.
  """
  path = os.fspath(path)
  table = io_utils.read_npz(path, AuditError, 'reference file')
  missing = [k for k in ('x', 'y') if k not in table]
  if missing:
    raise AuditError(f'reference file {path!r} lacks the array(s) {missing} (has {sorted(table)}); '
                     'it needs x (n, *input_shape) and y (n,)')
  if units is None:
    units = str(table['units']) if 'units' in table else 'raw'
  if units not in UNITS:
    raise AuditError(f'reference units must be one of {UNITS}, got {units!r}')
  x = table['x']
  if x.dtype.kind not in 'biuf':
    raise AuditError(f'{path}: x must be numeric, got dtype {x.dtype}')
  if units == 'raw':
    try:
      x = standardise(x, dataset)
    except DataError as e:
      raise AuditError(f'cannot standardise the raw reference {path!r}: {e}') from e
  try:
    return validate_reference(x, table['y'], dataset)
  except AuditError as e:
    raise AuditError(f'{path}: {e}') from e
