r"""The study sweep: data sets × unlearning methods × forget settings × seeds.

For every cell (entry, forget setting, seed, method): train or reuse M and the
retrain reference, run the method, audit Mu with jaxaudit's audit and the peer
auditors, and append one JSON line with the cell's cost to the results table.
Resumable: cells already in the table are skipped. The logic lives in
:mod:`jaxaudit.study.sweep` (cost accounting: :mod:`jaxaudit.study.cost`).

  python experiments/sweep.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/sweep
  jaxaudit report --results=runs/sweep/results.jsonl --out=runs/sweep/report
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.study import cost, script, sweep, tables

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags."""
  config_flags.DEFINE_config_file(
      'config', None, 'Sweep config file, e.g. experiments/configs/sweep_local.py:local.',
      lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory of the sweep (checkpoints, results).')
  flags.DEFINE_string('results', None, 'Results table (JSON lines); default WORKDIR/results.jsonl.')
  flags.DEFINE_integer('max_cells', None, 'Stop after computing this many new cells.')
  flags.DEFINE_bool('cost_table', True, 'Print the cost table at the end.')


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'workdir'))
  results = FLAGS.results or os.path.join(FLAGS.workdir, 'results.jsonl')
  rows = sweep.run_sweep(FLAGS.config, FLAGS.workdir, results, max_cells=FLAGS.max_cells,
                         log=lambda s: print(s, flush=True))
  print('\n' + tables.decision_summary(rows))
  if FLAGS.cost_table:
    print('\ncost per audit request, as a ratio to one retrain from scratch (same workdir):')
    print(tables.format_table(cost.cost_table(rows), ['entry', 'auditor', 'cells', 'models',
                                                      'flops_ratio', 'wall_ratio', 'wall_s']))
  print(f'\nresults: {results}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
