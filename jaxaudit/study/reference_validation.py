"""Validation of the reference check: same-pool and shifted user references.

Per draw (a fresh split of |D| records with |Du| forgotten, seeds from the
draw number) one honest retrain on Dr and one verifier set are trained, then
the retrain is audited against several user references passed through the
API (``audit(..., reference=...)``): the split's own D_ref records
(``same_pool``: exchangeable with Du, the audit must pass and the check must
stay quiet) and the same records brightened (+b, clipped to [0, 1]) or with
Gaussian noise (σ, clipped) in raw pixel units. A good check turns every
shift that would fool the test into ``invalid_reference``.

:func:`run_validation` is resumable (one JSON line per finished draw, the file
rewritten atomically) and writes a Markdown summary atomically;
``experiments/validate_reference.py`` is its command line.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit import io_utils
from jaxaudit.audit import reference as reference_lib
from jaxaudit.audit import stats
from jaxaudit.audit.runner import AuditSettings, audit
from jaxaudit.audit.target import Target
from jaxaudit.audit.verifiers import VerifierSet, plan_subsets
from jaxaudit.data import Dataset, load_dataset, make_split
from jaxaudit.errors import AuditError

# (name, kind, amount): kind 'none', 'brightness' (+amount) or 'noise' (σ = amount), raw units.
CONDITIONS = (('same_pool', 'none', 0.0),
              ('brightness+0.02', 'brightness', 0.02), ('brightness+0.05', 'brightness', 0.05),
              ('brightness+0.10', 'brightness', 0.10), ('brightness+0.15', 'brightness', 0.15),
              ('noise0.03', 'noise', 0.03), ('noise0.06', 'noise', 0.06),
              ('noise0.10', 'noise', 0.10), ('noise0.20', 'noise', 0.20))
OUTCOMES = ('invalid_reference', 'forgotten', 'not_forgotten', 'inconclusive')


def shifted_reference(dataset: Dataset, idx: np.ndarray, kind: str, amount: float, *,
                      moments: tuple[np.ndarray, np.ndarray], seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Pool records ``idx`` shifted in raw [0, 1] units, back in dataset units.

  Args:
    dataset: the data set (raw inputs in [0, 1], e.g. uint8 pixels / 255).
    idx: (n,) pool indices.
    kind: 'none', 'brightness' (raw + amount) or 'noise' (raw + amount · N(0, 1)).
    amount: the shift.
    moments: (mean (C,), std (C,)) of :func:`jaxaudit.audit.reference.dataset_standardisation`.
    seed: noise seed.
  Returns:
    (x (n, *input_shape) float32 in dataset units, y (n,) int32), clipped to [0, 1] raw.
  """
  mean, std = moments
  raw = np.asarray(dataset.x_train[idx], np.float32) * std + mean
  if kind == 'brightness':
    raw = raw + np.float32(amount)
  elif kind == 'noise':
    raw = raw + np.float32(amount) * np.random.default_rng([int(seed), 4242]).standard_normal(
        raw.shape).astype(np.float32)
  elif kind != 'none':
    raise AuditError(f'unknown shift kind {kind!r}')
  raw = np.clip(raw, 0.0, 1.0)
  return ((raw - mean) / std).astype(np.float32), np.asarray(dataset.y_train[idx], np.int32)


def mnist_setup(npz: str, *, train_size: int = 10_000, forget_size: int = 500):
  """(dataset, model, recipe, split kwargs) of the MNIST validation (MLP 256-256)."""
  from jaxaudit.models import get_model  # pylint: disable=g-import-not-at-top
  from jaxaudit.train import Recipe  # pylint: disable=g-import-not-at-top
  ds = load_dataset('mnist', npz=npz)
  model = get_model('mlp', ds.num_classes, ds.input_shape, hidden=(256, 256))
  recipe = Recipe(epochs=10, batch_size=128, learning_rate=1e-3)
  split_kw = dict(ref_fraction=0.1, train_size=train_size, forget_size=forget_size, test_size=2000)
  return ds, model, recipe, split_kw


