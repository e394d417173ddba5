"""The plan of a sweep: its cells and the pipeline config of each workdir.

A sweep config (``experiments/configs/sweep_local.py``) names entries (a data
set × model, each with its pipeline config), forget settings, seeds and
methods. A :class:`Cell` is one (entry, forget setting, seed, method); the
cells of one (entry, forget setting, seed) share a workdir (a *group*).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxaudit.errors import ConfigError


class Cell(NamedTuple):
  """One cell of the sweep: (entry, forget setting, seed, method)."""
  entry: str
  forget: str
  seed: int
  method: str

  @property
  def key(self) -> str:
    """The row key ``ENTRY/FORGET/sSEED/METHOD``."""
    return f'{self.entry}/{self.forget}/s{self.seed}/{self.method}'

  @property
  def group(self) -> tuple[str, str, int]:
    """(entry, forget, seed): the workdir the cell shares with its group."""
    return (self.entry, self.forget, self.seed)


def as_list(value: Any, cast: Callable = str) -> list:
  """A comma-separated string, a scalar or a sequence as a list of ``cast`` values."""
  if value is None:
    return []
  if isinstance(value, str):
    return [cast(v.strip()) for v in value.split(',') if v.strip()]
  if isinstance(value, (int, np.integer)):
    return [cast(value)]
  return [cast(v) for v in value]


def parse_forget(setting: str) -> tuple[str, Any]:
  """``random10`` → ('random', 0.10); ``class3`` / ``class3+5`` → ('classes', (3, 5)).

  Raises:
    ConfigError: not ``randomPCT`` (0 < PCT < 100) nor ``classK[+K...]``.
  """
  s = setting.strip()
  try:
    if s.startswith('random'):
      pct = float(s[len('random'):])
      if not 0 < pct < 100:
        raise ValueError
      return 'random', pct / 100.0
    if s.startswith('class'):
      classes = tuple(int(v) for v in s[len('class'):].split('+') if v)
      if not classes:
        raise ValueError
      return 'classes', classes
  except ValueError:
    pass
  raise ConfigError(f'forget setting {setting!r}: use randomPCT (e.g. random10) or classK '
                    '(e.g. class3, class3+5)')


def entry_names(config) -> list[str]:
  """The entries of ``config.datasets`` (each must be in ``config.entries``)."""
  names = as_list(config.datasets)
  for n in names:
    if n not in config.entries:
      raise ConfigError(f'datasets lists {n!r} but config.entries has only '
                        f'{sorted(config.entries.keys())}')
  return names


def entry_methods(config, entry: str) -> list[str]:
  """The methods of one entry: its own ``methods``, else ``config.methods``."""
  e = config.entries[entry]
  own = as_list(e.get('methods', ''))
  return own or as_list(config.methods)


def plan_cells(config) -> list[Cell]:
  """Every cell of the sweep, in run order (grouped by workdir)."""
  cells = []
  for entry in entry_names(config):
    e = config.entries[entry]
    forgets = as_list(e.get('forget_settings', '')) or as_list(config.forget_settings)
    for f in forgets:
      parse_forget(f)
    for seed in as_list(config.seeds, int):
      for f in forgets:
        for m in entry_methods(config, entry):
          cells.append(Cell(entry, f, seed, m))
  return cells


def cell_config(config, entry: str, forget: str, seed: int):
  """The pipeline config (a new ConfigDict) of one workdir (entry × forget setting × seed)."""
  c = copy.deepcopy(config.entries[entry].config)
  c.seed = int(seed)
  c.split.seed = int(seed)
  mode, value = parse_forget(forget)
  if mode == 'random':
    c.split.forget_fraction = float(value)
    c.split.forget_size = None
    c.split.forget_classes = None
  else:
    c.split.forget_classes = ','.join(str(v) for v in value)
    c.split.forget_size = None
  c.train_retrain = True
  return c


def base_method(config, method: str) -> str:
  """The registered method behind a name (``config.method_aliases`` maps variants)."""
  aliases = config.get('method_aliases')
  return str(aliases[method]) if aliases is not None and method in aliases else method


def tuned_dir(config, entry: str) -> str:
  """The workdir whose ``jaxaudit tune`` results the entry's methods use ('' for none):
  the entry's ``tuned_dir``, else the config's."""
  own = config.entries[entry].get('tuned_dir')
  return str(own if own else (config.get('tuned_dir') or ''))


def method_hparams(config, entry: str, method: str) -> dict:
  """Hyper-parameters of ``method``: the tuned ones (:func:`tuned_dir`; registered methods
  only, not aliases, which are deliberate variants), then the config's, then the entry's."""
  hp = {}
  where = tuned_dir(config, entry)
  if where and base_method(config, method) == method:
    from jaxaudit.tune import tuned_hparams
    hp.update(tuned_hparams(where, method))
  for src in (config.get('method_hparams'), config.entries[entry].get('method_hparams')):
    if src is not None and method in src:
      hp.update(src[method].to_dict() if hasattr(src[method], 'to_dict') else dict(src[method]))
  return hp


def peer_settings(config, entry: str) -> dict:
  """The peer settings (``config.peers``, updated by the entry's ``peers``)."""
  p = config.peers.to_dict()
  own = config.entries[entry].get('peers')
  if own is not None:
    p.update(own.to_dict())
  return p


def applies(setting: Any, method: str) -> bool:
  """Whether a method list setting (``'all'`` or names) includes ``method``."""
  names = as_list(setting)
  return 'all' in names or method in names


def group_dir(workdir: str, group: tuple[str, str, int]) -> str:
  """The pipeline workdir of a group: ``WORKDIR/runs/ENTRY-FORGET-sSEED``."""
  entry, forget, seed = group
  return os.path.join(workdir, 'runs', f'{entry}-{forget}-s{seed}')
