r"""Validation of the audit: soundness, completeness and calibration, with peers.

For R independent draws of (Du, seeds) on real data, audits
  (a) the honest retrain on Dr           → must pass (false alarms ≤ α)
  (b) the original M                     → must be caught (remembers)
  (c) gradient ascent from M             → must be caught (damaged / collapse)
  (d) no-op fakes: M with a global output temperature, and M whose outputs
      are masked (flattened) only on the exact input records of Du
      (:func:`jaxaudit.study.fakes.temperature_fn`, :func:`~jaxaudit.study.fakes.masked_fn`)
and runs beside it a raw, uncalibrated population test (Mann–Whitney of Mu's
φ on Du vs D_ref, no verifiers) and, on the first ``peer_draws`` draws, the
peer auditors (population MIA, LiRA, RMIA). :func:`summarise` makes the table
of false-alarm / detection rates with Clopper–Pearson intervals and each
auditor's cost (models trained, wall time). Resumable: one JSON line per
finished draw in the results file; a restarted run skips finished draws.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from jaxaudit import io_utils
from jaxaudit.study import peers as peers_lib
from jaxaudit.study.fakes import masked_fn, temperature_fn

# Targets of a draw and what the audit should say about them.
EXPECT = {'retrain': 'pass (false-alarm rate)', 'original': 'fail (detection)',
          'gradient_ascent': 'fail (detection)', 'fake_temperature': 'fail (detection)',
          'fake_masking': 'fail (detection)'}
# The targets the peers audit, and the peers.
PEER_TARGETS = ('retrain', 'original', 'gradient_ascent', 'fake_masking')
DRAW_PEERS = ('population_mia', 'lira', 'rmia')
# Logits of the exact records of Du in the masking fake are multiplied by this.
MASK_FLATTEN = 0.1


def setup(data: str, *, model: str | None = None, train_size: int | None = None,
          forget_size: int | None = None, data_dir: str = '') -> tuple:
  """(dataset, model, recipe, split kwargs, gradient-ascent lr) of one data set.

  Args:
    data: ``digits``, ``mnist`` or ``cifar10`` (the last two read
      ``data_dir/mnist.npz`` / ``data_dir/cifar10_jpeg.npz``).
    model: ``mlp`` or ``cnn`` (default: mlp; cnn for cifar10).
    train_size, forget_size: |D| and |Du| (default 10000 and 500; digits: all
      of it and 30%).
  """
  from jaxaudit.data import load_dataset
  from jaxaudit.models import get_model
  from jaxaudit.train import Recipe
  if data == 'digits':
    ds = load_dataset('digits')
    net = get_model(model or 'mlp', 10, ds.input_shape,
                    **({'hidden': (512, 512)} if (model or 'mlp') == 'mlp' else {}))
    recipe = Recipe(epochs=60, batch_size=64, learning_rate=2e-3)
    split_kw = dict(ref_fraction=0.3, forget_fraction=0.3)
    return ds, net, recipe, split_kw, 0.08
  npz = {'mnist': 'mnist.npz', 'cifar10': 'cifar10_jpeg.npz'}[data]
  ds = load_dataset(data, npz=os.path.join(data_dir, npz))
  name = model or ('cnn' if data == 'cifar10' else 'mlp')
  net = get_model(name, ds.num_classes, ds.input_shape,
                  **({'hidden': (256, 256)} if name == 'mlp' else {}))
  recipe = Recipe(epochs=10 if name == 'mlp' else 8, batch_size=128, learning_rate=1e-3,
                  augment='flip_crop' if data == 'cifar10' else 'none')
  split_kw = dict(ref_fraction=0.1, train_size=train_size or 10_000,
                  forget_size=forget_size or 500, test_size=2000)
  return ds, net, recipe, split_kw, 0.01


def _targets(r: int, ds, model, recipe, split, settings, ga_lr: float, temperature: float):
  """The five targets of draw ``r`` and their training times.

  The original and the honest retrain are one 2-model program with
  independent keys; the verifiers (K on 15% of Dr, seed ``r``) are trained
  once and shared by every target of the draw.
  """
  import jax
  import jax.numpy as jnp
  from jaxaudit.audit import Target
  from jaxaudit.audit.verifiers import get_verifiers
  from jaxaudit.train import train_ensemble, unstack
  from jaxaudit.unlearn import get_method, make_unlearn_data
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1000 + r), i))(jnp.arange(2))
  t0 = time.time()
  pair = train_ensemble(model, ds.x_train, ds.y_train, [split.train, split.retain], keys, recipe)
  t_pair = time.time() - t0
  original, retrained = unstack(pair.params, 0), unstack(pair.params, 1)
  t0 = time.time()
  vs = get_verifiers(model, ds, split, recipe, num_verifiers=settings.num_verifiers, ratio=0.15,
                     member_sample=settings.member_sample, seed=r, cache_dir=None)
  t_ver = time.time() - t0
  ga = get_method('gradient_ascent', lr=ga_lr)
  t0 = time.time()
  ga_params = ga.fn(original, model, make_unlearn_data(ds, split, recipe), jax.random.key(r))
  t_ga = time.time() - t0
  targets = {
      'retrain': Target.from_params(model, retrained, 'retrain'),
      'original': Target.from_params(model, original, 'original'),
      'gradient_ascent': Target.from_params(model, ga_params, 'gradient_ascent'),
      'fake_temperature': Target.from_fn(temperature_fn(model, original, temperature),
                                         'fake_temperature'),
      'fake_masking': Target.from_fn(masked_fn(model, original, ds.x_train[split.forget],
                                               mode='scale', scale=MASK_FLATTEN), 'fake_masking'),
  }
  times = dict(original_and_retrain=t_pair, verifiers=t_ver, gradient_ascent=t_ga)
  return targets, vs, times


def _collapsed(reason: str, settings, wall: float) -> dict:
  """The record of a target with NaN/inf outputs (``reason``): a collapse, no test run."""
  return dict(
      ours=dict(decision='not_forgotten', direction='collapse', p_value=0.0,
                effect_auc=float('nan'), forgetting_score=float('nan'), power=float('nan'),
                flagged=0, tests={}, acc={}, wall_time_s=wall,
                models_trained=settings.num_verifiers, error=reason[:200]),
      raw_population=dict(p_value=0.0, auc=float('nan'), decision='not_forgotten'))


def run_draw(r: int, ds, model, recipe, split_kw: dict, ga_lr: float, settings, *,
             temperature: float = 3.0, with_peers: bool = False, num_shadows: int = 8,
             peer_cache: str | None = None) -> dict[str, Any]:
  """One draw: split seed ``r``, five targets, our audit, the raw test and (optionally) peers.

  Args:
    r: the draw's seed (split, models, verifiers, peers).
    ds, model, recipe, split_kw, ga_lr: from :func:`setup`.
    settings: the :class:`jaxaudit.audit.AuditSettings`.
    temperature: of the temperature fake.
    with_peers: run population MIA, LiRA (``num_shadows`` shadows) and RMIA (4
      references) on :data:`PEER_TARGETS`, caching their models in ``peer_cache``.
  Returns:
    The draw's row: ``draw``, ``sizes``, ``train_time_s``, ``results`` (target
    → ours / raw_population / peers) and ``wall_time_s``.
  """
  from jaxaudit.audit import audit, stats
  from jaxaudit.data import make_split
  from jaxaudit.errors import AuditError
  t_draw = time.time()
  split = make_split(ds, seed=r, **split_kw)
  targets, vs, times = _targets(r, ds, model, recipe, split, settings, ga_lr, temperature)
  row = dict(draw=r, sizes=dict(train=len(split.train), forget=len(split.forget),
                                ref=len(split.ref)), train_time_s=times, results={})
  req = peers_lib.PeerRequest(ds, split, model, recipe, seed=r, cache_dir=peer_cache,
                              num_shadows=num_shadows, rmia_refs=4)
  memo = {}   # verifier logits shared by the five targets of this draw
  for name, tgt in targets.items():
    t0 = time.time()
    try:
      res = audit(tgt, ds, split, verifier_model=model, recipe=recipe, settings=settings,
                  verifiers=vs, memo=memo)
    except AuditError as e:
      if 'NaN or inf' not in str(e):
        raise
      # A diverged model (e.g. gradient ascent blown up): the audit refuses its
      # outputs; as an unlearning result it is a failure (collapse).
      row['results'][name] = _collapsed(str(e), settings, time.time() - t0)
      continue
    if 'raw_phi' not in res.details:   # the audit's own collapse verdict on NaN/inf outputs
      row['results'][name] = _collapsed(res.details.get('reason', ''), settings,
                                        time.time() - t0)
      continue
    raw = stats.mann_whitney(np.asarray(res.details['raw_phi']['forget']),
                             np.asarray(res.details['raw_phi']['ref']))
    out = dict(ours=dict(decision=res.decision, direction=res.direction, p_value=res.p_value,
                         effect_auc=res.effect_auc, forgetting_score=res.forgetting_score,
                         power=res.power, flagged=len(res.flagged_records),
                         tests=res.details['tests'], acc=res.details['accuracy']['target'],
                         wall_time_s=time.time() - t0, models_trained=settings.num_verifiers),
               raw_population=dict(
                   p_value=raw.p_value, auc=raw.auc,
                   decision='not_forgotten' if raw.p_value <= 0.05 else 'forgotten'))
    if with_peers and name in PEER_TARGETS:
      out['peers'] = peers_lib.run_peers(tgt, req, DRAW_PEERS, catch=False,
                                         summary=peers_lib.validation_summary)
    row['results'][name] = out
  row['wall_time_s'] = time.time() - t_draw
  return row


def _rate_line(name: str, what: str, res: Sequence[dict]) -> str:
  """One target's line of the validation table."""
  from jaxaudit.audit import stats
  flag = [x['ours']['decision'] == 'not_forgotten' for x in res]
  inc = sum(x['ours']['decision'] in ('inconclusive', 'invalid_reference') for x in res)
  k = int(np.sum(flag))
  lo, hi = stats.clopper_pearson(k, len(res))
  raw = np.mean([x['raw_population']['decision'] == 'not_forgotten' for x in res])
  peer_cols = []
  for p in DRAW_PEERS:
    pr = [x['peers'][p]['decision'] == 'not_forgotten' for x in res if 'peers' in x]
    peer_cols.append(f'{np.mean(pr):.2f} (n={len(pr)})' if pr else 'n/a')
  dirs = {}
  for x in res:
    if x['ours']['decision'] == 'not_forgotten':
      dirs[x['ours']['direction']] = dirs.get(x['ours']['direction'], 0) + 1
  return (f'| {name} | {what} | {k}/{len(res)} = {k / len(res):.2f} [{lo:.2f}, {hi:.2f}] '
          f'{dirs if dirs else ""} | {inc} | {raw:.2f} | ' + ' | '.join(peer_cols) + ' |')


