"""`jaxaudit train`: train the original model (and the retrain reference, and with
`--config.sisa.shards=S` a SISA original for the `sisa` unlearning method)."""

from __future__ import annotations

import json

from absl import flags

from jaxaudit import pipeline
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

common.define_config_and_workdir()
common.define_scale_out()
flags.DEFINE_bool('overwrite', False, 'Retrain models of WORKDIR that were trained with other '
                  'settings (and replace its split and saved configuration).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  summary = pipeline.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
  print('summary: ' + json.dumps(summary, indent=1, default=str))
