"""Orbax checkpoints of one model or a stacked ensemble, with metadata.

Layout of a checkpoint directory ``PATH``::

  PATH/params/      Orbax StandardCheckpointer tree of the parameters
  PATH/meta.json    model, data, split, recipe, seed, ensemble size, extras,
                    and the integrity record of the parameters (below)
  PATH/NAME.npz     optional extra arrays (e.g. a SISA layout), SHA-256 in meta.json

Writes are atomic: everything is written to a temporary sibling directory that
is renamed onto ``PATH`` only when complete, so an interrupted save leaves
either the old checkpoint or none, never a partial one. Loading checks the
metadata against what the caller expects (model, classes, input shape, data
fingerprint, split hash, ensemble size) and the stored parameter shapes
against the model's, raising :class:`CheckpointError` with the mismatch.

Integrity. At save, ``meta.json`` records

* ``param_sha256``: {tree path (``jax.tree_util.keystr``): SHA-256 of the leaf}
  where each leaf's digest covers its dtype name, its shape and its bytes
  (C order, little-endian) — see :func:`leaf_digest`;
* ``param_files``: {path relative to ``PATH/params``: [size in bytes, SHA-256]}
  of every file Orbax wrote.

:func:`load_checkpoint` (used for models, verifier and peer caches alike)
first checks that every recorded file exists with its recorded size, so a
deleted or truncated data file is reported before Orbax is called (Orbax/
tensorstore would otherwise leave background tasks that print stray asyncio
tracebacks), then restores the tree and compares each leaf's digest with the
recorded one: a flipped byte is a :class:`CheckpointError` naming the
checkpoint and the first leaf that differs (or, when Orbax cannot even decode
the tree, the file whose SHA-256 differs). Checkpoints saved before these
fields existed ("legacy") load without verification; the returned metadata
then says ``integrity='unverified'`` instead of ``'verified'``.

Leading axes of the stored parameters: none for one model; (K, ...) when
``meta['ensemble_size']`` is K; (R, K, ...) when ``meta['stages']`` is R too
(per-stage params of an ensemble, e.g. a SISA original).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxaudit import __version__, distributed, io_utils
from jaxaudit.errors import CheckpointError
from jaxaudit.train.devices import to_host

Params = Any
META = 'meta.json'
PARAMS = 'params'
# Fields compared by load_checkpoint(expect=...).
CHECKED_FIELDS = ('model', 'model_kwargs', 'num_classes', 'input_shape', 'dataset',
                  'dataset_fingerprint', 'split_hash', 'ensemble_size', 'kind')


def exists(path: str) -> bool:
  """Whether a complete checkpoint is at ``path``."""
  return os.path.isfile(os.path.join(path, META)) and os.path.isdir(os.path.join(path, PARAMS))


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


# Keys of meta.json that save_checkpoint computes itself (never copied from the caller's meta).
_DERIVED = ('param_shapes', 'param_sha256', 'param_files', 'integrity')


def leaf_digest(x) -> str:
  """SHA-256 hex digest of one array: its dtype name, its shape and its bytes.

  Args:
    x: an array of any shape (…); converted with ``np.asarray``.
  Returns:
    64 hex characters; equal for two arrays iff dtype, shape and every byte
    (C order, little-endian) are equal.
  """
  a = np.ascontiguousarray(np.asarray(x))
  if a.dtype.byteorder == '>':
    a = a.astype(a.dtype.newbyteorder('<'))
  h = hashlib.sha256(json.dumps([a.dtype.name, list(a.shape)]).encode() + b'\0')
  h.update(a.reshape(-1).view(np.uint8).data)
  return h.hexdigest()


def param_digests(params: Params) -> dict[str, str]:
  """{tree path: :func:`leaf_digest`} of every leaf of a params pytree (any shapes)."""
  return {jax.tree_util.keystr(k): leaf_digest(v)
          for k, v in jax.tree_util.tree_leaves_with_path(params)}


def _file_manifest(root: str) -> dict[str, list]:
  """{relative path ('/'-separated): [size in bytes, SHA-256]} of every file under root."""
  out = {}
  for d, _, files in os.walk(root):
    for name in files:
      f = os.path.join(d, name)
      out[os.path.relpath(f, root).replace(os.sep, '/')] = [os.path.getsize(f), _sha256(f)]
  return dict(sorted(out.items()))


def _check_files_present(path: str, meta: Mapping[str, Any]) -> None:
  """Raises CheckpointError if a recorded params file is missing or has another size."""
  root = os.path.join(path, PARAMS)
  for rel, (size, _) in (meta.get('param_files') or {}).items():
    f = os.path.join(root, *rel.split('/'))
    if not os.path.isfile(f):
      raise CheckpointError(f'checkpoint {path} is incomplete: its parameter file {PARAMS}/{rel} '
                            'is missing (deleted or never copied)')
    got = os.path.getsize(f)
    if got != size:
      raise CheckpointError(f'checkpoint {path} is corrupt: its parameter file {PARAMS}/{rel} has '
                            f'{got} bytes, {size} were saved (truncated or replaced)')


def _first_changed_file(path: str, meta: Mapping[str, Any]) -> str | None:
  """The first recorded params file whose SHA-256 differs (None: all match or none recorded)."""
  root = os.path.join(path, PARAMS)
  for rel, (_, digest) in (meta.get('param_files') or {}).items():
    try:
      if _sha256(os.path.join(root, *rel.split('/'))) != digest:
        return rel
    except OSError:
      return rel
  return None


def save_checkpoint(path: str, params: Params, meta: Mapping[str, Any], *,
                    overwrite: bool = True, force: bool = False,
                    extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> str:
  """Saves params (single or stacked ensemble) and metadata atomically.

  Args:
    path: checkpoint directory to create (its parent is created if needed).
    params: a pytree of arrays.
    meta: JSON-serialisable metadata; should hold at least ``model``,
      ``num_classes`` and ``input_shape``. ``ensemble_size`` is None for a
      single model and K when every leaf has a leading model axis.
    overwrite: replace an existing checkpoint at ``path`` (only one jaxaudit
      wrote: see :func:`jaxaudit.io_utils.replace_dir`).
    force: replace ``path`` even if jaxaudit did not write it (the user's
      ``--overwrite``).
    extra_arrays: optional {NAME: {array name: array}}; each is written as
      ``PATH/NAME.npz`` inside the same atomic write, its SHA-256 recorded in
      ``meta['extra_files']`` and checked by :func:`load_arrays`.

  ``meta.json`` also records the SHA-256 of every parameter leaf and of every
  file under ``PATH/params`` (see the module docstring); fields of ``meta``
  named like these derived ones are ignored.

  In a multi-process job every process calls this with the same arguments:
  Orbax writes each process's shards of the global arrays into one temporary
  directory made by process 0, which alone writes ``meta.json`` and renames
  the directory onto ``path``; every process returns once it is there.
  Returns:
    The absolute path written.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f'checkpoint {path} exists and overwrite=False')
  io_utils.check_replaceable(path, overwrite=force, what='checkpoint directory')
  multihost = distributed.collective()
  host = to_host(params)   # every process takes part where leaves span several hosts
  bad = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(host)
         if np.issubdtype(np.asarray(v).dtype, np.inexact) and not np.all(np.isfinite(v))]
  if bad:   # a diverged model is never saved as a result
    raise CheckpointError(f'refusing to save {path}: parameters {bad[:3]} hold NaN or inf values')
  primary = distributed.is_primary()
  tmp = io_utils.temp_sibling(path) if primary else ''
  if multihost:   # one temporary directory, made by process 0, written by every process
    tmp = distributed.broadcast_str(tmp)
  try:
    ckptr = ocp.StandardCheckpointer()
    # Host copies, except the global arrays of a multi-process job, whose shards every
    # process writes (arrays each process holds whole are written by process 0).
    tree = jax.tree.map(lambda a, h: a if multihost and isinstance(a, jax.Array)
                        and not a.is_fully_addressable else h, params, host)
    ckptr.save(os.path.join(tmp, PARAMS), tree)
    ckptr.wait_until_finished()
    ckptr.close()
    distributed.barrier(f'jaxaudit.checkpoint.saved:{path}')
    if primary:
      _finish_save(tmp, path, host, meta, extra_arrays, force)
    distributed.barrier(f'jaxaudit.checkpoint.renamed:{path}')
  except BaseException:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def _finish_save(tmp: str, path: str, params: Params, meta: Mapping[str, Any],
                 extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None, force: bool) -> None:
  """Writes the extra arrays and meta.json into ``tmp`` and renames it onto ``path``."""
  full_meta = {k: v for k, v in io_utils.jsonable(dict(meta)).items() if k not in _DERIVED}
  if extra_arrays:
    full_meta['extra_files'] = {}
    for name, arrays in extra_arrays.items():
      if not name.isidentifier():
        raise CheckpointError(f'extra array file name must be an identifier, got {name!r}')
      fpath = os.path.join(tmp, f'{name}.npz')
      np.savez(fpath, **{k: np.asarray(v) for k, v in arrays.items()})
      full_meta['extra_files'][name] = _sha256(fpath)
  full_meta.setdefault('jaxaudit_version', __version__)
  full_meta.setdefault('created', time.strftime('%Y-%m-%dT%H:%M:%S'))
  full_meta['param_shapes'] = {jax.tree_util.keystr(k): list(np.shape(v))
                               for k, v in jax.tree_util.tree_leaves_with_path(params)}
  full_meta['param_sha256'] = param_digests(params)
  full_meta['param_files'] = _file_manifest(os.path.join(tmp, PARAMS))
  with open(os.path.join(tmp, META), 'w') as f:
    json.dump(full_meta, f, indent=1, sort_keys=True)
  io_utils.replace_dir(tmp, path, overwrite=force, kind='checkpoint')


