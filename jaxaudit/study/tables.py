"""Plain-text tables and durations printed by the experiment scripts."""

from __future__ import annotations

from typing import Any, Sequence

from jaxaudit.study import schema


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


def verdict_rates(rows: Sequence[dict], by: str = 'method') -> list[dict[str, Any]]:
  """Per method (or ``by='family'``) over a sweep's seeds: how often our audit said what.

  Returns one dict per group, in first-appearance order: ``cells`` (rows without error),
  ``errors``, ``forgotten`` as 'k/n' with its exact 95% (Clopper–Pearson) interval,
  ``not_forgotten`` with its directions, ``inconclusive`` (and any other decision), the
  population MIA's and U-LiRA's not_forgotten counts (U-LiRA: of the cells it audited) and
  the mean accuracy of Mu on Du.
  """
  import collections
  from jaxaudit.audit.stats import clopper_pearson
  groups: dict[str, list[dict]] = collections.OrderedDict()
  for r in rows:
    groups.setdefault(str(r.get(by)), []).append(r)
  out = []
  for name, rs in groups.items():
    ok = [r for r in rs if not r.get('error') and r.get('ours')]
    dec = collections.Counter(r['ours']['decision'] for r in ok)
    dirs = collections.Counter(r['ours'].get('direction') for r in ok
                               if r['ours']['decision'] == 'not_forgotten')
    lo, hi = clopper_pearson(dec['forgotten'], len(ok)) if ok else (float('nan'),) * 2
    pop = sum(1 for r in ok if schema.peer_not_forgotten(r, 'population_mia'))
    ulira = [schema.peer_not_forgotten(r, 'ulira') for r in ok]
    ulira = [u for u in ulira if u is not None]
    accs = [((r.get('accuracy') or {}).get('unlearned') or {}).get('forget') for r in ok]
    accs = [a for a in accs if a is not None]
    out.append({by: name, 'family': rs[0].get('family'), 'cells': len(ok),
                'errors': len(rs) - len(ok),
                'forgotten': f"{dec['forgotten']}/{len(ok)} [{lo:.2f}, {hi:.2f}]",
                'not_forgotten': f"{dec['not_forgotten']} (" + ', '.join(
                    f'{k} {v}' for k, v in sorted(dirs.items(), key=lambda kv: str(kv[0]))) + ')',
                'inconclusive': len(ok) - dec['forgotten'] - dec['not_forgotten'],
                'population_mia_not_forgotten': f'{pop}/{len(ok)}',
                'ulira_not_forgotten': f'{sum(ulira)}/{len(ulira)}' if ulira else '–',
                'acc_du': sum(accs) / len(accs) if accs else None})
  return out
