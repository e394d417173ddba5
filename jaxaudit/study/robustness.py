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
:data:`CANDIDATE_FAMILIES`, the family under which the most (setting, fake)
cells of the development rows are caught in ≥ 90% of their draws; ties go to
the higher mean detection rate, then to the lower honest false-alarm rate,
then to the smaller family. (The first rule, the highest *minimum* detection,
was replaced after the development rows showed two fakes that no family
catches: it then only counted statistics, and chose the smallest family.) The confirmation table reports
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
    'phi+correct+kl': evidence.PHI_STATISTICS + ('correct', 'kl', 'kl_neighbours'),
    'phi+correct+spread': evidence.PHI_STATISTICS + ('correct', 'exact_spread',
                                                     'neighbours_spread', 'gap_spread'),
    'phi+correct+spread+ensemble': evidence.PHI_STATISTICS + (
        'correct', 'exact_spread', 'neighbours_spread', 'gap_spread', 'kl_ensemble',
        'kl_ensemble_spread'),
    'all': tuple(evidence.STATISTICS),
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
  out, seen = [], set()
  for r in rows:   # one row per key (two writers of one results file may both finish one)
    if r.get('key') in keys and r['key'] not in seen:
      seen.add(r['key'])
      out.append(dict(r, stage_dir=sd, phase=stage['phase']))
  return out


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
  s_du, s_ref = evidence.with_spreads(evidence.check_names(names), statistics['forget'],
                                      statistics['ref'])
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

  ``rows`` carry ``verdict`` (:func:`evaluate`). "Caught" is any decision but
  ``forgotten`` (no certificate); for the honest retrain the false-alarm rate
  is the ``not_forgotten`` rate (a rejection of H0; ``inconclusive`` is a
  lack of power, not an alarm).
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
      k_nf = int(decisions.get('not_forgotten', 0))
      nf_ci = stats.clopper_pearson(k_nf, n) if n else (float('nan'), float('nan'))
      out.append(dict(phase=phase, setting=f'{entry}/{forget}', fake=f, caught=k, draws=n,
                      rate=(k / n if n else float('nan')), ci=[lo, hi],
                      not_forgotten=k_nf, not_forgotten_ci=list(nf_ci), decisions=decisions,
                      catching=catch, acc_forget=acc['forget'], acc_test=acc['test']))
  return out


def auc_table(rows: list[dict]) -> list[dict]:
  """Per (phase, setting, fake): the mean AUC (Du vs D_ref) of every stored statistic over
  the draws — how far each statistic moves under each fake (0.5: not at all)."""
  out = []
  keys = sorted({(r['phase'], r['entry'], r['forget']) for r in rows})
  for phase, entry, forget in keys:
    rs_s = [r for r in rows if (r['phase'], r['entry'], r['forget']) == (phase, entry, forget)]
    for f in [f for f in FAKES if any(r['fake'] == f for r in rs_s)]:
      aucs: dict[str, list[float]] = {}
      for r in rs_s:
        if r['fake'] != f:
          continue
        st = load_statistics(r)
        if st is None:
          continue
        s_du, s_ref = evidence.with_spreads(tuple(evidence.STATISTICS), st['forget'], st['ref'])
        for n in s_du:
          aucs.setdefault(n, []).append(stats.auc(s_du[n], s_ref[n]))
      out.append(dict(phase=phase, setting=f'{entry}/{forget}', fake=f,
                      auc={n: float(np.mean(v)) for n, v in aucs.items()}))
  return out


