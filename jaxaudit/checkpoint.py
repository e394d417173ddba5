"""Orbax checkpoints of one model or a stacked ensemble, with metadata.

Layout of a checkpoint directory ``PATH``::

  PATH/params/      Orbax StandardCheckpointer tree of the parameters
  PATH/meta.json    model, data, split, recipe, seed, ensemble size, extras
  PATH/NAME.npz     optional extra arrays (e.g. a SISA layout), SHA-256 in meta.json

Writes are atomic: everything is written to a temporary sibling directory that
is renamed onto ``PATH`` only when complete, so an interrupted save leaves
either the old checkpoint or none, never a partial one. Loading checks the
metadata against what the caller expects (model, classes, input shape, data
fingerprint, split hash, ensemble size) and the stored parameter shapes
against the model's, raising :class:`CheckpointError` with the mismatch.

Leading axes of the stored parameters: none for one model; (K, ...) when
``meta['ensemble_size']`` is K; (R, K, ...) when ``meta['stages']`` is R too
(per-stage params of an ensemble, e.g. a SISA original).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxaudit import __version__, io_utils
from jaxaudit.errors import CheckpointError

Params = Any
META = 'meta.json'
PARAMS = 'params'
# Fields compared by load_checkpoint(expect=...).
CHECKED_FIELDS = ('model', 'model_kwargs', 'num_classes', 'input_shape', 'dataset',
                  'dataset_fingerprint', 'split_hash', 'ensemble_size', 'kind')


def _jsonable(obj):
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return float(obj)
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def exists(path: str) -> bool:
  """Whether a complete checkpoint is at ``path``."""
  return os.path.isfile(os.path.join(path, META)) and os.path.isdir(os.path.join(path, PARAMS))


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def save_checkpoint(path: str, params: Params, meta: Mapping[str, Any], *,
                    overwrite: bool = True,
                    extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> str:
  """Saves params (single or stacked ensemble) and metadata atomically.

  Args:
    path: checkpoint directory to create (its parent is created if needed).
    params: a pytree of arrays.
    meta: JSON-serialisable metadata; should hold at least ``model``,
      ``num_classes`` and ``input_shape``. ``ensemble_size`` is None for a
      single model and K when every leaf has a leading model axis.
    overwrite: replace an existing checkpoint at ``path``.
    extra_arrays: optional {NAME: {array name: array}}; each is written as
      ``PATH/NAME.npz`` inside the same atomic write, its SHA-256 recorded in
      ``meta['extra_files']`` and checked by :func:`load_arrays`.
  Returns:
    The absolute path written.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise CheckpointError(f'checkpoint {path} exists and overwrite=False')
  tmp = io_utils.temp_sibling(path)
  try:
    params = jax.tree.map(np.asarray, params)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, PARAMS), params)
    ckptr.wait_until_finished()
    ckptr.close()
    full_meta = dict(_jsonable(dict(meta)))
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
    with open(os.path.join(tmp, META), 'w') as f:
      json.dump(full_meta, f, indent=1, sort_keys=True)
    io_utils.replace_dir(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


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
  return json.loads(json.dumps(_jsonable(v)))


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


def load_checkpoint(path: str, *, expect: Mapping[str, Any] | None = None,
                    target: Params | None = None) -> tuple[Params, dict[str, Any]]:
  """Restores params and metadata, checking them against expectations.

  Args:
    path: checkpoint directory.
    expect: metadata fields that must match (e.g. ``model``, ``num_classes``,
      ``input_shape``, ``dataset_fingerprint``, ``split_hash``, ``ensemble_size``).
    target: optional params pytree whose structure and shapes the stored
      params must have (e.g. ``jax.eval_shape`` of the model's init).
  Returns:
    (params as NumPy arrays, metadata dict).
  """
  meta = load_meta(path)
  if expect:
    check_meta(meta, expect, path)
  try:
    ckptr = ocp.StandardCheckpointer()
    params = ckptr.restore(os.path.join(os.path.abspath(path), PARAMS))
    ckptr.close()
  except Exception as e:  # orbax raises many types for corrupt trees
    raise CheckpointError(f'cannot read parameters of checkpoint {path}: {type(e).__name__}: {e}') from e
  params = jax.tree.map(np.asarray, params)
  stored = {jax.tree_util.keystr(k): list(np.shape(v))
            for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if meta.get('param_shapes') and stored != meta['param_shapes']:
    raise CheckpointError(f'checkpoint {path} is corrupt: parameter shapes differ from its metadata')
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
  try:
    with np.load(fpath, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except Exception as e:  # zip / format errors
    raise CheckpointError(f'cannot read {fpath}: {type(e).__name__}: {e}') from e


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
  model = get_model(meta['model'], meta['num_classes'], **meta.get('model_kwargs', {}))
  shape = tuple(meta['input_shape'])
  single = jax.eval_shape(lambda: init_params(model, jax.random.key(0), shape))
  k, r = meta.get('ensemble_size'), meta.get('stages')
  if r and not k:
    raise CheckpointError(f'checkpoint {path} has stages={r} but no ensemble_size')
  lead = ((r,) if r else ()) + ((k,) if k else ())
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(lead + s.shape, s.dtype), single)
  params, meta = load_checkpoint(path, target=target)
  return model, params, meta
