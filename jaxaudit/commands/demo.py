"""`jaxaudit demo` (what `make demo` runs): the whole product on embedded data.

Trains the original model on digits, then shows what the audit teaches:

* ``retrain`` truly forgets (``forgotten``);
* ``random_label`` and ``gradient_ascent``, each tuned (``jaxaudit tune
  --require_forgetting``: the search keeps only settings whose Du accuracy falls to the
  retrained model's), reach the retrain's accuracies but leave a trace: Du becomes *less*
  familiar than unseen data (``damaged``), or the model loses accuracy everywhere and
  still knows Du (``remembers``), or collapses;
* ``finetune`` looks fine (test accuracy intact) but still ``remembers`` Du.

Each row is audited against the original's verifiers and explained in one line
(:func:`explain`). Reports go to WORKDIR/audits/*/report.md, the table to
WORKDIR/demo.json.
"""

from __future__ import annotations

import math
import os
import time

from absl import flags

from jaxaudit import io_utils, pipeline
from jaxaudit import configs, tune
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

DEFAULT_WORKDIR = 'runs/demo'
# Test accuracy lost against the original beyond which a row says the model was damaged.
ACCURACY_DROP = 0.02
common.define_config_and_workdir(workdir_required=False)
common.define_compilation_cache()
flags.DEFINE_list('methods', ['retrain', 'random_label', 'gradient_ascent', 'finetune'],
                  'Methods to run.')
flags.DEFINE_list('tune', ['random_label', 'gradient_ascent'],
                  'Methods tuned first (`jaxaudit tune --require_forgetting`); [] for none.')
flags.DEFINE_integer('tune_trials', 20, 'Trials per tuned method.')
flags.DEFINE_integer('tune_seed', 0, 'Seed of the tuning sampler.')
FLAGS = flags.FLAGS


def run_demo(config, workdir: str, methods, log=pipeline.log_to_stdout, *, tune_methods=(),
             tune_trials: int = 20, tune_seed: int = 0) -> list[dict]:
  """Train → (tune) → unlearn → audit; returns one row per audited model.

  Args:
    config: the pipeline config (the CLI default: digits, MLP 512-512).
    methods: unlearning methods to run after the original.
    tune_methods: methods (a subset of ``methods``) searched first with
      :func:`jaxaudit.tune.run_tuning` (``require_forgetting=True``); their chosen settings
      (WORKDIR/tuning/METHOD.json) are what the row runs.
  Returns:
    Rows with the decision, direction, p-value, AUC, forgetting score, power, accuracies,
    hyper-parameters, whether they were tuned, the one-line explanation and the report path.
  """
  methods, tune_methods = list(methods), list(tune_methods)
  extra = sorted(set(tune_methods) - set(methods))
  if extra:
    raise ConfigError(f'--tune names {extra}, which --methods does not run')
  t0 = time.time()
  config.train_retrain = False      # the `retrain` method is the honest reference here
  pipeline.train_and_evaluate(config, workdir, log)
  if tune_methods:
    tune.run_tuning(config, workdir, tune_methods, trials=tune_trials, seed=tune_seed,
                    require_forgetting=True, log=log)
  rows = []
  targets = [('original', 'original (no unlearning)', None, {})]
  for m in methods:
    hp = configs.config_hparams(config, m, tune.tuned_hparams(workdir, m))  # `jaxaudit tune`'s
    pipeline.run_unlearn(config, workdir, m, hp, log=log)
    targets.append((f'unlearned/{m}', m, m, hp))
  for target, label, method, hp in targets:
    search = tune.read_result(workdir, method) if method in tune_methods else None
    if search is not None:
      label += ' (tuned)' if search.get('feasible', True) else ' (tuned, none forgot)'
    result, out = pipeline.run_audit(config, workdir, target=target, log=log)
    acc = result.details['accuracy']['target']
    rows.append(dict(model=label, method=method, tuned=search is not None, hparams=hp,
                     search=None if search is None else dict(
                         feasible=search.get('feasible', True), trials=search.get('trials'),
                         diverged=search.get('diverged')),
                     decision=result.decision, direction=result.direction,
                     p_value=result.p_value, effect_auc=result.effect_auc,
                     forgetting_score=result.forgetting_score, power=result.power,
                     acc_forget=acc.get('forget'), acc_test=acc.get('test'),
                     report=os.path.join(out, 'report.md')))
  for r in rows:
    r['why'] = explain(r, rows[0])
  _print_table(rows)
  log(f'demo finished in {time.time() - t0:.0f}s; summary: {os.path.join(workdir, "demo.json")}')
  io_utils.write_json(os.path.join(workdir, 'demo.json'), rows)
  return rows


