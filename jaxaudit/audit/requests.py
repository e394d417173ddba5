"""Deletion-request files and the stream report.

A requests file is JSON lines, one request a line::

  {"id": "user-17", "records": [12, 873, 4410]}     # pool indices of D
  {"id": "user-18", "groups": [18]}                 # group ids (with a groups file)

:func:`read_requests` checks the whole file before any work starts (one
clear error naming the line). Verdicts are appended to ``verdicts.jsonl``
(one line per request, fsynced: an interrupted run resumes after the last
finished batch); :func:`summary` and :func:`summary_markdown` make the
report: the verdict table, a histogram of the requests' p-values and the
flagged records per request.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from jaxaudit import io_utils
from jaxaudit.errors import ConfigError

VERDICTS = 'verdicts.jsonl'


def read_requests(path: str, *, train: np.ndarray, groups: np.ndarray | None = None
                  ) -> list[tuple[str, np.ndarray]]:
  """Reads and validates a requests file.

  Args:
    path: the JSON-lines file.
    train: (n,) pool indices of D (every record of a request must be in D).
    groups: (n_pool,) group id per pool record, needed for ``groups`` requests.
  Returns:
    (id, sorted unique pool indices of the request's records) per line.
  Raises:
    ConfigError: naming the file and line of the first problem.
  """
  if not os.path.isfile(path):
    raise ConfigError(f'requests file {path} does not exist')
  in_d = np.zeros(int(np.max(train)) + 1 if len(train) else 0, bool)
  in_d[np.asarray(train, np.int64)] = True
  out, seen = [], set()
  with open(path, encoding='utf-8') as f:
    for ln, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f'{path}:{ln}'
      try:
        obj = json.loads(line)
      except ValueError as e:
        raise ConfigError(f'{where}: not valid JSON ({e.msg})') from None
      if not isinstance(obj, dict) or 'id' not in obj or (('records' in obj) == ('groups' in obj)):
        raise ConfigError(f'{where}: a request is {{"id": ..., "records": [...]}} or '
                          '{"id": ..., "groups": [...]}')
      rid = str(obj['id'])
      if rid in seen:
        raise ConfigError(f'{where}: request id {rid!r} appears twice')
      seen.add(rid)
      key = 'records' if 'records' in obj else 'groups'
      vals = obj[key]
      if not isinstance(vals, list) or not vals or not all(
          isinstance(v, int) and not isinstance(v, bool) for v in vals):
        raise ConfigError(f'{where}: "{key}" must be a non-empty list of integers')
      vals = np.asarray(vals, np.int64)
      if key == 'groups':
        if groups is None:
          raise ConfigError(f'{where}: "groups" requests need a groups file (--groups)')
        recs = np.flatnonzero(np.isin(groups, vals))
        recs = recs[recs < len(in_d)]
        recs = recs[in_d[recs]]
        missing = np.setdiff1d(vals, groups[recs])
        if missing.size:
          raise ConfigError(f'{where}: group(s) {missing[:5].tolist()} have no record in D')
      else:
        recs = np.unique(vals)
        ok = (recs >= 0) & (recs < len(in_d))
        ok[ok] = in_d[recs[ok]]
        bad = recs[~ok]
        if bad.size:
          raise ConfigError(f'{where}: record(s) {bad[:5].tolist()} are not in the training '
                            'set D')
      out.append((rid, np.unique(recs)))
  if not out:
    raise ConfigError(f'requests file {path} holds no request')
  return out


def read_groups(path: str, n_pool: int) -> np.ndarray:
  """A groups file: ``.npy`` or ``.npz`` (key ``groups``) of (n_pool,) integer group ids."""
  if not os.path.isfile(path):
    raise ConfigError(f'groups file {path} does not exist')
  try:
    arr = np.load(path, allow_pickle=False)
    if isinstance(arr, np.lib.npyio.NpzFile):
      if 'groups' not in arr.files:
        raise ConfigError(f'groups file {path} has no array "groups"')
      arr = arr['groups']
  except (OSError, ValueError) as e:
    raise ConfigError(f'groups file {path} is not a readable .npy/.npz ({e})') from None
  if arr.shape != (n_pool,) or not np.issubdtype(arr.dtype, np.integer):
    raise ConfigError(f'groups file {path} must hold ({n_pool},) integers (one group id per '
                      f'pool record); got {arr.dtype} {arr.shape}')
  return arr.astype(np.int64)


def summary(results: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any]:
  """The stream's summary: counts per decision, p-value histogram, flagged records."""
  decisions = [r['decision'] for r in results]
  p = np.asarray([r['p_value'] for r in results], np.float64)
  edges = np.array([0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
  hist, _ = np.histogram(p, bins=edges)
  return dict(requests=len(results), alpha=alpha,
              decisions={d: decisions.count(d) for d in ('not_forgotten', 'forgotten',
                                                         'inconclusive')},
              p_histogram=dict(edges=edges.tolist(), counts=hist.tolist()),
              flagged={r['id']: r['flagged'] for r in results if r['flagged']},
              records=int(sum(r['n_records'] for r in results)),
              warnings=[f'{r["id"]}: {r["warning"]}' for r in results if r.get('warning')])


def summary_markdown(s: dict[str, Any], target: str) -> str:
  """The summary as Markdown."""
  lines = [f'# Deletion requests audited on {target}', '',
           f'{s["requests"]} requests ({s["records"]} records), α = {s["alpha"]} per request.',
           '', '| decision | requests |', '|---|---|']
  lines += [f'| {d} | {n} |' for d, n in s['decisions'].items()]
  lines += ['', '## p-values of the requests (Simes over their records)', '',
            '| p in | requests |', '|---|---|']
  e = s['p_histogram']['edges']
  lines += [f'| ({e[i]:g}, {e[i + 1]:g}] | {c} |' for i, c in enumerate(s['p_histogram']['counts'])]
  lines += ['', '## Records flagged (BH) per request', '']
  lines += [f'- {rid}: {recs}' for rid, recs in s['flagged'].items()] or ['(none)']
  if s['warnings']:
    lines += ['', '## Warnings', ''] + [f'- {w}' for w in s['warnings']]
  return '\n'.join(lines) + '\n'


def done_ids(out_dir: str) -> set[str]:
  """Ids already in ``out_dir/verdicts.jsonl`` (a truncated last line is repaired)."""
  path = os.path.join(out_dir, VERDICTS)
  return {str(r['id']) for r in io_utils.read_jsonl(path, repair=True, missing_ok=True)}
