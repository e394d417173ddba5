r"""Fake unlearning: can a dishonest model owner pass the audit without forgetting?

For each seed, on one entry of a sweep config (``config.fake``; sweep_local's
default: ``mnist_mlp_large``, random 30% forget set, seeds 0-9), the original
model M is turned into fakes, each audited by jaxaudit's audit and by the peer
auditors (population MIA, LiRA, RMIA, heuristics with its KS rule); the honest
retrain is the control.

Fakes (settings in ``config.fake``): noop, lazy, mask_scale, mask_uniform,
temperature, noise, laundering and the adaptive fakes (adaptive, adaptive_aug,
adaptive_ce, adaptive_aug_ce, adaptive_unseen, adaptive_aug_unseen); each is
described in :mod:`jaxaudit.study.fakes`, where the fakes, the detection table
and the resumable results file live.

A fake is *flagged* by jaxaudit when the decision is not ``forgotten`` (the
owner gets no certificate); the table also gives the ``not_forgotten`` rate.
Peers flag with their decision rule (``not_forgotten``).

  python experiments/fake_unlearning.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/fake_mnist30
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.study import fakes, script, tables
from jaxaudit.study.cells import as_list

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags."""
  config_flags.DEFINE_config_file(
      'config', None, 'Sweep config file with a `fake` section, e.g. '
      'experiments/configs/sweep_local.py:local.', lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory (checkpoints, results).')
  flags.DEFINE_list('seeds', None, 'Seeds (one split + models each); default: config.fake.seeds '
                    'or 0,1,2,3,4.')
  flags.DEFINE_string('results', None, 'Results table (JSON lines); default '
                      'WORKDIR/fake_results.jsonl.')


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'workdir'))
  results = FLAGS.results or os.path.join(FLAGS.workdir, 'fake_results.jsonl')
  seeds = FLAGS.seeds or as_list((FLAGS.config.get('fake') or {}).get('seeds') or '0,1,2,3,4')
  rows = fakes.run_fakes(FLAGS.config, FLAGS.workdir, [int(s) for s in seeds], results,
                         log=lambda s: print(s, flush=True))
  table = tables.format_table(fakes.detection_table(rows), fakes.TABLE_COLS)
  print('\nflagged / seeds (ours: decision != forgotten; peers: not_forgotten):\n' + table)
  with open(os.path.join(FLAGS.workdir, 'fake_table.md'), 'w') as f:
    f.write(table + '\n')
  print(f'\nresults: {results}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
