"""TFDS without TensorFlow: import local arrays, read prepared data sets.

TensorFlow is never imported. ``tensorflow_datasets`` can *read* data sets in
the ``array_record`` format through random-access data sources, and a
``GeneratorBasedBuilder`` of our own that stores features as
``tfds.features.Tensor`` (not ``Image``, whose encoder needs TensorFlow) can
*write* them.

Layout written by :func:`import_npz` (the usual TFDS layout)::

  DATA_DIR/NAME/1.0.0/dataset_info.json, features.json, metadata.json,
                      NAME-train.array_record-00000-of-00001, NAME-test...

Features: ``image`` (``(H, W, C)`` images) or ``x`` (``(F,)`` flat features)
as ``Tensor(shape, dtype)`` holding the canonical raw arrays (see
:func:`jaxaudit.data.validate.validate_arrays`), and ``label`` as
``ClassLabel(num_classes)``. Records are written and read in index order, so
a read-back reproduces the arrays bit for bit (and the fingerprint, which is
also kept in ``metadata.json`` and checked on load).

Reading uses ``tfds.builder_from_directory`` on the prepared version folder
rather than ``tfds.data_source(name, ...)``: for a name that TFDS registers
itself (``mnist``, ``cifar10``) ``data_source`` instantiates the built-in
builder class and only looks at *its* version folder, ignoring an import.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from jaxaudit import io_utils
from jaxaudit.data import datasets
from jaxaudit.data import validate
from jaxaudit.errors import DataError

# Version folder written by import_npz.
IMPORT_VERSION = '1.0.0'
# Feature names read, in order of preference.
FEATURE_KEYS = ('image', 'x')
LABEL_KEYS = ('label', 'y')
# Splits every data set must have.
SPLITS = ('train', 'test')

_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
_PART_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*$')
_VERSION_RE = re.compile(r'^\d+\.\d+\.\d+$')
_INFO_FILE = 'dataset_info.json'
_FINGERPRINT_KEY = 'jaxaudit_fingerprint'


def _tfds() -> Any:
  """Imports tensorflow_datasets lazily (it is slow to import)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedArrays:
  """Raw arrays read from a prepared TFDS data set.

  Attributes:
    x_train: ``(N, ...)`` raw features as stored.
    y_train: ``(N,)`` labels as stored (int64 for ClassLabel).
    x_test: ``(M, ...)`` raw features.
    y_test: ``(M,)`` labels.
    num_classes: from the ``ClassLabel`` feature, else None.
    path: the version folder read.
    stored_fingerprint: the fingerprint recorded at import, or ''.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int | None
  path: str
  stored_fingerprint: str


def _version_key(version: str) -> tuple[int, ...]:
  return tuple(int(p) for p in version.split('.'))


def _prepared_versions(ds_dir: str) -> list[str]:
  """Version folders of ``ds_dir`` holding a dataset_info.json, ascending."""
  if not os.path.isdir(ds_dir):
    return []
  found = [v for v in os.listdir(ds_dir) if _VERSION_RE.match(v) and
           os.path.isfile(os.path.join(ds_dir, v, _INFO_FILE))]
  return sorted(found, key=_version_key)


def list_prepared(data_dir: str | os.PathLike[str]) -> list[str]:
  """Names of the data sets prepared under a TFDS data directory.

  Args:
    data_dir: the directory to scan.

  Returns:
    Sorted names (``NAME`` or ``NAME/CONFIG``) that have at least one version
    folder with a ``dataset_info.json``; empty if data_dir does not exist.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    return []
  names = []
  for entry in sorted(os.listdir(data_dir)):
    ds_dir = os.path.join(data_dir, entry)
    if entry.startswith('.') or not os.path.isdir(ds_dir):
      continue
    if _prepared_versions(ds_dir):
      names.append(entry)
    for sub in sorted(os.listdir(ds_dir)):
      if (not _VERSION_RE.match(sub) and
          _prepared_versions(os.path.join(ds_dir, sub))):
        names.append(f'{entry}/{sub}')
  return names


