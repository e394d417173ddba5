"""The audited model Mu as the audit sees it: white-box params or a black box.

* ``Target.from_params(model, params)``: a Flax model and its parameters.
* ``Target.from_fn(fn)``: any function ``fn(x: (n, *input_shape)) -> (n, C)`` logits
  (a served model, another framework...). Augmented neighbours can be queried.
* ``Target.from_logits_file(path)``: precomputed logits in an ``.npz`` with
  ``indices`` (n,) pool indices and ``logits`` (n, C); optionally
  ``test_indices``/``test_logits`` and, for neighbour queries, ``view_names``
  (A,) and ``view_logits`` (A, n, C) answering :func:`jaxaudit.audit.export_queries`.

Logits files are validated when loaded (one :class:`AuditError` naming the
array): ``indices``/``test_indices`` must be 1-D *integer* arrays of unique,
non-negative pool indices (float arrays are refused, even when their values are
integral: a truncated index would silently audit another record); ``logits``
(n, C) and ``test_logits`` (n_test, C) floating point with one row per index;
``view_names`` (A,) unique strings naming views of
:data:`jaxaudit.tasks.classification.VIEWS` other than ``identity``, given together
with ``view_logits`` (A, n, C) floating point, C equal to the logits'.

Non-finite values (NaN/inf) in a well-formed array are *outputs* of the model
(a diverged model answers NaN), not a malformed file: :meth:`Target.logits`
refuses them by default, and the audit runner asks for them
(``allow_nonfinite=True``) to turn them into a ``not_forgotten (collapse)`` verdict.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from jaxaudit import io_utils
from jaxaudit.errors import AuditError
from jaxaudit.tasks.classification import VIEWS, Classification


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
    table = io_utils.read_npz(path, AuditError, 'logits file')
    validate_logits_table(table, path)
    if 'view_names' in table:
      table['view_names'] = np.asarray(table['view_names']).astype(str)
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

  def logits(self, views_x: np.ndarray, ids: np.ndarray, views: tuple[str, ...], task,
             *, test: bool = False, allow_nonfinite: bool = False,
             min_records: int = 0) -> np.ndarray:
    """Outputs (A, n, *output_shape) of Mu on A views of n records ((A, n, C) logits).

    Args:
      views_x: (A, n, *input_shape) inputs (ignored for tables).
      ids: (n,) pool (or test) indices of the records.
      views: names of the A views.
      task: the :class:`jaxaudit.tasks.Task` that checks the outputs (an int C
        stands for classification with C classes).
      test: whether ids index the test split.
      allow_nonfinite: return NaN/inf logits instead of raising (the audit
        runner turns them into a verdict); shapes and dtypes are still checked.
      min_records: a Flax target evaluates as if n were at least this (a cap on
        n known to the caller: one compiled program for every request);
        ignored by functions and tables.
    Returns:
      (A, n, C) float32 logits.
    """
    if isinstance(task, (int, np.integer)):
      task = Classification(int(task))
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
      return task.check_outputs(np.stack(out), f'logits of {self.name}',
                                allow_nonfinite=allow_nonfinite)
    a, n = views_x.shape[:2]
    flat = views_x.reshape((a * n,) + views_x.shape[2:])
    if self.fn is not None:
      logits = np.asarray(self.fn(flat))
    else:
      from jaxaudit.train import predict_logits
      logits = predict_logits(task.query_model(self.model), self.params, flat,
                              min_records=a * int(min_records))
    if logits.shape[:1] != (a * n,):
      raise AuditError(f'{self.name} returned logits of shape {logits.shape} for {a * n} inputs')
    logits = task.check_outputs(logits, f'logits of {self.name}', allow_nonfinite=allow_nonfinite)
    return logits.reshape((a, n) + logits.shape[1:])


def check_index_array(table: dict, key: str, path: str) -> np.ndarray:
  """``table[key]`` checked as (n,) unique non-negative integer pool indices (AuditError
  naming ``path`` and ``key`` otherwise); returns it."""
  idx = np.asarray(table[key])
  if idx.ndim != 1 or idx.dtype.kind not in 'iu':
    raise AuditError(f'{path}: {key} must be a 1-D integer array of pool indices; got shape '
                     f'{idx.shape} dtype {idx.dtype} (float indices are refused: they would be '
                     'truncated to other records)')
  if idx.size and int(idx.min()) < 0:
    raise AuditError(f'{path}: {key} holds a negative index {int(idx.min())}')
  if len(np.unique(idx)) != len(idx):
    raise AuditError(f'{path}: {key} must hold unique pool indices '
                     f'({len(idx) - len(np.unique(idx))} duplicated)')
  return idx


def _check_logit_array(table: dict, key: str, path: str, shape_prefix: tuple[int, ...],
                       what: str) -> np.ndarray:
  lg = np.asarray(table[key])
  if lg.ndim != len(shape_prefix) + 1 or lg.shape[:len(shape_prefix)] != shape_prefix:
    raise AuditError(f'{path}: {key} must have shape {shape_prefix + ("C",)} ({what}); '
                     f'got {lg.shape}')
  if not np.issubdtype(lg.dtype, np.floating):
    raise AuditError(f'{path}: {key} must be a floating-point array, got dtype {lg.dtype}')
  if lg.shape[-1] < 2:
    raise AuditError(f'{path}: {key} needs at least 2 classes (columns), got {lg.shape[-1]}')
  return lg


def validate_logits_table(table: dict[str, np.ndarray], path: str = 'logits file') -> None:
  """Checks the arrays of a logits file (see the module docstring); raises AuditError.

  Args:
    table: array name -> array, as read from the ``.npz``: ``indices`` (n,) int,
      ``logits`` (n, C) float; optional ``test_indices`` (m,) int with
      ``test_logits`` (m, C) float; optional ``view_names`` (A,) str with
      ``view_logits`` (A, n, C) float.
    path: the file name used in messages.
  """
  for k in ('indices', 'logits'):
    if k not in table:
      raise AuditError(f'logits file {path} lacks the array {k!r} (has {sorted(table)})')
  idx = check_index_array(table, 'indices', path)
  lg = _check_logit_array(table, 'logits', path, (len(idx),), 'one row per index')
  c = lg.shape[-1]
  for a, b in (('test_indices', 'test_logits'), ('view_names', 'view_logits')):
    if (a in table) != (b in table):
      raise AuditError(f'{path}: {a} and {b} must be given together (has {sorted(table)})')
  if 'test_indices' in table:
    tidx = check_index_array(table, 'test_indices', path)
    tl = _check_logit_array(table, 'test_logits', path, (len(tidx),), 'one row per test index')
    if tl.shape[-1] != c:
      raise AuditError(f'{path}: test_logits have {tl.shape[-1]} classes, logits {c}')
  if 'view_names' in table:
    names = np.asarray(table['view_names'])
    if names.ndim != 1 or names.dtype.kind not in 'US':
      raise AuditError(f'{path}: view_names must be a 1-D array of strings; got shape '
                       f'{names.shape} dtype {names.dtype}')
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    if len(set(names)) != len(names):
      raise AuditError(f'{path}: view_names must be unique, got {names}')
    bad = [n for n in names if n not in VIEWS or n == 'identity']
    if bad:
      raise AuditError(f'{path}: unknown view name(s) {bad} in view_names (the exact view is '
                       f"'logits'; other views: {VIEWS[1:]})")
    vl = _check_logit_array(table, 'view_logits', path, (len(names), len(idx)),
                            '(view_names, indices)')
    if vl.shape[-1] != c:
      raise AuditError(f'{path}: view_logits have {vl.shape[-1]} classes, logits {c}')
