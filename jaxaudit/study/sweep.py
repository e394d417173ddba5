r"""The study sweep: data sets × unlearning methods × forget settings × seeds.

For every cell (entry, forget setting, seed, method) the sweep

1. trains or reuses the original model M and the retrain-from-scratch
   reference (one pipeline workdir per (entry, forget setting, seed):
   ``WORKDIR/runs/ENTRY-FORGET-sSEED``, Orbax checkpoints reused across cells
   and across restarts, see :mod:`jaxaudit.pipeline`); in process, the
   originals and retrains of all seeds of an (entry, forget setting) are
   trained first as one ensemble program (:func:`train_initialisations`);
2. runs the method (:func:`jaxaudit.pipeline.run_unlearn`, checkpoint reused);
3. audits Mu with jaxaudit's audit (verifiers trained once per workdir and
   cached) and with the peer auditors (population MIA, LiRA, RMIA,
   heuristics, the NeurIPS-23 score and, for the configured methods, U-LiRA);
4. appends ONE JSON line to the results table when the cell is complete
   (:func:`jaxaudit.io_utils.append_jsonl`), with its cost
   (:mod:`jaxaudit.study.cost`).

Resumable: cells whose key is already in the results file are skipped; each
line is written with flush + fsync only once its cell is done, and a truncated
last line (a crash while writing) is removed on restart. The cells run in this
process, on a Ray cluster, or split over hosts (one shard of the table per
process), see :mod:`jaxaudit.study.executors`; only the driver writes rows. Same seeds give the
same numbers, so an interrupted and restarted sweep ends with the same table
(timings aside). A method that fails yields a row with ``error``; a method that
is not registered is skipped with a logged note (no row, so it runs once it
exists).
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Callable

from jaxaudit import distributed, io_utils
from jaxaudit.errors import ConfigError, TrainingError
from jaxaudit.study import cells as cells_lib
from jaxaudit.study import executors
from jaxaudit.study import peers as peers_lib
from jaxaudit.study.cells import Cell
from jaxaudit.study.cost import cell_cost
from jaxaudit.study.groups import Group
from jaxaudit.study.schema import ORIGINAL, ORIGINAL_FAMILY, VOLATILE_KEYS
from jaxaudit.study.tables import fmt_duration, verdict

# The table of a sweep split over processes (shards) and the static partition.
read_results = executors.read_results
partition_cells = executors.partition_cells


def stable_row(row: dict) -> dict:
  """A row without its timing-dependent fields (for comparing tables)."""
  out = {k: v for k, v in row.items() if k not in VOLATILE_KEYS}
  peers = {}
  for name, p in (row.get('peers') or {}).items():
    peers[name] = {k: v for k, v in p.items()
                   if k != 'trained_now' and not k.endswith('_s')}   # timings, cache state
  if peers:
    out['peers'] = peers
  return out


class _Identity:
  """Stands in for an UnlearnMethod in the ``original`` row: returns params unchanged."""
  family = ORIGINAL_FAMILY
  hparams: dict = {}

  @staticmethod
  def fn(params, model, data, key):
    del model, data, key
    return params


def ulira_fn(g: Group, meth) -> Callable:
  """U-LiRA's ``unlearn_fn(params, key, forget, retain)``: ``meth`` on the group's data."""
  import jax
  import jax.numpy as jnp

  def fn(params, key, forget_indices, retain_indices):
    data = g.unlearn_data_for(meth.name)._replace(forget=jnp.asarray(forget_indices, jnp.int32),
                                   retain=jnp.asarray(retain_indices, jnp.int32))
    return jax.block_until_ready(meth.fn(params, g.model, data, key))
  return fn


def neurips23_group(g: Group, meth, name: str, base: str, hp: dict, n: int):
  """N unlearned models (seeds 1..N of the method key), checkpointed for reuse.

  Returns:
    (stacked params of the N models, wall seconds of unlearning them).
  """
  import jax
  from jaxaudit import checkpoint
  from jaxaudit import workdir as workdir_lib
  from jaxaudit import unlearn as unlearn_lib
  path = os.path.join(g.wd, 'models', 'unlearned_group', f'{name}-x{n}')
  method = base
  if checkpoint.exists(path):
    meta = checkpoint.load_meta(path)
    if meta.get('method') == method and meta.get('hparams') == io_utils.jsonable(hp) \
        and meta.get('ensemble_size') == n:
      params, meta = checkpoint.load_checkpoint(path)
      return params, float(meta.get('wall_time_s') or 0.0)
  t0 = time.time()
  if base == ORIGINAL:
    from jaxaudit.train import stack
    return stack([g.params] * n), 0.0
  params = jax.block_until_ready(unlearn_lib.run_method(
      meth, g.params, g.model, g.unlearn_data_for(base), g.method_key(base),
      seeds=list(range(1, n + 1))))
  wall = time.time() - t0
  checkpoint.save_checkpoint(path, params, workdir_lib.checkpoint_meta(
      g.cfg, g.dataset, g.split, 'unlearned_group', ensemble_size=n, method=method,
      hparams=io_utils.jsonable(hp), wall_time_s=wall))
  return params, wall


def _fail(row: dict, where: str, e: Exception, log, key: str) -> dict:
  """Records an exception of step ``where`` in ``row`` (with a short traceback)."""
  row['error'] = f'{where}: {type(e).__name__}: {e}'
  row['traceback'] = traceback.format_exc(limit=4)[-2000:]
  log(f'[sweep] {key}: {row["error"]}')
  return row


def _unlearn(g: Group, cell: Cell, base: str, hp: dict, row: dict, log):
  """Runs the cell's method; returns (method, target), or None with ``row['error']`` set."""
  from jaxaudit import pipeline
  from jaxaudit import workdir as workdir_lib
  from jaxaudit import unlearn as unlearn_lib
  from jaxaudit.audit import Target
  if base == ORIGINAL:   # the reference row: M itself, no unlearning
    row.update(family=ORIGINAL_FAMILY, hparams={})
    row['accuracy']['unlearned'] = g.summary['original'].get('accuracy')
    row['timing'].update(unlearn_s=0.0, method_wall_s=0.0)
    return _Identity(), Target.from_params(g.model, g.params, name=cell.method)
  try:
    meth = unlearn_lib.get_method(base, **hp)
  except Exception as e:   # noqa: BLE001 — invalid hyper-parameters etc.
    row.update(family=None, hparams=hp, error=f'method: {type(e).__name__}: {e}')
    return None
  row['family'] = meth.family
  row['hparams'] = io_utils.jsonable(dict(meth.hparams))
  try:
    t0 = time.time()
    res = pipeline.run_unlearn(g.cfg, g.wd, base, hp, out_name=cell.method, log=lambda s: None)
    row['accuracy']['unlearned'] = res['accuracy']
    row['timing'].update(unlearn_s=time.time() - t0, method_wall_s=res.get('wall_time_s'))
    # resolve_target checks the checkpoint against this request and audits an ensemble
    # (method "sisa") as one black box: the log of its mean softmax.
    target = workdir_lib.resolve_target(g.cfg, g.dataset, g.split, g.wd, target=res['path'])
    target.name = cell.method
  except Exception as e:   # noqa: BLE001 — a failing method is a result, not a crash
    _fail(row, 'unlearn', e, log, cell.key)
    if isinstance(e, TrainingError):   # non-finite weights: refused by run_unlearn
      row['diverged'] = True
    return None
  return meth, target


