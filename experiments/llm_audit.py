r"""The language-model study: base LM → M → LM unlearning methods → audit + peers.

  # CPU-sized (local) configs, 30 draws each (about a minute per draw on 2 cores):
  python experiments/llm_audit.py --corpus=synthetic --draws=30 --workdir=runs/llm_synthetic
  python experiments/llm_audit.py --corpus=shakespeare --draws=30 --workdir=runs/llm_shakespeare
  # accelerator-sized config (see BUILD_NOTES.md, "Language models"):
  python experiments/llm_audit.py --corpus=synthetic --config=full --workdir=runs/llm_full
  # the methods at the settings `jaxaudit tune` chose on a workdir of the same corpus config:
  jaxaudit train --workdir=runs/tune/lm_synthetic --config=experiments/configs/lm_synthetic.py:local
  jaxaudit tune --workdir=runs/tune/lm_synthetic --methods=lm_gradient_ascent,lm_npo --trials=12
  python experiments/llm_audit.py --corpus=synthetic --methods=lm_gradient_ascent,lm_npo \
      --tuned_from=runs/tune/lm_synthetic --workdir=runs/llm_synthetic_tuned

Resumable: one JSON line per finished draw in WORKDIR/draws.jsonl; the table goes to
WORKDIR/summary.md. The logic lives in :mod:`jaxaudit.study.llm`.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from jaxaudit import cli
from jaxaudit.study import llm, script

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
flags.DEFINE_string('corpus', 'synthetic', "'synthetic', 'shakespeare', or a .txt / .jsonl path.")
flags.DEFINE_enum('config', 'local', ['local', 'full'], 'Model and corpus sizes.')
flags.DEFINE_integer('draws', 2, 'Independent draws (split and training seeds).')
flags.DEFINE_integer('first_draw', 0, 'Seed of the first draw.')
flags.DEFINE_string('workdir', 'runs/llm', 'Where results go.')
flags.DEFINE_list('methods', None, "LM unlearning methods applied to M (default: the config's).")
flags.DEFINE_string('tuned_from', '', 'A workdir where `jaxaudit tune` ran on this corpus '
                    "config: every method runs at the settings chosen there ('': the "
                    'published defaults).')
flags.DEFINE_float('utility_ratio', None, "The utility test's reference models train on this "
                   "fraction of Dr (0: the verifiers; default: the config's).")
FLAGS = flags.FLAGS


def main(argv):
  script.check_main_args(argv, FLAGS)
  make = llm.local_config if FLAGS.config == 'local' else llm.full_config
  cfg = make(FLAGS.corpus)
  if FLAGS.methods:
    cfg = dataclasses.replace(cfg, methods=tuple(FLAGS.methods))
  if FLAGS.utility_ratio is not None:
    cfg = dataclasses.replace(cfg, utility_ratio=FLAGS.utility_ratio)
  table = llm.run(cfg, FLAGS.workdir, draws=FLAGS.draws,
                  first_draw=FLAGS.first_draw, data_dir=SHARED, tuned_from=FLAGS.tuned_from,
                  log=lambda s: print(s, flush=True))
  print(table)


if __name__ == '__main__':
  cli.run_script(main)