def summarise(rows: Sequence[dict], alpha: float) -> str:
  """The validation table (Markdown) of the draws ``rows``; ``alpha``: the audit's level."""
  from jaxaudit.audit import stats
  n = len(rows)
  lines = [f'draws: {n}', '',
           '| target | expected | ours: rate [95% CI] | ours: inconclusive | raw population test | '
           + 'population MIA | LiRA | RMIA |', '|---|---|---|---|---|---|---|---|']
  for name, what in EXPECT.items():
    res = [r['results'][name] for r in rows if name in r['results']]
    if res:
      lines.append(_rate_line(name, what, res))
  # p-value calibration under H0.
  p0 = np.array([r['results']['retrain']['ours']['p_value'] for r in rows])
  pe = np.array([r['results']['retrain']['ours']['tests']['exact']['p_value'] for r in rows
                 if r['results']['retrain']['ours']['tests']])
  if len(p0) >= 5:
    ks = stats.ks_2samp(pe, np.linspace(0, 1, 1001)[1:-1])
    lines += ['', f'H0 (honest retrains): exact-view p-values vs uniform: KS p = {ks.p_value:.3f}; '
              f'combined p ≤ α={alpha}: {np.mean(p0 <= alpha):.3f}']
  # Cost.
  ours_t = np.mean([x['ours']['wall_time_s'] for r in rows for x in r['results'].values()])
  ver_t = np.mean([r['train_time_s']['verifiers'] for r in rows])
  pair_t = np.mean([r['train_time_s']['original_and_retrain'] for r in rows]) / 2
  lines += ['', '| auditor | models trained per request | training wall time (s) | '
            'audit wall time per target (s) |', '|---|---|---|---|',
            f'| ours (K verifiers on 15% of Dr) | '
            f'{rows[0]["results"]["retrain"]["ours"]["models_trained"]} '
            f'| {ver_t:.1f} (one program) | {ours_t:.2f} |',
            f'| one retrain from scratch (reference) | 1 | {pair_t:.1f} | |']
  for p in DRAW_PEERS:
    pr = [x['peers'][p] for r in rows for x in r['results'].values() if 'peers' in x]
    if pr:
      lines.append(f'| {p} | {pr[0]["cost"]["models_trained"]} | | '
                   f'{np.mean([q["wall_time_s"] for q in pr]):.2f} (first target incl. training) |')
  return '\n'.join(lines)


