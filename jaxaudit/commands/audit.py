"""`jaxaudit audit`: is the unlearned model ignorant of Du?

  jaxaudit audit --workdir=runs/demo --target=unlearned/finetune
  jaxaudit audit --workdir=runs/demo --logits=mu_logits.npz        # black box
  jaxaudit audit --workdir=runs/demo --target=retrain --reference=my_heldout.npz
"""

from __future__ import annotations

from absl import flags

from jaxaudit import pipeline
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

common.define_config_and_workdir()
flags.DEFINE_string('target', None, 'Checkpoint to audit: a name under WORKDIR/models '
                    '(original, retrain, sisa, unlearned/METHOD) or a checkpoint path.')
flags.DEFINE_string('logits', None, 'Black-box mode: .npz with `indices` (pool indices) and '
                    '`logits` (n, C) of the audited model, optionally `test_indices`/`test_logits`.')
flags.DEFINE_string('reference', None, 'Your own reference records: .npz with `x` (n, '
                    '*input_shape), `y` (n,) labels and optionally `units` ("raw", the default, '
                    'or "standardised"); records no model trained on. Replaces the split\'s '
                    'D_ref; refused (invalid_reference) when not exchangeable with Du.')
flags.DEFINE_string('out', None, 'Report directory (default WORKDIR/audits/TARGET); an existing '
                    'directory is replaced only if jaxaudit wrote it.')
flags.DEFINE_bool('overwrite', False, 'Replace the report directory even if jaxaudit did not '
                  'write it.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  result, out = pipeline.run_audit(FLAGS.config, FLAGS.workdir, target=FLAGS.target,
                                   logits_file=FLAGS.logits, out_dir=FLAGS.out,
                                   overwrite=FLAGS.overwrite, reference_file=FLAGS.reference)
  print(f'decision: {result.decision}' + (f' ({result.direction})' if result.direction else ''))
