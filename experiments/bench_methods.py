"""Run time of every unlearning method against retraining, one run.

For each registered method on one data set: wall time (after a warm-up of
the same method, so compile time is excluded and reported separately),
run-time efficiency RTE = t_retrain / t_method, and accuracy on Dr, Du,
D_ref and test. All figures come from the same run. The wall time is the median
of ``--repeats`` timed runs (keys 1..R); the accuracies are those of the last.

Every registered method runs: the warm-start methods get the "pretrained"
checkpoint of ``experiments/cli_methods.py`` (the same model trained on
records outside D, so it never saw Du), and ``sisa`` unlearns a SISA original
trained with ``--sisa_shards`` shards (its accuracies are the shard
ensemble's, mean softmax; its RTE is against retraining the single model).
The logic lives in :func:`jaxaudit.study.bench.bench_methods`.

  python experiments/bench_methods.py                          # digits, MLP
  python experiments/bench_methods.py --config=experiments/configs/mnist_cnn.py:local
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from jaxaudit import cli, io_utils
from jaxaudit.commands import default_config
from jaxaudit.study import bench, script

config_flags.DEFINE_config_file('config', default_config.__file__, 'Experiment config.',
                                lock_config=False)
flags.DEFINE_string('workdir', 'runs/bench_methods', 'Work directory.')
flags.DEFINE_list('methods', [], 'Methods (default: all registered).')
flags.DEFINE_integer('sisa_shards', 4, 'Shards of the SISA original (0: skip sisa).')
flags.DEFINE_integer('sisa_slices', 2, 'Slices per shard of the SISA original.')
flags.DEFINE_integer('pretrain_epochs', 2, 'Epochs of the warm-start checkpoint (records '
                     'outside D).')
flags.DEFINE_integer('repeats', 3, 'Timed runs per method (keys 1..R); the median is reported.')
flags.DEFINE_bool('warmup', True, 'Run each method once first to exclude compile time.')
flags.DEFINE_string('json_out', None, 'Where to write the rows (default WORKDIR/bench_methods.json).')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  rows = bench.bench_methods(FLAGS.config, FLAGS.workdir, methods=FLAGS.methods,
                             sisa_shards=FLAGS.sisa_shards, sisa_slices=FLAGS.sisa_slices,
                             pretrain_epochs=FLAGS.pretrain_epochs, repeats=FLAGS.repeats,
                             warmup=FLAGS.warmup, log=lambda s: print(s, flush=True))
  out = FLAGS.json_out or os.path.join(FLAGS.workdir, 'bench_methods.json')
  io_utils.write_json(out, rows)
  print(f'wrote {out}')


if __name__ == '__main__':
  cli.run_script(main)
