"""Validation of the verifier bank, the per-record test and stream verdicts.

  # bank vs fresh verifiers on one |Du| = 500 request, 50 draws (MNIST MLP, |D| = 10k):
  python experiments/stream_validation.py --kind=bank --data=mnist --draws=50 --first_draw=100 \
      --workdir=runs/streams_mnist
  # ... with a second set of fresh verifiers (the agreement verifier noise alone leaves),
  # and with K = 8 verifiers in both audits:
  python experiments/stream_validation.py --kind=bank --data=mnist --draws=30 --first_draw=200 \
      --fresh_twice --workdir=runs/streams_fresh_twice
  python experiments/stream_validation.py --kind=bank --data=mnist --draws=30 --first_draw=200 \
      --fresh_twice --num_verifiers=8 --workdir=runs/streams_k8
  # stream verdicts of users of 1-20 records, honest models and the original, with the
  # per-record comparison against LiRA-offline and RMIA-offline:
  python experiments/stream_validation.py --kind=stream --data=mnist --draws=2 --first_draw=100 \
      --workdir=runs/streams_mnist

  # the cost/power curve of the D_ref sample and the views (development seeds 0-9):
  python experiments/stream_validation.py --kind=curve --data=mnist --draws=10 \
      --workdir=runs/streams_mnist

Resumable: one JSON line per finished draw in WORKDIR/KIND.jsonl; the summary goes to
WORKDIR/KIND_summary.md. The logic lives in :mod:`jaxaudit.study.streams`.
"""

from __future__ import annotations

import os

from absl import flags

from jaxaudit import cli
from jaxaudit.study import script, streams

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_enum('kind', 'bank', ['bank', 'stream', 'curve'], 'Which study (curve: the '
                  'cost/power curve of the D_ref sample size and the views, on development '
                  'seeds).')
flags.DEFINE_enum('data', 'digits', ['digits', 'mnist', 'cifar10'], 'Data set.')
flags.DEFINE_string('model', None, 'mlp or cnn (default: mlp; cnn for cifar10).')
flags.DEFINE_integer('draws', 2, 'Independent draws.')
flags.DEFINE_integer('first_draw', 0, 'Seed of the first draw.')
flags.DEFINE_integer('train_size', None, '|D| (default: 10000; all of digits).')
flags.DEFINE_integer('bank_size', 64, 'B, members of the verifier bank.')
flags.DEFINE_integer('retrains', 4, 'stream: honest models per draw.')
flags.DEFINE_integer('per_retrain', 30, 'stream: users each honest model never saw.')
flags.DEFINE_integer('max_records', 20, 'stream: largest user (records).')
flags.DEFINE_bool('share_members', True, 'bank: the fresh verifiers are trained around the '
                  "bank's member reference (the two audits differ only in their verifiers); "
                  'false: the fresh audit draws its own member sample.')
flags.DEFINE_bool('fresh_twice', False, 'bank: also audit with a second set of fresh verifiers '
                  '(another verifier seed): the agreement verifier noise alone leaves.')
flags.DEFINE_integer('num_verifiers', None, 'bank: K of both audits (default: the audit\'s, 4).')
flags.DEFINE_string('workdir', 'runs/streams', 'Where results go.')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  if FLAGS.kind == 'bank':
    kw = dict(share_members=FLAGS.share_members, fresh_twice=FLAGS.fresh_twice)
  else:
    kw = dict(retrains=FLAGS.retrains, per_retrain=FLAGS.per_retrain,
              max_records=FLAGS.max_records)
  table = streams.run(FLAGS.kind, FLAGS.data, FLAGS.workdir, draws=FLAGS.draws,
                      first_draw=FLAGS.first_draw, model=FLAGS.model,
                      train_size=FLAGS.train_size, bank_size=FLAGS.bank_size, data_dir=SHARED,
                      num_verifiers=FLAGS.num_verifiers,
                      log=lambda s: print(s, flush=True), **kw)
  print(table)


if __name__ == '__main__':
  cli.run_script(main)
