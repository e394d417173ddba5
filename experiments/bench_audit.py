"""Audit throughput: one audit vs a retrain, the bank, a stream of requests, statistics.

  python experiments/bench_audit.py --data=mnist --out=runs/bench_audit.json

Prints every figure as measured in this one process (ratios of one run) and writes them
to --out. The logic lives in :mod:`jaxaudit.study.throughput`.
"""

from __future__ import annotations

import os

from absl import flags

from jaxaudit import cli, io_utils
from jaxaudit.study import script, throughput

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_enum('data', 'mnist', ['digits', 'mnist', 'cifar10'], 'Data set.')
flags.DEFINE_string('model', None, 'mlp or cnn (default: mlp; cnn for cifar10).')
flags.DEFINE_integer('train_size', None, '|D| (default: 10000; all of digits).')
flags.DEFINE_integer('bank_size', 64, 'B, members of the verifier bank.')
flags.DEFINE_integer('loop_models', 8, 'Models of the ensemble-vs-loop comparison.')
flags.DEFINE_integer('stream_requests', 1000, 'Requests of the stream (1-20 records each).')
flags.DEFINE_integer('seed', 0, 'Split and model seed.')
flags.DEFINE_string('out', None, 'JSON file for the figures (written atomically).')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  res = throughput.bench_audit(FLAGS.data, data_dir=SHARED, model=FLAGS.model,
                               train_size=FLAGS.train_size, bank_size=FLAGS.bank_size,
                               loop_models=FLAGS.loop_models,
                               stream_requests=FLAGS.stream_requests, seed=FLAGS.seed,
                               log=lambda s: print(s, flush=True))
  if FLAGS.out:
    io_utils.write_json(FLAGS.out, res)


if __name__ == '__main__':
  cli.run_script(main)
