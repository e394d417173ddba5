"""The audited model Mu as the audit sees it: white-box params or a black box.

* ``Target.from_params(model, params)``: a Flax model and its parameters.
* ``Target.from_fn(fn)``: any function ``fn(x: (n, *input_shape)) -> (n, C)`` logits
  (a served model, another framework...). Augmented neighbours can be queried.
* ``Target.from_logits_file(path)``: precomputed logits in an ``.npz`` with
  ``indices`` (n,) pool indices and ``logits`` (n, C); optionally
  ``test_indices``/``test_logits`` and, for neighbour queries, ``view_names``
  (A,) and ``view_logits`` (A, n, C) answering :func:`jaxaudit.audit.export_queries`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from jaxaudit.audit.signals import check_logits
from jaxaudit.errors import AuditError


class Target:
  """Mu, queried for logits of records (and of their augmented views)."""

  def __init__(self, *, name: str = 'target', model=None, params=None,
               fn: Callable[[np.ndarray], Any] | None = None, table: dict | None = None):
    self.name = name
    self.model, self.params, self.fn, self.table = model, params, fn, table

  @classmethod
  def from_params(cls, model, params, name: str = 'target') -> 'Target':
    return cls(name=name, model=model, params=params)

  @classmethod
  def from_fn(cls, fn: Callable[[np.ndarray], Any], name: str = 'target') -> 'Target':
    if not callable(fn):
      raise AuditError('Target.from_fn needs a callable x -> logits')
    return cls(name=name, fn=fn)

  @classmethod
  def from_logits_file(cls, path: str, name: str | None = None) -> 'Target':
    if not os.path.isfile(path):
      raise AuditError(f'logits file {path} does not exist')
    try:
      with np.load(path, allow_pickle=False) as f:
        table = {k: f[k] for k in f.files}
    except Exception as e:
      raise AuditError(f'cannot read logits file {path}: {e}') from e
    for k in ('indices', 'logits'):
      if k not in table:
        raise AuditError(f'logits file {path} lacks the array {k!r} (has {sorted(table)})')
    idx = np.asarray(table['indices'])
    if idx.ndim != 1 or len(np.unique(idx)) != len(idx):
      raise AuditError(f'{path}: indices must be a 1-D array of unique pool indices')
    if table['logits'].shape[:1] != idx.shape:
      raise AuditError(f'{path}: logits {table["logits"].shape} do not match indices {idx.shape}')
    return cls(name=name or os.path.splitext(os.path.basename(path))[0], table=table)

  @property
  def is_table(self) -> bool:
    return self.table is not None

  def available_views(self) -> tuple[str, ...] | None:
    """Views a table answers (None: any view can be computed)."""
    if not self.is_table:
      return None
    if 'view_names' in self.table:
      return ('identity',) + tuple(str(v) for v in self.table['view_names'] if str(v) != 'identity')
    return ('identity',)

  def _lookup(self, ids: np.ndarray, test: bool) -> np.ndarray:
    key_i, key_l = ('test_indices', 'test_logits') if test else ('indices', 'logits')
    if key_i not in self.table:
      raise AuditError(f'the logits file of {self.name} has no {key_l}')
    pos = {int(i): p for p, i in enumerate(self.table[key_i])}
    missing = [int(i) for i in ids if int(i) not in pos]
    if missing:
      raise AuditError(f'the logits file of {self.name} lacks {len(missing)} requested '
                       f'record(s), e.g. {missing[:5]}')
    return np.asarray([pos[int(i)] for i in ids])

  def logits(self, views_x: np.ndarray, ids: np.ndarray, views: tuple[str, ...], num_classes: int,
             *, test: bool = False) -> np.ndarray:
    """Logits (A, n, C) of Mu on A views of n records.

    Args:
      views_x: (A, n, *input_shape) inputs (ignored for tables).
      ids: (n,) pool (or test) indices of the records.
      views: names of the A views.
      num_classes: C, checked.
      test: whether ids index the test split.
    """
    if self.is_table:
      rows = self._lookup(ids, test)
      out = []
      for v in views:
        if v == 'identity':
          out.append(self.table['test_logits' if test else 'logits'][rows])
        else:
          names = [str(n) for n in self.table.get('view_names', [])]
          if v not in names:
            raise AuditError(f'the logits file of {self.name} has no view {v!r}')
          out.append(self.table['view_logits'][names.index(v)][rows])
      return check_logits(np.stack(out), num_classes, f'logits of {self.name}')
    a, n = views_x.shape[:2]
    flat = views_x.reshape((a * n,) + views_x.shape[2:])
    if self.fn is not None:
      logits = np.asarray(self.fn(flat))
    else:
      from jaxaudit.train import predict_logits
      logits = predict_logits(self.model, self.params, flat)
    if logits.shape[:1] != (a * n,):
      raise AuditError(f'{self.name} returned logits of shape {logits.shape} for {a * n} inputs')
    logits = check_logits(logits, num_classes, f'logits of {self.name}')
    return logits.reshape(a, n, num_classes)
