"""The study report: tables and plots of a sweep's (and a fake-unlearning run's) results.

Input: JSON-lines rows written by :mod:`jaxaudit.study.sweep` (``experiments/sweep.py``;
``kind: sweep``, one per data set × method × forget setting × seed) and optionally
by :mod:`jaxaudit.study.fakes` (``experiments/fake_unlearning.py``; ``kind: fake``),
whose names it shares through :mod:`jaxaudit.study.schema`. Output, written
atomically into one directory (:func:`jaxaudit.audit.report.atomic_write_dir`):

  report.md     tables + links to the plots
  report.html   the same content, self-contained (plots embedded as base64 PNG)
  *.png         decisions heat map, forgetting scores with intervals, accuracy
                against the retrained model, auditor agreement with U-LiRA
                (LiRA where U-LiRA was not run), cost bars, fake detection

The report is a pure function of the rows: the same table gives the same
Markdown (plots aside, whose bytes depend on matplotlib's version).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

from jaxaudit import io_utils
from jaxaudit.errors import ConfigError
from jaxaudit.study.schema import (AUDITOR_ORDER, FAKE_AUDITORS, FAMILY_ORDER, PEER_NAMES,
                                   fake_flagged, peer_not_forgotten)

# Decision categories of jaxaudit's audit, in legend order, with colours.
CATEGORIES = (
    ('forgotten', 'pass', '#4caf50'),
    ('inconclusive', 'inconcl.', '#bdbdbd'),
    ('remembers', 'remembers', '#e53935'),
    ('remembers_class', 'remembers class', '#b71c1c'),
    ('damaged', 'damaged', '#fb8c00'),
    ('collapse', 'collapse', '#8e24aa'),
    ('invalid_reference', 'invalid ref.', '#6d4c41'),
    ('diverged', 'diverged', '#212121'),
    ('error', 'error', '#90a4ae'),
)

# -----------------------------------------------------------------------------
# Loading.
# -----------------------------------------------------------------------------


def load_results(paths: str | Sequence[str]) -> list[dict]:
  """Rows (dicts) of one or more JSON-lines files, read by :func:`jaxaudit.io_utils.read_jsonl`.

  A last line without a newline or with invalid JSON (a sweep killed while
  writing) is ignored; invalid JSON elsewhere raises ConfigError, and so do a
  missing file, a row without ``key`` and no rows at all. Rows with a repeated
  ``key`` keep the first occurrence.
  """
  if isinstance(paths, str):
    paths = [paths]
  rows, seen = [], set()
  for path in paths:
    for i, row in enumerate(io_utils.read_jsonl(path, missing_ok=False)):
      if 'key' not in row:
        raise ConfigError(f'{path}: row {i + 1} is not a results row (no "key")')
      if row['key'] not in seen:
        seen.add(row['key'])
        rows.append(row)
  if not rows:
    raise ConfigError(f'no results rows in {", ".join(paths)}')
  return rows


# -----------------------------------------------------------------------------
# Row accessors.
# -----------------------------------------------------------------------------


def category(row: dict) -> str:
  """The decision category of jaxaudit's audit for a row."""
  if row.get('diverged'):
    return 'diverged'
  if row.get('error'):
    return 'error'
  o = row.get('ours') or {}
  d = o.get('decision')
  if d == 'not_forgotten':
    return o.get('direction') or 'remembers'
  return d or 'error'


def column(row: dict) -> str:
  return f'{row.get("entry", row.get("data", "?"))} / {row.get("forget", "?")}'


peer_nf = peer_not_forgotten   # whether a peer decided not_forgotten (None: none)


def ours_nf(row: dict) -> bool | None:
  """jaxaudit: True = not_forgotten, False = forgotten, None = other."""
  d = (row.get('ours') or {}).get('decision')
  return {'not_forgotten': True, 'forgotten': False}.get(d)


def _f(v, nd=3) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return '–'
  if isinstance(v, float):
    return f'{v:.{nd}g}'
  return str(v)


