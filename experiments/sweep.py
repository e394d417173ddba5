r"""The study sweep: data sets × unlearning methods × forget settings × seeds.

For every cell (entry, forget setting, seed, method): train or reuse M and the
retrain reference, run the method, audit Mu with jaxaudit's audit and the peer
auditors, and append one JSON line with the cell's cost to the results table.
Resumable: cells already in the table are skipped. The logic lives in
:mod:`jaxaudit.study.sweep` (cost accounting: :mod:`jaxaudit.study.cost`).

  python experiments/sweep.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/sweep
  jaxaudit report --results=runs/sweep/results.jsonl --out=runs/sweep/report

On Ray (``--executor=ray``, ``--ray_address=auto`` for a running cluster) or
split over hosts (``--process_index=I --process_count=N``, one shard of the
table per process): see :mod:`jaxaudit.study.executors` for the commands.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli, distributed
from jaxaudit.commands import common
from jaxaudit.study import cost, executors, script, sweep, tables

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
  flags.DEFINE_enum('executor', 'inprocess', list(executors.EXECUTORS),
                    'Where the cells run: in this process, or on Ray actors.')
  flags.DEFINE_string('ray_address', None, 'Ray cluster to join (e.g. auto); default: start '
                      'a local one.')
  flags.DEFINE_integer('ray_workers', 2, 'Ray actors (each holds one group in memory).')
  flags.DEFINE_float('ray_cpus_per_worker', 1, 'CPUs each Ray actor claims.')
  flags.DEFINE_float('ray_gpus_per_worker', 0, 'GPUs each Ray actor claims (may be fractional).')
  flags.DEFINE_integer('max_retries', 3, 'Ray: times a cell is retried after its actor died.')
  flags.DEFINE_integer('process_index', None, 'This process\'s share of a static partition of '
                       'the groups between independent processes (default 0).')
  flags.DEFINE_integer('process_count', None, 'Independent processes sharing the sweep (default '
                       '1); N > 1 writes RESULTS.pI-of-N shards.')
  # --distributed=on: the processes form one JAX job and run every cell together (a TPU slice).
  distributed.define_flags(default_mode='off')
  # The persistent XLA cache: this process and every Ray actor load what was compiled before.
  common.define_compilation_cache()


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'workdir'))
  common.start_compilation_cache()
  results = FLAGS.results or os.path.join(FLAGS.workdir, 'results.jsonl')
  options = dict(address=FLAGS.ray_address, workers=FLAGS.ray_workers,
                 cpus_per_worker=FLAGS.ray_cpus_per_worker,
                 gpus_per_worker=FLAGS.ray_gpus_per_worker, max_retries=FLAGS.max_retries)
  executor = executors.make_executor(FLAGS.executor,
                                     **(options if FLAGS.executor == 'ray' else {}))
  sweep.run_sweep(FLAGS.config, FLAGS.workdir, results, max_cells=FLAGS.max_cells,
                  log=lambda s: print(s, flush=True), executor=executor,
                  process_index=FLAGS.process_index, process_count=FLAGS.process_count)
  rows = sweep.read_results(results, FLAGS.config)   # main file and every shard
  print('\n' + tables.decision_summary(rows))
  print('\nverdict rates over the seeds (forgotten: exact 95% interval):')
  print(tables.format_table(tables.verdict_rates(rows), [
      'method', 'family', 'cells', 'errors', 'forgotten', 'not_forgotten', 'inconclusive',
      'population_mia_not_forgotten', 'acc_du']))
  if FLAGS.cost_table:
    print('\ncost per audit request, as a ratio to one retrain from scratch (same workdir):')
    print(tables.format_table(cost.cost_table(rows), ['entry', 'auditor', 'cells', 'models',
                                                      'flops_ratio', 'wall_ratio', 'wall_s']))
  print(f'\nresults: {", ".join([results] + executors.shard_paths(results))}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
