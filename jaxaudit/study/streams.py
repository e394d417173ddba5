r"""Validation of the verifier bank, the per-record test and stream verdicts.

Two kinds of draws, each one JSON row (resumable, like the other studies):

* :func:`bank_draw` — one |Du| request (every record its own group): the
  honest retrain and the original audited with K fresh verifiers and with
  a bank of B members (each record's K verifiers drawn from the members OUT
  for it); decisions, p-values and wall times beside a warm retrain of the
  same model in the same process.
* :func:`stream_draw` — synthetic users (1–20 records) over D, a bank over
  the users, the original M and ``retrains`` honest models, each trained
  without ``per_retrain`` users: every such user is one deletion request
  whose honest answer is known. Stream verdicts of the honest models (false
  alarms) and of M (detection, against the power the auditor predicts), the
  per-record p-values under H0 (uniformity), and per-record scores of our
  test, LiRA-offline and RMIA-offline on the same records, from the same
  bank members (the OUT members of each record are every method's
  reference models).

:func:`summarise` turns rows into the tables BUILD_NOTES.md quotes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxaudit import io_utils

FPRS = (0.01, 0.05)


def _train(net, ds, recipe, subset, seed: int):
  from jaxaudit.train import train_model
  t0 = time.time()
  params = jax.block_until_ready(train_model(net, ds.x_train, ds.y_train, subset, seed,
                                             recipe).params)
  return params, time.time() - t0


# Added to the audit seed for the second set of fresh verifiers (``fresh_twice``).
SECOND_VERIFIER_SEED = 7919


def bank_draw(r: int, ds, net, recipe, split_kw: dict, settings, *, bank_size: int = 64,
              share_members: bool = True, fresh_twice: bool = False,
              log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
  """One request audited with fresh verifiers and with a bank (module docstring).

  ``share_members``: the fresh verifiers are trained around the bank's member
  reference (``audit(member_reference=)``), so that the two audits differ only
  in their verifiers; False: the fresh audit draws its own member sample.
  ``fresh_twice``: also audits with a second set of K fresh verifiers (another
  verifier seed, the same member reference, D_ref sample and views) — mode
  ``fresh2``, the agreement that verifier noise alone leaves between two audits.

  Returns:
    dict(draw, sizes, retrain_s (a warm retrain), bank_s (building the bank),
    results: target -> {fresh, bank} -> dict(decision, direction, p_value, wall_s)).
  """
  from jaxaudit.audit import Target, audit
  from jaxaudit.audit import bank as bank_lib
  from jaxaudit.data import make_split
  split = make_split(ds, seed=r, **split_kw)
  orig, _ = _train(net, ds, recipe, split.train, 1000 + r)
  ret, _ = _train(net, ds, recipe, split.retain, 2000 + r)
  _, retrain_s = _train(net, ds, recipe, split.retain, 3000 + r)       # warm: timed
  t0 = time.time()
  bank = bank_lib.build_bank(net, ds, split.train, recipe, size=bank_size, seed=r)
  bank_s = time.time() - t0
  s = dataclasses.replace(settings, seed=r)
  targets = {'retrain': Target.from_params(net, ret, 'retrain'),
             'original': Target.from_params(net, orig, 'original')}
  cache: dict = {}
  members = bank.member_reference(split.forget)
  # Fills the bank's D_ref cache, as the first request of a stream does.
  audit(targets['original'], ds, split, verifier_model=net, recipe=recipe, settings=s, bank=bank,
        bank_cache=cache)
  results: dict[str, dict] = {}
  modes = ('bank', 'fresh') + (('fresh2',) if fresh_twice else ())
  second = None
  if fresh_twice:
    from jaxaudit.audit.verifiers import get_verifiers
    vrecipe = (recipe.replace(epochs=int(s.verifier_epochs)) if s.verifier_epochs else recipe)
    second = get_verifiers(net, ds, split, vrecipe, num_verifiers=s.num_verifiers,
                           ratio=s.ratios[0], member_sample=s.member_sample,
                           seed=s.seed + SECOND_VERIFIER_SEED, members=members)
  for name, tgt in targets.items():
    results[name] = {}
    for mode in modes:
      t0 = time.time()
      kw = (dict(bank=bank, bank_cache=cache) if mode == 'bank' else
            dict(verifiers=second) if mode == 'fresh2' else
            dict(member_reference=members) if share_members else {})
      res = audit(tgt, ds, split, verifier_model=net, recipe=recipe, settings=s, **kw)
      results[name][mode] = dict(decision=res.decision, direction=res.direction,
                                 p_value=float(res.p_value), power=float(res.power),
                                 member_auc=float(res.details.get('member_auc', np.nan)),
                                 wall_s=time.time() - t0)
  log(f'draw {r}: ' + ', '.join(f'{t}: {v["bank"]["decision"]}/{v["fresh"]["decision"]}'
                                for t, v in results.items()))
  return dict(kind='bank', draw=r, sizes=dict(train=len(split.train), forget=len(split.forget)),
              retrain_s=retrain_s, bank_s=bank_s, bank_size=bank_size,
              share_members=bool(share_members), fresh_twice=bool(fresh_twice),
              num_verifiers=int(s.num_verifiers), results=results)


def _peer_scores(sc: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """LiRA-offline and RMIA-offline per-record scores from the bank's OUT members.

  Args:
    sc: :meth:`StreamAuditor.scores` of the scored records (exact view first).
    ref: the same for the population sample (D_ref with its pseudo OUT masks).
  """
  from jaxaudit.peers.lira import lira_scores
  from jaxaudit.peers.rmia import rmia_scores
  out = {}
  out['lira_offline'] = lira_scores(sc['phi_target'][:1], sc['phi_members'][:1], ~sc['out'],
                                    online=False, variance='per_record', offline_test='one_sided')
  sig = lambda v: 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))
  masked_mean = lambda p, o: (p * o).sum(0) / np.maximum(o.sum(0), 1)
  px = sig(sc['phi_target'][0])
  rx = masked_mean(sig(sc['phi_members'][0]), sc['out'])[None]
  pz = sig(ref['phi_target'][0])
  rz = masked_mean(sig(ref['phi_members'][0]), ref['out'])[None]
  out['rmia_offline'] = rmia_scores(px, rx, pz, rz, offline=True)
  return out


def stream_draw(r: int, ds, net, recipe, split_kw: dict, stream_settings, *,
                bank_size: int = 64, retrains: int = 4, per_retrain: int = 30,
                max_records: int = 20, save_dir: str | None = None,
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
  """One draw of the stream study (module docstring).

  Returns:
    dict(draw, requests: list of dict(user, n_records, h0 (the honest model's
    verdict), h1 (the original's)), record-level arrays saved to
    ``save_dir/stream_draw{r}.npz`` (scores of ours / LiRA / RMIA under H0
    and H1, our H0 p-values), timings).
  """
  from jaxaudit.audit import Target
  from jaxaudit.audit import bank as bank_lib
  from jaxaudit.audit.stream import StreamAuditor, requests_from_groups
  from jaxaudit.data import make_split
  split = make_split(ds, seed=r, **split_kw)
  groups = bank_lib.synthetic_users(len(ds.x_train), split.train, max_records=max_records, seed=r)
  t0 = time.time()
  bank = bank_lib.build_bank(net, ds, split.train, recipe, size=bank_size, groups=groups, seed=r)
  bank_s = time.time() - t0
  s = dataclasses.replace(stream_settings, seed=r)
  orig, _ = _train(net, ds, recipe, split.train, 1000 + r)
  rng = np.random.default_rng([r, 77])
  member_users = set(bank.group_ids[bank.member_groups].tolist())
  users = np.array([u for u in np.unique(groups[split.train]) if u not in member_users])
  chosen = rng.choice(users, retrains * per_retrain, replace=False).reshape(retrains, per_retrain)
  cache: dict = {}
  t0 = time.time()
  a_orig = StreamAuditor(Target.from_params(net, orig, 'original'), ds, split, bank, net, s,
                         cache=cache)
  setup_s = time.time() - t0
  rows, arrays = [], {k: [] for k in ('ours_h0', 'ours_h1', 'p_h0', 'p_h1', 'lira_offline_h0',
                                      'lira_offline_h1', 'rmia_offline_h0', 'rmia_offline_h1')}
  stream_s, n_requests = 0.0, 0
  for j in range(retrains):
    reqs = requests_from_groups(bank, groups, [(int(u), [int(u)]) for u in chosen[j]])
    forget = np.concatenate([rec for _, rec in reqs])
    honest, _ = _train(net, ds, recipe, np.setdiff1d(split.train, forget), 2000 + 100 * r + j)
    a_h0 = StreamAuditor(Target.from_params(net, honest, f'honest{j}'), ds, split, bank, net, s,
                         cache=cache)
    t0 = time.time()
    v0 = a_h0.audit(reqs)
    v1 = a_orig.audit(reqs)
    stream_s += time.time() - t0
    n_requests += 2 * len(reqs)
    for (uid, rec), a, b in zip(reqs, v0, v1):
      rows.append(dict(user=uid, n_records=len(rec), h0=_brief(a), h1=_brief(b)))
    for tag, aud in (('h0', a_h0), ('h1', a_orig)):
      sc = aud.scores(forget)
      ref_aud = dict(phi_target=aud.ref_phi[0], phi_members=aud.ref_phi[1], out=aud.ref_out)
      arrays[f'ours_{tag}'].append(sc['statistic'])
      arrays[f'p_{tag}'].append(sc['p'])
      for k, v in _peer_scores(sc, ref_aud).items():
        arrays[f'{k}_{tag}'].append(v)
  arrays = {k: np.concatenate(v) for k, v in arrays.items()}
  path = None
  if save_dir:
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f'stream_draw{r}.npz')
    io_utils.write_bytes(path, _npz_bytes(arrays))
  log(f'draw {r}: {len(rows)} requests, H0 flagged '
      f'{sum(x["h0"]["decision"] == "not_forgotten" for x in rows)}, H1 flagged '
      f'{sum(x["h1"]["decision"] == "not_forgotten" for x in rows)}')
  return dict(kind='stream', draw=r, requests=rows, arrays=path, bank_s=bank_s,
              setup_s=setup_s, stream_s=stream_s, stream_requests=n_requests,
              bank_size=bank_size, power_table=a_orig.power_table.tolist())


def _brief(v: dict) -> dict:
  return dict(decision=v['decision'], p_value=v['p_value'], power=v['power'],
              flagged=len(v['flagged']), min_out=v['min_out'])


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  import io
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _tpr_at(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
  """TPR at the threshold where the negatives' false-positive rate is ``fpr``."""
  thr = np.quantile(neg, 1.0 - fpr)
  return float(np.mean(pos > thr))


def summarise(rows: Sequence[dict], alpha: float = 0.05) -> str:
  """Markdown tables of the bank and stream draws in ``rows``."""
  from jaxaudit.audit import stats
  from jaxaudit.audit.records import ks_uniform
  lines = []
  bank_rows = [r for r in rows if r.get('kind') == 'bank']
  if bank_rows:
    n = len(bank_rows)
    ks = sorted({r.get('num_verifiers', 4) for r in bank_rows})
    lines += [f'## Bank vs fresh verifiers ({n} draws, K = {", ".join(map(str, ks))})', '',
              '| target | decision agreement | not_forgotten (bank) | not_forgotten (fresh) | '
              'audit s (bank) | audit s (fresh) |', '|---|---|---|---|---|---|']
    for t in ('retrain', 'original'):
      agree = sum(r['results'][t]['bank']['decision'] == r['results'][t]['fresh']['decision']
                  for r in bank_rows)
      cells = []
      for mode in ('bank', 'fresh'):
        k = sum(r['results'][t][mode]['decision'] == 'not_forgotten' for r in bank_rows)
        lo, hi = stats.clopper_pearson(k, n)
        cells.append(f'{k}/{n} [{lo:.2f}, {hi:.2f}]')
      walls = [np.median([r['results'][t][m]['wall_s'] for r in bank_rows])
               for m in ('bank', 'fresh')]
      lines.append(f'| {t} | {agree}/{n} | {cells[0]} | {cells[1]} | {walls[0]:.2f} | '
                   f'{walls[1]:.2f} |')
    twice = [r for r in bank_rows if all('fresh2' in r['results'][t] for t in r['results'])]
    if twice:
      m = len(twice)
      lines += ['', f'Verifier noise alone ({m} draws with a second set of fresh verifiers: '
                'another verifier seed, the same member reference, D_ref sample and views):', '',
                '| target | fresh vs fresh | bank vs fresh | bank vs fresh (2nd set) |',
                '|---|---|---|---|']
      for t in ('retrain', 'original'):
        same = lambda a, b: sum(r['results'][t][a]['decision'] == r['results'][t][b]['decision']
                                for r in twice)
        lines.append(f'| {t} | {same("fresh", "fresh2")}/{m} | {same("bank", "fresh")}/{m} | '
                     f'{same("bank", "fresh2")}/{m} |')
    ret = np.median([r['retrain_s'] for r in bank_rows])
    b = np.median([r['results'][t]['bank']['wall_s'] for r in bank_rows for t in ('retrain',
                                                                                   'original')])
    f = np.median([r['results'][t]['fresh']['wall_s'] for r in bank_rows for t in ('retrain',
                                                                                    'original')])
    lines += ['', f'Median warm retrain {ret:.2f} s; one audit with the bank {b:.2f} s '
              f'({b / ret:.2f}× a retrain), with fresh verifiers {f:.2f} s ({f / ret:.2f}×); '
              f'building the bank of {bank_rows[0]["bank_size"]} members '
              f'{np.median([r["bank_s"] for r in bank_rows]):.1f} s once per D.', '']
  stream_rows = [r for r in rows if r.get('kind') == 'stream']
  if stream_rows:
    reqs = [q for r in stream_rows for q in r['requests']]
    n = len(reqs)
    fa = sum(q['h0']['decision'] == 'not_forgotten' for q in reqs)
    det = sum(q['h1']['decision'] == 'not_forgotten' for q in reqs)
    pred = float(np.mean([q['h1']['power'] for q in reqs]))
    lo, hi = stats.clopper_pearson(fa, n)
    dlo, dhi = stats.clopper_pearson(det, n)
    dec = lambda side, d: sum(q[side]['decision'] == d for q in reqs)
    lines += [f'## Stream verdicts ({n} requests of 1–20 records, {len(stream_rows)} draws)', '',
              f'- honest models: not_forgotten {fa}/{n} = {fa / n:.3f} [{lo:.3f}, {hi:.3f}] '
              f'(α = {alpha}); forgotten {dec("h0", "forgotten")}, inconclusive '
              f'{dec("h0", "inconclusive")}',
              f'- original: not_forgotten {det}/{n} = {det / n:.3f} [{dlo:.3f}, {dhi:.3f}]; '
              f'predicted by the power table: {pred:.3f}',
              f'- stream throughput: {sum(r["stream_requests"] for r in stream_rows)} request '
              f'audits in {sum(r["stream_s"] for r in stream_rows):.1f} s '
              f'({3600 * sum(r["stream_requests"] for r in stream_rows) / max(1e-9, sum(r["stream_s"] for r in stream_rows)):.0f}/h, '
              'setup of each model excluded)', '']
    arrs = [dict(np.load(r['arrays'])) for r in stream_rows if r.get('arrays')
            and os.path.exists(r['arrays'])]
    if arrs:
      cat = {k: np.concatenate([a[k] for a in arrs]) for k in arrs[0]}
      p0 = cat['p_h0']
      lines += [f'Per-record p-values under H0: {len(p0)} records, KS p = {ks_uniform(p0):.3f}, '
                f'P(p ≤ 0.05) = {np.mean(p0 <= 0.05):.3f}, P(p ≤ 0.01) = {np.mean(p0 <= 0.01):.3f}',
                '', '| per-record method (same records, same OUT members) | AUC (M vs honest) | '
                + ' | '.join(f'TPR @ {f:.0%} FPR' for f in FPRS) + ' |',
                '|---|---|' + '---|' * len(FPRS)]
      for name, key in (('ours (calibrated residual)', 'ours'), ('LiRA offline', 'lira_offline'),
                        ('RMIA offline', 'rmia_offline')):
        pos, neg = cat[f'{key}_h1'], cat[f'{key}_h0']
        lines.append(f'| {name} | {stats.auc(pos, neg):.3f} | '
                     + ' | '.join(f'{_tpr_at(pos, neg, f):.3f}' for f in FPRS) + ' |')
      lines.append('')
  return '\n'.join(lines)


def run(kind: str, data: str, workdir: str, *, draws: int, first_draw: int = 0,
        model: str | None = None, train_size: int | None = None, bank_size: int = 64,
        data_dir: str = '', num_verifiers: int | None = None,
        log: Callable[[str], None] = print, **kw) -> str:
  """Runs (or resumes) draws of ``kind`` ('bank', 'stream' or 'curve'); returns the summary.

  ``num_verifiers``: K of the bank study's audits (default: the audit's).
  """
  from jaxaudit.audit import AuditSettings
  from jaxaudit.audit.stream import StreamSettings
  from jaxaudit.study.validation import setup
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f'{kind}.jsonl')
  ds, net, recipe, split_kw, _ = setup(data, model=model, train_size=train_size,
                                       data_dir=data_dir)
  done = {r['draw'] for r in io_utils.read_jsonl(path, repair=True, log=log)}
  for r in range(first_draw, first_draw + draws):
    if r in done:
      continue
    if kind == 'bank':
      settings = (AuditSettings(num_verifiers=int(num_verifiers)) if num_verifiers else
                  AuditSettings())
      row = bank_draw(r, ds, net, recipe, split_kw, settings, bank_size=bank_size, log=log, **kw)
    elif kind == 'curve':
      row = curve_draw(r, ds, net, recipe, split_kw, bank_size=bank_size, log=log)
    else:
      row = stream_draw(r, ds, net, recipe, split_kw, StreamSettings(), bank_size=bank_size,
                        save_dir=os.path.join(workdir, 'arrays'), log=log, **kw)
    io_utils.append_jsonl(path, row)
  rows = [r for r in io_utils.read_jsonl(path) if first_draw <= r['draw'] < first_draw + draws]
  table = summarise_curve(rows) if kind == 'curve' else summarise(rows)
  io_utils.write_text(os.path.join(workdir, f'{kind}_summary.md'), table + '\n')
  return table


# Settings of the cost/power curve: (D_ref sample size, views). 'exact+1px' is the exact
# record, the four 1-px shifts and noise; 'auto' the full default neighbourhood.
CURVE_VIEWS = {'auto': 'auto',
               'exact+1px': ('identity', 'shift_right', 'shift_left', 'shift_down', 'shift_up',
                             'noise')}
CURVE_REF = (1000, 2000, 5000)


def curve_draw(r: int, ds, net, recipe, split_kw: dict, *, bank_size: int = 64,
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
  """One draw of the cost/power curve: bank audits under every (ref_sample, views) setting.

  Targets: the honest retrain, the original, and two no-op fakes (output temperature;
  outputs flattened on Du's exact records), from :mod:`jaxaudit.study.validation`.

  Returns:
    dict(draw, results: 'REF/VIEWS' -> target -> dict(decision, p_value, wall_s)).
  """
  from jaxaudit.audit import AuditSettings, audit
  from jaxaudit.audit import bank as bank_lib
  from jaxaudit.data import make_split
  from jaxaudit.study import validation
  split = make_split(ds, seed=r, **split_kw)
  targets, _, _ = validation._targets(r, ds, net, recipe, split, AuditSettings(), 0.01, 3.0)
  targets.pop('gradient_ascent')
  bank = bank_lib.build_bank(net, ds, split.train, recipe, size=bank_size, seed=r)
  results: dict[str, dict] = {}
  for vname, views in CURVE_VIEWS.items():
    for n_ref in CURVE_REF:
      s = AuditSettings(ref_sample=n_ref, views=views, seed=r)
      cache: dict = {}
      audit(targets['original'], ds, split, verifier_model=net, recipe=recipe, settings=s,
            bank=bank, bank_cache=cache)                                 # fills the cache
      cell = results[f'{n_ref}/{vname}'] = {}
      for name, tgt in targets.items():
        t0 = time.time()
        res = audit(tgt, ds, split, verifier_model=net, recipe=recipe, settings=s, bank=bank,
                    bank_cache=cache)
        cell[name] = dict(decision=res.decision, p_value=float(res.p_value),
                          wall_s=time.time() - t0)
  log(f'draw {r}: ' + '; '.join(f'{k}: ' + ','.join(v[t]['decision'][:3] for t in v)
                                for k, v in results.items()))
  return dict(kind='curve', draw=r, results=results)


def summarise_curve(rows: Sequence[dict]) -> str:
  """Markdown: per setting, false alarms, detections, median log10 p of the original, time."""
  rows = [r for r in rows if r.get('kind') == 'curve']
  if not rows:
    return ''
  n = len(rows)
  names = list(rows[0]['results'][next(iter(rows[0]['results']))])
  lines = [f'## Cost / power curve ({n} development draws, bank audits)', '',
           '| D_ref sample / views | ' + ' | '.join(f'{t} flagged' for t in names)
           + ' | median log10 p (original) | median audit s |',
           '|---|' + '---|' * (len(names) + 2)]
  for key in rows[0]['results']:
    cells = [f'{sum(r["results"][key][t]["decision"] == "not_forgotten" for r in rows)}/{n}'
             for t in names]
    lp = np.median([np.log10(max(r['results'][key]['original']['p_value'], 1e-300))
                    for r in rows])
    wall = np.median([r['results'][key][t]['wall_s'] for r in rows for t in names])
    lines.append(f'| {key} | ' + ' | '.join(cells) + f' | {lp:.2f} | {wall:.2f} |')
  return '\n'.join(lines) + '\n'