def explain(row: dict, original: dict) -> str:
  """One line on what a row's decision means, from its decision, direction and accuracies
  against the original's (``row``/``original``: rows of :func:`run_demo`)."""
  drop = (original['acc_test'] or 0.0) - (row['acc_test'] or 0.0)
  lost = (f', and it lost {100 * drop:.0f} points of test accuracy' if drop > ACCURACY_DROP
          else ', with its test accuracy intact')
  auc = row['effect_auc']
  auc_s = f'AUC {auc:.2f}' if auc is not None and math.isfinite(auc) else 'no AUC'
  if row['method'] is None:      # the reference row, explained by the same rules
    return 'no unlearning: ' + explain(dict(row, method='original'), original)
  if row['decision'] == 'forgotten':
    return (f'Du is as unfamiliar as data the model never saw ({auc_s}): indistinguishable '
            'from a model trained without Du')
  if row['decision'] == 'inconclusive':
    return 'the test lacks power to decide on this model: audit with more verifiers or data'
  search = row.get('search')
  if search is not None and not search['feasible']:
    return (f'no setting of {search["trials"]} lowered Du accuracy to the retrain\'s: '
            f'{search["diverged"]} diverged (NaN weights), the closest (shown) kept Du at '
            f'{100 * (row["acc_forget"] or 0):.0f}% — here it cannot forget without destroying '
            'the model')
  d = row['direction'] or ''
  if d == 'damaged':
    return (f'Du is now LESS familiar than unseen data ({auc_s}): the unlearning left its own '
            f'trace (an attacker sees which records were removed){lost}')
  if d == 'collapse':
    return (f'the model lost accuracy (test {100 * (row["acc_test"] or 0):.0f}%) and is now worse on '
            'unseen data than models trained on 15% of the retained data: Du is not forgotten, '
            'the model is damaged')
  if d.startswith('remembers'):
    return f'Du is still more familiar than unseen data ({auc_s}): the model remembers it{lost}'
  return f'Du is treated unlike unseen data ({d})'


def _print_table(rows):
  head = f'{"model":<36} {"decision":<28} {"p-value":>9} {"AUC":>6} {"forget.":>8} {"power":>6} {"acc Du":>7} {"acc test":>8}'
  print('\n' + head + '\n' + '-' * len(head))
  for r in rows:
    d = r['decision'] + (f' ({r["direction"]})' if r['direction'] else '')
    fs = r['forgetting_score']
    print(f'{r["model"]:<36} {d:<28} {r["p_value"]:>9.2g} {r["effect_auc"]:>6.3f} '
          f'{fs:>8.2f} {r["power"]:>6.2f} {100 * r["acc_forget"]:>6.1f}% {100 * r["acc_test"]:>7.1f}%')
  print('\nWhy:')
  for r in rows:
    print(f'  {r["model"]}: {r["why"]}')
  tuned = [r for r in rows if r['tuned'] and r['search']['feasible']]
  if tuned:
    print('\n(tuned) = hyper-parameters chosen by `jaxaudit tune --require_forgetting` (closest to '
          'the retrained model among settings whose Du accuracy fell to the retrain\'s): '
          + '; '.join(f'{r["method"]} ' + ', '.join(f'{k}={_fmt(v)}' for k, v in
                                                     sorted(r['hparams'].items()))
                      for r in tuned))
  print('forget. = forgetting score (0: Du as remembered as training data, 1: as unseen as D_ref).')
  print('Reports: ' + ', '.join(r['report'] for r in rows))


def _fmt(v):
  return f'{v:.3g}' if isinstance(v, float) else str(v)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  run_demo(FLAGS.config, FLAGS.workdir or DEFAULT_WORKDIR, FLAGS.methods,
           tune_methods=FLAGS.tune, tune_trials=FLAGS.tune_trials, tune_seed=FLAGS.tune_seed)
