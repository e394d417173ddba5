"""`jaxaudit tune`: search unlearning methods' hyper-parameters (DeepUnlearn's protocol).

  jaxaudit tune --workdir=runs/w --methods=gradient_ascent,neggrad_plus --trials=20

For each method an Optuna study (TPE, ``--trials`` trials) unlearns M with suggested
settings and scores the distance to the retrained model: |Δ accuracy| on Dr, Du and a
validation split plus |Δ population-MIA indiscernibility| (never our audit's verdict). A text
workdir (`--config=experiments/configs/lm_synthetic.py:local`) tunes the lm_* methods, scored
by token accuracy and per-record mean token NLL.
Trials are journalled in WORKDIR/tuning/, so a stopped search resumes; the chosen settings
(WORKDIR/tuning/METHOD.json) are used by `jaxaudit unlearn` and `jaxaudit demo` in this
workdir (an explicit --hparam still wins).
"""

from __future__ import annotations

from absl import flags

from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

common.define_config_and_workdir()
common.define_compilation_cache()   # one process: Optuna's journal has one writer
flags.DEFINE_list('methods', None, 'Methods to tune (see `jaxaudit methods`).', required=True)
flags.DEFINE_integer('trials', 20, 'Trials per method (finished, pruned and failed ones count).')
flags.DEFINE_integer('seed', 0, 'Seed of the TPE sampler.')
flags.DEFINE_bool('require_forgetting', False,
                  'Choose only settings whose Du accuracy falls to the retrained model\'s '
                  '(the forget-accuracy rule of Jia et al. 2023); default: DeepUnlearn\'s '
                  'objective alone.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  from jaxaudit import tune
  res = tune.run_tuning(FLAGS.config, FLAGS.workdir, FLAGS.methods, trials=FLAGS.trials,
                        seed=FLAGS.seed,
                        require_forgetting=FLAGS.require_forgetting,
                        log=lambda s: print(s, flush=True))
  for m, r in res.items():
    print(f'{m}: objective {r["objective"]:.4f} with {r["hparams"]} '
          f'-> {tune.search.tuned_path(FLAGS.workdir, m)}')
