"""Audit throughput: one audit vs a retrain, the bank, a stream of requests, statistics,
and the device axis (ensemble training and scoring against device count).

  python experiments/bench_audit.py --data=mnist --out=runs/bench_audit.json
  python experiments/bench_audit.py --data=mnist --sections=devices --device_counts=1,2,4,8

Prints every figure as measured in this one process (ratios of one run) and writes them
to --out; the device axis runs one fresh process per device count (simulated CPU devices
on a CPU host). The logic lives in :mod:`jaxaudit.study.throughput` and
:mod:`jaxaudit.study.device_scaling`.
"""

from __future__ import annotations

import os

from absl import flags

from jaxaudit import cli, io_utils
from jaxaudit.study import device_scaling, script, tables, throughput

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_enum('data', 'mnist', ['digits', 'mnist', 'cifar10'], 'Data set.')
flags.DEFINE_string('model', None, 'mlp or cnn (default: mlp; cnn for cifar10).')
flags.DEFINE_integer('train_size', None, '|D| (default: 10000; all of digits).')
flags.DEFINE_integer('bank_size', 64, 'B, members of the verifier bank.')
flags.DEFINE_integer('loop_models', 8, 'Models of the ensemble-vs-loop comparison.')
flags.DEFINE_integer('stream_requests', 1000, 'Requests of the stream (1-20 records each).')
flags.DEFINE_integer('seed', 0, 'Split and model seed.')
flags.DEFINE_list('sections', ['audit', 'devices'], 'What to measure: audit (single audits, '
                  'bank, stream, statistics) and/or devices (the device axis).')
flags.DEFINE_list('device_counts', ['1', '2', '4', '8'], 'Device counts of the device axis.')
flags.DEFINE_integer('device_models', 8, 'K, models of the device-axis ensemble.')
flags.DEFINE_string('out', None, 'JSON file for the figures (written atomically).')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  unknown = set(FLAGS.sections) - {'audit', 'devices'}
  if unknown:
    raise flags.ValidationError(f'--sections: unknown {sorted(unknown)}; use audit, devices')
  res = {}
  if 'audit' in FLAGS.sections:
    res = throughput.bench_audit(FLAGS.data, data_dir=SHARED, model=FLAGS.model,
                                 train_size=FLAGS.train_size, bank_size=FLAGS.bank_size,
                                 loop_models=FLAGS.loop_models,
                                 stream_requests=FLAGS.stream_requests, seed=FLAGS.seed,
                                 log=lambda s: print(s, flush=True))
  if 'devices' in FLAGS.sections:
    rows = device_scaling.bench_devices(
        [int(c) for c in FLAGS.device_counts], data=FLAGS.data,
        data_dir=SHARED, model=FLAGS.model,
        k=FLAGS.device_models, train_size=FLAGS.train_size or 10000, seed=FLAGS.seed,
        log=lambda s: print(s, flush=True))
    print('\ndevice axis (rates relative to the first count; simulated CPU devices share '
          'the cores):')
    print(tables.format_table(rows, ['devices', 'layout', 'models_per_minute', 'train_vs_first',
                                     'records_per_second', 'score_vs_first']))
    res['device_axis'] = rows
  if FLAGS.out:
    io_utils.write_json(FLAGS.out, res)


if __name__ == '__main__':
  cli.run_script(main)