def _pct(v) -> str:
  return '–' if v is None else f'{100 * v:.1f}'


def _unique(seq: Iterable) -> list:
  out = []
  for s in seq:
    if s not in out:
      out.append(s)
  return out


# -----------------------------------------------------------------------------
# Tables.
# -----------------------------------------------------------------------------


def sort_rows(rows: list[dict]) -> list[dict]:
  """Sweep rows by data set / forget setting, method family, method, seed (stable)."""
  cols = {c: i for i, c in enumerate(_unique(column(r) for r in rows))}
  first = {m: i for i, m in enumerate(_unique(r.get('method') for r in rows))}

  def fam(r):
    f = r.get('family')
    return FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER)
  fam_of = {}
  for r in rows:
    fam_of.setdefault(r.get('method'), fam(r))
  return sorted(rows, key=lambda r: (cols[column(r)], fam_of[r.get('method')],
                                     first[r.get('method')], r.get('seed') or 0))


def study_tables(rows: list[dict]) -> dict[str, tuple[list[str], list[list[str]]]]:
  """The report's tables as (header, rows of strings), by name."""
  sweep = sort_rows([r for r in rows if r.get('kind', 'sweep') == 'sweep'])
  fake = [r for r in rows if r.get('kind') == 'fake']
  tables = {}
  if sweep:
    head = ['data / forget', 'seed', 'method', 'family', 'decision', 'p', 'AUC Du vs D_ref',
            'forgetting score [95% CI]', 'power', 'acc Dr Mu/retr.', 'acc Du Mu/retr.',
            'acc test Mu/retr.'] + list(PEER_NAMES)
    body = []
    for r in sweep:
      o = r.get('ours') or {}
      acc = r.get('accuracy') or {}
      mu, rt = acc.get('unlearned') or {}, acc.get('retrain') or {}
      ci = o.get('forgetting_score_ci') or [None, None]
      dec = category(r) if not r.get('error') else f'{category(r)}: {r["error"][:60]}'
      peers = []
      for p in PEER_NAMES:
        pr = (r.get('peers') or {}).get(p)
        if not pr:
          peers.append('')
        elif pr.get('error'):
          peers.append('error')
        else:
          d = pr.get('decision')
          peers.append(f'{_f(pr.get("score"))}' + (f' ({"NF" if d == "not_forgotten" else "F"})'
                                                     if d else ''))
      body.append([column(r), str(r.get('seed')), r.get('method', ''), r.get('family') or '',
                   dec, _f(o.get('p_value'), 2), _f(o.get('effect_auc')),
                   f'{_f(o.get("forgetting_score"), 2)} [{_f(ci[0], 2)}, {_f(ci[1], 2)}]'
                   if o else '–', _f(o.get('power'), 2),
                   f'{_pct(mu.get("retain"))}/{_pct(rt.get("retain"))}',
                   f'{_pct(mu.get("forget"))}/{_pct(rt.get("forget"))}',
                   f'{_pct(mu.get("test"))}/{_pct(rt.get("test"))}'] + peers)
    tables['cells'] = (head, body)
    tables['families'] = _family_table(sweep)
    tables['rates'] = _rates_table(sweep)
    tables['agreement'] = _agreement_table(sweep)
    tables['cost'] = _cost_table(sweep)
  if fake:
    tables['fakes'] = _fake_table(fake)
  return tables


RATE_COLUMNS = ('cells', 'errors', 'forgotten', 'not_forgotten', 'inconclusive',
                'population_mia_not_forgotten', 'ulira_not_forgotten')


def _rates_table(rows):
  """Per data set / forget setting × family, over seeds: our verdict rates with exact
  (Clopper–Pearson) intervals and the peers' not_forgotten counts
  (:func:`jaxaudit.study.tables.verdict_rates`)."""
  from jaxaudit.study import tables as tables_lib
  body = []
  for col in _unique(column(r) for r in rows):
    for v in tables_lib.verdict_rates([r for r in rows if column(r) == col], by='family'):
      body.append([col, str(v['family'])] + [str(v[c]) for c in RATE_COLUMNS])
  return ['data / forget', 'family'] + list(RATE_COLUMNS), body