def find_prepared(name: str, data_dir: str | os.PathLike[str]) -> str:
  """Finds the version folder of a prepared TFDS data set.

  Args:
    name: ``NAME``, ``NAME:VERSION``, ``NAME/CONFIG`` or
      ``NAME/CONFIG:VERSION``; without a version the highest one is used.
    data_dir: the TFDS data directory.

  Returns:
    The path ``DATA_DIR/NAME[/CONFIG]/VERSION``.

  Raises:
    DataError: malformed name, missing data_dir, or nothing prepared there;
      the message lists what was looked for, what exists and how to import.
  """
  data_dir = os.fspath(data_dir)
  base, _, version = name.partition(':')
  parts = base.split('/')
  if (not base or len(parts) > 2 or
      not all(_PART_RE.match(p) and p not in ('.', '..') for p in parts) or
      (version and not _VERSION_RE.match(version))):
    raise DataError(
        f'malformed TFDS data set name {name!r}; expected NAME, NAME:1.2.3, '
        'NAME/CONFIG or NAME/CONFIG:1.2.3')
  if not os.path.isdir(data_dir):
    raise DataError(
        f'data_dir {data_dir!r} does not exist (looked for TFDS data set '
        f'{name!r} there); create it with {datasets.IMPORT_HINT}')
  ds_dir = os.path.join(data_dir, *parts)
  versions = _prepared_versions(ds_dir)
  if version:
    if version in versions:
      return os.path.join(ds_dir, version)
    raise DataError(
        f'TFDS data set {base!r} has no prepared version {version} under '
        f'{data_dir!r} (looked for {os.path.join(ds_dir, version, _INFO_FILE)}'
        f'); prepared versions: {versions or "none"}')
  if not versions:
    available = list_prepared(data_dir)
    raise DataError(
        f'TFDS data set {name!r} is not prepared under data_dir {data_dir!r}: '
        f'looked for {os.path.join(ds_dir, "<version>", _INFO_FILE)}. '
        f'Prepared there: {", ".join(available) if available else "none"}. '
        f'Import local arrays with {datasets.IMPORT_HINT}, or prepare it with '
        'TFDS using file_format="array_record".')
  return os.path.join(ds_dir, versions[-1])