def run_validation(data: str, workdir: str, results: str | None = None, *,
                   model: str | None = None, draws: int = 10, first_draw: int = 0,
                   train_size: int | None = None, forget_size: int | None = None,
                   num_verifiers: int = 4, temperature: float = 3.0, ga_lr: float | None = None,
                   peer_draws: int = 5, num_shadows: int = 8, data_dir: str = '',
                   log: Callable[[str], None] = print) -> str:
  """Runs (or resumes) draws ``first_draw .. first_draw + draws - 1``; returns the table.

  Rows go to ``results`` (default WORKDIR/results.jsonl), one per finished
  draw; the table (:func:`summarise` of the draws in range) also to
  WORKDIR/summary.md. Arguments as in :func:`setup` and :func:`run_draw`.
  """
  from jaxaudit.audit import AuditSettings
  os.makedirs(workdir, exist_ok=True)
  path = results or os.path.join(workdir, 'results.jsonl')
  ds, net, recipe, split_kw, default_lr = setup(data, model=model, train_size=train_size,
                                                forget_size=forget_size, data_dir=data_dir)
  settings = AuditSettings(num_verifiers=num_verifiers)
  done = {r['draw'] for r in io_utils.read_jsonl(path, repair=True, log=log)}
  todo = [r for r in range(first_draw, first_draw + draws) if r not in done]
  log(f'{data} {type(net).__name__}: {len(done)} draws done, {len(todo)} to go -> {path}')
  t0 = time.time()
  for i, r in enumerate(todo):
    row = run_draw(r, ds, net, recipe, split_kw, ga_lr or default_lr, settings,
                   temperature=temperature, with_peers=r - first_draw < peer_draws,
                   num_shadows=num_shadows,
                   peer_cache=os.path.join(workdir, 'peer_cache', f'draw{r}'))
    io_utils.append_jsonl(path, row)
    el = time.time() - t0
    dec = {k: v['ours']['decision'][:6] + ('/' + v['ours']['direction'][:4]
                                           if v['ours']['direction'] else '')
           for k, v in row['results'].items()}
    log(f'[{i + 1}/{len(todo)}] draw {r}: {dec}  ({el:.0f}s, ETA '
        f'{el / (i + 1) * (len(todo) - i - 1):.0f}s)')
  rows = [r for r in io_utils.read_jsonl(path) if first_draw <= r['draw'] < first_draw + draws]
  table = summarise(rows, settings.test.alpha)
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  return table
