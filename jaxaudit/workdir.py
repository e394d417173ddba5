"""A jaxaudit work directory: its layout, its checks, and the configuration it remembers.

Layout::

  WORKDIR/.jaxaudit        marker: the directory was made by jaxaudit
  WORKDIR/config.json      the configuration its models were trained with
  WORKDIR/split.npz        the audit split
  WORKDIR/models/original/     checkpoint of M (trained on D)
  WORKDIR/models/retrain/      checkpoint of the retrain-from-scratch reference on Dr
  WORKDIR/models/sisa/         SISA original on D (only with config.sisa.shards > 0):
                               params after every stage (R, S, ...) and
                               sisa_state.npz (layout slots/mask, shard keys)
  WORKDIR/models/unlearned/NAME/  checkpoints of unlearned models (unlearned/sisa:
                               the S constituents (S, ...), mean-of-softmax ensemble)
  WORKDIR/verifiers/KEY/       cached verification ensembles (KEY.lock: their file lock)
  WORKDIR/audits/NAME/         report.json, report.md, plots

Every command checks the workdir before any work (:func:`check_workdir`): a
file where a directory belongs, an unwritable or non-UTF-8 path is one clear
error, not a traceback after twenty seconds of training.

A workdir remembers its configuration (:func:`resolve_config`): later
commands start from ``config.json``; overrides given on the command line
apply on top, and one that contradicts what the workdir's models were
trained with (data, split, model, training recipe, seed, SISA) is refused
by name — only ``jaxaudit train --overwrite`` may change those.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import jax
import ml_collections
import numpy as np

from jaxaudit import checkpoint, io_utils
from jaxaudit.configs import (load_data, model_from_config, recipe_from_config,
                              split_from_config, validate_config)
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.data import splits as splits_lib
from jaxaudit.errors import CheckpointError, ConfigError, OutputError, SplitError
from jaxaudit.train import Recipe
from jaxaudit.train import sisa as sisa_lib
from jaxaudit.train.evaluate import MEAN_SOFTMAX

CONFIG_FILE = 'config.json'
SPLIT_FILE = 'split.npz'
SISA_DIR = 'sisa'                    # WORKDIR/models/sisa
SISA_ARRAYS = 'sisa_state'           # WORKDIR/models/sisa/sisa_state.npz
SUBDIRS = ('models', 'verifiers', 'audits')
FILES = (CONFIG_FILE, SPLIT_FILE)
# Config fields that determine the workdir's split and models. Paths to the
# data (data_dir, npz) may move: the data fingerprint in every checkpoint
# guards their content instead.
MODEL_FIELDS = ('dataset', 'split', 'model', 'model_kwargs', 'train', 'seed', 'sisa',
                'train_retrain', 'text')


def check_workdir(workdir: str) -> str:
  """Checks a workdir before any work; returns it.

  Raises:
    OutputError: the path is not valid UTF-8, is (or lies under) a file, is
      not writable, or one of models/, verifiers/, audits/ is not a directory,
      or config.json / split.npz is a directory.
  """
  io_utils.check_writable_dir(workdir, 'workdir')
  for name in SUBDIRS:
    p = os.path.join(workdir, name)
    if os.path.lexists(p) and not os.path.isdir(p):
      raise OutputError(f'{p} exists and is not a directory; jaxaudit keeps its {name} there '
                        '(move the file away or use another --workdir)')
    if os.path.isdir(p) and not os.access(p, os.W_OK | os.X_OK):
      raise OutputError(f'{p} is not writable')
  for name in FILES:
    p = os.path.join(workdir, name)
    if os.path.lexists(p) and not os.path.isfile(p):
      raise OutputError(f'{p} exists and is not a file')
  return workdir


def _flatten(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    path = f'{prefix}{k}'
    if isinstance(v, Mapping) and v:
      out.update(_flatten(v, path + '.'))
    else:
      out[path] = v
  return out


def _normal(v):
  return json.loads(json.dumps(v, default=str))


def _get(config, path: str):
  node = config
  for part in path.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, Mapping)) or part not in node:
      return None
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def set_field(config: ml_collections.ConfigDict, path: str, value) -> None:
  """Sets the dotted field ``path`` of ``config`` (creating parents; any type)."""
  parts = path.split('.')
  node = config
  for part in parts[:-1]:
    if part not in node:
      node[part] = ml_collections.ConfigDict()
    node = node[part]
  old = node.get(parts[-1]) if parts[-1] in node else None
  if isinstance(old, tuple) and isinstance(value, list):
    value = tuple(value)
  with node.ignore_type():
    node[parts[-1]] = value


def saved_config(workdir: str) -> dict[str, Any] | None:
  """The configuration a workdir was made with (None for a new workdir)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      obj = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path} is not a readable configuration ({e}); restore it or use a new '
                      '--workdir') from None
  if not isinstance(obj, dict):
    raise ConfigError(f'{path} is not a configuration (a JSON object)')
  return obj