def _ours(result) -> dict:
  """The row's record of jaxaudit's AuditResult."""
  d = result.details
  return dict(
      decision=result.decision, direction=result.direction, p_value=result.p_value,
      effect_auc=result.effect_auc, effect_auc_ci=result.effect_auc_ci,
      forgetting_score=result.forgetting_score,
      forgetting_score_ci=result.forgetting_score_ci, power=result.power,
      flagged=len(result.flagged_records), member_auc=d.get('member_auc'),
      exact_inputs_masked=d.get('exact_inputs_masked'),
      accuracy=d.get('accuracy', {}).get('target'), subset_ratio=d['settings']['subset_ratio'])


def _cell_peers(g: Group, cell: Cell, meth, target, base: str, hp: dict, log) -> dict[str, dict]:
  """The peer auditors of one cell (see ``config.peers``), through :func:`run_peers`."""
  p = g.peers
  n23 = int(p.get('neurips23_models', 0) or 0)
  # NeurIPS-23 and U-LiRA re-run the method on single models; an ensemble method (sisa)
  # unlearns a SISA original, which they do not have.
  per_model = getattr(meth, 'output', 'single') == 'single'
  wanted = dict(
      population_mia=bool(p.get('population_mia', True)), lira=g.shadows is not None,
      rmia=bool(int(p.get('rmia_refs', 0) or 0)), heuristics=bool(p.get('heuristics', True)),
      neurips23=bool(n23) and cells_lib.applies(p.get('neurips23_methods', 'all'), cell.method),
      ulira=g.shadows is not None and cells_lib.applies(p.get('ulira_methods', ''), cell.method))
  names = [n for n, on in wanted.items() if on and (per_model or n not in ('neurips23', 'ulira'))]
  req = peers_lib.PeerRequest(
      g.dataset, g.split, g.model, g.recipe, seed=g.seed, alpha=float(g.settings.test.alpha),
      cache_dir=g.peer_dir, shadows=g.shadows, rmia_refs=int(p.get('rmia_refs', 0) or 0),
      verifier_params=g.verifier_sets[0][0].params, num_verifiers=g.settings.num_verifiers,
      unlearn_fn=ulira_fn(g, meth),
      unlearned_group=lambda: neurips23_group(g, meth, cell.method, base, hp, n23),
      neurips23_models=n23)
  out = peers_lib.run_peers(target, req, [n for n in names if n not in ('neurips23', 'ulira')],
                            log=lambda s: log(f'[sweep] {cell.key}: {s}'))
  for name in ('neurips23', 'ulira'):
    if wanted[name] and not per_model:
      out[name] = dict(error=f'not applicable: {cell.method} outputs an ensemble; {name} '
                             're-runs the method on single models', wall_s=0.0)
  out.update(peers_lib.run_peers(target, req, [n for n in names if n in ('neurips23', 'ulira')],
                                 log=lambda s: log(f'[sweep] {cell.key}: {s}')))
  return out


