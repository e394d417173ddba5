r"""Fake-unlearning robustness under a protocol that cannot tune to its own test (issue 17).

The protocol is a list of *stages* (``config.protocol.stages``), each
``PHASE/ENTRY/FORGET/SEEDS/FAKES``: a phase (``development`` or
``confirmation``), a sweep entry (data set × model × audit settings), a forget
setting, a seed range (``0-4``) and the fakes (``all``, ``control`` = the
honest retrain and M itself, or a comma list with ``+``). Every stage runs
:func:`jaxaudit.study.fakes.run_fakes` in its own workdir
(``WORKDIR/PHASE-ENTRY``); each audit stores the per-record statistics of Du
and D_ref (``fake_statistics/FAKE.npz`` in the group's workdir), so that a
*family* of record statistics (:mod:`jaxaudit.audit.evidence`) can be
evaluated afterwards without re-running a model (:func:`family_verdict`, the
same family test, power estimate and decision ladder as the audit).

Selection rule (fixed before any confirmation row was read): among
:data:`CANDIDATE_FAMILIES`, the family with the highest *minimum* detection
rate over the fakes on the development rows; ties go to the lower honest
false-alarm rate, then to the smaller family. The confirmation table reports
the chosen family (and, beside it, the first audits' φ family) on the
confirmation stages only.
"""

from __future__ import annotations

import copy
import os
from typing import Callable

import numpy as np

from jaxaudit import io_utils
from jaxaudit.audit import decision as decision_lib
from jaxaudit.audit import evidence
from jaxaudit.audit import stats
from jaxaudit.study import cells as cells_lib
from jaxaudit.study.schema import FAKES

PHASES = ('development', 'confirmation')
CONTROL = ('honest_retrain', 'noop')
# Families compared on the development rows (names from jaxaudit.audit.evidence).
CANDIDATE_FAMILIES = {
    'phi': evidence.PHI_STATISTICS,
    'phi+correct': evidence.PHI_STATISTICS + ('correct',),
    'phi+kl': evidence.PHI_STATISTICS + ('kl', 'kl_neighbours'),
    'phi+correct+kl': evidence.PHI_STATISTICS + ('correct', 'kl'),
    'all': evidence.PHI_STATISTICS + ('correct', 'kl', 'kl_neighbours'),
}


def parse_stage(spec: str) -> dict:
  """``PHASE/ENTRY/FORGET/SEEDS/FAKES`` -> dict(phase, entry, forget, seeds [int], fakes [str])."""
  parts = spec.strip().split('/')
  if len(parts) != 5:
    raise ValueError(f'a stage is PHASE/ENTRY/FORGET/SEEDS/FAKES, got {spec!r}')
  phase, entry, forget, seeds, fakes = parts
  if phase not in PHASES:
    raise ValueError(f'stage phase must be one of {PHASES}, got {phase!r}')
  if '-' in seeds:
    a, b = (int(v) for v in seeds.split('-'))
    seed_list = list(range(a, b + 1))
  else:
    seed_list = [int(v) for v in seeds.split(',')]
  if fakes == 'all':
    names = list(FAKES)
  elif fakes == 'control':
    names = list(CONTROL)
  else:
    names = fakes.split('+')
  unknown = [n for n in names if n not in FAKES]
  if unknown or not seed_list:
    raise ValueError(f'stage {spec!r}: unknown fakes {unknown} or no seeds')
  return dict(phase=phase, entry=entry, forget=forget, seeds=seed_list, fakes=names)


def stages(config) -> list[dict]:
  """The protocol's stages, parsed (``config.protocol.stages``: ';'-separated)."""
  return [parse_stage(s) for s in str(config.protocol.stages).split(';') if s.strip()]


def stage_dir(workdir: str, stage: dict) -> str:
  """Where a stage's groups and results live: ``WORKDIR/PHASE-ENTRY-FORGET``."""
  return os.path.join(workdir, f'{stage["phase"]}-{stage["entry"]}-{stage["forget"]}')


def run_stage(config, workdir: str, stage: dict, log: Callable[[str], None] = print
              ) -> list[dict]:
  """Runs (or resumes) one stage; returns the rows of its results file, each with
  ``stage_dir`` and ``phase`` added (not stored)."""
  from jaxaudit.study import fakes as fakes_lib
  c = copy.deepcopy(config)
  c.fake.entry, c.fake.forget = stage['entry'], stage['forget']
  c.fake.fakes = ','.join(stage['fakes'])
  sd = stage_dir(workdir, stage)
  rows = fakes_lib.run_fakes(c, sd, stage['seeds'], os.path.join(sd, 'fake_results.jsonl'),
                             log=log)
  keys = {f'{stage["entry"]}/{stage["forget"]}/s{s}/fake:{n}' for s in stage['seeds']
          for n in stage['fakes']}
  return [dict(r, stage_dir=sd, phase=stage['phase']) for r in rows if r.get('key') in keys]