def _family_table(rows):
  fams = _unique((r.get('family') or '?') for r in sort_rows(rows))
  cats = [c for c, _, _ in CATEGORIES]
  body = []
  for fam in fams:
    rs = [r for r in rows if (r.get('family') or '?') == fam]
    counts = {c: sum(category(r) == c for r in rs) for c in cats}
    dacc = [((r.get('accuracy') or {}).get('unlearned') or {}).get('test', np.nan)
            - ((r.get('accuracy') or {}).get('retrain') or {}).get('test', np.nan) for r in rs
            if (r.get('accuracy') or {}).get('unlearned')]
    body.append([fam, str(len(rs))] + [str(counts[c]) if counts[c] else '' for c in cats]
                + [_f(100 * float(np.nanmean(dacc)), 2) if dacc else '–'])
  head = (['family', 'cells'] + [lbl for _, lbl, _ in CATEGORIES]
          + ['mean Δ test acc vs retrain (pts)'])
  return head, body


def _reference_name(row) -> str | None:
  if peer_nf(row, 'ulira') is not None:
    return 'ulira'
  if peer_nf(row, 'lira') is not None:
    return 'lira'
  return None


def agreement(rows: list[dict]) -> dict[str, dict[str, Any]]:
  """Per auditor: cells compared with the reference (U-LiRA, else LiRA) and agreements."""
  out = {}
  for a in ('ours',) + tuple(p for p in PEER_NAMES if p not in ('neurips23',)):
    n = agree = 0
    skipped = 0
    for r in rows:
      ref = _reference_name(r)
      if ref is None or a == ref:
        continue
      mine = ours_nf(r) if a == 'ours' else peer_nf(r, a)
      if mine is None:
        skipped += (a == 'ours' and bool(r.get('ours')))
        continue
      n += 1
      agree += mine == peer_nf(r, ref)
    if n or skipped:
      out[a] = dict(cells=n, agree=agree, rate=agree / n if n else None, no_decision=skipped)
  return out


def _agreement_table(rows):
  ag = agreement(rows)
  ref_counts = {k: sum(_reference_name(r) == k for r in rows) for k in ('ulira', 'lira')}
  body = [[a, str(v['cells']), str(v['agree']), _f(v['rate'], 2), str(v['no_decision'])]
          for a, v in ag.items()]
  head = ['auditor', 'cells', 'agree with reference', 'agreement',
          'no decision (ours: inconclusive etc.)']
  return head, body, ref_counts


def cost_summary(rows: list[dict]) -> list[dict]:
  """Per (entry, auditor): mean models, FLOPs and wall time (also as ratios to one retrain)."""
  acc: dict = {}
  for r in rows:
    for name, c in (r.get('cost') or {}).items():
      a = acc.setdefault((r.get('entry', '?'), name), {'models': [], 'flops': [],
                                                       'flops_ratio': [], 'wall_s': [],
                                                       'wall_ratio': [], 'note': set()})
      for k in ('models', 'flops', 'flops_ratio', 'wall_s', 'wall_ratio'):
        if c.get(k) is not None:
          a[k].append(float(c[k]))
      if c.get('flops_note'):
        a['note'].add(c['flops_note'])
  out = []
  for (entry, name), a in acc.items():
    out.append(dict(entry=entry, auditor=name, cells=len(a['wall_s']),
                    **{k: float(np.mean(v)) if v else None for k, v in a.items() if k != 'note'},
                    note='; '.join(sorted(a['note']))))
  order = {n: i for i, n in enumerate(('retrain',) + AUDITOR_ORDER)}
  out.sort(key=lambda d: (d['entry'], order.get(d['auditor'], 99)))
  return out