def run_cell(g: Group, cell: Cell, log: Callable[[str], None]) -> dict:
  """Unlearn, audit and peer-audit one cell; returns its row (``error`` on failure)."""
  t_cell = time.time()
  hp = cells_lib.method_hparams(g.config, cell.entry, cell.method)
  base = cells_lib.base_method(g.config, cell.method)
  row = dict(key=cell.key, kind='sweep', entry=cell.entry, data=g.dataset.name,
             model=g.cfg.model, method=cell.method, base_method=base, forget=cell.forget,
             forget_mode=cells_lib.parse_forget(cell.forget)[0], seed=cell.seed, sizes=g.sizes(),
             error=None,
             accuracy=dict(original=g.summary['original'].get('accuracy'),
                           retrain=g.summary['retrain'].get('accuracy')),
             timing=dict(setup_s=g.setup_s), provenance=dict(workdir=g.wd))
  g.setup_s = 0.0   # counted once, in the first cell of the group
  done = _unlearn(g, cell, base, hp, row, log)
  if done is None:
    return row
  meth, target = done
  if not g.finite_outputs(target):
    row['error'] = 'diverged: Mu outputs NaN/inf logits (no auditor can score it)'
    row['diverged'] = True
    log(f'[sweep] {cell.key}: {row["error"]}')
    return row
  try:
    t0 = time.time()
    row['ours'] = _ours(g.audit(target))
    row['timing']['audit_s'] = time.time() - t0
  except Exception as e:   # noqa: BLE001
    return _fail(row, 'audit', e, log, cell.key)
  row['peers'] = _cell_peers(g, cell, meth, target, base, hp, log)
  row['cost'] = cell_cost(g, row)
  row['timing']['cell_s'] = time.time() - t_cell
  return row


def registered_methods() -> set[str]:
  """The registered unlearning methods and ``original``."""
  from jaxaudit import unlearn as unlearn_lib
  return set(unlearn_lib.method_names()) | {ORIGINAL}


def train_initialisations(config, workdir: str, cells, log: Callable[[str], None] = print
                          ) -> list[str]:
  """Trains the originals and retrains of the cells' groups, per (entry, forget setting), as
  one ensemble program over their seeds (:func:`jaxaudit.pipeline.train_many`); the groups'
  pipelines then reuse the checkpoints. Returns the paths written."""
  from jaxaudit import pipeline
  by_setting: dict[tuple[str, str], list] = {}
  for g in sorted({c.group for c in cells}):
    by_setting.setdefault(g[:2], []).append(g)
  written = []
  for (entry, forget), groups in by_setting.items():
    if len(groups) < 2:
      continue
    items = [(cells_lib.cell_config(config, entry, forget, seed),
              cells_lib.group_dir(workdir, (entry, forget, seed))) for _, _, seed in groups]
    written += pipeline.train_many(items, log=lambda s: log(f'[sweep] {entry}/{forget} {s}'))
  return written


