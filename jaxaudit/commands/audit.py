"""`jaxaudit audit`: is the unlearned model ignorant of Du?

  jaxaudit audit --workdir=runs/demo --target=unlearned/finetune
  jaxaudit audit --workdir=runs/demo --logits=mu_logits.npz        # black box
  jaxaudit audit --workdir=runs/demo --target=retrain --reference=my_heldout.npz
  jaxaudit audit --workdir=runs/demo --target=unlearned/finetune --bank      # no verifier training
  jaxaudit audit --workdir=runs/demo --target=original --requests=requests.jsonl  # one verdict each
  jaxaudit audit --workdir=runs/lm --token_logprobs=my_lm.npz    # a language model you run yourself
"""

from __future__ import annotations

from absl import flags

from jaxaudit import pipeline
from jaxaudit.commands import common
from jaxaudit.errors import ConfigError

common.define_config_and_workdir()
common.define_scale_out()
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
flags.DEFINE_bool('bank', False, 'Draw each record\'s verifiers from the workdir\'s verifier bank '
                  '(WORKDIR/bank, config.audit.bank_size members trained once on ~15%% of D\'s '
                  'groups each) instead of training K verifiers for this request.')
flags.DEFINE_string('requests', None, 'Deletion requests, JSON lines {"id": ..., "records": '
                    '[pool indices]} or {"id": ..., "groups": [group ids]}: one verdict per '
                    'request (per-record test against the verifier bank) in '
                    'OUT/verdicts.jsonl, and OUT/summary.md; resumable.')
flags.DEFINE_string('token_logprobs', None, 'Black-box language model (text workdirs): .npz with '
                    '`indices` (pool indices), `tokens` (n, T+1) the records\' token ids (-1 pad), '
                    '`logprobs` (n, T) the model\'s log-probability of each next token, optionally '
                    '`topk_ids`/`topk_logprobs` (n, T, k); see jaxaudit.text.logprobs.')
flags.DEFINE_string('groups', None, 'Units of deletion: .npy/.npz with one integer group id per '
                    'pool record (a data subject); default: every record its own group.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.requests:
    if FLAGS.reference:
      raise ConfigError('--requests cannot be combined with --reference')
    summ, out = pipeline.run_stream_audit(
        FLAGS.config, FLAGS.workdir, FLAGS.requests, target=FLAGS.target,
        logits_file=FLAGS.logits, groups_file=FLAGS.groups, out_dir=FLAGS.out,
        overwrite=FLAGS.overwrite)
    print('requests: ' + ', '.join(f'{k} {v}' for k, v in summ['decisions'].items()))
    return
  if FLAGS.groups and not FLAGS.bank:
    raise ConfigError('--groups needs --bank or --requests')
  result, out = pipeline.run_audit(FLAGS.config, FLAGS.workdir, target=FLAGS.target,
                                   token_logprobs_file=FLAGS.token_logprobs,
                                   logits_file=FLAGS.logits, out_dir=FLAGS.out,
                                   overwrite=FLAGS.overwrite, reference_file=FLAGS.reference,
                                   use_bank=FLAGS.bank, groups_file=FLAGS.groups)
  print(f'decision: {result.decision}' + (f' ({result.direction})' if result.direction else ''))
