"""Input validators for the data package.

Every loader funnels its arrays through :func:`validate_arrays`, which turns
them into one *canonical raw form* and checks them, so that bad data is
rejected at the boundary with an error naming the array and the problem:

* features ``x``: ``(N, H, W, C)`` images (``(N, H, W)`` gets a channel axis)
  or ``(N, F)`` flat features; dtype bool, integer or float, little-endian,
  C-contiguous; no NaN/inf.
* labels ``y``: ``(N,)`` int64 in ``[0, num_classes)``.

The canonical raw form is what the data set fingerprint hashes and what
:func:`jaxaudit.data.import_npz` stores in TFDS, so the same data gives the
same fingerprint whichever way it was loaded.

The small scalar checks (:func:`check_int`, :func:`check_fraction`,
:func:`as_index_array`) take the error class to raise, so the split and batching
modules report their own error types.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxaudit.errors import DataError, JaxAuditError

# Examples per chunk of the streaming checks and statistics (bounds memory).
CHUNK = 4096

_X_NAMES = ('x_train', 'x_test')
_Y_NAMES = ('y_train', 'y_test')


def _little_endian(a: np.ndarray) -> np.ndarray:
  """``a`` as a C-contiguous array with a little-endian dtype."""
  little = a.dtype.newbyteorder('<')
  if a.dtype != little:
    a = a.astype(little)
  return np.ascontiguousarray(a)


def canonical_features(name: str, x: Any) -> np.ndarray:
  """Checks one feature array and returns it in canonical raw form.

  Args:
    name: the array's name for error messages (``x_train``).
    x: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, F)`` array; bool, integer or
      float dtype.

  Returns:
    ``(N, H, W, C)`` or ``(N, F)`` array with the input dtype (little-endian,
    C-contiguous); ``(N, H, W)`` gains a trailing channel axis of size 1. The
    values are not copied when already canonical.

  Raises:
    DataError: wrong type, dtype or rank, empty array, or NaN/inf values.
  """
  if not isinstance(x, np.ndarray):
    try:
      x = np.asarray(x)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{name}: cannot convert to an array ({e})') from e
  kind = x.dtype.kind
  if kind not in 'biuf':
    raise DataError(
        f'{name}: dtype {x.dtype} is not numeric; expected uint8/integer or '
        'float features')
  if x.ndim == 3:
    x = x[..., np.newaxis]
  if x.ndim not in (2, 4):
    raise DataError(
        f'{name}: shape {x.shape} has rank {x.ndim}; expected (N, H, W), '
        '(N, H, W, C) or (N, F)')
  if x.shape[0] == 0:
    raise DataError(f'{name}: is empty (0 examples), shape {x.shape}')
  if any(d == 0 for d in x.shape[1:]):
    raise DataError(
        f'{name}: per-example shape {x.shape[1:]} has a zero-sized axis')
  x = _little_endian(x)
  if kind == 'f':
    for start in range(0, x.shape[0], CHUNK):
      block = x[start:start + CHUNK]
      finite = np.isfinite(block)
      if not finite.all():
        bad = start + int(np.argwhere(~finite)[0][0])
        n_nan = int(np.isnan(x).sum())
        n_inf = int(np.isinf(x).sum())
        raise DataError(
            f'{name}: contains non-finite values ({n_nan} NaN, {n_inf} inf; '
            f'first in example {bad})')
  return x


def canonical_labels(name: str, y: Any, n: int) -> np.ndarray:
  """Checks one label array and returns it as canonical int64.

  Args:
    name: the array's name for error messages (``y_train``).
    y: ``(N,)`` integer labels.
    n: the number of examples of the matching feature array.

  Returns:
    ``(N,)`` int64, C-contiguous.

  Raises:
    DataError: not 1-D, not an integer dtype, negative values, or a length
      that differs from ``n``.
  """
  if not isinstance(y, np.ndarray):
    try:
      y = np.asarray(y)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{name}: cannot convert to an array ({e})') from e
  if y.ndim != 1:
    raise DataError(
        f'{name}: shape {y.shape} is not 1-D; labels must be (N,) class ids')
  if y.dtype.kind not in 'iu':
    raise DataError(
        f'{name}: dtype {y.dtype} is not an integer type; labels must be '
        'integer class ids')
  if y.shape[0] != n:
    raise DataError(
        f'{name}: has {y.shape[0]} labels but the features have {n} examples')
  if y.dtype.kind == 'u' and y.dtype.itemsize == 8 and y.size and (
      y.max() > np.iinfo(np.int64).max):
    raise DataError(f'{name}: label {y.max()} does not fit in int64')
  y = np.ascontiguousarray(y.astype('<i8', copy=False))
  if y.size and y.min() < 0:
    raise DataError(
        f'{name}: has negative labels (min {int(y.min())}); labels must lie '
        'in [0, num_classes)')
  return y


def validate_arrays(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """Checks a train/test pair of arrays and returns their canonical raw form.

  Args:
    x_train: ``(N, ...)`` features (see :func:`canonical_features`).
    y_train: ``(N,)`` integer labels.
    x_test: ``(M, ...)`` features with the same per-example shape as x_train.
    y_test: ``(M,)`` integer labels.
    num_classes: the class count; ``None`` infers ``max(label) + 1``.

  Returns:
    ``(x_train, y_train, x_test, y_test, num_classes)`` with features in the
    input dtype, channel-last, and labels int64.

  Raises:
    DataError: naming the array and the problem (shape, dtype, emptiness,
      train/test shape or dtype mismatch, non-finite values, labels outside
      ``[0, num_classes)``, fewer than 2 classes).
  """
  xs = [canonical_features(n, x) for n, x in zip(_X_NAMES, (x_train, x_test))]
  if xs[0].shape[1:] != xs[1].shape[1:]:
    raise DataError(
        f'x_train and x_test differ in per-example shape: '
        f'{xs[0].shape[1:]} vs {xs[1].shape[1:]}')
  if xs[0].dtype != xs[1].dtype:
    raise DataError(
        f'x_train and x_test differ in dtype: {xs[0].dtype} vs '
        f'{xs[1].dtype}; they must be scaled alike')
  ys = [canonical_labels(n, y, x.shape[0])
        for n, y, x in zip(_Y_NAMES, (y_train, y_test), xs)]
  if num_classes is None:
    # Inferred from the *training* labels: a stray label in y_test must not
    # silently add output classes to the model.
    num_classes = int(ys[0].max()) + 1
    if int(ys[1].max()) >= num_classes:
      raise DataError(
          f'y_test: label {int(ys[1].max())} is out of range of the training labels '
          f'[0, {num_classes}); fix the label or declare num_classes')
  else:
    num_classes = check_int('num_classes', num_classes, minimum=1,
                            error=DataError)
    for n, y in zip(_Y_NAMES, ys):
      if int(y.max()) >= num_classes:
        raise DataError(
            f'{n}: label {int(y.max())} is out of range for num_classes='
            f'{num_classes}; labels must lie in [0, {num_classes})')
  if num_classes < 2:
    raise DataError(
        f'num_classes={num_classes}: a classification data set needs at '
        'least 2 classes')
  return xs[0], ys[0], xs[1], ys[1], num_classes


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None,
              error: type[JaxAuditError] = JaxAuditError) -> int:
  """Returns ``value`` as a Python int after checking type and bounds.

  Args:
    name: the argument's name for the error message.
    value: an integer (Python or NumPy; bool is rejected).
    minimum: inclusive lower bound, or None.
    maximum: inclusive upper bound, or None.
    error: the error class to raise.

  Raises:
    error: not an integer, or outside ``[minimum, maximum]``.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise error(f'{name} must be an integer, got {value!r}')
  value = int(value)
  if minimum is not None and value < minimum:
    raise error(f'{name} must be >= {minimum}, got {value}')
  if maximum is not None and value > maximum:
    raise error(f'{name} must be <= {maximum}, got {value}')
  return value


