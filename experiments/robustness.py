r"""Fake-unlearning robustness: development, family choice, confirmation (issue 17).

Runs (or resumes) the stages of the protocol config, chooses the audit's family
of record statistics on the development rows only
(:func:`jaxaudit.study.robustness.select_family`), and reports detection rates
with intervals, the decisions and which statistic caught which fake, for the
development and the confirmation data side by side (WORKDIR/robustness.md).

  python experiments/robustness.py --config=experiments/configs/robustness.py \
      --workdir=runs/robustness [--phases=development]
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.errors import ConfigError
from jaxaudit.study import robustness, script

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags."""
  config_flags.DEFINE_config_file(
      'config', None, 'Protocol config, e.g. experiments/configs/robustness.py.',
      lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory (one workdir per stage, the report).')
  flags.DEFINE_list('phases', list(robustness.PHASES), 'Phases to run: development, '
                    'confirmation (the report covers the phases run).')


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'workdir'))
  bad = [p for p in FLAGS.phases if p not in robustness.PHASES]
  if bad:
    raise ConfigError(f"--phases: unknown phase(s) {bad}; choose from {robustness.PHASES}")
  out = robustness.run_protocol(FLAGS.config, FLAGS.workdir, tuple(FLAGS.phases),
                                log=lambda s: print(s, flush=True))
  print('\n' + out['markdown'])


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