def retrain_distance(config, workdir: str, stage: dict, fakes, log=print) -> list[dict]:
  """How close each fake is to the honest retrain, on Du and on D_ref (cached models only).

  Per seed and fake: mean KL(retrain ‖ X) on Du's exact records and on the
  audit's D_ref sample (its first 2000 records), for X = the fake and X = M,
  and X's accuracy on Du. A fake whose Du divergence from the retrain is no
  larger than M's divergence from the retrain on unseen records answers Du as
  a model that never saw it would.
  """
  from jaxaudit import pipeline
  from jaxaudit.study import fakes as fakes_lib
  from jaxaudit.study.groups import Group
  from jaxaudit.tasks.classification import kl_divergence
  from jaxaudit import checkpoint
  c = copy.deepcopy(config)
  c.fake.entry, c.fake.forget = stage['entry'], stage['forget']
  fs = c.fake
  out = []
  sd = stage_dir(workdir, stage)
  for seed in stage['seeds']:
    g = Group(c, sd, (stage['entry'], stage['forget'], int(seed)), lambda s: None)
    res = pipeline.run_unlearn(g.cfg, g.wd, 'retrain', log=lambda s: None)
    _, p_retrain, _ = checkpoint.restore_model(res['path'])
    du = np.asarray(g.split.forget)
    ref = np.asarray(g.split.ref)[:2000]
    x, y = g.dataset.x_train, g.dataset.y_train
    from jaxaudit.train import predict_logits
    lr = {k: np.asarray(predict_logits(g.model, p_retrain, x[i])) for k, i in (('du', du),
                                                                               ('ref', ref))}
    models = {'original': fakes_lib.make_fake(g, 'noop', fs, int(seed), log)}
    for f in fakes:
      models[f] = fakes_lib.make_fake(g, f, fs, int(seed), log)
    for name, t in models.items():
      row = dict(seed=int(seed), setting=f'{stage["entry"]}/{stage["forget"]}', model=name)
      for k, i in (('du', du), ('ref', ref)):
        lt = t.logits(x[i][None], i, ('identity',), g.dataset.num_classes)[0]
        row[f'kl_retrain_{k}'] = float(np.mean(kl_divergence(lr[k], lt)))
        if k == 'du':
          row['acc_du'] = float(np.mean(np.argmax(lt, -1) == y[i]))
      out.append(row)
  return out


def select_family(dev_rows: list[dict]) -> tuple[str, list[dict]]:
  """The selection rule of the module docstring on development rows.

  Returns:
    (the chosen family's name, one summary per candidate: name, statistics,
    the number of (setting, fake) cells caught in ≥ 90% of draws, the mean
    and minimum detection over those cells, the fake where the minimum is
    reached, honest false alarms k/n).
  """
  summary = []
  for name, fam in CANDIDATE_FAMILIES.items():
    table = rate_table(evaluate(dev_rows, fam))
    fakes = [t for t in table if t['fake'] != 'honest_retrain' and t['draws']]
    honest = [t for t in table if t['fake'] == 'honest_retrain']
    worst = min(fakes, key=lambda t: t['rate']) if fakes else None
    fa_k, fa_n = sum(t['not_forgotten'] for t in honest), sum(t['draws'] for t in honest)
    summary.append(dict(family=name, statistics=list(fam),
                        cells_at_90=sum(t['rate'] >= 0.9 for t in fakes), cells=len(fakes),
                        mean_detection=float(np.mean([t['rate'] for t in fakes])) if fakes
                        else float('nan'),
                        min_detection=worst['rate'] if worst else float('nan'),
                        worst=f'{worst["fake"]} ({worst["setting"]})' if worst else None,
                        false_alarms=f'{fa_k}/{fa_n}', fa_rate=fa_k / fa_n if fa_n else 0.0))
  best = max(summary, key=selection_key)
  return best['family'], summary


def selection_key(summary: dict) -> tuple:
  """The order of the selection rule: more (setting, fake) cells caught in ≥ 90% of the
  development draws, then a higher mean detection, then fewer honest false alarms, then
  fewer statistics (a candidate summary of :func:`select_family`)."""
  return (summary['cells_at_90'], round(summary['mean_detection'], 3), -summary['fa_rate'],
          -len(summary['statistics']))