def load_meta(path: str) -> dict[str, Any]:
  """Reads a checkpoint's metadata; CheckpointError if missing or corrupt."""
  mpath = os.path.join(path, META)
  if not os.path.isdir(path):
    raise CheckpointError(f'no checkpoint at {path}')
  if not os.path.isfile(mpath):
    raise CheckpointError(f'{path} is not a complete jaxaudit checkpoint ({META} missing)')
  try:
    with open(mpath) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f'corrupt checkpoint metadata {mpath}: {e}') from e


def _normalise(v):
  return json.loads(json.dumps(io_utils.jsonable(v)))


def check_meta(meta: Mapping[str, Any], expect: Mapping[str, Any], path: str = '') -> None:
  """Raises CheckpointError naming every field where meta differs from expect."""
  problems = []
  for key, want in expect.items():
    if want is None and key not in meta:
      continue
    got = meta.get(key, '<missing>')
    if _normalise(got) != _normalise(want):
      problems.append(f'{key}: checkpoint has {got!r}, expected {want!r}')
  if problems:
    raise CheckpointError(f'checkpoint {path} does not match the request:\n  ' + '\n  '.join(problems))


def _is_dead_loop_noise(exc: BaseException | None, tb) -> bool:
  """Whether an exception is asyncio's 'Event loop is closed' from ``call_soon_threadsafe``.

  tensorstore's reader threads raise it (as an unraisable exception, printed as a
  bare traceback) when they complete after Orbax closed the event loop of a
  restore that failed: noise after an error that is already being reported.
  """
  if not (isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'):
    return False
  return any(f.name == 'call_soon_threadsafe' and os.path.basename(f.filename) == 'base_events.py'
             for f in traceback.extract_tb(tb))


class _RestoreNoiseFilter(logging.Filter):
  """Drops asyncio's 'exception was never retrieved' records of failed restores."""

  def filter(self, record: logging.LogRecord) -> bool:
    if 'exception was never retrieved' not in record.getMessage():
      return True
    exc = record.exc_info[1] if record.exc_info else None
    if _is_dead_loop_noise(exc, exc and exc.__traceback__):
      return False
    return not any(d in str(exc) for d in _FAILED_RESTORES)


_FAILED_RESTORES: set[str] = set()   # params directories whose Orbax restore raised
_NOISE_GUARD: list = []               # [previous sys.unraisablehook, ours] once installed


def _install_restore_noise_guard() -> None:
  """Silences the stray background tracebacks of a failed Orbax restore (idempotent).

  Wraps ``sys.unraisablehook`` (passing everything else to the previous hook)
  and filters the ``asyncio`` logger; only the two kinds of noise above are
  dropped. Installed before each restore, because the background tasks of a
  failed restore may fire at any time after it, even at interpreter exit.
  """
  if _NOISE_GUARD and sys.unraisablehook is _NOISE_GUARD[1]:
    return
  previous = sys.unraisablehook

  def hook(args):
    if _is_dead_loop_noise(args.exc_value, args.exc_traceback):
      return
    previous(args)

  _NOISE_GUARD[:] = [previous, hook]
  sys.unraisablehook = hook
  logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _RestoreNoiseFilter) for f in logger.filters):
    logger.addFilter(_RestoreNoiseFilter())