def _cost_table(rows):
  cs = cost_summary(rows)
  head = ['data', 'auditor', 'cells', 'models trained', 'FLOPs', 'FLOPs / retrain', 'wall (s)',
          'wall / retrain', 'wall / U-LiRA', 'note']
  ulira = {c['entry']: c['wall_s'] for c in cs if c['auditor'] == 'ulira'}
  body = []
  for c in cs:
    u = ulira.get(c['entry'])
    body.append([c['entry'], c['auditor'], str(c['cells']), _f(c['models'], 3),
                 _f(c['flops'], 3), _f(c['flops_ratio'], 3), _f(c['wall_s'], 3),
                 _f(c['wall_ratio'], 3), _f(c['wall_s'] / u, 3) if u else '–', c['note']])
  return head, body


def _fake_names(rows) -> list:
  """The fakes of ``rows``: the control (``honest_retrain``) first, then by name, so the
  table does not depend on the order in which a resumed run wrote its rows."""
  names = sorted(n for n in _unique(r.get('fake') for r in rows) if n is not None)
  return sorted(names, key=lambda n: n != 'honest_retrain')


def _fake_table(rows):
  fakes = _fake_names(rows)
  head = ['fake', 'seeds'] + [f'{a} flagged' for a in FAKE_AUDITORS] + [
      'ours not_forgotten', 'ours decisions', 'acc Du', 'acc test']
  body = []
  for f in fakes:
    rs = [r for r in rows if r.get('fake') == f]
    line = [f, str(len(rs))]
    for a in FAKE_AUDITORS:
      v = [fake_flagged(r, a) for r in rs]
      v = [x for x in v if x is not None]
      line.append(f'{sum(v)}/{len(v)}' if v else '–')
    nf = [r for r in rs if (r.get('ours') or {}).get('decision') == 'not_forgotten']
    line.append(f'{len(nf)}/{len(rs)}')
    cats = {}
    for r in rs:
      cats[category(r)] = cats.get(category(r), 0) + 1
    line.append(', '.join(f'{k} {v}' for k, v in cats.items()))
    accs = [((r.get('accuracy') or {}).get('fake') or {}) for r in rs]
    for k in ('forget', 'test'):
      v = [a[k] for a in accs if a.get(k) is not None]
      line.append(_pct(float(np.mean(v))) if v else '–')
    body.append(line)
  return head, body


# -----------------------------------------------------------------------------
# Plots.
# -----------------------------------------------------------------------------


