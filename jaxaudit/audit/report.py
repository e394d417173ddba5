"""Audit reports: ``report.json``, ``report.md`` and plots, written atomically.

Everything is first written to a temporary sibling directory which is then
renamed onto the output directory, so a reader never sees a half-written
report and an interrupted write leaves the previous report intact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

import numpy as np

from jaxaudit import distributed, io_utils
from jaxaudit.audit.runner import AuditResult


_COMBINE = {'maxt': 'single-step max-T (joint normal law of the rank sums)',
            'bonferroni': 'Bonferroni'}


def combination_text(details: dict[str, Any]) -> str:
  """How the p-value was combined, as used: e.g. 'max-T over 3 statistics'."""
  n = details.get('n_tests', len(details.get('tests', {})))
  comb = details.get('combine')
  if not n:
    return 'no test was run'
  if n == 1:
    text = 'one statistic, no adjustment'
  else:
    text = f'{_COMBINE.get(comb, str(comb))} over {n} statistics'
  if details.get('class_level'):
    kind = ('knowledge' if details['class_level'].get('direction') == 'remembers_knowledge'
            else 'class-level')
    text += f', then Bonferroni with the {kind} test'
  return text


def report_dict(result: AuditResult) -> dict[str, Any]:
  """The content of report.json (scores per record omitted for size)."""
  d = result.to_dict()
  d.pop('scores', None)
  d.pop('raw_phi', None)
  d.pop('record_statistics', None)
  return io_utils.jsonable(d)


def atomic_write_dir(out_dir: str, files: dict[str, bytes], *, overwrite: bool = False) -> str:
  """Writes ``files`` (name -> bytes) into out_dir, replacing it atomically.

  An existing out_dir is replaced only if jaxaudit wrote it, or with ``overwrite``
  (:func:`jaxaudit.io_utils.replace_dir`); the check runs before anything is written.
  Returns the absolute path of out_dir.
  """
  io_utils.check_replaceable(out_dir, overwrite=overwrite)

  def write():
    tmp = io_utils.temp_sibling(out_dir)
    try:
      for name, data in files.items():
        with open(os.path.join(tmp, name), 'wb') as f:
          f.write(data)
      io_utils.replace_dir(tmp, out_dir, overwrite=overwrite, kind='report')
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  distributed.write_once(write, out_dir)   # process 0 of a multi-process job writes it
  return os.path.abspath(out_dir)


def _png(fig) -> bytes:
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  import matplotlib.pyplot as plt
  plt.close(fig)
  return buf.getvalue()


def _plots(result: AuditResult) -> dict[str, bytes]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  scores = result.details.get('scores', {})
  out = {}
  fig, ax = plt.subplots(figsize=(6.4, 3.6))
  labels = {'members': 'members of Mu (Dr)', 'forget': 'Du (forget set)', 'ref': 'D_ref (unseen)'}
  allv = np.concatenate([np.asarray(v)[0] for v in scores.values()]) if scores else np.zeros(1)
  lo, hi = np.quantile(allv, [0.01, 0.99]) if allv.size > 1 else (-1, 1)
  bins = np.linspace(lo, hi + 1e-9, 40)
  for key in ('members', 'ref', 'forget'):
    if key in scores:
      ax.hist(np.clip(np.asarray(scores[key])[0], lo, hi), bins=bins, density=True, alpha=0.45,
              label=labels[key])
  ax.set_xlabel('calibrated score  φ(Mu) − β·mean φ(verifiers)  (exact records)')
  ax.set_ylabel('density')
  ax.set_title(f'{result.details.get("target", "")}: {result.decision}'
               + (f' ({result.direction})' if result.direction else ''))
  ax.legend()
  out['scores.png'] = _png(fig)
  pr = result.details.get('per_record', {})
  if pr.get('p_value'):
    p = np.sort(np.asarray(pr['p_value']))
    m = len(p)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(np.arange(1, m + 1), p, '.', ms=3, label=f'per-{"group" if pr.get("unit") == "group" else "record"} p-values (sorted)')
    ax.plot(np.arange(1, m + 1), pr['fdr'] * np.arange(1, m + 1) / m, '-', label=f'BH line, FDR {pr["fdr"]}')
    ax.set_xlabel('rank'); ax.set_ylabel('p-value'); ax.set_xscale('log'); ax.set_yscale('log')
    unit = 'groups' if pr.get('unit') == 'group' else 'records'
    ax.set_title(f'per-{unit[:-1]} evidence: {int(np.sum(pr.get("flagged", [])))} of {m} '
                 f'{unit} flagged')
    ax.legend()
    out['per_record.png'] = _png(fig)
  return out


def _fmt(v, nd=3):
  return 'n/a' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{nd}g}'


def _utility_text(u: dict | None) -> str:
  """' (Mu … vs verifiers (or the utility models) …, difference … [lo, hi], one-sided
  p=…, level …)' or ''."""
  if not u:
    return ''
  lo, hi = u['difference_ci']
  ref = u.get('reference', 'verifiers')
  return (f' (Mu {_fmt(u["mean_target"])} vs {ref} {_fmt(u["mean_verifiers"])}, difference '
          f'{_fmt(u["difference"])} [{_fmt(lo)}, {_fmt(hi)}], one-sided p={_fmt(u["p_value"])}, '
          f'level {u["alpha"]})')


