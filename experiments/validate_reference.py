"""Validation of the audit's reference check on MNIST (issue 11, item 6).

Per draw: one honest retrain and one verifier set (MLP 256-256, |D| = 10k,
|Du| = 500, K = 4), audited against user references passed through the API —
the split's own D_ref records (same pool) and the same records brightened
(+0.02 … +0.15) or with Gaussian noise (σ 0.03 … 0.2), clipped to [0, 1].
Reports per condition the fractions invalid_reference / forgotten /
not_forgotten / inconclusive with Clopper–Pearson intervals, and on the same
pool the self-check's firing rate and the audit's false-alarm rate.
Resumable (WORKDIR/results.jsonl); WORKDIR/summary.md is rewritten atomically
after every draw. The logic lives in :mod:`jaxaudit.study.reference_validation`.

  python experiments/validate_reference.py --draws=100 --shift_draws=20 \\
      --workdir=runs/validate_reference
"""

from __future__ import annotations

import os

from absl import flags

from jaxaudit import cli
from jaxaudit.study.reference_validation import run_validation
from jaxaudit.study.script import check_main_args

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_string('npz', os.path.join(SHARED, 'mnist.npz'), 'MNIST npz.')
flags.DEFINE_integer('draws', 100, 'Draws auditing the same-pool reference.')
flags.DEFINE_integer('shift_draws', 20, 'The first N draws also audit every shifted reference.')
flags.DEFINE_integer('first_draw', 0, 'Seed of the first draw (design used 1000-1004).')
flags.DEFINE_integer('train_size', 10_000, '|D|.')
flags.DEFINE_integer('forget_size', 500, '|Du|.')
flags.DEFINE_integer('num_verifiers', 4, 'K.')
flags.DEFINE_string('workdir', 'runs/validate_reference', 'Output directory.')
FLAGS = flags.FLAGS


def main(argv):
  check_main_args(argv, FLAGS, required=())
  table = run_validation(npz=FLAGS.npz, workdir=FLAGS.workdir, draws=FLAGS.draws,
                         shift_draws=FLAGS.shift_draws, first_draw=FLAGS.first_draw,
                         train_size=FLAGS.train_size, forget_size=FLAGS.forget_size,
                         num_verifiers=FLAGS.num_verifiers,
                         log=lambda s: print(s, flush=True))
  print(table)


if __name__ == '__main__':
  cli.run_script(main)