def _png(fig) -> bytes:
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
  plt.close(fig)
  return buf.getvalue()


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_decisions(rows: list[dict]) -> bytes:
  """Heat map: methods × (data set / forget setting), colour = majority decision."""
  plt = _plt()
  from matplotlib.colors import ListedColormap
  from matplotlib.patches import Patch
  methods = _unique(r['method'] for r in rows)
  cols = _unique(column(r) for r in rows)
  cats = [c for c, _, _ in CATEGORIES]
  grid = np.full((len(methods), len(cols)), np.nan)
  text = [[''] * len(cols) for _ in methods]
  for i, m in enumerate(methods):
    for j, c in enumerate(cols):
      rs = [r for r in rows if r['method'] == m and column(r) == c]
      if not rs:
        continue
      cs = [category(r) for r in rs]
      top = max(set(cs), key=lambda k: (cs.count(k), -cats.index(k)))
      grid[i, j] = cats.index(top)
      lbl = dict((c0, l0) for c0, l0, _ in CATEGORIES)[top]
      text[i][j] = lbl if len(rs) == 1 else f'{lbl} {cs.count(top)}/{len(rs)}'
  cmap = ListedColormap([col for _, _, col in CATEGORIES])
  fig, ax = plt.subplots(figsize=(1.9 + 1.7 * len(cols), 0.9 + 0.36 * len(methods)))
  ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=len(cats) - 0.5,
            aspect='auto')
  for i in range(len(methods)):
    for j in range(len(cols)):
      if text[i][j]:
        dark = grid[i, j] in (cats.index('remembers'), cats.index('collapse'),
                              cats.index('diverged'), cats.index('invalid_reference'))
        ax.text(j, i, text[i][j], ha='center', va='center', fontsize=7,
                color='white' if dark else 'black')
  ax.set_xticks(range(len(cols)), cols, rotation=20, ha='right', fontsize=8)
  ax.set_yticks(range(len(methods)), methods, fontsize=8)
  ax.set_title("jaxaudit's decision per method and data set (majority over seeds)", fontsize=9)
  used = sorted({int(v) for v in grid[np.isfinite(grid)]})
  ax.legend(handles=[Patch(color=CATEGORIES[k][2], label=CATEGORIES[k][1]) for k in used],
            loc='upper left', bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
  return _png(fig)


def plot_scores(rows: list[dict]) -> bytes:
  """Forgetting score with its bootstrap interval, per method, one panel per column."""
  plt = _plt()
  cols = _unique(column(r) for r in rows)
  methods = _unique(r['method'] for r in rows)
  fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols) + 1.2, 0.6 + 0.3 * len(methods)),
                           sharey=True, squeeze=False)
  lo_clip, hi_clip = -1.5, 2.5
  for ax, c in zip(axes[0], cols):
    for i, m in enumerate(methods):
      rs = [r for r in rows if r['method'] == m and column(r) == c and r.get('ours')]
      for k, r in enumerate(rs):
        o = r['ours']
        s = o.get('forgetting_score')
        if s is None:
          continue
        ci = o.get('forgetting_score_ci') or [s, s]
        ci = [s if v is None else v for v in ci]
        y = i + (k - (len(rs) - 1) / 2) * 0.15
        colour = dict((c0, col) for c0, _, col in CATEGORIES)[category(r)]
        sc = float(np.clip(s, lo_clip, hi_clip))
        ax.errorbar(sc, y, xerr=[[max(sc - max(ci[0], lo_clip), 0)],
                                 [max(min(ci[1], hi_clip) - sc, 0)]],
                    fmt='o', ms=4, color=colour, ecolor=colour, capsize=2, lw=1)
    ax.axvline(0, color='#e53935', lw=0.8, ls='--')
    ax.axvline(1, color='#4caf50', lw=0.8, ls='--')
    ax.set_xlim(lo_clip - 0.1, hi_clip + 0.1)
    ax.set_title(c, fontsize=8)
    ax.set_xlabel('forgetting score (0 remembered, 1 unseen)', fontsize=7)
    ax.tick_params(labelsize=7)
  axes[0][0].set_yticks(range(len(methods)), methods, fontsize=8)
  axes[0][0].invert_yaxis()
  fig.suptitle(f'forgetting score with 95% bootstrap interval (clipped to [{lo_clip}, {hi_clip}]; '
               'colour = decision)', fontsize=9)
  return _png(fig)


def plot_accuracy(rows: list[dict]) -> bytes:
  """Accuracy of Mu minus the retrained reference on Dr, Du and test."""
  plt = _plt()
  cols = _unique(column(r) for r in rows)
  width = max(len(_unique(r['method'] for r in rows if column(r) == c)) for c in cols)
  fig, axes = plt.subplots(len(cols), 1, figsize=(1.5 + 0.55 * width, 2.3 * len(cols)),
                           squeeze=False)
  sets = (('retain', 'Dr', '#1e88e5'), ('forget', 'Du', '#e53935'), ('test', 'test', '#43a047'))
  for ax, c in zip(axes[:, 0], cols):
    methods = _unique(r['method'] for r in rows if column(r) == c)
    x = np.arange(len(methods))
    for k, (key, lbl, colour) in enumerate(sets):
      vals = []
      for m in methods:
        rs = [r for r in rows if r['method'] == m and column(r) == c
              and (r.get('accuracy') or {}).get('unlearned')]
        d = [100 * (r['accuracy']['unlearned'][key] - r['accuracy']['retrain'][key]) for r in rs
             if r['accuracy'].get('retrain')]
        vals.append(np.mean(d) if d else np.nan)
      ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=lbl, color=colour)
    ax.axhline(0, color='black', lw=0.6)
    ax.set_xticks(x, methods, rotation=35, ha='right', fontsize=7)
    ax.set_ylabel('Mu − retrain (pts)', fontsize=7)
    ax.set_title(c, fontsize=8)
    ax.tick_params(labelsize=7)
    lo = np.nanmin([v for v in ax.get_ylim()])
    ax.set_ylim(max(lo, -60), None)
  axes[0, 0].legend(fontsize=7, ncol=3)
  fig.suptitle('accuracy of the unlearned model against the retrained reference '
               '(bars below −60 clipped)', fontsize=9)
  fig.tight_layout()
  return _png(fig)


