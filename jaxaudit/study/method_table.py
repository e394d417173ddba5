r"""Every registered unlearning method, run from the real CLI on one data set.

For one config and work directory :func:`run_all`

1. runs ``jaxaudit train`` (a subprocess of the CLI) unless WORKDIR already
   holds the original model M (and, with ``--sisa_shards=S``, a SISA original);
2. builds a "pretrained" checkpoint of the same model that never saw Du, for
   the warm-start methods (``warmstart_retrain``, ``warmstart_finetune``):
   the model trained for ``--pretrain_epochs`` on records outside Du
   (:func:`jaxaudit.pipeline.pretrained_checkpoint`: pool records in neither D
   nor D_ref when the config leaves some unused, e.g. MNIST with
   ``split.train_size``, else Dr, e.g. digits, whose pool is D ∪ D_ref;
   ``--pretrain_source=ref`` uses D_ref, and the warm-start models are then not
   auditable with this split). Saved to WORKDIR/models/pretrained and passed to
   every method as ``--init_checkpoint`` (the others ignore it);
3. runs ``jaxaudit unlearn --method=NAME`` (a subprocess) for each method,
   records its exit status, wall time (of the whole CLI process: start-up,
   data, compilation and the method) and the accuracies on Dr, Du, D_ref and
   test stored in the saved checkpoint's metadata, checks that the saved
   parameters are finite, and flags a model whose test accuracy is at chance;
4. appends one JSON line per method to WORKDIR/cli_methods.jsonl (flushed and
   fsynced, :func:`jaxaudit.io_utils.append_jsonl`) and writes the Markdown
   table WORKDIR/cli_methods.md.

Resumable: a method whose row is already in the JSON-lines file is skipped
(rows of failed, skipped or n/a methods are retried unless ``--noretry_failed``;
``--rerun=NAME,...`` runs methods again from scratch; the table shows the last
row of each method). A method that fails yields a
row with its exit code and the tail of its stderr, and the sweep goes on.
``sisa`` needs a SISA-trained original (``jaxaudit train
--config.sisa.shards=S``; ``--sisa_shards=S`` makes one); without one its row
is ``skipped``. A method that is undefined for the model by design (CT on an
MLP: no conv kernels) exits with its ConfigError and gets status ``n/a``.

The command line is ``experiments/cli_methods.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Callable, Sequence

import numpy as np

from jaxaudit import io_utils

RESULTS_FILE = 'cli_methods.jsonl'
TABLE_FILE = 'cli_methods.md'
LOG_DIR = 'cli_logs'
SISA_NOTE = 'skipped: needs SISA original (jaxaudit train --config.sisa.shards=S)'
# CLI errors (exit 1, a ConfigError) that say a method is undefined for this model, by design
# (not a bug): a pattern of the error message → the note of the row (status ``n/a``).
NOT_APPLICABLE = {
    'needs a convolutional model': 'n/a: CT transposes conv kernels; this model has none '
                                   '(ConfigError by design)',
}
# A test accuracy below CHANCE_FACTOR / num_classes counts as a collapse.
CHANCE_FACTOR = 1.5
ACC_LABELS = (('retain', 'Dr'), ('forget', 'Du'), ('ref', 'D_ref'), ('test', 'test'))


# -----------------------------------------------------------------------------
# Command lines.
# -----------------------------------------------------------------------------


def cli_command(command: str) -> list[str]:
  """The real CLI, as the console script ``jaxaudit`` runs it."""
  return [sys.executable, '-m', 'jaxaudit.cli', command]


def config_args(argv: Sequence[str]) -> list[str]:
  """The ``--config`` / ``--config.FIELD=VALUE`` flags of a command line, in order.

  They are forwarded verbatim to the CLI subprocesses so that those rebuild
  exactly the same config (and hence the same split).
  """
  out, i = [], 0
  argv = list(argv)
  while i < len(argv):
    a = argv[i]
    if a == '--':
      break
    if a.startswith('--config=') or a.startswith('--config.'):
      if a.startswith('--config.') and '=' not in a and i + 1 < len(argv):
        out += [a, argv[i + 1]]   # --config.x value
        i += 2
        continue
      out.append(a)
    elif a == '--config' and i + 1 < len(argv):
      out += [a, argv[i + 1]]
      i += 2
      continue
    i += 1
  return out


def parse_method_hparams(items: Sequence[str]) -> dict[str, list[str]]:
  """``method:name=value`` items → {method: ['name=value', ...]}."""
  from jaxaudit.errors import ConfigError
  out: dict[str, list[str]] = {}
  for item in items:
    m = re.fullmatch(r'\s*([\w.-]+)\s*:\s*([\w.-]+)\s*=(.*)', item)
    if not m:
      raise ConfigError(f'--hparam expects METHOD:NAME=VALUE, got {item!r}')
    out.setdefault(m.group(1), []).append(f'{m.group(2)}={m.group(3).strip()}')
  return out


def row_key(method: str, hparams: Sequence[str]) -> str:
  """A row's key: ``METHOD`` or ``METHOD[name=value,...]`` (hyper-parameters sorted)."""
  return method + (f'[{",".join(sorted(hparams))}]' if hparams else '')


