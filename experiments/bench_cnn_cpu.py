"""Paired CPU timings of one CNN training step: XLA flags, layout, im2col conv, pooling, ...

Each attempt alternates baseline and variant (A, B, A, B, ...) in one process,
or in two worker subprocesses taking turns for XLA flags, and prints one line:
name, median ms baseline, median ms variant, ratio (variant / baseline), note.
The logic lives in :mod:`jaxaudit.study.cnn_cpu`.

  python experiments/bench_cnn_cpu.py                          # every attempt
  python experiments/bench_cnn_cpu.py --attempt=pool_reshape --rounds=10
"""

from __future__ import annotations

from absl import flags

from jaxaudit import cli, io_utils
from jaxaudit.study import cnn_cpu, script

flags.DEFINE_list('attempt', [], f'Attempts to run (default all): {", ".join(cnn_cpu.ATTEMPTS)}.')
flags.DEFINE_integer('rounds', 7, 'Alternation rounds per attempt (3 steps each).')
flags.DEFINE_integer('batch_size', 128, 'Batch size B.')
flags.DEFINE_string('json_out', None, 'Optional path for the raw rows.')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  print(f'{"attempt":32s} {"base ms":>8s} {"var ms":>8s} {"ratio":>6s}  note')
  rows = cnn_cpu.run_attempts(FLAGS.attempt, rounds=FLAGS.rounds, batch_size=FLAGS.batch_size)
  if FLAGS.json_out:
    io_utils.write_json(FLAGS.json_out, rows)


if __name__ == '__main__':
  cli.run_script(main)
