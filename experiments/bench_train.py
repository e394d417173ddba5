"""Ensemble-training throughput: vmap over models vs a sequential lax.map, one run.

Prints model·samples/s for K ∈ {1, 4, 8} and both strategies, and the ratios
vmap/map and K-model/1-model, all measured in this run after a warm-up call
(compile time is reported separately). Results go to BUILD_NOTES.md. The logic
lives in :func:`jaxaudit.study.bench.bench_train`.

  python experiments/bench_train.py                       # digits MLP + CNN
  python experiments/bench_train.py --data=mnist --models=cnn --n=4000
"""

from __future__ import annotations

from absl import flags

from jaxaudit import cli, io_utils
from jaxaudit.study import bench, script

flags.DEFINE_string('data', 'digits', 'digits, or mnist (reads ../shared/data/mnist.npz).')
flags.DEFINE_list('models', ['mlp', 'cnn'], 'Models to benchmark.')
flags.DEFINE_list('ks', ['1', '4', '8'], 'Ensemble sizes.')
flags.DEFINE_integer('n', 1000, 'Training records per model.')
flags.DEFINE_integer('epochs', 3, 'Epochs per timed run.')
flags.DEFINE_integer('batch_size', 64, 'Batch size.')
flags.DEFINE_integer('repeats', 3, 'Timed runs per setting; the fastest is reported (noise from\n'
                     'other processes only ever slows a run down).')
flags.DEFINE_string('json_out', None, 'Optional path for the raw numbers.')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  rows = bench.bench_train(FLAGS.data, FLAGS.models, [int(k) for k in FLAGS.ks], n=FLAGS.n,
                           epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                           repeats=FLAGS.repeats,
                           npz='../shared/data/mnist.npz' if FLAGS.data == 'mnist' else None)
  if FLAGS.json_out:
    io_utils.write_json(FLAGS.json_out, rows)


if __name__ == '__main__':
  cli.run_script(main)