def _restore_here(ckptr, params_dir: str):
  """The stored tree on this process's first device, whatever devices saved it.

  Host (NumPy) saves restore as they are; global arrays saved by a
  multi-process job carry their devices in Orbax's metadata and restore
  through a target of the stored shapes and dtypes on one local device.
  """
  try:
    return ckptr.restore(params_dir)
  except ValueError as e:
    if 'topology' not in str(e).lower() and 'devices' not in str(e).lower():
      raise
  meta = ckptr.metadata(params_dir)
  tree = getattr(getattr(meta, 'item_metadata', meta), 'tree', None)
  tree = getattr(meta, 'item_metadata', meta) if tree is None else tree
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=here),
                        tree, is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))
  return ckptr.restore(params_dir, target)


def load_checkpoint(path: str, *, expect: Mapping[str, Any] | None = None,
                    target: Params | None = None) -> tuple[Params, dict[str, Any]]:
  """Restores params and metadata, checking them against expectations and checksums.

  Args:
    path: checkpoint directory.
    expect: metadata fields that must match (e.g. ``model``, ``num_classes``,
      ``input_shape``, ``dataset_fingerprint``, ``split_hash``, ``ensemble_size``).
    target: optional params pytree whose structure and shapes the stored
      params must have (e.g. ``jax.eval_shape`` of the model's init).
  Returns:
    (params as NumPy arrays, with the stored shapes — (…), (K, …) or (R, K, …),
    see the module docstring —, metadata dict). The metadata's ``integrity``
    is ``'verified'`` when every leaf matched its SHA-256 recorded at save, and
    ``'unverified'`` for a legacy checkpoint that recorded none.
  Raises:
    CheckpointError: missing/corrupt metadata, a mismatch with ``expect`` or
      ``target``, a missing or resized parameter file, a parameter leaf whose
      SHA-256 differs from the saved one, or a tree Orbax cannot read.
  """
  meta = load_meta(path)
  if expect:
    check_meta(meta, expect, path)
  _check_files_present(path, meta)
  params_dir = os.path.join(os.path.abspath(path), PARAMS)
  _install_restore_noise_guard()
  try:
    ckptr = ocp.StandardCheckpointer()
    try:
      params = _restore_here(ckptr, params_dir)
    finally:
      ckptr.close()
  except Exception as e:  # orbax raises many types for corrupt trees
    _FAILED_RESTORES.add(params_dir)
    changed = _first_changed_file(path, meta)
    if changed is not None:
      raise CheckpointError(f'checkpoint {path} is corrupt: its parameter file {PARAMS}/{changed} '
                            'differs from the file that was saved (SHA-256 mismatch)') from e
    msg = ' '.join(f'{type(e).__name__}: {e}'.split())
    raise CheckpointError(f'cannot read parameters of checkpoint {path}: {msg}') from e
  params = jax.tree.map(np.asarray, params)
  stored = {jax.tree_util.keystr(k): list(np.shape(v))
            for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if meta.get('param_shapes') and stored != meta['param_shapes']:
    raise CheckpointError(f'checkpoint {path} is corrupt: parameter shapes differ from its metadata')
  want_digests = meta.get('param_sha256')
  if want_digests:
    got = param_digests(params)
    for leaf in list(got) + sorted(set(want_digests) - set(got)):
      if got.get(leaf) != want_digests.get(leaf):
        raise CheckpointError(f'checkpoint {path} is corrupt: parameter leaf {leaf} differs from '
                              'the one that was saved (SHA-256 mismatch)')
  meta = dict(meta, integrity='verified' if want_digests else 'unverified')
  if target is not None:
    want = {jax.tree_util.keystr(k): list(np.shape(v))
            for k, v in jax.tree_util.tree_leaves_with_path(target)}
    if want != stored:
      diff = sorted(k for k in set(want) | set(stored) if want.get(k) != stored.get(k))
      raise CheckpointError(
          f'checkpoint {path} holds parameters of another model: mismatched leaves {diff[:5]}')
  return params, meta


def load_arrays(path: str, name: str, meta: Mapping[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
  """Reads the extra arrays ``PATH/NAME.npz`` saved by :func:`save_checkpoint`.

  Raises:
    CheckpointError: the file is missing, unreadable, or its SHA-256 differs
      from the one recorded in the metadata (corrupt or replaced).
  """
  meta = load_meta(path) if meta is None else meta
  fpath = os.path.join(path, f'{name}.npz')
  want = (meta.get('extra_files') or {}).get(name)
  if want is None:
    raise CheckpointError(f'checkpoint {path} has no {name}.npz in its metadata')
  if not os.path.isfile(fpath):
    raise CheckpointError(f'checkpoint {path} is incomplete: {name}.npz is missing')
  if _sha256(fpath) != want:
    raise CheckpointError(f'checkpoint {path} is corrupt: {name}.npz differs from the file '
                          'that was saved (SHA-256 mismatch)')
  return io_utils.read_npz(fpath, CheckpointError, 'checkpoint file')


def restore_model(path: str, *, expect: Mapping[str, Any] | None = None):
  """Rebuilds the model a checkpoint describes and restores its params.

  Returns:
    (model, params, meta); params are stacked (K, ...) when
    ``meta['ensemble_size']`` is K, and (R, K, ...) when ``meta['stages']`` is R too.
  """
  from jaxaudit.models import get_model, init_params  # local: keep import light
  meta = load_meta(path)
  if expect:
    check_meta(meta, expect, path)
  for field in ('model', 'num_classes', 'input_shape'):
    if field not in meta:
      raise CheckpointError(f'checkpoint {path} lacks metadata field {field!r}')
  shape = tuple(meta['input_shape'])
  model = get_model(meta['model'], meta['num_classes'], shape, **meta.get('model_kwargs', {}))
  single = jax.eval_shape(lambda: init_params(model, jax.random.key(0), shape))
  k, r = meta.get('ensemble_size'), meta.get('stages')
  if r and not k:
    raise CheckpointError(f'checkpoint {path} has stages={r} but no ensemble_size')
  lead = ((r,) if r else ()) + ((k,) if k else ())
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(lead + s.shape, s.dtype), single)
  params, meta = load_checkpoint(path, target=target)
  return model, params, meta
