r"""Re-audits the checkpoints of one sweep group with the current audit (no retraining).

After a change to the audit, the models of a sweep group (its original, retrain and
every unlearned checkpoint under ``models/unlearned``) can be audited again with
the cached verifiers. One JSON line per model goes to ``--out`` (atomically
appended; finished models are skipped on restart) and a table is printed.

  python experiments/reaudit.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/sweep_local --group=digits_mlp_class/class3/0 \
      --out=runs/sweep_local/reaudit_digits_mlp_class.jsonl
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from jaxaudit import cli
from jaxaudit.errors import ConfigError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import sweep as sweep_lib  # noqa: E402  (repo root on the path)

FLAGS = flags.FLAGS
COLS = ['target', 'decision', 'p', 'p_record', 'class_acc', 'verifier_class_acc', 'acc_test']


def parse_group(text: str) -> tuple[str, str, int]:
  """'entry/forget/seed' -> (entry, forget, seed)."""
  parts = text.split('/')
  if len(parts) != 3 or not parts[2].lstrip('-').isdigit():
    raise ConfigError(f'--group must be ENTRY/FORGET/SEED (e.g. digits_mlp_class/class3/0), '
                         f'got {text!r}')
  return parts[0], parts[1], int(parts[2])


def targets_of(wd: str) -> list[str]:
  """Checkpoint names of a group dir, relative to its models/ folder."""
  from jaxaudit import checkpoint
  names = [n for n in ('original', 'retrain') if checkpoint.exists(os.path.join(wd, 'models', n))]
  udir = os.path.join(wd, 'models', 'unlearned')
  if os.path.isdir(udir):
    names += [f'unlearned/{n}' for n in sorted(os.listdir(udir))
              if checkpoint.exists(os.path.join(udir, n))]
  return names


def reaudit(config, workdir: str, group: tuple[str, str, int], out: str, log=print) -> list[dict]:
  """Audits every checkpoint of ``group`` that has no row in ``out`` yet; returns all rows."""
  from jaxaudit import pipeline
  from jaxaudit.audit import audit
  rows = sweep_lib.read_results(out, repair=True, log=log)
  done = {r['target'] for r in rows}
  g = sweep_lib.Group(config, workdir, group, log)
  vs = g.verifier_sets[0][0] if len(g.verifier_sets) == 1 else None
  for name in targets_of(g.wd):
    if name in done:
      continue
    row = dict(target=name, group='/'.join(map(str, group)), error=None)
    try:
      tgt = pipeline.resolve_target(g.cfg, g.dataset, g.split, g.wd, name)
      r = audit(tgt, g.dataset, g.split, verifier_model=g.model, recipe=g.recipe,
                settings=g.settings, cache_dir=g.verifier_dir, verifiers=vs, memo=g.memo)
      cl = r.details.get('class_level') or {}
      row.update(decision=r.decision + (f' ({r.direction})' if r.direction else ''),
                 p=r.p_value, p_record=r.details.get('p_record'),
                 class_acc=cl.get('accuracy'), verifier_class_acc=cl.get('verifier_accuracy'),
                 acc_test=r.details['accuracy']['target'].get('test'))
    except Exception as e:   # noqa: BLE001 — recorded (e.g. NaN weights), the loop goes on
      row['error'] = f'{type(e).__name__}: {e}'[:300]
    sweep_lib.append_row(out, row)
    rows.append(sweep_lib.clean_json(row))
    log(f'[reaudit] {name}: {row["error"] or row["decision"]}')
  return rows


def display_row(row: dict) -> dict:
  """A table row: the error in place of the decision; the best verifier's class accuracy."""
  if row.get('error'):
    return dict(target=row['target'], decision=f'error: {row["error"][:60]}')
  out = {k: row.get(k) for k in COLS}
  v = row.get('verifier_class_acc')
  out['verifier_class_acc'] = max(v) if v else None
  return out


def main(argv):
  sweep_lib.check_main_args(argv, ('config', 'workdir', 'group'))
  group = parse_group(FLAGS.group)
  out = FLAGS.out or os.path.join(FLAGS.workdir, f'reaudit_{"_".join(map(str, group))}.jsonl')
  rows = reaudit(FLAGS.config, FLAGS.workdir, group, out, log=lambda s: print(s, flush=True))
  print(sweep_lib.format_table([display_row(r) for r in rows], COLS))
  print(f'\nresults: {out}')


if __name__ == '__main__':
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Sweep config file (as for sweep.py).',
                                  lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory of the sweep.')
  flags.DEFINE_string('group', None, 'ENTRY/FORGET/SEED of the group to re-audit.')
  flags.DEFINE_string('out', None, 'JSON-lines output (default WORKDIR/reaudit_GROUP.jsonl).')
  cli.run_script(main)
