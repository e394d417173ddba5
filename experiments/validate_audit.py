"""Validation of the audit: soundness, completeness and calibration, with peers.

For R independent draws of (Du, seeds) on real data, audits the honest retrain
(must pass), the original M, gradient ascent and two no-op fakes (temperature,
output masking on the exact records of Du) (must be caught), beside a raw
population test and, on the first --peer_draws draws, the peer auditors.
Prints and saves (WORKDIR/summary.md) a table of false-alarm / detection rates
with Clopper–Pearson intervals and each auditor's cost. Resumable: one JSON line
per finished draw in --results. The logic lives in :mod:`jaxaudit.study.validation`.

  # quick (embedded digits, minutes):
  python experiments/validate_audit.py --data=digits --draws=10 --workdir=runs/validate_digits
  # MNIST, |D| = 10k, |Du| = 500, K = 4, MLP (the acceptance run, ~1 h on 2 CPU cores):
  python experiments/validate_audit.py --data=mnist --draws=100 --workdir=runs/validate_mnist
  # CIFAR-10 (accelerator recommended):
  python experiments/validate_audit.py --data=cifar10 --model=cnn --draws=20 --workdir=runs/validate_cifar
"""

from __future__ import annotations

import os

from absl import flags

from jaxaudit import cli
from jaxaudit.study import script, validation

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_enum('data', 'digits', ['digits', 'mnist', 'cifar10'], 'Data set.')
flags.DEFINE_string('model', None, 'mlp or cnn (default: mlp; cnn for cifar10).')
flags.DEFINE_integer('draws', 10, 'Independent draws of (Du, seeds).')
flags.DEFINE_integer('first_draw', 0, 'Seed of the first draw.')
flags.DEFINE_integer('train_size', None, '|D| (default: 10000; all of digits).')
flags.DEFINE_integer('forget_size', None, '|Du| (default: 500; 30% of D for digits).')
flags.DEFINE_integer('num_verifiers', 4, 'K.')
flags.DEFINE_float('temperature', 3.0, 'Temperature of the temperature fake.')
flags.DEFINE_float('ga_lr', None, 'Gradient-ascent learning rate (default per data set).')
flags.DEFINE_integer('peer_draws', 5, 'Run the peer auditors on the first N draws.')
flags.DEFINE_integer('num_shadows', 8, 'Shadow / reference models of LiRA and RMIA.')
flags.DEFINE_string('workdir', 'runs/validate', 'Where results and caches go.')
flags.DEFINE_string('results', None, 'JSON-lines results (default WORKDIR/results.jsonl).')
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  table = validation.run_validation(
      FLAGS.data, FLAGS.workdir, FLAGS.results, model=FLAGS.model, draws=FLAGS.draws,
      first_draw=FLAGS.first_draw, train_size=FLAGS.train_size, forget_size=FLAGS.forget_size,
      num_verifiers=FLAGS.num_verifiers, temperature=FLAGS.temperature, ga_lr=FLAGS.ga_lr,
      peer_draws=FLAGS.peer_draws, num_shadows=FLAGS.num_shadows, data_dir=SHARED,
      log=lambda s: print(s, flush=True))
  print(table)


if __name__ == '__main__':
  cli.run_script(main)