def _tail(text: str, n: int = 1500) -> str:
  return text[-n:] if len(text) > n else text


def run_cli(args: list[str], log_path: str, timeout: float | None) -> tuple[int, float, str]:
  """Runs one CLI command; its stdout+stderr go to ``log_path``.

  Returns:
    (exit code (-9 on timeout), wall seconds, stderr+stdout text).
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  t0 = time.time()
  try:
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout or None)
    rc, out = p.returncode, p.stdout
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
    rc, out = -9, out + f'\n[cli_methods] timed out after {timeout}s\n'
  wall = time.time() - t0
  with open(log_path, 'w', encoding='utf-8') as f:
    f.write('$ ' + ' '.join(args) + '\n' + out)
  return rc, wall, out


# -----------------------------------------------------------------------------
# One method.
# -----------------------------------------------------------------------------


def params_finite(path: str) -> bool | None:
  """Whether every parameter of the checkpoint ``path`` is finite (None: unreadable)."""
  import jax
  from jaxaudit import checkpoint
  try:
    params, _ = checkpoint.load_checkpoint(path)
  except Exception:   # noqa: BLE001 — unreadable: unknown
    return None
  return bool(all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(params)))


def run_method(workdir: str, method: str, family: str, cfg_args: list[str], hparams: list[str],
               init_checkpoint: str | None, num_classes: int, timeout: float | None) -> dict:
  """Runs ``jaxaudit unlearn --method=METHOD``; returns its row."""
  from jaxaudit import checkpoint
  name = row_key(method, hparams).replace('/', '_')
  args = cli_command('unlearn') + cfg_args + [f'--workdir={workdir}', f'--method={method}']
  args += [f'--hparam={h}' for h in hparams]
  if init_checkpoint:
    args.append(f'--init_checkpoint={init_checkpoint}')
  rc, wall, out = run_cli(args, os.path.join(workdir, LOG_DIR, f'{name}.log'), timeout)
  row = dict(key=row_key(method, hparams), kind='cli_methods', method=method, family=family,
             hparams=list(hparams), exit_code=rc, wall_s=wall,
             command=' '.join(args[2:]).replace('jaxaudit.cli ', 'jaxaudit ', 1))
  path = os.path.join(workdir, 'models', 'unlearned', method)
  if rc == 0:
    meta = checkpoint.load_meta(path)
    accs = meta.get('accuracy') or {}
    finite = params_finite(path)
    row.update(status='ok', method_s=meta.get('wall_time_s'), accuracy=accs,
               saved_hparams=meta.get('hparams'), finite=finite)
    notes = []
    if '[unlearn] reusing' in out:
      notes.append('checkpoint reused (method s from its first run)')
    if finite is False:
      notes.append('non-finite params')
    test = accs.get('test')
    if test is not None and test < CHANCE_FACTOR / num_classes:
      notes.append(f'collapsed: test acc {100 * test:.1f}% ≈ chance')
    row['note'] = '; '.join(notes)
    return row
  lines = [l for l in out.strip().splitlines() if l.strip()]
  last = lines[-1] if lines else ''
  row['output_tail'] = _tail(out)
  na = [note for pattern, note in NOT_APPLICABLE.items() if pattern in out]
  clean_error = rc == 1 and 'Traceback' not in out   # a JaxAuditError: message, no traceback
  if method == 'sisa' and clean_error and re.search('sisa', out, re.IGNORECASE):
    row.update(status='skipped', note=SISA_NOTE, error=last[:300])
  elif clean_error and na:
    row.update(status='n/a', note=na[0], error=last[:300])
  else:
    row.update(status='failed', note=('timeout' if rc == -9 else last[:300]), error=last[:300])
  return row


# -----------------------------------------------------------------------------
# The table.
# -----------------------------------------------------------------------------


def latest_rows(rows: list[dict]) -> list[dict]:
  """The last row of each key, in order of first appearance."""
  out: dict[str, dict] = {}
  for r in rows:
    if r.get('kind') == 'cli_methods':
      out[r['key']] = r
  return list(out.values())


def _pct(v) -> str:
  return '' if v is None else f'{100 * v:.1f}'


def _s(v) -> str:
  return '' if v is None else f'{v:.1f}'


def markdown_table(rows: list[dict], header: dict | None = None) -> str:
  """Markdown: a reference block (M, pretrained) and one line per method."""
  cols = ['method', 'family', 'status', 'exit', 'wall s', 'method s', 'acc Dr', 'acc Du',
          'acc D_ref', 'acc test', 'note']
  lines = []
  if header:
    for k, v in header.items():
      lines.append(f'- {k}: {v}')
    lines.append('')
  lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  for r in rows:
    a = r.get('accuracy') or {}
    cells = [r['key'], r.get('family', ''), r.get('status', ''), str(r.get('exit_code', '')),
             _s(r.get('wall_s')), _s(r.get('method_s')), _pct(a.get('retain')),
             _pct(a.get('forget')), _pct(a.get('ref')), _pct(a.get('test')),
             (r.get('note') or '').replace('|', '\\|')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _ref_line(path: str) -> str:
  from jaxaudit import checkpoint
  if not checkpoint.exists(path):
    return 'absent'
  meta = checkpoint.load_meta(path)
  accs = meta.get('accuracy') or {}
  extra = ''
  if meta.get('kind') == 'sisa':
    extra = (f' — {meta.get("shards")} shards x {meta.get("slices")} slices, '
             f'{meta.get("slice_epochs")} epochs per slice')
  if meta.get('pretrain_source'):
    extra = (f' — {meta["pretrain_records"]} {meta["pretrain_source"]} records, '
             f'{meta["pretrain_epochs"]} epochs')
  wall = meta.get('wall_time_s')
  text = ', '.join(f'{label} {_pct(accs.get(k))}%' for k, label in ACC_LABELS)
  return (text +
          (f' ({wall:.1f}s)' if wall is not None else '') + extra)


# -----------------------------------------------------------------------------
# The run.
# -----------------------------------------------------------------------------


def run_all(config, workdir: str, cfg_args: list[str], *, methods: Sequence[str] = (),
            hparams: dict[str, list[str]] | None = None, pretrain_epochs: int = 2,
            pretrain_source: str = 'auto', pretrain_size: int | None = None,
            retry_failed: bool = True, rerun: Sequence[str] = (), sisa_shards: int = 0,
            timeout: float | None = None,
            log: Callable[[str], None] = print) -> tuple[list[dict], str]:
  """Trains M if needed, builds the pretrained model, runs every method; (rows, table)."""
  from jaxaudit import checkpoint, pipeline
  from jaxaudit import workdir as workdir_lib
  from jaxaudit import unlearn as unlearn_lib
  from jaxaudit.errors import ConfigError
  hparams = hparams or {}
  os.makedirs(workdir, exist_ok=True)
  from jaxaudit.unlearn.language import FAMILY as LM_FAMILY
  families = {m.name: m.family for m in unlearn_lib.list_methods()}
  names = list(methods) or [n for n, f in families.items() if f != LM_FAMILY]   # image models
  unknown = [n for n in list(names) + list(hparams) + list(rerun) if n not in families]
  if unknown:
    raise ConfigError(f'unknown method(s) {unknown}; registered: {sorted(families)}')

  orig = os.path.join(workdir, 'models', 'original')
  sisa_dir = os.path.join(workdir, 'models', 'sisa')
  if checkpoint.exists(orig) and (not sisa_shards or checkpoint.exists(sisa_dir)):
    log(f'[cli_methods] reusing the original model {orig}')
  else:
    # `jaxaudit train` reuses what exists (M, the retrain reference) and trains the rest.
    sisa_args = [f'--config.sisa.shards={int(sisa_shards)}'] if sisa_shards else []
    args = cli_command('train') + cfg_args + sisa_args + [f'--workdir={workdir}']
    log('[cli_methods] $ jaxaudit train ' + ' '.join(args[4:]))
    rc, wall, out = run_cli(args, os.path.join(workdir, LOG_DIR, 'train.log'), None)
    if rc != 0:
      raise RuntimeError(f'jaxaudit train failed (exit {rc}):\n{_tail(out)}')
    log(f'[cli_methods] trained in {wall:.1f}s')
  pre = pipeline.pretrained_checkpoint(config, workdir, epochs=pretrain_epochs,
                                      source=pretrain_source, size=pretrain_size, log=log)
  dataset, split = workdir_lib.prepare(config, workdir, lambda s: None)

  results = os.path.join(workdir, RESULTS_FILE)
  rows = io_utils.read_jsonl(results, repair=True, log=lambda s: log(f'[cli_methods] {s}'))
  last = {r['key']: r for r in latest_rows(rows)}
  for name in names:
    hp = hparams.get(name, [])
    key = row_key(name, hp)
    prev = last.get(key)
    if name in rerun:
      # The CLI reuses a checkpoint of the same method and hyper-parameters: remove it so
      # that the method really runs again (e.g. after a change to its code).
      io_utils.remove_dir(os.path.join(workdir, 'models', 'unlearned', name))
    elif prev is not None and (prev.get('status') == 'ok' or not retry_failed):
      log(f'[cli_methods] {key}: done already ({prev.get("status")})')
      continue
    log(f'[cli_methods] {key} ...')
    row = run_method(workdir, name, families[name], cfg_args, hp, pre, dataset.num_classes,
                     timeout)
    io_utils.append_jsonl(results, row)
    rows.append(io_utils.jsonable(row))
    a = row.get('accuracy') or {}
    accs = ', '.join(f'{lb} {_pct(a.get(k))}%' for k, lb in ACC_LABELS) if a else ''
    note = f' — {row["note"]}' if row.get('note') else ''
    log(f'[cli_methods] {key}: {row["status"]} (exit {row["exit_code"]}, '
        f'{row["wall_s"]:.1f}s) {accs}{note}')

  order = {n: i for i, n in enumerate(families)}
  table_rows = sorted(latest_rows(rows), key=lambda r: (order.get(r['method'], 1e9), r['key']))
  header = {
      'workdir': workdir,
      'config': ' '.join(cfg_args) or '(CLI default)',
      'data': (f'{dataset.name}: |D|={len(split.train)} |Du|={len(split.forget)} '
               f'|Dr|={len(split.retain)} |D_ref|={len(split.ref)} |test|={len(split.test)}'),
      'model': f'{config.model} {config.model_kwargs.to_dict() or ""}'.strip(),
      'original M': _ref_line(orig),
      'pretrained (--init_checkpoint)': _ref_line(pre),
      'SISA original': _ref_line(sisa_dir),
      'columns': ('wall s = whole `jaxaudit unlearn` process (start-up, data, compilation, '
                  'method); method s = the method call (checkpoint metadata); acc in %'),
  }
  table = markdown_table(table_rows, header)
  with open(os.path.join(workdir, TABLE_FILE), 'w', encoding='utf-8') as f:
    f.write(table + '\n')
  return table_rows, table