def load_statistics(row: dict) -> dict[str, dict[str, np.ndarray]] | None:
  """The per-record statistics an audit stored: {'forget': {name: (n_du,)}, 'ref': {...}}."""
  rel = row.get('statistics_file')
  if not rel:
    return None
  wd = cells_lib.group_dir(row['stage_dir'], (row['entry'], row['forget'], int(row['seed'])))
  arrays = io_utils.read_npz(os.path.join(wd, rel))
  out: dict[str, dict[str, np.ndarray]] = {'forget': {}, 'ref': {}}
  for k, v in arrays.items():
    part, name = k.split('/', 1)
    out[part][name] = np.asarray(v, np.float64)
  return out


def family_verdict(row: dict, statistics: dict | None, names, *,
                   settings: decision_lib.TestSettings = decision_lib.TestSettings()) -> dict:
  """The decision the audit gives a stored row with the record family ``names``.

  The same steps as :func:`jaxaudit.audit.decision.ignorance_test`: the family
  test (:func:`jaxaudit.audit.decision.record_family_test`), the power of the
  exact statistic at the family's test level from the stored members-vs-D_ref
  AUC, and :func:`jaxaudit.audit.decision.verdict` with the stored reference
  check and collapse flags. Rows without statistics (an error, or a collapsed
  model's verdict) keep their stored decision.

  Returns:
    dict(decision, p_value, catching: the statistics whose adjusted p ≤ α).
  """
  o = row.get('ours') or {}
  if statistics is None:
    return dict(decision=o.get('decision'), p_value=o.get('p_value'), catching=[])
  fam = [n for n in names if n in statistics['forget']]
  fam = [n for n in evidence.check_names(fam)]
  s_du = {n: statistics['forget'][n] for n in fam}
  s_ref = {n: statistics['ref'][n] for n in fam}
  res = decision_lib.record_family_test(s_du, s_ref, combine=settings.combine,
                                        alpha=settings.alpha)
  m_auc = o.get('member_auc')
  power = float('nan')
  if m_auc is not None and np.isfinite(m_auc):
    power = float(stats.mwu_power(max(m_auc, 1 - m_auc), len(s_du['exact']),
                                  len(s_ref['exact']), res['test_level']))
  d = decision_lib.verdict(reference_ok=bool(o.get('reference_ok', True)),
                           rejected=res['p_value'] <= settings.alpha,
                           collapse=bool(o.get('utility_collapse')), power=power,
                           power_target=settings.power_target)
  catching = [n for n, t in res['tests'].items() if t['p_adjusted'] <= settings.alpha]
  return dict(decision=d, p_value=res['p_value'], catching=catching)


def evaluate(rows: list[dict], names) -> list[dict]:
  """Each row with ``verdict`` (:func:`family_verdict` of family ``names``) added."""
  return [dict(r, verdict=family_verdict(r, load_statistics(r), names)) for r in rows
          if r.get('kind') == 'fake']


def _flagged(r: dict) -> bool | None:
  d = (r.get('verdict') or {}).get('decision')
  return None if d is None else d != 'forgotten'


def rate_table(rows: list[dict]) -> list[dict]:
  """Per (setting, fake): caught k/n with a 95% Clopper–Pearson interval, the decisions,
  which statistics rejected in how many draws, and Du / test accuracy of the fake.

  ``rows`` carry ``verdict`` (:func:`evaluate`). For the honest retrain "caught"
  is the false-alarm rate.
  """
  out = []
  settings = sorted({(r['phase'], r['entry'], r['forget']) for r in rows})
  for phase, entry, forget in settings:
    rs_s = [r for r in rows if (r['phase'], r['entry'], r['forget']) == (phase, entry, forget)]
    for f in [f for f in FAKES if any(r['fake'] == f for r in rs_s)]:
      rs = [r for r in rs_s if r['fake'] == f]
      flags = [v for v in (_flagged(r) for r in rs) if v is not None]
      k, n = int(sum(flags)), len(flags)
      lo, hi = stats.clopper_pearson(k, n) if n else (float('nan'), float('nan'))
      decisions: dict[str, int] = {}
      catch: dict[str, int] = {}
      for r in rs:
        v = r.get('verdict') or {}
        decisions[v.get('decision')] = decisions.get(v.get('decision'), 0) + 1
        for c in v.get('catching', []):
          catch[c] = catch.get(c, 0) + 1
      accs = [(r.get('accuracy') or {}).get('fake', {}) for r in rs]
      acc = {kk: (float(np.mean([a[kk] for a in accs if a.get(kk) is not None]))
                  if any(a.get(kk) is not None for a in accs) else None)
             for kk in ('forget', 'test')}
      out.append(dict(phase=phase, setting=f'{entry}/{forget}', fake=f, caught=k, draws=n,
                      rate=(k / n if n else float('nan')), ci=[lo, hi], decisions=decisions,
                      catching=catch, acc_forget=acc['forget'], acc_test=acc['test']))
  return out