def check_fraction(name: str, value: Any, *,
                   error: type[JaxAuditError] = JaxAuditError) -> float:
  """Returns ``value`` as a float after checking ``0 < value < 1``.

  Raises:
    error: not a real number, or not strictly between 0 and 1.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    raise error(f'{name} must be a number in (0, 1), got {value!r}')
  value = float(value)
  if not 0.0 < value < 1.0:
    raise error(f'{name} must lie strictly between 0 and 1, got {value}')
  return value


def as_index_array(name: str, values: Any, *, upper: int | None = None,
                   allow_empty: bool = False, unique: bool = True,
                   error: type[JaxAuditError] = JaxAuditError) -> np.ndarray:
  """Checks a 1-D collection of indices and returns it as int64.

  Args:
    name: the argument's name for error messages.
    values: a sequence or array of non-negative integers.
    upper: exclusive upper bound (the length of the indexed array), or None.
    allow_empty: whether an empty collection is accepted.
    unique: whether duplicates are rejected.
    error: the error class to raise.

  Returns:
    ``(K,)`` int64 in the given order (not sorted).

  Raises:
    error: not 1-D integers, empty, negative, ``>= upper`` or duplicated.
  """
  arr = np.asarray(values)
  if arr.ndim != 1:
    raise error(f'{name}: must be a 1-D list of indices, got shape {arr.shape}')
  if arr.size == 0:
    if allow_empty:
      return np.zeros((0,), np.int64)
    raise error(f'{name}: is empty; at least one index is required')
  if arr.dtype.kind not in 'iu':
    raise error(f'{name}: indices must be integers, got dtype {arr.dtype}')
  arr = arr.astype(np.int64)
  if arr.min() < 0:
    raise error(f'{name}: negative index {int(arr.min())}')
  if upper is not None and arr.max() >= upper:
    raise error(
        f'{name}: index {int(arr.max())} is out of range [0, {upper})')
  if unique:
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.size != arr.size:
      dups = uniq[counts > 1]
      raise error(
          f'{name}: {dups.size} duplicated indices (e.g. {int(dups[0])})')
  return arr