def markdown(result: AuditResult) -> str:
  """A human-readable report."""
  d = result.details
  acc = d.get('accuracy', {})
  rc = d.get('reference_check') or {}
  lines = [f'# Audit of `{d.get("target", "target")}`', '',
           f'**Decision: {result.decision}**' + (f' — direction: **{result.direction}**'
                                                if result.direction else ''), '']
  if d.get('nonfinite_outputs'):
    lines += [f'**Reason:** {d.get("reason")}', '',
              '| set | records with NaN/inf logits |', '|---|---|']
    for k, v in d['nonfinite_outputs'].items():
      lines.append(f'| {k} | {v.get("records")} of {v.get("of", "?")} |')
    lines.append('')
  lines += ['| quantity | value |', '|---|---|',
           f'| p-value (two-sided; {combination_text(d)}) | {_fmt(result.p_value)} |',
           f'| significance α | {d.get("alpha")} |',
           f'| effect: AUC(Du vs D_ref), 95% CI | {_fmt(result.effect_auc)} '
           f'[{_fmt(result.effect_auc_ci[0])}, {_fmt(result.effect_auc_ci[1])}] |',
           f'| forgetting score (0 = remembered, 1 = unseen), 95% CI | {_fmt(result.forgetting_score, 2)} '
           f'[{_fmt(result.forgetting_score_ci[0], 2)}, {_fmt(result.forgetting_score_ci[1], 2)}] |',
           f'| estimated power (members vs D_ref AUC {_fmt(d.get("member_auc"))}) | {_fmt(result.power, 2)}'
           + (f' [{_fmt(d["power_ci"][0], 2)}, {_fmt(d["power_ci"][1], 2)}]' if d.get('power_ci')
              else '') + ' |',
           f'| records flagged (BH, FDR {d.get("per_record", {}).get("fdr")}) | {len(result.flagged_records)} of {d.get("sizes", {}).get("forget")}'
           + (f' (per group: {sum(d["per_record"].get("flagged", []))} of {len(d["per_record"].get("flagged", []))} groups flagged)'
              if d.get('per_record', {}).get('unit') == 'group' else '') + ' |',
           f'| reference check (D_ref exchangeable with Du; {rc.get("n_statistics", 0)} statistics, {rc.get("combine", "n/a")}) | {"not run" if not rc else ("ok" if rc.get("ok") else "FAILED")} (family p={_fmt(rc.get("p_value"))}, level {rc.get("alpha", "n/a")}) |',
           f'| utility collapse (Mu below the verifiers on unseen records) | '
           f'{d.get("utility_collapse")}{_utility_text(d.get("utility_test"))} |',
           f'| exact inputs masked | {d.get("exact_inputs_masked")} |', '',
           '## Statistics', '', '| statistic | AUC(Du vs D_ref) | p-value | adjusted |',
           '|---|---|---|---|']
  for name, t in d.get('tests', {}).items():
    lines.append(f'| {name} | {_fmt(t["auc"])} | {_fmt(t["p_value"])} | '
                 f'{_fmt(t.get("p_adjusted"))} |')
  if rc:
    src = {'user': 'the user-supplied reference set', 'pool': "the data set's own pool"}.get(
        rc.get('source'), 'D_ref')
    lines += ['', '## Reference check', '',
              f'D_ref is {src}. The check compares Du with D_ref on statistics that do not involve '
              'the audited model (leave-one-out audits of each verifier by the others, the '
              'verifier ensemble\'s outputs, the inputs), each exact under exchangeability; '
              f'family p-value by {rc.get("combine")} over {rc.get("n_statistics")} statistics: '
              f'{_fmt(rc.get("p_value"))} (refused when ≤ {rc.get("alpha")}; smallest: '
              f'`{rc.get("worst")}`).', '',
              '| statistic | AUC(Du vs D_ref) | p-value | adjusted |', '|---|---|---|---|']
    for name, t in (rc.get('statistics') or {}).items():
      lines.append(f'| {name} | {_fmt(t.get("auc"))} | {_fmt(t.get("p_value"))} | '
                   f'{_fmt(t.get("p_adjusted"))} |')
  if d.get('forgetting_score_method'):
    lines += ['', '## Forgetting score', '', d['forgetting_score_method'] + '.']
  cl = d.get('class_level')
  if cl and cl.get('direction') == 'remembers_knowledge':
    lines += ['', "## Knowledge test (Du's people's facts)", '',
              f'On {cl["n"]} knowledge probes of the {cl.get("people")} forgotten people (a fact '
              f'prompted, answered top-1), Mu answers {100 * cl["accuracy"]:.1f}% right; the '
              'verifiers, which never met them, '
              f'{", ".join(f"{100 * a:.1f}%" for a in cl["verifier_accuracy"])}. '
              f'H0: accuracy ≤ {100 * cl["threshold"]:.1f}% (best verifier + margin); '
              f'one-sided binomial p = {_fmt(cl["p_value"])}, power {_fmt(cl["power"], 2)}. '
              f'Record-level p = {_fmt(d.get("p_record"))}; the p-value above combines both '
              '(Bonferroni).']
  elif cl:
    lines += ['', '## Class-level test (Du holds whole classes)', '',
              f'Forgotten classes {cl.get("classes")}: Mu recognises {100 * cl["accuracy"]:.1f}% of '
              f'{cl["n"]} held-out records of them; the verifiers, which never saw them, '
              f'{", ".join(f"{100 * a:.1f}%" for a in cl["verifier_accuracy"])}. '
              f'H0: accuracy ≤ {100 * cl["threshold"]:.1f}% (best verifier + margin); '
              f'one-sided binomial p = {_fmt(cl["p_value"])}, power {_fmt(cl["power"], 2)}. '
              f'Record-level p = {_fmt(d.get("p_record"))}; the p-value above combines both '
              '(Bonferroni).']
  lines += ['', '## Accuracy', '', '| set | Mu | verifiers (mean) |', '|---|---|---|']
  for name, v in acc.get('target', {}).items():
    ver = acc.get('verifiers', {}).get(name)
    lines.append(f'| {name} | {100 * v:.1f}% | {100 * np.mean(ver):.1f}% |' if ver is not None
                 else f'| {name} | {100 * v:.1f}% | |')
  if not acc.get('target'):
    lines.append('| (not measured) | | |')
  cost = d.get('cost', {})
  s = d.get('settings', {})
  lines += ['', '## Cost', '',
            f'- models trained: {cost.get("models_trained")} (verifiers from cache: {d.get("verifiers", {}).get("from_cache")})',
            f'- wall time: {_fmt(cost.get("wall_time_s"))} s (verifier training {_fmt(cost.get("verifier_train_s"))} s)',
            f'- queries of Mu: {cost.get("queries")}', '',
            '## Settings', '',
            f'- K = {s.get("num_verifiers")} verifiers on {100 * (s.get("subset_ratio") or 0):.0f}% of Dr each; views: {", ".join(s.get("views", []))}',
            f'- sizes: {d.get("sizes")}; class-matched: {d.get("class_matched")}',
            f'- data: {d.get("request", {}).get("dataset")} (split {str(d.get("request", {}).get("split_hash"))[:12]})',
            '', '![scores](scores.png)', '', '![per-record evidence](per_record.png)', '']
  return '\n'.join(lines)


def write_report(result: AuditResult, out_dir: str, *, plots: bool = True,
                 overwrite: bool = False) -> str:
  """Writes report.json, report.md (and plots) into out_dir atomically.

  An existing out_dir is replaced only if jaxaudit wrote it (or ``overwrite``).
  """
  files = {'report.json': json.dumps(report_dict(result), indent=1, sort_keys=True).encode(),
           'report.md': markdown(result).encode()}
  if plots:
    files.update(_plots(result))
  return atomic_write_dir(out_dir, files, overwrite=overwrite)
