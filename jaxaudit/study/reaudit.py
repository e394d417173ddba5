"""Re-audits the checkpoints of one sweep group with the current audit (no retraining).

After a change to the audit, the models of a sweep group (its original, retrain and
every unlearned checkpoint under ``models/unlearned``) can be audited again with
the cached verifiers. One JSON line per model goes to the output file (appended
with :func:`jaxaudit.io_utils.append_jsonl`; finished models are skipped on restart).
"""

from __future__ import annotations

import os
from typing import Callable

from jaxaudit import io_utils
from jaxaudit.errors import ConfigError
from jaxaudit.study.groups import Group

COLS = ['target', 'decision', 'p', 'p_record', 'class_acc', 'verifier_class_acc', 'acc_test']


def parse_group(text: str) -> tuple[str, str, int]:
  """'entry/forget/seed' -> (entry, forget, seed); ConfigError otherwise."""
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


def reaudit(config, workdir: str, group: tuple[str, str, int], out: str,
            log: Callable[[str], None] = print) -> list[dict]:
  """Audits every checkpoint of ``group`` that has no row in ``out`` yet; returns all rows."""
  from jaxaudit import workdir as workdir_lib
  rows = io_utils.read_jsonl(out, repair=True, log=lambda s: log(f'[reaudit] {s}'))
  done = {r['target'] for r in rows}
  g = Group(config, workdir, group, log)
  for name in targets_of(g.wd):
    if name in done:
      continue
    row = dict(target=name, group='/'.join(map(str, group)), error=None)
    try:
      r = g.audit(workdir_lib.resolve_target(g.cfg, g.dataset, g.split, g.wd, name))
      cl = r.details.get('class_level') or {}
      row.update(decision=r.decision + (f' ({r.direction})' if r.direction else ''),
                 p=r.p_value, p_record=r.details.get('p_record'),
                 class_acc=cl.get('accuracy'), verifier_class_acc=cl.get('verifier_accuracy'),
                 acc_test=r.details['accuracy']['target'].get('test'))
    except Exception as e:   # noqa: BLE001 — recorded (e.g. NaN weights), the loop goes on
      row['error'] = f'{type(e).__name__}: {e}'[:300]
    io_utils.append_jsonl(out, row)
    rows.append(io_utils.jsonable(row))
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