def _read_split(builder: Any, path: str, split: str, x_key: str,
                y_key: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads every record of one split, in index order."""
  try:
    source = builder.as_data_source(split=split)
    n = len(source)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f'cannot open split {split!r} of the TFDS data set at {path}: {e}'
    ) from e
  if n == 0:
    raise DataError(f'split {split!r} of the TFDS data set at {path} is empty')
  xs, ys = [], []
  for start in range(0, n, validate.CHUNK):
    keys = list(range(start, min(n, start + validate.CHUNK)))
    try:
      records = source.__getitems__(keys)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(
          f'cannot decode records of split {split!r} at {path}: {e} '
          '(features stored as tfds.features.Image need TensorFlow to '
          f'decode; export the data to npz and use {datasets.IMPORT_HINT})'
      ) from e
    try:
      xs.append(np.stack([np.asarray(r[x_key]) for r in records]))
    except ValueError as e:
      raise DataError(
          f'feature {x_key!r} of split {split!r} at {path} has examples of '
          f'different shapes: {e}') from e
    ys.append(np.asarray([r[y_key] for r in records]))
  return np.concatenate(xs), np.concatenate(ys)


def read_prepared(name: str,
                  data_dir: str | os.PathLike[str]) -> PreparedArrays:
  """Reads the train and test splits of a prepared TFDS data set.

  Args:
    name: see :func:`find_prepared`.
    data_dir: the TFDS data directory.

  Returns:
    The raw arrays in record order (not validated; see PreparedArrays).

  Raises:
    DataError: not prepared, not array_record, missing splits or features,
      undecodable records.
  """
  path = find_prepared(name, data_dir)
  tfds = _tfds()
  try:
    builder = tfds.builder_from_directory(path)
    info = builder.info
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'cannot read the TFDS data set info at {path}: {e}') from e
  file_format = getattr(info.file_format, 'value', info.file_format)
  if file_format != 'array_record':
    raise DataError(
        f'TFDS data set at {path} is stored as {file_format!r}; only '
        "'array_record' can be read without TensorFlow. Prepare it again "
        'with file_format="array_record", or export it to npz and use '
        f'{datasets.IMPORT_HINT}')
  missing = [s for s in SPLITS if s not in info.splits]
  if missing:
    raise DataError(
        f'TFDS data set at {path} lacks split(s) {missing}; it has '
        f'{sorted(info.splits)}')
  features = info.features
  keys = list(features.keys())
  x_key = next((k for k in FEATURE_KEYS if k in keys), None)
  y_key = next((k for k in LABEL_KEYS if k in keys), None)
  if x_key is None or y_key is None:
    raise DataError(
        f'TFDS data set at {path} has features {keys}; need an input feature '
        f'named one of {FEATURE_KEYS} and a label named one of {LABEL_KEYS}')
  label = features[y_key]
  num_classes = (int(label.num_classes)
                 if isinstance(label, tfds.features.ClassLabel) else None)
  x_train, y_train = _read_split(builder, path, 'train', x_key, y_key)
  x_test, y_test = _read_split(builder, path, 'test', x_key, y_key)
  metadata = info.metadata or {}
  stored = (metadata.get(_FINGERPRINT_KEY, '')
            if hasattr(metadata, 'get') else '')
  return PreparedArrays(x_train, y_train, x_test, y_test, num_classes, path,
                        str(stored))


def _builder_cls(ds_name: str, x_key: str, shape: tuple[int, ...],
                 dtype: np.dtype, num_classes: int, description: str,
                 fingerprint: str) -> type[Any]:
  """A GeneratorBasedBuilder subclass for one import (not registered).

  ``skip_registration=True`` keeps it out of TFDS's global name registry, so
  an import never shadows a built-in builder. The arrays are passed to the
  instance, not captured by the class.
  """
  tfds = _tfds()

  class _ImportedArrays(tfds.core.GeneratorBasedBuilder,
                        skip_registration=True):
    """Local raw arrays as a TFDS data set (train and test splits)."""
    name = ds_name
    VERSION = tfds.core.Version(IMPORT_VERSION)
    RELEASE_NOTES = {IMPORT_VERSION: 'Imported by jaxaudit from local arrays.'}

    def __init__(self, *, arrays: tuple[np.ndarray, ...], **kwargs: Any):
      self._arrays = arrays
      super().__init__(**kwargs)

    def _info(self) -> Any:
      return tfds.core.DatasetInfo(
          builder=self,
          description=description,
          features=tfds.features.FeaturesDict({
              x_key: tfds.features.Tensor(shape=shape, dtype=dtype),
              'label': tfds.features.ClassLabel(num_classes=num_classes),
          }),
          supervised_keys=(x_key, 'label'),
          disable_shuffling=True,  # Keep the record order of the arrays.
          metadata=tfds.core.MetadataDict({_FINGERPRINT_KEY: fingerprint}),
      )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
      del dl_manager  # Nothing to download.
      x_train, y_train, x_test, y_test = self._arrays
      return {'train': self._generate_examples(x_train, y_train),
              'test': self._generate_examples(x_test, y_test)}

    def _generate_examples(self, x: np.ndarray, y: np.ndarray) -> Any:
      for i in range(x.shape[0]):
        yield i, {x_key: x[i], 'label': int(y[i])}

  return _ImportedArrays


def _legacy_import(path: str) -> bool:
  """A data set imported by jaxaudit before the marker existed (its description says so)."""
  info = os.path.join(path, IMPORT_VERSION, 'dataset_info.json')
  try:
    with open(info, encoding='utf-8') as f:
      return 'Imported by jaxaudit' in f.read()
  except OSError:
    return False


def import_npz(name: str, npz_path: str | os.PathLike[str],
               data_dir: str | os.PathLike[str], *,
               num_classes: int | None = None,
               overwrite: bool = False) -> str:
  """Writes a local npz data set as a TFDS ``array_record`` data set.

  The arrays are validated and stored in canonical raw form (unscaled;
  ``(N, H, W)`` gains a channel axis, labels become int64), so
  ``load_dataset(name, data_dir=data_dir)`` returns the same arrays and the
  same fingerprint as ``load_dataset(npz_path)``. The data set is built in a
  temporary folder inside ``data_dir`` and moved into place at the end, so a
  failed import leaves no partial data set.

  Args:
    name: the TFDS name: lower-case letters, digits and ``_``, starting with
      a letter; not an embedded name (``digits``).
    npz_path: npz with ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    data_dir: TFDS data directory (created if missing).
    num_classes: the ``ClassLabel`` size; None infers ``max(label) + 1``.
    overwrite: if ``DATA_DIR/NAME`` exists already, replace it (all of its
      versions) instead of raising.

  Returns:
    The version folder written, ``DATA_DIR/NAME/1.0.0``.

  Raises:
    DataError: bad name, invalid arrays, float64 features (TFDS would store
      them as float32), or ``DATA_DIR/NAME`` exists and overwrite is False.
  """
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise DataError(
        f'invalid TFDS data set name {name!r}: use lower-case letters, digits '
        'and "_", starting with a letter (e.g. "mnist_local")')
  if name in datasets.EMBEDDED_DATASETS or name in datasets.FILE_DATASETS:
    raise DataError(
        f'{name!r} is a built-in data set name and would never be read from '
        'TFDS; choose another name')
  x_train, y_train, x_test, y_test, num_classes = validate.validate_arrays(
      *datasets.read_npz(npz_path), num_classes=num_classes)
  if x_train.dtype == np.float64:
    raise DataError(
        f'{npz_path}: x_train/x_test are float64, which TFDS serialises as '
        'float32 (the read-back would differ from the file and its '
        'fingerprint); save the features as float32 (or uint8) and import '
        'again')
  fingerprint = datasets.fingerprint_arrays(x_train, y_train, x_test, y_test)
  data_dir = os.path.abspath(os.fspath(data_dir))
  target = os.path.join(data_dir, name)
  io_utils.check_name(name, 'data set name')
  if os.path.lexists(target):
    if not overwrite:
      raise DataError(
          f'{target} exists already; pass overwrite=True (CLI: --overwrite) '
          'to replace it, or choose another name')
    if not os.path.isdir(target) or os.path.islink(target):
      raise DataError(f'{target} exists and is not a directory; remove it')
    if not (io_utils.written_by_jaxaudit(target) or _legacy_import(target)):
      raise DataError(f'{target} exists and was not imported by jaxaudit; it is not replaced '
                      '(choose another name)')
  os.makedirs(data_dir, exist_ok=True)

  x_key = 'image' if x_train.ndim == 4 else 'x'
  cls = _builder_cls(
      name, x_key, tuple(int(d) for d in x_train.shape[1:]), x_train.dtype,
      num_classes,
      description=(f'Imported by jaxaudit from {os.path.abspath(npz_path)} '
                   f'(fingerprint {fingerprint}).'),
      fingerprint=fingerprint)
  tfds = _tfds()
  work = tempfile.mkdtemp(prefix=f'.{name}.import-', dir=data_dir)
  try:
    builder = cls(arrays=(x_train, y_train, x_test, y_test), data_dir=work,
                  file_format='array_record')
    builder.download_and_prepare(
        download_dir=os.path.join(work, '_downloads'),
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    built = os.path.join(work, name)
    io_utils.mark(built, 'dataset')
    if os.path.lexists(target):
      replaced = os.path.join(work, '_replaced')
      os.replace(target, replaced)
      try:
        os.replace(built, target)
      except OSError:
        os.replace(replaced, target)  # Put the old data set back.
        raise
    else:
      os.replace(built, target)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return os.path.join(target, IMPORT_VERSION)
