r"""Every registered unlearning method, run from the real CLI on one data set.

For one config and work directory: trains M through ``jaxaudit train`` unless
WORKDIR has it (and, with ``--sisa_shards=S``, a SISA original), builds a
"pretrained" checkpoint that never saw Du for the warm-start methods, runs
``jaxaudit unlearn --method=NAME`` for every method (a subprocess each) and
records its exit status, wall time and accuracies: one JSON line per method in
WORKDIR/cli_methods.jsonl and the Markdown table WORKDIR/cli_methods.md.
Resumable (``--noretry_failed``, ``--rerun=NAME,...``). The logic, and the
meaning of each row's status (ok, failed, skipped, n/a), is in
:mod:`jaxaudit.study.method_table`.

  python experiments/cli_methods.py --config=experiments/configs/mnist_cnn.py:local \
      --config.split.train_size=2000 --config.split.forget_size=100 \
      --config.split.test_size=500 --config.train.epochs=2 --config.train_retrain=False \
      --workdir=runs/mnist_cnn_cli --sisa_shards=4
  python experiments/cli_methods.py --config.train.epochs=20 --workdir=runs/digits_cli \
      --sisa_shards=4
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.commands import common
from jaxaudit.study import method_table, script

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags."""
  config_flags.DEFINE_config_file('config', common.DEFAULT_CONFIG,
                                  'Experiment config file (as for the jaxaudit CLI).',
                                  lock_config=False)
  flags.DEFINE_string('workdir', None, 'Work directory (the CLI --workdir).', required=True)
  flags.DEFINE_list('methods', [], 'Methods to run (default: every registered one).')
  flags.DEFINE_multi_string('hparam', [], 'Per-method override METHOD:NAME=VALUE (repeatable).')
  flags.DEFINE_integer('pretrain_epochs', 2, 'Epochs of the pretrained (warm-start) model.')
  flags.DEFINE_enum('pretrain_source', 'auto', ['auto', 'unused', 'retain', 'ref'],
                    'Records of the pretrained model: unused pool records, Dr, D_ref, or '
                    'auto (unused if any, else Dr).')
  flags.DEFINE_integer('pretrain_size', None, 'Records of the pretrained model (default |D|).')
  flags.DEFINE_bool('retry_failed', True, 'Re-run methods whose last row failed or was skipped.')
  flags.DEFINE_list('rerun', [], 'Methods to run again even if done (their saved checkpoint '
                    'is removed first), e.g. after a change to their code.')
  flags.DEFINE_integer('sisa_shards', 0, 'If > 0 and WORKDIR has no SISA original, train one '
                       'with `jaxaudit train --config.sisa.shards=S` (for the sisa method); '
                       '0: sisa runs only if one exists, else its row is skipped.')
  flags.DEFINE_float('timeout', 3600, 'Per-method time limit in seconds (0: none).')


def main(argv):
  script.check_main_args(argv, FLAGS)
  _, table = method_table.run_all(
      FLAGS.config, FLAGS.workdir, method_table.config_args(sys.argv[1:]),
      methods=FLAGS.methods, hparams=method_table.parse_method_hparams(FLAGS.hparam),
      pretrain_epochs=FLAGS.pretrain_epochs, pretrain_source=FLAGS.pretrain_source,
      pretrain_size=FLAGS.pretrain_size, retry_failed=FLAGS.retry_failed, rerun=FLAGS.rerun,
      sisa_shards=FLAGS.sisa_shards, timeout=FLAGS.timeout, log=lambda s: print(s, flush=True))
  print('\n' + table)
  print(f'\ntable: {os.path.join(FLAGS.workdir, method_table.TABLE_FILE)}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