def run_draw(r: int, ds: Dataset, model, recipe, split_kw: dict, settings: AuditSettings,
             conditions: Sequence[tuple[str, str, float]],
             moments: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
  """One draw: honest retrain + verifiers, audited against each reference condition.

  Returns:
    JSON-serialisable row: draw, sizes, train times, results[condition] =
    dict(decision, direction, p_value, rejected, reference_check p/worst/statistics
    raw p-values, wall_time_s).
  """
  from jaxaudit.train import train_ensemble, unstack  # pylint: disable=g-import-not-at-top
  t_draw = time.time()
  split = make_split(ds, seed=r, **split_kw)
  t0 = time.time()
  key = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5000 + r), i))(jnp.arange(1))
  retrained = unstack(train_ensemble(model, ds.x_train, ds.y_train, [split.retain], key,
                                     recipe).params, 0)
  t_ret = time.time() - t0
  k = settings.num_verifiers
  subsets, members = plan_subsets(split, num_verifiers=k, ratio=float(settings.ratios[0]),
                                  member_sample=settings.member_sample, seed=r)
  vkeys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(r), i))(jnp.arange(k))
  t0 = time.time()
  vres = train_ensemble(model, ds.x_train, ds.y_train, subsets, vkeys, recipe)
  t_ver = time.time() - t0
  vs = VerifierSet(vres.params, subsets, members, float(settings.ratios[0]), f'refdraw{r}', t_ver,
                   False)
  target = Target.from_params(model, retrained, 'retrain')
  memo: dict = {}
  row = dict(draw=r, sizes=dict(train=len(split.train), forget=len(split.forget),
                                ref=len(split.ref)),
             train_time_s=dict(retrain=t_ret, verifiers=t_ver), results={})
  ref_idx = np.asarray(split.ref)
  for ci, (name, kind, amount) in enumerate(conditions):
    t0 = time.time()
    x_ref, y_ref = shifted_reference(ds, ref_idx, kind, amount, moments=moments,
                                     seed=1000 * r + ci)
    res = audit(target, ds, split, verifier_model=model, recipe=recipe, settings=settings,
                verifiers=vs, memo=memo, reference=(x_ref, y_ref))
    rc = res.details['reference_check']
    row['results'][name] = dict(
        decision=res.decision, direction=res.direction, p_value=res.p_value,
        rejected=res.details['rejected'], effect_auc=res.effect_auc,
        forgetting_score=res.forgetting_score, forgetting_score_ci=res.forgetting_score_ci,
        acc_ref=res.details['accuracy']['target']['ref'],
        reference_check=dict(ok=rc['ok'], p_value=rc['p_value'], worst=rc['worst'],
                             raw={s: v['p_value'] for s, v in rc['statistics'].items()}),
        tests={s: v['p_value'] for s, v in res.details['tests'].items()},
        wall_time_s=time.time() - t0)
  row['wall_time_s'] = time.time() - t_draw
  return row


def summarise(rows: list[dict], *, alpha: float, self_check_alpha: float) -> str:
  """The Markdown tables: outcome fractions per condition with Clopper–Pearson 95% intervals."""
  def frac(k, n):
    lo, hi = stats.clopper_pearson(k, n)
    return f'{k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]'
  names = [c[0] for c in CONDITIONS if any(c[0] in r['results'] for r in rows)]
  lines = ['| reference | draws | ' + ' | '.join(OUTCOMES) + ' | not_forgotten without the check |',
           '|---|---|' + '---|' * (len(OUTCOMES) + 1)]
  for name in names:
    res = [r['results'][name] for r in rows if name in r['results']]
    n = len(res)
    cells = [frac(sum(x['decision'] == o for x in res), n) for o in OUTCOMES]
    unchecked = sum(bool(x['rejected']) for x in res)
    lines.append(f'| {name} | {n} | ' + ' | '.join(cells) + f' | {frac(unchecked, n)} |')
  same = [r['results']['same_pool'] for r in rows if 'same_pool' in r['results']]
  if same:
    n = len(same)
    fired = sum(not x['reference_check']['ok'] for x in same)
    fa = sum(x['decision'] == 'not_forgotten' for x in same)
    rej = sum(bool(x['rejected']) for x in same)
    lines += ['', f'Same-pool reference ({n} draws): self-check firing rate {frac(fired, n)} '
              f'(level {self_check_alpha}); audit false-alarm rate (not_forgotten) {frac(fa, n)} '
              f'(α = {alpha}); the test alone (ignoring the check) rejects {frac(rej, n)}.']
    ps = np.array([x['reference_check']['p_value'] for x in same])
    if n >= 10:
      ks = stats.ks_2samp(ps, np.linspace(0, 1, 1001)[1:-1])
      lines.append(f'Self-check family p-values vs uniform: KS p = {ks.p_value:.3f}.')
  # Which statistic of the check fired, per shifted condition.
  lines += ['', '| reference | statistic with the smallest adjusted p when the check fired (count) |',
            '|---|---|']
  for name in names:
    worst: dict[str, int] = {}
    for r in rows:
      x = r['results'].get(name)
      if x and not x['reference_check']['ok']:
        worst[x['reference_check']['worst']] = worst.get(x['reference_check']['worst'], 0) + 1
    lines.append(f'| {name} | {", ".join(f"{k}: {v}" for k, v in sorted(worst.items())) or "-"} |')
  # Ablation: how often each group alone would refuse the reference (Bonferroni of its raw
  # Mann–Whitney p-values at the check's level; conservative next to the permutation max-T).
  groups = {'loo': lambda k: k.startswith('loo'), 'verifiers': lambda k: k.startswith('verifiers_'),
            'inputs': lambda k: k.startswith('input_')}
  lines += ['', '| reference | test alone rejects | ' + ' | '.join(
      f'{g} alone fires (Bonferroni)' for g in groups) + ' |', '|---|---|' + '---|' * len(groups)]
  for name in names:
    res = [r['results'][name] for r in rows if name in r['results']]
    cells = []
    for sel in groups.values():
      fired = 0
      for x in res:
        ps = [p for k, p in x['reference_check']['raw'].items() if sel(k)]
        fired += bool(ps) and min(ps) * len(ps) <= self_check_alpha
      cells.append(f'{fired}/{len(res)}')
    rej = sum(bool(x['rejected']) for x in res)
    lines.append(f'| {name} | {rej}/{len(res)} | ' + ' | '.join(cells) + ' |')
  t = [r['wall_time_s'] for r in rows]
  if t:
    lines += ['', f'Mean wall time per draw {np.mean(t):.1f} s ({len(rows)} draws).']
  return '\n'.join(lines)