def model_field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """'field: old -> new' for every model-determining field that differs."""
  a = {k: v for k, v in _flatten(old).items() if k.split('.')[0] in MODEL_FIELDS}
  b = {k: v for k, v in _flatten(new).items() if k.split('.')[0] in MODEL_FIELDS}
  out = []
  for k in sorted(set(a) | set(b)):
    if k in a and k in b and _normal(a[k]) == _normal(b[k]):
      continue
    if k not in a and k in b and k.startswith(('sisa.', 'train_retrain', 'text.')):
      continue   # a field newer than the saved config: its default is not a change
    out.append(f'{k}: {a.get(k, "<unset>")!r} -> {b.get(k, "<unset>")!r}')
  return out


def resolve_config(given: ml_collections.ConfigDict, workdir: str, *,
                   overrides: Iterable[str] = (), explicit_file: bool = False,
                   cleared: Iterable[str] = (), allow_changes: bool = False,
                   command: str = 'jaxaudit') -> ml_collections.ConfigDict:
  """The configuration a command runs with on ``workdir``.

  Args:
    given: the config of the command line (the default file, or ``--config``,
      with the ``--config.X`` overrides applied).
    workdir: the work directory.
    overrides: dotted paths set on the command line (``--config.X=...``).
    explicit_file: ``--config=FILE`` was given; then ``given`` is taken whole
      (else the workdir's saved config is the base and only ``overrides`` apply).
    cleared: dotted paths set to None on the command line (``--config.X=None``).
    allow_changes: model-determining fields may differ from the saved config
      (``jaxaudit train --overwrite``).
    command: name used in error messages.
  Returns:
    The resolved config (``given`` when the workdir is new).
  Raises:
    ConfigError: a model-determining field differs from the workdir's saved
      config (naming every such field), unless ``allow_changes``.
  """
  config = given
  for path in cleared:
    set_field(config, path, None)
  saved = saved_config(workdir)
  if saved is None:
    return config
  if not explicit_file:
    resolved = ml_collections.ConfigDict(given.to_dict())
    if isinstance(saved.get('model_kwargs'), dict):   # the saved model's options, whole: the
      with resolved.ignore_type():                    # default's (another model's) do not apply
        resolved['model_kwargs'] = ml_collections.ConfigDict(saved['model_kwargs'])
    base = _flatten(saved)
    for path, value in base.items():
      set_field(resolved, path, value)
    set_now = set(overrides) | set(cleared)
    for path in set_now:
      set_field(resolved, path, _get(given, path))
    config = resolved
  changes = model_field_changes(saved, json.loads(config.to_json_best_effort()))
  if changes and not allow_changes:
    hint = ('pass --overwrite to retrain its models with the new settings'
            if command == 'train' else 'run `jaxaudit train --overwrite` with the new settings')
    raise ConfigError(f'{workdir} holds models trained with other settings ('
                      + '; '.join(changes) + f'); use a new --workdir or {hint}')
  return config


