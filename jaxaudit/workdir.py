"""A jaxaudit work directory: its layout, its checks, and the configuration it remembers.

Layout (see :mod:`jaxaudit.pipeline`)::

  WORKDIR/.jaxaudit        marker: the directory was made by jaxaudit
  WORKDIR/config.json      the configuration its models were trained with
  WORKDIR/split.npz        the audit split
  WORKDIR/models/ verifiers/ audits/

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
from typing import Any, Iterable, Mapping

import ml_collections

from jaxaudit import io_utils
from jaxaudit.errors import ConfigError, OutputError

CONFIG_FILE = 'config.json'
SPLIT_FILE = 'split.npz'
SUBDIRS = ('models', 'verifiers', 'audits')
FILES = (CONFIG_FILE, SPLIT_FILE)
# Config fields that determine the workdir's split and models. Paths to the
# data (data_dir, npz) may move: the data fingerprint in every checkpoint
# guards their content instead.
MODEL_FIELDS = ('dataset', 'split', 'model', 'model_kwargs', 'train', 'seed', 'sisa',
                'train_retrain')


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
    if k not in a and k in b and k.startswith(('sisa.', 'train_retrain')):
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


__all__ = ['CONFIG_FILE', 'SPLIT_FILE', 'MODEL_FIELDS', 'check_workdir', 'saved_config', 'set_field',
           'model_field_changes', 'resolve_config']
