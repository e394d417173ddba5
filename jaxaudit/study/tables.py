"""Plain-text tables and durations printed by the experiment scripts."""

from __future__ import annotations

from typing import Any, Sequence


def fmt_duration(s: float) -> str:
  """Seconds as ``1h02m`` (an hour or more) or ``3m05s``."""
  s = max(0, int(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def format_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
  """A Markdown table of ``rows`` (dicts) with columns ``cols`` (floats to 3 digits)."""
  def fmt(v):
    if isinstance(v, float):
      return f'{v:.3g}'
    return '' if v is None else str(v)
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  lines += ['| ' + ' | '.join(fmt(r.get(c)) for c in cols) + ' |' for r in rows]
  return '\n'.join(lines)


def verdict(row: dict) -> str:
  """A row's error, else jaxaudit's decision with its direction (``'?'``: no audit)."""
  ours = row.get('ours') or {}
  return row.get('error') or (ours.get('decision', '?') +
                              (f' ({ours["direction"]})' if ours.get('direction') else ''))


def decision_summary(rows: Sequence[dict]) -> str:
  """The sweep rows' decisions, p-values, scores and accuracies as a Markdown table."""
  lines = []
  for r in rows:
    if r.get('kind', 'sweep') != 'sweep':
      continue
    o = r.get('ours') or {}
    acc = (r.get('accuracy') or {}).get('unlearned') or {}
    d = r.get('error') or (o.get('decision', '') + (f' ({o["direction"]})' if o.get('direction')
                                                    else ''))
    lines.append(dict(key=r['key'], decision=d, p=o.get('p_value'),
                      score=o.get('forgetting_score'), acc_Du=acc.get('forget'),
                      acc_test=acc.get('test')))
  return format_table(lines, ['key', 'decision', 'p', 'score', 'acc_Du', 'acc_test'])