def plot_agreement(rows: list[dict]) -> bytes:
  plt = _plt()
  ag = agreement(rows)
  names = [a for a in AUDITOR_ORDER if a in ag and ag[a]['cells']]
  fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(len(names), 1), 2.8))
  vals = [ag[a]['rate'] for a in names]
  ax.bar(range(len(names)), vals, color=['#1e88e5' if a == 'ours' else '#90a4ae' for a in names])
  for i, a in enumerate(names):
    ax.text(i, vals[i] + 0.02, f'{ag[a]["agree"]}/{ag[a]["cells"]}', ha='center', fontsize=7)
  ax.set_xticks(range(len(names)), names, rotation=20, ha='right', fontsize=8)
  ax.set_ylim(0, 1.12)
  ax.set_ylabel('agreement', fontsize=8)
  ax.set_title('decision agreement with U-LiRA (LiRA where U-LiRA was not run)', fontsize=9)
  return _png(fig)


def plot_cost(rows: list[dict]) -> bytes:
  plt = _plt()
  cs = cost_summary(rows)
  entries = _unique(c['entry'] for c in cs)
  fig, axes = plt.subplots(1, len(entries), figsize=(3.6 * len(entries) + 0.5, 3.0),
                           squeeze=False)
  for ax, e in zip(axes[0], entries):
    cc = [c for c in cs if c['entry'] == e and c['wall_ratio'] is not None]
    names = [c['auditor'] for c in cc]
    wr = [max(c['wall_ratio'], 1e-4) for c in cc]
    colours = ['#1e88e5' if n == 'ours' else '#757575' if n == 'retrain' else '#90a4ae'
               for n in names]
    ax.bar(range(len(cc)), wr, color=colours)
    for i, c in enumerate(cc):
      ax.text(i, wr[i] * 1.15, f'{c["models"]:.0f}m', ha='center', fontsize=6)
    ax.set_yscale('log')
    ax.axhline(1, color='black', lw=0.6, ls='--')
    ax.set_xticks(range(len(cc)), names, rotation=35, ha='right', fontsize=7)
    ax.set_title(e, fontsize=8)
    ax.set_ylabel('wall time / one retrain', fontsize=7)
    ax.tick_params(labelsize=7)
  fig.suptitle('cost of one audit request (bars: wall time ratio; labels: models trained)',
               fontsize=9)
  fig.tight_layout()
  return _png(fig)


def plot_fakes(rows: list[dict]) -> bytes:
  plt = _plt()
  fakes = _fake_names(rows)
  grid = np.full((len(fakes), len(FAKE_AUDITORS)), np.nan)
  for i, f in enumerate(fakes):
    rs = [r for r in rows if r.get('fake') == f]
    for j, a in enumerate(FAKE_AUDITORS):
      v = [fake_flagged(r, a) for r in rs]
      v = [x for x in v if x is not None]
      if v:
        grid[i, j] = np.mean(v)
  fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(FAKE_AUDITORS), 0.8 + 0.35 * len(fakes)))
  im = ax.imshow(np.ma.masked_invalid(grid), cmap='RdYlGn', vmin=0, vmax=1, aspect='auto')
  for i in range(len(fakes)):
    for j in range(len(FAKE_AUDITORS)):
      if np.isfinite(grid[i, j]):
        ax.text(j, i, f'{grid[i, j]:.2f}', ha='center', va='center', fontsize=7)
  ax.set_xticks(range(len(FAKE_AUDITORS)), FAKE_AUDITORS, rotation=20, ha='right', fontsize=8)
  ax.set_yticks(range(len(fakes)), fakes, fontsize=8)
  ax.set_title('fraction of seeds flagged (honest_retrain: false alarms)', fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.04)
  return _png(fig)


