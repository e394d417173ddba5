"""`jaxaudit unlearn`: run an unlearning method on WORKDIR's original model.

  jaxaudit unlearn --workdir=runs/demo --method=finetune --hparam=epochs=3

Hyper-parameters come from the registry defaults, then from
``config.unlearn.hparams.METHOD`` (a config file may set them), then from
``--hparam NAME=VALUE``, which wins.
"""

from __future__ import annotations

from absl import flags

from jaxaudit import pipeline
from jaxaudit import configs
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

common.define_config_and_workdir()
common.define_scale_out()
flags.DEFINE_string('method', None, 'Unlearning method (see `jaxaudit methods`).', required=True)
flags.DEFINE_multi_string('hparam', [], 'Hyper-parameter override NAME=VALUE (repeatable).')
flags.DEFINE_string('name', None, 'Checkpoint name under models/unlearned (default: the method); '
                    'one path component of letters, digits, "_", "-", ".".')
flags.DEFINE_bool('overwrite', False, 'Replace models/unlearned/NAME even if jaxaudit did not '
                  'write it.')
flags.DEFINE_string('init_checkpoint', None, 'Checkpoint of the same model that never saw Du '
                    '(warmstart_retrain / warmstart_finetune), e.g. one trained on public data; '
                    'default WORKDIR/models/pretrained, trained on first use on pool records '
                    'outside D and D_ref (else Dr).')
FLAGS = flags.FLAGS


def parse_hparams(items) -> dict:
  out = {}
  for item in items:
    if '=' not in item:
      raise ConfigError(f'--hparam expects NAME=VALUE, got {item!r}')
    k, v = item.split('=', 1)
    if not k.strip():
      raise ConfigError(f'--hparam expects NAME=VALUE, got {item!r}')
    out[k.strip()] = v.strip()
  return out


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  from jaxaudit import tune
  hparams = configs.config_hparams(FLAGS.config, FLAGS.method,
                                   {**tune.tuned_hparams(FLAGS.workdir, FLAGS.method),
                                    **parse_hparams(FLAGS.hparam)})   # tuned, then --hparam
  res = pipeline.run_unlearn(FLAGS.config, FLAGS.workdir, FLAGS.method, hparams,
                             out_name=FLAGS.name, init_checkpoint=FLAGS.init_checkpoint,
                             overwrite=FLAGS.overwrite)
  print(f'saved {res["path"]}')