def prepare(config, workdir: str, log: Callable[[str], None] = print, *,
            overwrite: bool = False, dataset: Dataset | None = None) -> tuple[Dataset, AuditSplit]:
  """Loads the data and the workdir's split (drawing and saving it if new).

  The workdir is checked first (:func:`jaxaudit.workdir.check_workdir`). An
  existing workdir must have been made with the same data and split
  settings; otherwise SplitError tells the user to pick a new workdir, unless
  ``overwrite`` (``jaxaudit train --overwrite``), which saves the new split
  and configuration. ``dataset``: the data set of ``config``, if already loaded.
  Nothing is written before the data set and the split are known to be valid.
  """
  check_workdir(workdir)
  validate_config(config)
  dataset = load_data(config) if dataset is None else dataset
  split_path = os.path.join(workdir, SPLIT_FILE)
  fresh = split_from_config(config, dataset)
  fresh_dir = not os.path.exists(workdir) or not os.listdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  if fresh_dir:
    io_utils.mark(workdir, 'workdir')
  save_config = overwrite
  if os.path.exists(split_path):
    split = splits_lib.load_split(split_path, dataset)
    if splits_lib.split_hash(split) != splits_lib.split_hash(fresh):
      if not overwrite:
        raise SplitError(f'{split_path} holds a different split than this config draws '
                         '(data or split settings changed); use a new --workdir')
      split = fresh
      splits_lib.save_split(split_path, split)
  else:
    split = fresh
    splits_lib.save_split(split_path, split)
    save_config = True
  if save_config:
    io_utils.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))
  log(f'data {dataset.name} ({dataset.source}): pool {len(dataset.y_train)}, '
      f'|D|={len(split.train)} |Du|={len(split.forget)} |Dr|={len(split.retain)} '
      f'|D_ref|={len(split.ref)} |test|={len(split.test)}, {dataset.num_classes} classes')
  return dataset, split


def preflight(config, workdir: str, batch_sizes: tuple[int, ...] = (), num_models: int = 1
              ) -> Dataset:
  """Checks a request before anything is written or trained; returns its data set.

  Checks the workdir, the config's values, the model it names, and that a
  training step at the recipe's batch size (and at each of ``batch_sizes``,
  with ``num_models`` models at once) fits in memory.
  """
  from jaxaudit.train.memory import check_fits
  check_workdir(workdir)
  validate_config(config)
  dataset = load_data(config)
  model = model_from_config(config, dataset)
  shape = tuple(dataset.input_shape)
  check_fits(model, shape, recipe_from_config(config).batch_size, what='train.batch_size')
  for bs in batch_sizes:
    check_fits(model, shape, bs, num_models, parallel=True, what='batch_size')
  return dataset


def checkpoint_meta(config, dataset: Dataset, split: AuditSplit, kind: str,
                    ensemble_size: int | None = None, **extra) -> dict[str, Any]:
  """Metadata stored with every checkpoint and checked when it is loaded."""
  meta = dict(model=config.model, model_kwargs=config.model_kwargs.to_dict(),
              num_classes=dataset.num_classes, input_shape=list(dataset.input_shape),
              dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
              split_hash=splits_lib.split_hash(split), recipe=config.train.to_dict(),
              seed=int(config.seed), ensemble_size=ensemble_size, kind=kind)
  meta.update(extra)
  return meta


def expected_meta(config, dataset: Dataset, split: AuditSplit) -> dict[str, Any]:
  """The fields a checkpoint must match to be used with this config and data."""
  return dict(model=config.model, model_kwargs=config.model_kwargs.to_dict(),
              num_classes=dataset.num_classes, input_shape=list(dataset.input_shape),
              dataset_fingerprint=dataset.fingerprint, split_hash=splits_lib.split_hash(split))


def save_sisa_state(path: str, state, meta: dict[str, Any]) -> str:
  """Saves a :class:`jaxaudit.train.sisa.SisaState` as one checkpoint, atomically.

  The per-stage params (R, S, ...) go to ``PATH/params`` and the layout
  (slots, mask (S, R, L)) with the shard keys' raw data (S, ...) to
  ``PATH/sisa_state.npz``, in the same atomic write. ``meta`` (see
  :func:`checkpoint_meta`) is completed with ``stages=R``, ``ensemble_size=S``,
  the SISA settings, the key implementation and ``aggregate='mean_softmax'``.

  Returns:
    The absolute checkpoint path.
  """
  layout = state.layout
  meta = dict(meta, kind=meta.get('kind', 'sisa'), stages=layout.slices,
              ensemble_size=layout.shards, shards=layout.shards, slices=layout.slices,
              slice_epochs=int(state.slice_epochs), strategy=state.strategy,
              aggregate=MEAN_SOFTMAX, recipe=state.recipe.to_dict(),
              input_shape=list(state.input_shape),
              key_impl=str(jax.random.key_impl(state.shard_keys)))
  return checkpoint.save_checkpoint(path, state.params, meta,
                                    extra_arrays={SISA_ARRAYS: sisa_lib.state_arrays(state)})


