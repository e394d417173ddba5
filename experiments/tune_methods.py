"""Tune a sweep entry's unlearning methods on a development seed (DeepUnlearn's objective).

  python experiments/tune_methods.py --config=experiments/configs/sweep_local.py:digits \
      --entry=digits_mlp --seed=1000 --trials=16 --workdir=runs/tune/digits_mlp
  python experiments/sweep.py --config=experiments/configs/sweep_local.py:digits \
      --config.tuned_dir=runs/tune/digits_mlp --config.seeds=0,1,2,3,4,5,6,7,8,9 ...

Resumable (Optuna's journal in WORKDIR/tuning). The logic lives in
:mod:`jaxaudit.study.tuning` and :mod:`jaxaudit.tune`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli
from jaxaudit.study import cells, script, tuning

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=False)
flags.DEFINE_string('entry', None, 'The sweep entry whose methods are tuned.')
flags.DEFINE_string('workdir', None, 'Workdir of the development seed (models, tuning/).')
flags.DEFINE_integer('seed', 1000, 'Development seed (not one of the reported seeds).')
flags.DEFINE_integer('trials', 16, 'Trials per method.')
flags.DEFINE_list('methods', None, 'Methods to tune (default: the entry\'s).')
flags.DEFINE_string('forget', None, 'Forget setting (default: the entry\'s first).')


def main(argv):
  script.check_main_args(argv, FLAGS, ('config', 'entry', 'workdir'))
  methods = FLAGS.methods or cells.entry_methods(FLAGS.config, FLAGS.entry)
  res = tuning.tune_entry(FLAGS.config, FLAGS.entry, FLAGS.workdir, methods=methods,
                          seed=FLAGS.seed, trials=FLAGS.trials, forget=FLAGS.forget,
                          log=lambda s: print(s, flush=True))
  for m, r in res.items():
    print(f'{m:<20} objective {r["objective"]:.4f}  {r["hparams"]}')


if __name__ == '__main__':
  cli.run_script(main)
