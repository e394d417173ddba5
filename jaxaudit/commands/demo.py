"""`jaxaudit demo` (what `make demo` runs): the whole product on embedded data.

Trains the original model on digits, unlearns Du with `retrain`, `finetune`
and `gradient_ascent`, audits the three unlearned models and the original,
and prints a table of decisions. Reports go to WORKDIR/audits/*/report.md.
"""

from __future__ import annotations

import os
import time

from absl import flags

from jaxaudit import io_utils, pipeline
from jaxaudit import configs, tune
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

DEFAULT_WORKDIR = 'runs/demo'
common.define_config_and_workdir(workdir_required=False)
common.define_compilation_cache()
flags.DEFINE_list('methods', ['retrain', 'finetune', 'gradient_ascent'], 'Methods to run.')
FLAGS = flags.FLAGS


def run_demo(config, workdir: str, methods, log=pipeline.log_to_stdout) -> list[dict]:
  """Train → unlearn → audit; returns one row per audited model."""
  t0 = time.time()
  config.train_retrain = False      # the `retrain` method is the honest reference here
  pipeline.train_and_evaluate(config, workdir, log)
  rows = []
  targets = [('original', 'original (no unlearning)')]
  for m in methods:
    hp = configs.config_hparams(config, m, tune.tuned_hparams(workdir, m))  # `jaxaudit tune`'s
    pipeline.run_unlearn(config, workdir, m, hp, log=log)
    targets.append((f'unlearned/{m}', m))
  for target, label in targets:
    result, out = pipeline.run_audit(config, workdir, target=target, log=log)
    acc = result.details['accuracy']['target']
    rows.append(dict(model=label, decision=result.decision, direction=result.direction,
                     p_value=result.p_value, effect_auc=result.effect_auc,
                     forgetting_score=result.forgetting_score, power=result.power,
                     acc_forget=acc.get('forget'), acc_test=acc.get('test'),
                     report=os.path.join(out, 'report.md')))
  _print_table(rows)
  log(f'demo finished in {time.time() - t0:.0f}s; summary: {os.path.join(workdir, "demo.json")}')
  io_utils.write_json(os.path.join(workdir, 'demo.json'), rows)
  return rows


def _print_table(rows):
  head = f'{"model":<26} {"decision":<28} {"p-value":>9} {"AUC":>6} {"forget.":>8} {"power":>6} {"acc Du":>7} {"acc test":>8}'
  print('\n' + head + '\n' + '-' * len(head))
  for r in rows:
    d = r['decision'] + (f' ({r["direction"]})' if r['direction'] else '')
    fs = r['forgetting_score']
    print(f'{r["model"]:<26} {d:<28} {r["p_value"]:>9.2g} {r["effect_auc"]:>6.3f} '
          f'{fs:>8.2f} {r["power"]:>6.2f} {100 * r["acc_forget"]:>6.1f}% {100 * r["acc_test"]:>7.1f}%')
  print('\nforget. = forgetting score (0: Du as remembered as training data, 1: as unseen as D_ref).')
  print('Reports: ' + ', '.join(r['report'] for r in rows))


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  run_demo(FLAGS.config, FLAGS.workdir or DEFAULT_WORKDIR, FLAGS.methods)