def load_sisa_state(path: str, *, expect: dict[str, Any] | None = None, train_indices=None):
  """Loads a SISA original saved by :func:`save_sisa_state`.

  Args:
    path: the checkpoint directory (e.g. WORKDIR/models/sisa).
    expect: metadata fields that must match (e.g. :func:`expected_meta` plus
      ``shards``/``slices``/``slice_epochs``).
    train_indices: optional (n,) pool indices of D; the saved layout must hold
      exactly these records.
  Returns:
    (model, SisaState with params (R, S, ...), meta).
  Raises:
    CheckpointError: missing or corrupt files, metadata that differs from
      ``expect``, or a saved layout that does not match the params or D.
  """
  meta = checkpoint.load_meta(path)
  if meta.get('aggregate') != MEAN_SOFTMAX or not meta.get('stages') or SISA_ARRAYS not in (
      meta.get('extra_files') or {}):
    raise CheckpointError(f'{path} is not a SISA checkpoint (kind {meta.get("kind")!r}); '
                          'make one with `jaxaudit train --config.sisa.shards=S`')
  model, params, meta = checkpoint.restore_model(path, expect=expect)
  arrays = checkpoint.load_arrays(path, SISA_ARRAYS, meta)
  try:
    state = sisa_lib.state_from_arrays(
        params, arrays, key_impl=meta['key_impl'], recipe=Recipe.from_config(meta['recipe']),
        slice_epochs=int(meta['slice_epochs']), strategy=meta['strategy'],
        input_shape=meta['input_shape'])
  except (ConfigError, KeyError, TypeError) as e:
    raise CheckpointError(f'checkpoint {path}: the saved SISA state does not match its '
                          f'parameters and metadata: {e}') from e
  lay = state.layout
  if (lay.shards, lay.slices) != (meta.get('shards'), meta.get('slices')):
    raise CheckpointError(f'checkpoint {path}: layout has {lay.shards} shards x {lay.slices} '
                          f'slices, metadata says {meta.get("shards")} x {meta.get("slices")}')
  if train_indices is not None and not np.array_equal(
      lay.records(), np.sort(np.asarray(train_indices, np.int64))):
    raise CheckpointError(f'checkpoint {path}: the SISA layout does not hold exactly the '
                          'training set D of this split')
  return model, state, meta


def target_path(workdir: str, target: str) -> str:
  """The checkpoint directory ``--target`` names: a path, or a name under WORKDIR/models."""
  io_utils.check_path(target, '--target')
  return target if os.path.isdir(target) else os.path.join(workdir, 'models', target)


def resolve_target(config, dataset, split, workdir: str, target: str | None = None,
                   logits_file: str | None = None):
  """The audited model: a checkpoint (name under WORKDIR/models or a path) or a logits file.

  A checkpoint of an ensemble aggregated by the mean of softmax outputs
  (``meta['aggregate'] == 'mean_softmax'``: models/sisa, models/unlearned/sisa)
  is audited as one black box whose logits are the log of that mean.
  """
  from jaxaudit.audit import Target
  if logits_file:
    return Target.from_logits_file(logits_file)
  if not target:
    raise ConfigError('name the model to audit with --target (e.g. retrain, unlearned/finetune, '
                      'or a checkpoint path) or give --logits=FILE')
  path = target_path(workdir, target)
  model, params, meta = checkpoint.restore_model(path, expect=expected_meta(config, dataset, split))
  name = target.strip('/').replace('/', '_')
  agg = meta.get('aggregate')
  if agg is not None:
    if agg != MEAN_SOFTMAX:
      raise CheckpointError(f'checkpoint {path} aggregates its ensemble by {agg!r}; '
                            f'only {MEAN_SOFTMAX!r} is supported')
    if meta.get('stages'):   # per-stage SISA checkpoints: the constituents after the last stage
      params = jax.tree.map(lambda p: p[-1], params)
    return Target.from_fn(lambda x: sisa_lib.sisa_logits(model, params, x), name=name)
  if meta.get('ensemble_size'):
    raise CheckpointError(f'checkpoint {path} holds {meta["ensemble_size"]} stacked models '
                          'with no aggregate; audit one model')
  return Target.from_params(model, params, name=name)


__all__ = ['CONFIG_FILE', 'SPLIT_FILE', 'SISA_DIR', 'SISA_ARRAYS', 'MODEL_FIELDS', 'check_workdir',
           'saved_config', 'set_field', 'prepare', 'preflight', 'checkpoint_meta', 'expected_meta',
           'save_sisa_state', 'load_sisa_state', 'target_path', 'resolve_target',
           'model_field_changes', 'resolve_config']