def run_sweep(config, workdir: str, results: str | None = None, *, max_cells: int | None = None,
              log: Callable[[str], None] = print,
              executor: str | executors.Executor = 'inprocess',
              process_index: int | None = None, process_count: int | None = None) -> list[dict]:
  """Runs (or resumes) the sweep; returns every row of the results table.

  Args:
    config: a sweep config (see ``experiments/configs/sweep_local.py``).
    workdir: root of the per-group pipeline workdirs.
    results: the JSON-lines table (default WORKDIR/results.jsonl).
    max_cells: stop after computing this many new cells (simulates an
      interruption; None: run all).
    log: progress printer.
    executor: where the cells run: ``inprocess``, ``ray`` (default options) or
      an executor of :func:`jaxaudit.study.executors.make_executor`.
    process_index, process_count: this process's share of a static partition
      (:func:`jaxaudit.study.executors.partition_cells`; its rows go to the
      shard file :func:`~jaxaudit.study.executors.shard_path`); None: from
      :func:`~jaxaudit.study.executors.default_process`. Processes that form
      one JAX job (``jax.distributed``) run every cell together instead, each
      cell's ensembles over all their devices; a static partition needs
      independent processes (ConfigError otherwise).
  Returns:
    The rows (dicts) of the table, old and new, main file and shards, one per
    key, in plan order (rows of cells no longer planned last).
  """
  results = results or os.path.join(workdir, 'results.jsonl')
  if isinstance(executor, str):
    executor = executors.make_executor(executor)
  if process_index is None or process_count is None:
    index, count = executors.default_process(executor.name)
    process_index = index if process_index is None else process_index
    process_count = count if process_count is None else process_count
  if process_count > 1 and distributed.collective():
    raise ConfigError(
        f'process {process_index} of {process_count}: a static partition needs independent '
        'processes, but this one joined a multi-process JAX job (Orbax cannot write one '
        "process's checkpoints inside a job): drop --distributed/--coordinator_address to "
        'partition, or drop --process_index/--process_count to run every cell as one job')
  os.makedirs(workdir, exist_ok=True)
  own = executors.shard_path(results, process_index, process_count)
  io_utils.read_jsonl(own, repair=True, log=lambda s: log(f'[sweep] {s}'))   # this file only
  rows = executors.read_results(results, log=lambda s: log(f'[sweep] {s}'))
  done = {r.get('key') for r in rows}
  cells = executors.partition_cells(cells_lib.plan_cells(config), process_index, process_count)
  if process_count > 1:
    log(f'[sweep] process {process_index} of {process_count}: '
        f'{len({c.group for c in cells})} group(s), rows to {own}')
  for entry in cells_lib.entry_names(config):
    npz = config.entries[entry].config.get('npz')
    if npz and not os.path.exists(npz):
      log(f'[sweep] note: {entry} skipped: its data file {npz} does not exist')
      cells = [c for c in cells if c.entry != entry]
  known = registered_methods()
  missing = sorted({c.method for c in cells
                    if cells_lib.base_method(config, c.method) not in known})
  if missing:
    log(f'[sweep] note: method(s) {missing} are not registered in jaxaudit.unlearn; their '
        'cells are skipped (no row is written, so they run once the methods exist)')
  runnable = [c for c in cells if cells_lib.base_method(config, c.method) in known]
  todo = [c for c in runnable if c.key not in done]
  total = len(runnable)
  already = total - len(todo)
  where = results + (' and its shards' if executors.shard_paths(results) else '')
  log(f'[sweep] {total} cells ({len(cells) - total} skipped: unregistered), '
      f'{already} already in {where}, {len(todo)} to run ({executor.name})')
  stop = max_cells is not None and len(todo) > max_cells
  todo = todo[:max_cells] if stop else todo
  t0 = time.time()
  computed = 0

  def write(row: dict) -> bool:
    """Appends a finished cell's row once (False: its key is already in the table)."""
    nonlocal computed
    if row['key'] in done:
      log(f'[sweep] {row["key"]}: already in the table; the new row is dropped')
      return False
    io_utils.append_jsonl(own, row)
    done.add(row['key'])
    rows.append(io_utils.jsonable(row))
    computed += 1
    elapsed = time.time() - t0
    eta = elapsed / computed * (len(todo) - computed)
    log(f'[sweep] {already + computed}/{total} cells | elapsed '
        f'{fmt_duration(elapsed)} | ETA {fmt_duration(eta)} | {row["key"]}: {verdict(row)}')
    return True

  if executor.name == 'inprocess':
    train_initialisations(config, workdir, todo, log)
  executor.run(config, workdir, todo, write, log)
  if stop:
    log(f'[sweep] stopping after {computed} cell(s) (--max_cells)')
  return executors.plan_order(rows, config)

