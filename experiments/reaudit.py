r"""Re-audits the checkpoints of one sweep group with the current audit (no retraining).

After a change to the audit, the models of a sweep group (its original, retrain and
every unlearned checkpoint under ``models/unlearned``) can be audited again with
the cached verifiers. One JSON line per model goes to ``--out`` (atomically
appended; finished models are skipped on restart) and a table is printed. The
logic lives in :mod:`jaxaudit.study.reaudit`.

  python experiments/reaudit.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/sweep_local --group=digits_mlp_class/class3/0 \
      --out=runs/sweep_local/reaudit_digits_mlp_class.jsonl
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.study import reaudit, script, tables

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags."""
  config_flags.DEFINE_config_file('config', None, 'Sweep config file (as for sweep.py).',
                                  lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory of the sweep.')
  flags.DEFINE_string('group', None, 'ENTRY/FORGET/SEED of the group to re-audit.')
  flags.DEFINE_string('out', None, 'JSON-lines output (default WORKDIR/reaudit_GROUP.jsonl).')


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'workdir', 'group'))
  group = reaudit.parse_group(FLAGS.group)
  out = FLAGS.out or os.path.join(FLAGS.workdir, f'reaudit_{"_".join(map(str, group))}.jsonl')
  rows = reaudit.reaudit(FLAGS.config, FLAGS.workdir, group, out,
                         log=lambda s: print(s, flush=True))
  print(tables.format_table([reaudit.display_row(r) for r in rows], reaudit.COLS))
  print(f'\nresults: {out}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