def run_validation(*, npz: str, workdir: str, draws: int, shift_draws: int, first_draw: int = 0,
                   train_size: int = 10_000, forget_size: int = 500, num_verifiers: int = 4,
                   settings: AuditSettings | None = None,
                   log: Callable[[str], None] = print) -> str:
  """Runs (or resumes) the validation and writes WORKDIR/summary.md atomically.

  Draws first_draw … first_draw + draws − 1 audit the same-pool reference;
  the first ``shift_draws`` of them also every shifted reference.

  Args:
    npz: the MNIST npz (x_train, y_train, x_test, y_test; uint8 images).
    workdir: output directory (results.jsonl, summary.md).
    draws, shift_draws, first_draw: see above.
    train_size, forget_size: |D| and |Du|.
    num_verifiers: K.
    settings: audit settings (default: AuditSettings(num_verifiers=K)).
    log: progress printer.
  Returns:
    The summary (Markdown).
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'results.jsonl')
  ds, model, recipe, split_kw = mnist_setup(npz, train_size=train_size, forget_size=forget_size)
  settings = settings or AuditSettings(num_verifiers=num_verifiers)
  moments = reference_lib.dataset_standardisation(ds)
  done = {r['draw'] for r in io_utils.read_jsonl(path, repair=True)}
  todo = [r for r in range(first_draw, first_draw + draws) if r not in done]
  log(f'{len(done)} draws done, {len(todo)} to go -> {path}')
  t0 = time.time()
  for i, r in enumerate(todo):
    conds = CONDITIONS if r < first_draw + shift_draws else CONDITIONS[:1]
    row = run_draw(r, ds, model, recipe, split_kw, settings, conds, moments)
    io_utils.append_jsonl(path, row)
    el = time.time() - t0
    dec = {k: v['decision'][:6] for k, v in row['results'].items()}
    log(f'[{i + 1}/{len(todo)}] draw {r} ({row["wall_time_s"]:.0f}s): {dec} '
        f'(elapsed {el:.0f}s, ETA {el / (i + 1) * (len(todo) - i - 1):.0f}s)')
    _write_summary(workdir, path, first_draw, draws, shift_draws, train_size, forget_size, settings)
  return _write_summary(workdir, path, first_draw, draws, shift_draws, train_size, forget_size,
                        settings)


def _write_summary(workdir, path, first_draw, draws, shift_draws, train_size, forget_size,
                   settings) -> str:
  rows = io_utils.read_jsonl(path, repair=True)   # every finished draw of the workdir, from all runs into it
  if not rows:
    return ''
  table = summarise(rows, alpha=settings.test.alpha, self_check_alpha=settings.test.self_check_alpha)
  shifted = sorted(r['draw'] for r in rows if len(r['results']) > 1)
  head = (f'MNIST, MLP 256-256, |D| = {train_size}, |Du| = {forget_size}, K = {settings.num_verifiers}; '
          f'{len(rows)} draws ({_ranges(sorted(r["draw"] for r in rows))}), shifted references '
          f'on {len(shifted)} ({_ranges(shifted)}); self-check groups '
          f'{list(settings.test.self_check)}, combine {settings.test.combine}.\n\n')
  io_utils.write_text(os.path.join(workdir, 'summary.md'), head + table + '\n')
  return head + table


def _ranges(xs: list[int]) -> str:
  """'0..19, 100..129' for a sorted list of integers."""
  out, start = [], None
  for i, x in enumerate(xs):
    if start is None:
      start = x
    if i == len(xs) - 1 or xs[i + 1] != x + 1:
      out.append(f'{start}..{x}' if x != start else f'{x}')
      start = None
  return ', '.join(out)