# -----------------------------------------------------------------------------
# Rendering.
# -----------------------------------------------------------------------------


def _md_table(head, body) -> str:
  esc = lambda s: str(s).replace('|', '\\|').replace('\n', ' ')
  lines = ['| ' + ' | '.join(esc(h) for h in head) + ' |', '|' + '---|' * len(head)]
  lines += ['| ' + ' | '.join(esc(c) for c in row) + ' |' for row in body]
  return '\n'.join(lines)


def _html_table(head, body) -> str:
  h = ''.join(f'<th>{html.escape(str(c))}</th>' for c in head)
  b = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>'
              for row in body)
  return f'<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


_CSS = ('body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;'
        'color:#222}table{border-collapse:collapse;font-size:12px;margin:1em 0}'
        'td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}'
        'img{max-width:100%}code,pre{background:#f6f6f6;padding:2px 4px}'
        'figcaption{font-size:12px;color:#555}')


class _Doc:
  """Blocks rendered to Markdown and to self-contained HTML."""

  def __init__(self):
    self.md: list[str] = []
    self.html: list[str] = []
    self.files: dict[str, bytes] = {}

  def heading(self, text: str, level: int = 2):
    self.md.append('#' * level + ' ' + text)
    self.html.append(f'<h{level}>{html.escape(text)}</h{level}>')

  def para(self, text: str):
    self.md.append(text)
    self.html.append(f'<p>{html.escape(text)}</p>')

  def code(self, text: str):
    self.md.append('```\n' + text + '\n```')
    self.html.append(f'<pre>{html.escape(text)}</pre>')

  def table(self, head, body):
    self.md.append(_md_table(head, body))
    self.html.append(_html_table(head, body))

  def image(self, name: str, data: bytes, caption: str):
    self.files[name] = data
    self.md.append(f'![{caption}]({name})\n\n*{caption}*')
    b64 = base64.b64encode(data).decode()
    self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                     f'{b64}"><figcaption>{html.escape(caption)}</figcaption></figure>')

  def render(self, title: str) -> dict[str, bytes]:
    md = '\n\n'.join(self.md) + '\n'
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title><style>{_CSS}</style></head><body>' + '\n'.join(self.html)
            + '</body></html>\n')
    files = dict(self.files)
    files['report.md'] = md.encode()
    files['report.html'] = page.encode()
    return files