def select_family(dev_rows: list[dict]) -> tuple[str, list[dict]]:
  """The selection rule of the module docstring on development rows.

  Returns:
    (the chosen family's name, one summary per candidate: name, min detection
    over fakes, the fake where it is reached, honest false alarms k/n).
  """
  summary = []
  for name, fam in CANDIDATE_FAMILIES.items():
    table = rate_table(evaluate(dev_rows, fam))
    fakes = [t for t in table if t['fake'] != 'honest_retrain' and t['draws']]
    honest = [t for t in table if t['fake'] == 'honest_retrain']
    worst = min(fakes, key=lambda t: t['rate']) if fakes else None
    fa_k, fa_n = sum(t['caught'] for t in honest), sum(t['draws'] for t in honest)
    summary.append(dict(family=name, statistics=list(fam),
                        min_detection=worst['rate'] if worst else float('nan'),
                        worst=f'{worst["fake"]} ({worst["setting"]})' if worst else None,
                        false_alarms=f'{fa_k}/{fa_n}', fa_rate=fa_k / fa_n if fa_n else 0.0))
  best = max(summary, key=selection_key)
  return best['family'], summary


def selection_key(summary: dict) -> tuple:
  """The order of the selection rule: higher minimum detection, then fewer honest false
  alarms, then fewer statistics (a candidate summary of :func:`select_family`)."""
  return (summary['min_detection'], -summary['fa_rate'], -len(summary['statistics']))


def markdown(table: list[dict], *, title: str) -> str:
  """A rate table as markdown."""
  lines = [f'### {title}', '', '| setting | fake | caught | 95% CI | decisions | caught by '
           '(draws) | Du acc | test acc |', '|---|---|---|---|---|---|---|---|']
  for t in table:
    dec = ', '.join(f'{k}: {v}' for k, v in sorted(t['decisions'].items(), key=lambda kv: -kv[1]))
    cat = ', '.join(f'{k} {v}' for k, v in sorted(t['catching'].items(), key=lambda kv: -kv[1]))
    fmt = lambda v: 'n/a' if v is None else f'{100 * v:.1f}%'
    lines.append(f'| {t["setting"]} | {t["fake"]} | {t["caught"]}/{t["draws"]} | '
                 f'[{t["ci"][0]:.2f}, {t["ci"][1]:.2f}] | {dec} | {cat or "-"} | '
                 f'{fmt(t["acc_forget"])} | {fmt(t["acc_test"])} |')
  return '\n'.join(lines) + '\n'


def run_protocol(config, workdir: str, phases=PHASES, log: Callable[[str], None] = print
                 ) -> dict:
  """Runs (or resumes) the stages of ``phases``, then reports.

  Development first; the family is chosen on development rows only
  (:func:`select_family`), then the confirmation rows are evaluated with it.
  Returns dict(chosen, candidates, development: rate table of the chosen
  family, confirmation: the same (empty when not run), confirmation_phi: the
  φ family on confirmation, markdown: the report).
  """
  rows = {p: [] for p in PHASES}
  for st in stages(config):
    if st['phase'] in phases:
      log(f'[robustness] stage {st["phase"]}/{st["entry"]}/{st["forget"]}: seeds '
          f'{st["seeds"][0]}-{st["seeds"][-1]}, {len(st["fakes"])} fakes')
      rows[st['phase']].extend(run_stage(config, workdir, st, log))
  chosen, candidates = select_family(rows['development']) if rows['development'] else (
      str(config.protocol.get('family', 'all')), [])
  fam = CANDIDATE_FAMILIES[chosen]
  dev = rate_table(evaluate(rows['development'], fam))
  conf = rate_table(evaluate(rows['confirmation'], fam))
  conf_phi = rate_table(evaluate(rows['confirmation'], CANDIDATE_FAMILIES['phi']))
  md = ['## Family selection on development rows', '',
        '| family | statistics | min detection over fakes | where | honest false alarms |',
        '|---|---|---|---|---|']
  for s in candidates:
    md.append(f'| {s["family"]} | {", ".join(s["statistics"])} | {s["min_detection"]:.2f} | '
              f'{s["worst"]} | {s["false_alarms"]} |')
  md += ['', f'chosen: **{chosen}** ({", ".join(fam)})', '',
         markdown(dev, title=f'Development ({chosen})'),
         markdown(conf, title=f'Confirmation ({chosen})'),
         markdown(conf_phi, title='Confirmation, φ statistics only (the audit before issue 17)')]
  text = '\n'.join(md)
  io_utils.write_text(os.path.join(workdir, 'robustness.md'), text)
  io_utils.write_json(os.path.join(workdir, 'robustness.json'), dict(
      chosen=chosen, candidates=candidates, development=dev, confirmation=conf,
      confirmation_phi=conf_phi))
  return dict(chosen=chosen, candidates=candidates, development=dev, confirmation=conf,
              confirmation_phi=conf_phi, markdown=text)
