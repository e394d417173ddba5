"""Validation of the audit: soundness, completeness and calibration, with peers.

For R independent draws of (Du, seeds) on real data, audits
  (a) the honest retrain on Dr           → must pass (false alarms ≤ α)
  (b) the original M                     → must be caught (remembers)
  (c) gradient ascent from M             → must be caught (damaged / collapse)
  (d) no-op fakes: M with a global output temperature, and M whose outputs
      are masked (flattened) only on the exact input records of Du
and runs beside it a raw, uncalibrated population test (Mann–Whitney of Mu's
φ on Du vs D_ref, no verifiers) and, on the first --peer_draws draws, the peer
auditors (population MIA, LiRA offline/online, RMIA). Prints and saves a
table of false-alarm / detection rates with Clopper–Pearson intervals and each
auditor's cost (models trained, wall time). Resumable: one JSON line per
finished draw in --results; a restarted run skips finished draws.

  # quick (embedded digits, minutes):
  python experiments/validate_audit.py --data=digits --draws=10 --workdir=runs/validate_digits
  # MNIST, |D| = 10k, |Du| = 500, K = 4, MLP (the acceptance run, ~1 h on 2 CPU cores):
  python experiments/validate_audit.py --data=mnist --draws=100 --workdir=runs/validate_mnist
  # CIFAR-10 (accelerator recommended):
  python experiments/validate_audit.py --data=cifar10 --model=cnn --draws=20 --workdir=runs/validate_cifar
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxaudit import cli
from jaxaudit.audit import AuditSettings, Target, audit, stats
from jaxaudit.peers import lira, population_mia, rmia
from jaxaudit.audit.verifiers import VerifierSet, plan_subsets
from jaxaudit.data import load_dataset, make_split
from jaxaudit.errors import AuditError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, predict_logits, train_ensemble, unstack
from jaxaudit.unlearn import get_method, make_unlearn_data

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_enum('data', 'digits', ['digits', 'mnist', 'cifar10'], 'Data set.')
flags.DEFINE_string('model', None, 'mlp or cnn (default: mlp; cnn for cifar10).')
flags.DEFINE_integer('draws', 10, 'Independent draws of (Du, seeds).')
flags.DEFINE_integer('first_draw', 0, 'Seed of the first draw.')
flags.DEFINE_integer('train_size', None, '|D| (default: 10000; all of digits).')
flags.DEFINE_integer('forget_size', None, '|Du| (default: 500; 30% of D for digits).')
flags.DEFINE_integer('num_verifiers', 4, 'K.')
flags.DEFINE_float('temperature', 3.0, 'Temperature of the temperature fake.')
flags.DEFINE_float('ga_lr', None, 'Gradient-ascent learning rate (default per data set).')
flags.DEFINE_integer('peer_draws', 5, 'Run the peer auditors on the first N draws.')
flags.DEFINE_integer('num_shadows', 8, 'Shadow / reference models of LiRA and RMIA.')
flags.DEFINE_string('workdir', 'runs/validate', 'Where results and caches go.')
flags.DEFINE_string('results', None, 'JSON-lines results (default WORKDIR/results.jsonl).')
FLAGS = flags.FLAGS


def setup(data: str):
  """(dataset, model, recipe, split kwargs, ga_lr) of one data set."""
  if data == 'digits':
    ds = load_dataset('digits')
    model = get_model(FLAGS.model or 'mlp', 10, ds.input_shape,
                      **({'hidden': (512, 512)} if (FLAGS.model or 'mlp') == 'mlp' else {}))
    recipe = Recipe(epochs=60, batch_size=64, learning_rate=2e-3)
    split_kw = dict(ref_fraction=0.3, forget_fraction=0.3)
    return ds, model, recipe, split_kw, 0.08
  npz = {'mnist': 'mnist.npz', 'cifar10': 'cifar10_jpeg.npz'}[data]
  ds = load_dataset(data, npz=os.path.join(SHARED, npz))
  name = FLAGS.model or ('cnn' if data == 'cifar10' else 'mlp')
  model = get_model(name, ds.num_classes, ds.input_shape,
                    **({'hidden': (256, 256)} if name == 'mlp' else {}))
  recipe = Recipe(epochs=10 if name == 'mlp' else 8, batch_size=128, learning_rate=1e-3,
                  augment='flip_crop' if data == 'cifar10' else 'none')
  split_kw = dict(ref_fraction=0.1, train_size=FLAGS.train_size or 10_000,
                  forget_size=FLAGS.forget_size or 500, test_size=2000)
  return ds, model, recipe, split_kw, 0.01


def masked_fake(model, params, x_forget: np.ndarray, flatten: float = 0.1):
  """M, except on inputs that exactly equal a record of Du: logits × ``flatten``.

  The owner hides Du's exact inputs (a lookup of their bytes) and answers
  everything else, augmented neighbours included, with the original model.
  """
  hashes = {hashlib.sha1(np.ascontiguousarray(r, np.float32).tobytes()).digest() for r in x_forget}

  def fn(x):
    x = np.asarray(x, np.float32)
    lg = np.array(predict_logits(model, params, x))
    hit = np.array([hashlib.sha1(np.ascontiguousarray(r).tobytes()).digest() in hashes for r in x])
    lg[hit] *= flatten
    return lg

  return fn


def run_draw(r: int, ds, model, recipe, split_kw, ga_lr, settings) -> dict:
  t_draw = time.time()
  split = make_split(ds, seed=r, **split_kw)
  # Original and honest retrain: one 2-model program, independent keys.
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1000 + r), i))(jnp.arange(2))
  t0 = time.time()
  pair = train_ensemble(model, ds.x_train, ds.y_train, [split.train, split.retain], keys, recipe)
  t_pair = time.time() - t0
  original, retrained = unstack(pair.params, 0), unstack(pair.params, 1)
  # Verifiers, trained once per draw and shared by every target of the draw.
  subsets, members = plan_subsets(split, num_verifiers=settings.num_verifiers, ratio=0.15,
                                  member_sample=settings.member_sample, seed=r)
  vkeys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(r), i))(
      jnp.arange(settings.num_verifiers))
  t0 = time.time()
  vres = train_ensemble(model, ds.x_train, ds.y_train, subsets, vkeys, recipe)
  t_ver = time.time() - t0
  vs = VerifierSet(vres.params, subsets, members, 0.15, f'draw{r}', t_ver, False)
  ga = get_method('gradient_ascent', lr=ga_lr)
  t0 = time.time()
  ga_params = ga.fn(original, model, make_unlearn_data(ds, split, recipe), jax.random.key(r))
  t_ga = time.time() - t0
  targets = {
      'retrain': Target.from_params(model, retrained, 'retrain'),
      'original': Target.from_params(model, original, 'original'),
      'gradient_ascent': Target.from_params(model, ga_params, 'gradient_ascent'),
      'fake_temperature': Target.from_fn(
          lambda x: predict_logits(model, original, x) / FLAGS.temperature, 'fake_temperature'),
      'fake_masking': Target.from_fn(masked_fake(model, original, ds.x_train[split.forget]),
                                     'fake_masking'),
  }
  row = dict(draw=r, sizes=dict(train=len(split.train), forget=len(split.forget),
                                ref=len(split.ref)),
             train_time_s=dict(original_and_retrain=t_pair, verifiers=t_ver, gradient_ascent=t_ga),
             results={})
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
      row['results'][name] = dict(
          ours=dict(decision='not_forgotten', direction='collapse', p_value=0.0,
                    effect_auc=float('nan'), forgetting_score=float('nan'), power=float('nan'),
                    flagged=0, tests={}, acc={}, wall_time_s=time.time() - t0,
                    models_trained=settings.num_verifiers, error=str(e)[:200]),
          raw_population=dict(p_value=0.0, auc=float('nan'), decision='not_forgotten'))
      continue
    raw_du = np.asarray(res.details['raw_phi']['forget'])
    raw_ref = np.asarray(res.details['raw_phi']['ref'])
    raw = stats.mann_whitney(raw_du, raw_ref)
    out = dict(ours=dict(decision=res.decision, direction=res.direction, p_value=res.p_value,
                         effect_auc=res.effect_auc, forgetting_score=res.forgetting_score,
                         power=res.power, flagged=len(res.flagged_records),
                         tests=res.details['tests'], acc=res.details['accuracy']['target'],
                         wall_time_s=time.time() - t0, models_trained=settings.num_verifiers),
               raw_population=dict(p_value=raw.p_value, auc=raw.auc,
                                   decision='not_forgotten' if raw.p_value <= 0.05 else 'forgotten'))
    if r - FLAGS.first_draw < FLAGS.peer_draws and name in ('retrain', 'original', 'gradient_ascent',
                                                              'fake_masking'):
      cache = os.path.join(FLAGS.workdir, 'peer_cache', f'draw{r}')
      peers = {}
      for pname, fn in (
          ('population_mia', lambda: population_mia(tgt, ds, split, seed=r)),
          ('lira', lambda: lira(tgt, ds, split, model, recipe, num_shadows=FLAGS.num_shadows,
                                seed=r, cache_dir=cache)),
          ('rmia', lambda: rmia(tgt, ds, split, model, recipe, num_refs=4, seed=r,
                                cache_dir=cache))):
        t0 = time.time()
        p = fn()
        peers[pname] = dict(score=p.score, decision=p.decision, cost=p.cost,
                            wall_time_s=time.time() - t0)
      out['peers'] = peers
    row['results'][name] = out
  row['wall_time_s'] = time.time() - t_draw
  return row


def load_rows(path: str) -> list[dict]:
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break       # a line cut by a crash: the draw is recomputed
  return rows


def append_row(path: str, row: dict) -> None:
  rows = load_rows(path)   # rewrite atomically without any partial tail
  rows.append(row)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    for r in rows:
      f.write(json.dumps(r, default=float) + '\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def summarise(rows: list[dict], alpha: float) -> str:
  """The validation table."""
  n = len(rows)
  lines = [f'draws: {n}', '',
           '| target | expected | ours: rate [95% CI] | ours: inconclusive | raw population test | '
           + 'population MIA | LiRA | RMIA |', '|---|---|---|---|---|---|---|---|']
  expect = {'retrain': 'pass (false-alarm rate)', 'original': 'fail (detection)',
            'gradient_ascent': 'fail (detection)', 'fake_temperature': 'fail (detection)',
            'fake_masking': 'fail (detection)'}
  for name, what in expect.items():
    res = [r['results'][name] for r in rows if name in r['results']]
    if not res:
      continue
    flag = [x['ours']['decision'] == 'not_forgotten' for x in res]
    inc = sum(x['ours']['decision'] in ('inconclusive', 'invalid_reference') for x in res)
    k = int(np.sum(flag))
    lo, hi = stats.clopper_pearson(k, len(res))
    raw = np.mean([x['raw_population']['decision'] == 'not_forgotten' for x in res])
    peer_cols = []
    for p in ('population_mia', 'lira', 'rmia'):
      pr = [x['peers'][p]['decision'] == 'not_forgotten' for x in res if 'peers' in x]
      peer_cols.append(f'{np.mean(pr):.2f} (n={len(pr)})' if pr else 'n/a')
    dirs = {}
    for x in res:
      if x['ours']['decision'] == 'not_forgotten':
        dirs[x['ours']['direction']] = dirs.get(x['ours']['direction'], 0) + 1
    lines.append(f'| {name} | {what} | {k}/{len(res)} = {k / len(res):.2f} [{lo:.2f}, {hi:.2f}] '
                 f'{dirs if dirs else ""} | {inc} | {raw:.2f} | ' + ' | '.join(peer_cols) + ' |')
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
            f'| ours (K verifiers on 15% of Dr) | {rows[0]["results"]["retrain"]["ours"]["models_trained"]} '
            f'| {ver_t:.1f} (one program) | {ours_t:.2f} |',
            f'| one retrain from scratch (reference) | 1 | {pair_t:.1f} | |']
  for p in ('population_mia', 'lira', 'rmia'):
    pr = [x['peers'][p] for r in rows for x in r['results'].values() if 'peers' in x]
    if pr:
      lines.append(f'| {p} | {pr[0]["cost"]["models_trained"]} | | '
                   f'{np.mean([q["wall_time_s"] for q in pr]):.2f} (first target incl. training) |')
  return '\n'.join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  path = FLAGS.results or os.path.join(FLAGS.workdir, 'results.jsonl')
  ds, model, recipe, split_kw, ga_lr = setup(FLAGS.data)
  ga_lr = FLAGS.ga_lr or ga_lr
  settings = AuditSettings(num_verifiers=FLAGS.num_verifiers)
  done = {r['draw'] for r in load_rows(path)}
  todo = [r for r in range(FLAGS.first_draw, FLAGS.first_draw + FLAGS.draws) if r not in done]
  print(f'{FLAGS.data} {type(model).__name__}: {len(done)} draws done, {len(todo)} to go -> {path}',
        flush=True)
  t0 = time.time()
  for i, r in enumerate(todo):
    row = run_draw(r, ds, model, recipe, split_kw, ga_lr, settings)
    append_row(path, row)
    el = time.time() - t0
    dec = {k: v['ours']['decision'][:6] + ('/' + v['ours']['direction'][:4] if v['ours']['direction'] else '')
           for k, v in row['results'].items()}
    print(f'[{i + 1}/{len(todo)}] draw {r}: {dec}  ({el:.0f}s, ETA {el / (i + 1) * (len(todo) - i - 1):.0f}s)',
          flush=True)
  rows = [r for r in load_rows(path)
          if FLAGS.first_draw <= r['draw'] < FLAGS.first_draw + FLAGS.draws]
  table = summarise(rows, settings.test.alpha)
  print(table)
  with open(os.path.join(FLAGS.workdir, 'summary.md'), 'w') as f:
    f.write(table + '\n')


if __name__ == '__main__':
  cli.run_script(main)