def build_report(rows: list[dict], *, title: str = 'jaxaudit study report',
                 sources: Sequence[str] = (), plots: bool = True) -> dict[str, bytes]:
  """The report files (name → bytes) of a list of result rows."""
  sweep = sort_rows([r for r in rows if r.get('kind', 'sweep') == 'sweep'])
  fake = [r for r in rows if r.get('kind') == 'fake']
  tables = study_tables(rows)
  doc = _Doc()
  doc.heading(title, 1)
  entries = _unique(column(r) for r in sweep)
  doc.para(f'{len(sweep)} sweep cell(s) over {len(entries)} data set / forget setting(s), '
           f'{len(_unique(r["method"] for r in sweep))} method(s), seeds '
           f'{sorted(_unique(r.get("seed") for r in rows))}; {len(fake)} fake-unlearning row(s). '
           f'Source: {", ".join(sources) or "(rows)"}.')
  doc.para('Decisions of jaxaudit: pass = forgotten; remembers / damaged = not_forgotten with '
           'Du more / less familiar than unseen data; collapse = not_forgotten because Mu is '
           'less accurate on unseen data than the verifiers (trained on 15% of Dr); inconclusive = no evidence either way (too little power); diverged = '
           'the method produced NaN/inf outputs. Peers: F / NF = their decision rule '
           '(forgotten / not_forgotten); score = their headline number (MIA accuracy, AUC, '
           'KL, challenge score).')
  if sweep:
    doc.heading('Decisions per method and data set')
    if plots:
      doc.image('decisions.png', plot_decisions(sweep), 'decision per method × data set')
    head, body = tables['families']
    doc.para('Decisions by method family (cells per category):')
    doc.table(head, body)
    doc.para('Verdict rates over the seeds (initialisations) per family: forgotten k/n with '
             'its exact 95% interval; the peers\' not_forgotten counts beside them:')
    doc.table(*tables['rates'])
    doc.heading('Forgetting score with intervals')
    if plots:
      doc.image('scores.png', plot_scores(sweep), 'forgetting score with 95% interval')
    doc.heading('Accuracy against the retrained model')
    if plots:
      doc.image('accuracy.png', plot_accuracy(sweep), 'accuracy of Mu − retrained reference')
    doc.heading('Agreement with U-LiRA')
    head, body, ref_counts = tables['agreement']
    doc.para(f'Reference decision per cell: U-LiRA where it ran ({ref_counts["ulira"]} cells), '
             f'else LiRA ({ref_counts["lira"]} cells). jaxaudit counts when it decides '
             'forgotten / not_forgotten (inconclusive etc. excluded and counted).')
    if plots and body:
      doc.image('agreement.png', plot_agreement(sweep), 'agreement with U-LiRA')
    doc.table(head, body)
    doc.heading('Cost of one audit request')
    doc.para('Per auditor: models trained for the request, FLOPs (XLA cost analysis of one '
             'training step × steps, plus forward FLOPs × queries), wall time including the '
             'training of its models; ratios to one retrain from scratch of the same workdir, '
             'measured in the same run, and to U-LiRA where it ran.')
    if plots:
      doc.image('cost.png', plot_cost(sweep), 'cost per auditor')
    doc.table(*tables['cost'])
    doc.heading('All cells')
    doc.table(*tables['cells'])
    errs = [r for r in sweep if r.get('error')]
    if errs:
      doc.heading('Errors')
      doc.table(['cell', 'error'], [[r['key'], r['error']] for r in errs])
  if fake:
    doc.heading('Fake unlearning')
    doc.para('Flagged = jaxaudit decides anything but forgotten (no certificate); peers flag '
             'with their not_forgotten rule (heuristics: KS rule). honest_retrain is the control: '
             'its flags are false alarms.')
    if plots:
      doc.image('fakes.png', plot_fakes(fake), 'fake detection per auditor')
    doc.table(*tables['fakes'])
  return doc.render(title)


def render_report(results: str | Sequence[str], out_dir: str, *,
                  title: str = 'jaxaudit study report', plots: bool = True,
                  overwrite: bool = False) -> str:
  """Reads results file(s) and writes report.md / report.html / PNGs into out_dir atomically.

  An existing ``out_dir`` is replaced only if jaxaudit wrote it (or ``overwrite``).
  """
  from jaxaudit import io_utils
  from jaxaudit.audit.report import atomic_write_dir
  io_utils.check_replaceable(out_dir, overwrite=overwrite, what='--out directory')
  paths = [results] if isinstance(results, str) else list(results)
  rows = load_results(paths)
  try:
    files = build_report(rows, title=title, sources=[os.path.basename(p) for p in paths],
                         plots=plots)
  except (KeyError, TypeError) as e:
    raise ConfigError(f'{", ".join(paths)}: rows lack the fields of a jaxaudit sweep or fake '
                      f'results table ({type(e).__name__}: {e})') from None
  return atomic_write_dir(out_dir, files, overwrite=overwrite)
