"""Loading classification data sets as :class:`~jaxaudit.data.types.Dataset`.

Three sources, one pipeline:

* embedded (``digits``: scikit-learn's 1,797 8x8 digit images, no download;
  ``shakespeare_speakers``: hashed word n-grams of tiny-shakespeare speeches
  by speaker, read from the shared data, see
  :mod:`jaxaudit.data.text_features`);
* a local ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``;
* a TFDS data set prepared (``array_record`` format) under a ``data_dir``,
  read without TensorFlow (see :mod:`jaxaudit.data.tfds_io`).

Each loader only produces raw arrays; :func:`dataset_from_arrays` validates
them (:func:`jaxaudit.data.validate.validate_arrays`), fingerprints their
canonical raw form and standardises them per channel with the training
statistics.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import types
from typing import Any, Callable, Mapping

import numpy as np

from jaxaudit import io_utils
from jaxaudit.data import validate
from jaxaudit.data.types import Dataset
from jaxaudit.errors import DataError

# The arrays an npz data set must hold, in fingerprint order.
NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
# Lower bound on the per-channel standard deviation used for standardisation.
STD_FLOOR = 1e-6
# How to make a TFDS data set from local arrays (shown in error messages).
IMPORT_HINT = (
    '`jaxaudit data import NAME --npz=PATH --data_dir=DIR` '
    '(or jaxaudit.data.import_npz(NAME, PATH, DIR))')

_FINGERPRINT_TAG = b'jaxaudit.dataset.v1\0'
_INT32_MAX = np.iinfo(np.int32).max


def fingerprint_arrays(x_train: np.ndarray, y_train: np.ndarray,
                       x_test: np.ndarray, y_test: np.ndarray) -> str:
  """sha256 hex digest of four arrays' dtypes, shapes and bytes.

  ``Dataset.fingerprint`` is this function applied to the canonical raw arrays
  (before scaling/standardisation; see
  :func:`jaxaudit.data.validate.validate_arrays`), so loading the same data
  from an npz or from its TFDS import gives the same digest.

  Args:
    x_train: ``(N, ...)`` features, any dtype.
    y_train: ``(N,)`` labels.
    x_test: ``(M, ...)`` features.
    y_test: ``(M,)`` labels.

  Returns:
    64 hexadecimal characters.
  """
  h = hashlib.sha256(_FINGERPRINT_TAG)
  for key, a in zip(NPZ_KEYS, (x_train, y_train, x_test, y_test)):
    a = np.ascontiguousarray(a)
    h.update(f'{key}|{a.dtype.str}|{a.shape}\0'.encode())
    h.update(a)  # The raw buffer: no copy for contiguous arrays.
  return h.hexdigest()


def _to_float32(x: np.ndarray) -> np.ndarray:
  """A new float32 copy of raw features; uint8 is scaled to [0, 1]."""
  if x.dtype == np.uint8:
    return np.divide(x, np.float32(255.0), dtype=np.float32)
  return x.astype(np.float32)  # Always a copy: the caller's array is untouched.


def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation over all but the last axis.

  Two passes in float64 over blocks of examples (exact enough, about 32 MB of
  temporary memory); the reductions run over the example axis of the
  flattened ``(N, D)`` view, which is fast, then over positions.

  Args:
    x: ``(N, ..., C)`` float array (for flat ``(N, F)`` features, C = F).

  Returns:
    ``(mean, std)``, each float64 ``(C,)``; std is not floored.
  """
  n, c = x.shape[0], x.shape[-1]
  flat = x.reshape(n, -1)
  width = flat.shape[1]
  count = n * (width // c)
  rows = max(1, (1 << 22) // width)
  total = np.zeros((width,), np.float64)
  for start in range(0, n, rows):
    total += flat[start:start + rows].sum(axis=0, dtype=np.float64)
  mean = total.reshape(-1, c).sum(axis=0) / count
  mean_row = np.tile(mean, width // c)
  squares = np.zeros((width,), np.float64)
  for start in range(0, n, rows):
    d = flat[start:start + rows] - mean_row
    d *= d
    squares += d.sum(axis=0)
  return mean, np.sqrt(squares.reshape(-1, c).sum(axis=0) / count)


def dataset_from_arrays(name: str, x_train: Any, y_train: Any, x_test: Any,
                        y_test: Any, num_classes: int | None = None,
                        source: str = 'arrays') -> Dataset:
  """Validates raw arrays and builds a standardised :class:`Dataset`.

  Args:
    name: short name of the data set.
    x_train: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, F)`` raw features; uint8
      is scaled by 1/255, other numeric dtypes are kept as they are.
    y_train: ``(N,)`` integer labels in ``[0, num_classes)``.
    x_test: ``(M, ...)`` raw features, same per-example shape as x_train.
    y_test: ``(M,)`` integer labels.
    num_classes: the class count; None infers ``max(label) + 1``.
    source: provenance string stored in ``Dataset.source``.

  Returns:
    A Dataset with float32 features standardised per channel (last axis) with
    the *training* mean/std (std floored at ``STD_FLOOR``), int32 labels,
    read-only arrays, and ``fingerprint`` = :func:`fingerprint_arrays` of the
    canonical raw arrays.

  Raises:
    DataError: invalid name or arrays (see
      :func:`jaxaudit.data.validate.validate_arrays`).
  """
  if not isinstance(name, str) or not name:
    raise DataError(f'name must be a non-empty string, got {name!r}')
  xtr, ytr, xte, yte, num_classes = validate.validate_arrays(
      x_train, y_train, x_test, y_test, num_classes)
  if num_classes > _INT32_MAX:
    raise DataError(f'num_classes={num_classes} does not fit in int32')
  fingerprint = fingerprint_arrays(xtr, ytr, xte, yte)
  ftr, fte = _to_float32(xtr), _to_float32(xte)
  mean, std = channel_moments(ftr)
  mean32 = mean.astype(np.float32)
  std32 = np.maximum(std, STD_FLOOR).astype(np.float32)
  for f in (ftr, fte):
    f -= mean32
    f /= std32
  arrays = (ftr, ytr.astype(np.int32), fte, yte.astype(np.int32))
  for a in arrays:
    a.setflags(write=False)
  return Dataset(
      name=name, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2],
      y_test=arrays[3], num_classes=num_classes,
      input_shape=tuple(int(d) for d in xtr.shape[1:]), source=source,
      fingerprint=fingerprint)


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, ...]:
  """Reads the four raw arrays of an npz data set (no pickles).

  Args:
    path: a ``.npz`` file holding ``x_train``, ``y_train``, ``x_test`` and
      ``y_test``.

  Returns:
    ``(x_train, y_train, x_test, y_test)`` exactly as stored (not validated).

  Raises:
    DataError: missing or unreadable file, missing arrays, or object arrays.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f'npz file not found: {path!r}')
  loaded = io_utils.read_npz(path, DataError)
  missing = [k for k in NPZ_KEYS if k not in loaded]
  if missing:
    raise DataError(f'npz file {path!r} lacks {", ".join(missing)}; it holds {sorted(loaded)} '
                    f'but an npz data set needs {", ".join(NPZ_KEYS)}')
  return tuple(loaded[k] for k in NPZ_KEYS)


def load_npz(path: str | os.PathLike[str], name: str | None = None, *,
             num_classes: int | None = None) -> Dataset:
  """Loads a local npz data set.

  Args:
    path: the ``.npz`` file (see :func:`read_npz`).
    name: the data set name; defaults to the file's stem.

  Returns:
    The standardised Dataset, ``source='npz:ABSPATH'``.

  Raises:
    DataError: unreadable file or invalid arrays.
  """
  path = os.fspath(path)
  if name is None:
    name = os.path.splitext(os.path.basename(path))[0]
  raw = read_npz(path)
  return dataset_from_arrays(name, *raw, num_classes=num_classes,
                             source=f'npz:{os.path.abspath(path)}')


def _read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as float64 ``(1797, 8, 8)`` and int64 ``(1797,)``.

  Reads the CSV that scikit-learn ships (what ``load_digits`` parses) without
  importing scikit-learn, which takes a second or more; falls back to
  ``sklearn.datasets.load_digits`` if the file is not where expected.
  """
  spec = importlib.util.find_spec('sklearn')
  if spec is None:
    raise DataError('the embedded digits data set needs scikit-learn; '
                    'pip install scikit-learn')
  csv = None
  for root in spec.submodule_search_locations or ():
    candidate = os.path.join(root, 'datasets', 'data', 'digits.csv.gz')
    if os.path.isfile(candidate):
      csv = candidate
      break
  if csv is not None:
    with gzip.open(csv, 'rt') as f:
      table = np.loadtxt(f, delimiter=',')
    if table.shape == (1797, 65):
      return (table[:, :64].reshape(-1, 8, 8),
              table[:, 64].astype(np.int64))
  # pylint: disable-next=g-import-not-at-top
  from sklearn import datasets as sk_datasets
  bunch = sk_datasets.load_digits()
  return (np.asarray(bunch.images, np.float64),
          np.asarray(bunch.target, np.int64))


def load_digits() -> Dataset:
  """scikit-learn's embedded digits (1,797 8x8 grey images, 10 classes).

  The split is stratified and needs no random generator (stable across
  library versions): within each class, in file order, every fifth image
  (ranks 4, 9, ...) goes to test: 1,442 train / 355 test images.

  Returns:
    Dataset with ``input_shape == (8, 8, 1)``; the raw arrays (the
    fingerprint's input) are float32 pixel counts / 16.
  """
  images, labels = _read_sklearn_digits()
  test = np.zeros(labels.shape, bool)
  for c in np.unique(labels):
    test[np.flatnonzero(labels == c)[4::5]] = True
  x = (images / 16.0).astype(np.float32)[..., np.newaxis]
  return dataset_from_arrays('digits', x[~test], labels[~test], x[test],
                             labels[test], num_classes=10,
                             source='embedded:sklearn')


# Built-in data sets that need no file and no download: name -> loader.
EMBEDDED_DATASETS: Mapping[str, Callable[[], Dataset]] = types.MappingProxyType(
    {'digits': load_digits})


def _load_shakespeare_speakers(data_dir: str | None = None) -> Dataset:
  from jaxaudit.data import text_features  # pylint: disable=g-import-not-at-top
  return text_features.load_shakespeare_speakers(data_dir)


# Built-in data sets read from a file of the project's shared data (no
# download): name -> loader(data_dir), where ``data_dir`` (or None) may hold
# the file and the loader falls back to ``../shared/data``.
FILE_DATASETS: Mapping[str, Callable[[str | None], Dataset]] = (
    types.MappingProxyType(
        {'shakespeare_speakers': _load_shakespeare_speakers}))


def _options() -> str:
  builtin = sorted(EMBEDDED_DATASETS) + sorted(FILE_DATASETS)
  return (f'built-in: {", ".join(builtin)}; a local file: '
          'a path ending in .npz (or npz=PATH) with x_train, y_train, x_test, '
          'y_test; a TFDS data set: its name plus data_dir=DIR where it was '
          f'prepared in array_record format, e.g. with {IMPORT_HINT}')


def load_dataset(name: str | os.PathLike[str],
                 data_dir: str | os.PathLike[str] | None = None, *,
                 npz: str | os.PathLike[str] | None = None,
                 num_classes: int | None = None) -> Dataset:
  """Loads a data set by name.

  Args:
    name: ``digits`` (embedded), ``shakespeare_speakers`` (speaker
      attribution on tiny-shakespeare, :mod:`jaxaudit.data.text_features`),
      a path ending in ``.npz``, or the name of a TFDS data set prepared
      under ``data_dir`` (``NAME``, ``NAME:VERSION``,
      ``NAME/CONFIG[:VERSION]``).
    data_dir: the TFDS data directory (TFDS names), or for
      ``shakespeare_speakers`` a folder holding ``tiny_shakespeare.txt``
      (optional: the default is ``../shared/data``).
    npz: path of a local npz data set; ``name`` then names the data set.
    num_classes: declared class count of a local npz data set (default: the
      largest training label + 1; test labels must lie in that range).

  Returns:
    The Dataset: features float32 ``(N, *input_shape)`` standardised with the
    train statistics, labels int32 ``(N,)``.

  Raises:
    DataError: unknown name, missing data_dir, data set not prepared, or
      invalid arrays; the message says what was looked for and how to fix it.
  """
  if not isinstance(name, (str, os.PathLike)):
    raise DataError(f'data set name must be a string, got {name!r}')
  name = os.fspath(name)
  if npz is not None:
    npz = os.fspath(npz)
    if name.endswith('.npz') and os.path.abspath(name) != os.path.abspath(npz):
      raise DataError(
          f'two npz files given: name={name!r} and npz={npz!r}; pass one')
    if name.endswith('.npz') or not name:
      name = os.path.splitext(os.path.basename(npz))[0]
    return load_npz(npz, name=name, num_classes=num_classes)
  if name.endswith('.npz'):
    return load_npz(name, num_classes=num_classes)
  if name in EMBEDDED_DATASETS:
    return EMBEDDED_DATASETS[name]()
  if name in FILE_DATASETS:
    return FILE_DATASETS[name](
        None if data_dir is None else os.fspath(data_dir))
  if data_dir is None:
    raise DataError(
        f'unknown data set {name!r} and no data_dir given to look for a '
        f'prepared TFDS copy. Options: {_options()}')
  from jaxaudit.data import tfds_io  # pylint: disable=g-import-not-at-top

  prepared = tfds_io.read_prepared(name, data_dir)
  ds = dataset_from_arrays(
      name.partition(':')[0], prepared.x_train, prepared.y_train, prepared.x_test,
      prepared.y_test, num_classes=prepared.num_classes,
      source=f'tfds:{prepared.path}')
  if prepared.stored_fingerprint and (
      prepared.stored_fingerprint != ds.fingerprint):
    raise DataError(
        f'TFDS data set at {prepared.path} is corrupt: its arrays hash to '
        f'{ds.fingerprint[:12]}... but it was imported with fingerprint '
        f'{prepared.stored_fingerprint[:12]}...; import it again with '
        f'{IMPORT_HINT}')
  return ds