def markdown(table: list[dict], *, title: str) -> str:
  """A rate table as markdown."""
  lines = [f'### {title}', '', '| setting | fake | caught | 95% CI | not_forgotten [95% CI] | '
           'decisions | caught by (draws) | Du acc | test acc |',
           '|---|---|---|---|---|---|---|---|---|']
  for t in table:
    dec = ', '.join(f'{k}: {v}' for k, v in sorted(t['decisions'].items(), key=lambda kv: -kv[1]))
    cat = ', '.join(f'{k} {v}' for k, v in sorted(t['catching'].items(), key=lambda kv: -kv[1]))
    fmt = lambda v: 'n/a' if v is None else f'{100 * v:.1f}%'
    lines.append(f'| {t["setting"]} | {t["fake"]} | {t["caught"]}/{t["draws"]} | '
                 f'[{t["ci"][0]:.2f}, {t["ci"][1]:.2f}] | {t["not_forgotten"]}/{t["draws"]} '
                 f'[{t["not_forgotten_ci"][0]:.2f}, {t["not_forgotten_ci"][1]:.2f}] | '
                 f'{dec} | {cat or "-"} | '
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
        '| family | statistics | cells caught in >= 90% | mean detection | min detection | '
        'where | honest false alarms |', '|---|---|---|---|---|---|---|']
  for s in candidates:
    md.append(f'| {s["family"]} | {", ".join(s["statistics"])} | {s["cells_at_90"]}/{s["cells"]} '
              f'| {s["mean_detection"]:.3f} | {s["min_detection"]:.2f} | {s["worst"]} | '
              f'{s["false_alarms"]} |')
  md += ['', f'chosen: **{chosen}** ({", ".join(fam)})', '',
         markdown(dev, title=f'Development ({chosen})'),
         markdown(conf, title=f'Confirmation ({chosen})'),
         markdown(conf_phi, title='Confirmation, φ statistics only (the audit before issue 17)')]
  aucs = auc_table(rows['development'] + rows['confirmation'])
  names = list(evidence.STATISTICS)
  md += ['### Mean AUC (Du vs D_ref) of every statistic, per fake (0.5: unmoved)', '',
         '| phase | setting | fake | ' + ' | '.join(names) + ' |',
         '|---|---|---|' + '---|' * len(names)]
  for a in aucs:
    md.append(f'| {a["phase"]} | {a["setting"]} | {a["fake"]} | '
              + ' | '.join(f'{a["auc"].get(n, float("nan")):.3f}' for n in names) + ' |')
  dist_fakes = [f for f in str(config.protocol.get('distance_fakes', '') or '').split(',') if f]
  distance = []
  if dist_fakes and 'confirmation' in phases:
    for st in stages(config):
      if st['phase'] == 'confirmation' and all(f in st['fakes'] for f in dist_fakes):
        distance += retrain_distance(config, workdir, st, dist_fakes, log)
  if distance:
    md += ['', '### Distance from the honest retrain (confirmation seeds; mean over seeds)', '',
           '| setting | model | KL(retrain ‖ model) on Du | on D_ref | accuracy on Du |',
           '|---|---|---|---|---|']
    for setting in sorted({d['setting'] for d in distance}):
      for m in ['original'] + dist_fakes:
        ds = [d for d in distance if d['setting'] == setting and d['model'] == m]
        md.append(f'| {setting} | {m} | {np.mean([d["kl_retrain_du"] for d in ds]):.3f} | '
                  f'{np.mean([d["kl_retrain_ref"] for d in ds]):.3f} | '
                  f'{100 * np.mean([d["acc_du"] for d in ds]):.1f}% |')
  text = '\n'.join(md)
  io_utils.write_text(os.path.join(workdir, 'robustness.md'), text)
  io_utils.write_json(os.path.join(workdir, 'robustness.json'), dict(
      chosen=chosen, candidates=candidates, development=dev, confirmation=conf,
      confirmation_phi=conf_phi, aucs=aucs, retrain_distance=distance))
  return dict(chosen=chosen, candidates=candidates, development=dev, confirmation=conf,
              confirmation_phi=conf_phi, aucs=aucs, retrain_distance=distance, markdown=text)
