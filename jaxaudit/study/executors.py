r"""Where the sweep's cells run: in this process, on Ray, or a static share per host.

:func:`jaxaudit.study.sweep.run_sweep` plans the cells, drops those already in
the results table, and hands the rest to an executor chosen by name
(:func:`make_executor`). The executor computes each cell's row with
:func:`jaxaudit.study.sweep.run_cell` and calls back ``write(row)``; only
``write`` (in the driver process) appends to the results file, once per key.

Executors:

  inprocess  the cells one after the other in this process, one
             :class:`~jaxaudit.study.groups.Group` in memory at a time (default).
  ray        a pool of Ray actors, one per worker slot (``num_cpus`` /
             ``num_gpus`` each). An actor keeps the Group of its last cell in
             memory; a group's cells go to the actor that holds it, and a
             group runs on one actor at a time (its cells share caches in the
             group's workdir: RMIA references, retrained ensembles), so
             parallelism is over groups. When an actor dies (killed,
             preempted, out of memory) its cell is queued again (at most
             ``max_retries`` times) and a new actor takes its slot; the new
             actor reloads the group from its checkpoints.

A static partition needs no scheduler: with ``process_count`` = N > 1, process
I runs the groups I, I + N, I + 2N, ... of the plan (:func:`partition_cells`;
a group is never split) and appends only to its shard of the table,
``RESULTS`` with ``.pI-of-N`` before the extension (``results.p0-of-2.jsonl``).
:func:`read_results` reads the main file and every shard, one row per key;
resuming consults them all, so the process count may change between runs.

Group construction (training or reloading M, the retrain reference, the
verifiers and shadows, and writing the workdir's split and config) holds the
inter-process lock ``WORKDIR/runs/ENTRY-FORGET-sSEED.lock`` (a sibling of the
group's workdir: a file inside a new workdir would stop
:func:`jaxaudit.workdir.prepare` from marking it as jaxaudit's): two processes
preparing one group do it one after the other, the second reloading the
first's checkpoints.

Launching (``CONFIG`` = ``experiments/configs/sweep_local.py:local``):

* One machine::

    python experiments/sweep.py --config=CONFIG --workdir=runs/sweep

* A local Ray cluster started by the script (2 actors, 1 CPU each)::

    pip install 'jaxaudit[ray]'
    python experiments/sweep.py --config=CONFIG --workdir=runs/sweep \
        --executor=ray --ray_workers=2

* A Ray cluster (every node has jaxaudit installed and sees the workdir on a
  shared file system; the driver runs on the head node)::

    ray start --head                                   # on the head node
    ray start --address=HEAD_IP:6379                   # on every other node
    python experiments/sweep.py --config=CONFIG --workdir=/shared/sweep \
        --executor=ray --ray_address=auto --ray_workers=8 \
        --ray_cpus_per_worker=4 --ray_gpus_per_worker=1

  Fractional ``--ray_gpus_per_worker`` (e.g. 0.5) puts several actors on one
  GPU; they then allocate GPU memory on demand
  (``XLA_PYTHON_CLIENT_PREALLOCATE=false``).

* A multi-host TPU slice, no Ray: the same command on every host, joined into
  one JAX job (``--distributed=on``; :mod:`jaxaudit.distributed`). Every host
  runs every cell, each cell's ensembles laid out over all the slice's
  devices; checkpoints are written by all hosts together, rows once by
  process 0::

    gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command='
      cd jaxaudit && python experiments/sweep.py --config=CONFIG \
        --workdir=/shared/sweep --distributed=on'

* Independent processes (any set of hosts, no Ray, no JAX job): process I of
  N runs groups I, I + N, ... alone (``--process_index``/``--process_count``).
  They must not join a JAX job (the default ``--distributed=off``): Orbax
  writes a joined process's checkpoint only as part of the whole job's.

* A Slurm GPU cluster: one task per node, the index from Slurm::

    srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=1 bash -c \
      'python experiments/sweep.py --config=CONFIG --workdir=/shared/sweep \
         --process_index=$SLURM_PROCID --process_count=$SLURM_NTASKS'

With the static partition the hosts need not share a file system: each
process writes only its shard and its own groups' workdirs (copy the shards
into one directory to merge them). The merged table is what
:func:`read_results` returns, and what the report reads from the list of files:
``jaxaudit report --results=$(ls /shared/sweep/results*.jsonl | paste -sd,)``
(it keeps the first row of a repeated key).

Resuming: run the same command again. Cells whose key is in the main file or
any shard are skipped, a truncated last line of this process's file is cut
off, and checkpoints in the group workdirs are reused, so the table ends the
same as an uninterrupted run (timings aside).
"""

from __future__ import annotations

import collections
import os
import re
from typing import Callable, Iterable, Protocol, Sequence

from jaxaudit import io_utils, locking
from jaxaudit.errors import ConfigError
from jaxaudit.study import cells as cells_lib
from jaxaudit.study.cells import Cell

EXECUTORS = ('inprocess', 'ray')
Write = Callable[[dict], bool]
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- static partition


def partition_cells(cells: Sequence[Cell], index: int, count: int) -> list[Cell]:
  """The cells process ``index`` of ``count`` runs: whole groups, round-robin.

  The groups are numbered in order of first appearance in ``cells``; process
  I takes groups I, I + count, ... with all their cells, in ``cells`` order.
  Every cell is in exactly one partition and a group is never split.
  """
  if count < 1 or not 0 <= index < count:
    raise ConfigError(f'process index {index} of {count}: need count >= 1 and '
                      '0 <= index < count')
  order: dict = {}
  for c in cells:
    order.setdefault(c.group, len(order))
  return [c for c in cells if order[c.group] % count == index]


def shard_path(results: str, index: int, count: int) -> str:
  """Process ``index``'s results file: ``RESULTS`` itself if count == 1, else with
  ``.pINDEX-of-COUNT`` before its extension (``results.p0-of-2.jsonl``)."""
  if count == 1:
    return results
  stem, ext = os.path.splitext(results)
  return f'{stem}.p{index}-of-{count}{ext}'


def shard_paths(results: str) -> list[str]:
  """The existing shard files of ``results``, ordered by (count, index)."""
  directory = os.path.dirname(os.path.abspath(results))
  stem, ext = os.path.splitext(os.path.basename(results))
  pattern = re.compile(rf'{re.escape(stem)}\.p(\d+)-of-(\d+){re.escape(ext)}')
  found = []
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      m = pattern.fullmatch(name)
      if m and int(m.group(1)) < int(m.group(2)):
        found.append(((int(m.group(2)), int(m.group(1))), os.path.join(directory, name)))
  return [p for _, p in sorted(found)]


def plan_order(rows: Iterable[dict], config) -> list[dict]:
  """``rows`` sorted by their cell's place in the plan of ``config`` (rows of
  keys not in the plan last, in their given order)."""
  place = {c.key: i for i, c in enumerate(cells_lib.plan_cells(config))}
  return sorted(rows, key=lambda r: place.get(r.get('key'), len(place)))


def read_results(results: str, config=None, *, log: Log = lambda s: None) -> list[dict]:
  """The rows of the results table: the main file and all its shards.

  One row per key (the first one read: main file, then shards by (count,
  index)); a truncated last line of any file is ignored (not repaired: another
  process may be writing it).

  Args:
    results: the main results file (need not exist).
    config: the sweep config; given, the rows are in plan order, else in file
      order.
  """
  rows, seen = [], set()
  for path in [results] + shard_paths(results):
    for r in io_utils.read_jsonl(path, log=log):
      if r.get('key') not in seen:
        seen.add(r.get('key'))
        rows.append(r)
  return plan_order(rows, config) if config is not None else rows


def default_process(executor: str) -> tuple[int, int]:
  """(0, 1): without explicit flags a process runs the whole plan. The processes of
  one JAX job (``jax.distributed``) run it together, as one program."""
  del executor
  return 0, 1


# ----------------------------------------------------------------------------- one group at a time


def setup_error_row(cell: Cell, e: Exception) -> dict:
  """The row of a cell whose group could not be prepared (e.g. missing data)."""
  return dict(key=cell.key, kind='sweep', entry=cell.entry, method=cell.method,
              forget=cell.forget, seed=cell.seed, error=f'setup: {type(e).__name__}: {e}')


def group_lock_path(workdir: str, group: tuple[str, str, int]) -> str:
  """The lock held while a group is prepared: ``WORKDIR/runs/ENTRY-FORGET-sSEED.lock``."""
  return cells_lib.group_dir(workdir, group) + '.lock'


class GroupCache:
  """Runs cells, keeping the Group of the last one in memory (one at a time).

  A group that cannot be prepared is remembered as its exception: each of
  its cells gets a ``setup`` error row.
  """

  def __init__(self, config, workdir: str, log: Log):
    self.config, self.workdir, self.log = config, workdir, log
    self.group, self.value = None, None

  def get(self, group: tuple[str, str, int]):
    """The Group (or the exception raised preparing it) of ``group``."""
    from jaxaudit.study.groups import Group
    if group != self.group:
      self.group, self.value = None, None    # free the old group first
      wd = cells_lib.group_dir(self.workdir, group)
      self.log(f'[sweep] workdir {wd}')
      try:
        with locking.file_lock(group_lock_path(self.workdir, group), what=f'sweep group {wd}',
                               log=self.log):
          self.value = Group(self.config, self.workdir, group, self.log)
      except Exception as e:   # noqa: BLE001 — e.g. a data set that is not there
        self.value = e
        self.log(f'[sweep] cannot prepare {group}: {type(e).__name__}: {e}')
      self.group = group
    return self.value

  def run(self, cell: Cell) -> dict:
    """The row of ``cell`` (:func:`jaxaudit.study.sweep.run_cell`)."""
    from jaxaudit.study import sweep
    g = self.get(cell.group)
    if isinstance(g, Exception):
      return setup_error_row(cell, g)
    return sweep.run_cell(g, cell, self.log)


class Executor(Protocol):
  """Runs ``cells`` and calls ``write(row)`` (in this process) for each finished one."""
  name: str

  def run(self, config, workdir: str, cells: Sequence[Cell], write: Write, log: Log) -> None:
    ...


class InProcess:
  """The cells in plan order, in this process."""
  name = 'inprocess'

  def run(self, config, workdir: str, cells: Sequence[Cell], write: Write, log: Log) -> None:
    cache = GroupCache(config, workdir, log)
    for cell in cells:
      write(cache.run(cell))


# ----------------------------------------------------------------------------- Ray


def import_ray():
  """The ``ray`` module, or a one-line ConfigError saying how to install it."""
  try:
    import ray
  except ImportError:
    raise ConfigError("--executor=ray needs Ray: pip install 'jaxaudit[ray]'") from None
  return ray


class CellWorker:
  """A Ray actor's state: the sweep config, its workdir and one Group in memory."""

  def __init__(self, config, workdir: str, slot: int, compilation_cache: str | None = None):
    # The driver's persistent XLA cache: an actor compiles nothing that an earlier one compiled.
    if compilation_cache:
      from jaxaudit import compilation
      compilation.enable_persistent_cache(compilation_cache)
    self.cache = GroupCache(config, workdir, lambda s: print(f'[worker {slot}] {s}', flush=True))

  def pid(self) -> int:
    return os.getpid()

  def run(self, cell: Cell) -> dict:
    return self.cache.run(cell)


def _lost_worker_errors(ray) -> tuple[type, ...]:
  """Ray's exceptions for a task whose worker (actor, node) died, not a failure of the cell."""
  names = ('RayActorError', 'WorkerCrashedError', 'NodeDiedError', 'ObjectLostError',
           'OutOfMemoryError', 'LocalRayletDiedError')
  return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class _Slot:
  """One worker slot: its actor, the group it holds and the cell it runs."""

  def __init__(self, index: int, actor, pid_ref):
    self.index, self.actor, self.pid_ref = index, actor, pid_ref
    self.group, self.cell = None, None


class RayExecutor:
  """The cells on a pool of Ray actors; the driver alone writes the results.

  Args:
    address: a running cluster (``auto``, ``HOST:PORT``, ``ray://...``); None
      starts a local cluster with ``workers * cpus_per_worker`` CPUs (shut down
      at the end). If Ray is already initialised in this process it is used
      as it is.
    workers: actors (worker slots).
    cpus_per_worker, gpus_per_worker: Ray resources each actor claims.
    max_retries: times a cell is queued again after its actor died.
    on_row: called in the driver with each written row, after the idle actors
      got new cells (a test hook).
    log_to_driver: print the actors' output here.
    compilation_cache: the persistent XLA compilation cache directory the actors use
      (:func:`jaxaudit.compilation.enable_persistent_cache`; on a cluster, a path each
      node can create); None: the driver's, if it enabled one (the CLI does).
  """
  name = 'ray'

  def __init__(self, address: str | None = None, workers: int = 2, cpus_per_worker: float = 1,
               gpus_per_worker: float = 0, max_retries: int = 3,
               on_row: Callable[[dict], None] | None = None, log_to_driver: bool = True,
               compilation_cache: str | None = None):
    if workers < 1 or cpus_per_worker < 0 or gpus_per_worker < 0 or max_retries < 0:
      raise ConfigError(f'ray executor: workers={workers} must be >= 1, cpus_per_worker='
                        f'{cpus_per_worker}, gpus_per_worker={gpus_per_worker} and max_retries='
                        f'{max_retries} >= 0')
    self.address, self.workers = address, int(workers)
    self.cpus, self.gpus, self.max_retries = cpus_per_worker, gpus_per_worker, int(max_retries)
    self.on_row, self.log_to_driver = on_row, log_to_driver
    self.compilation_cache = compilation_cache
    self.slots: list[_Slot] = []
    self.replaced = 0

  def busy_pids(self) -> list[int]:
    """Process ids of the actors running a cell now."""
    import ray
    return ray.get([s.pid_ref for s in self.slots if s.cell is not None], timeout=60)

  def _connect(self, ray, log: Log) -> bool:
    """Connects to (or starts) a cluster; returns whether this call started Ray."""
    if ray.is_initialized():
      return False
    if self.address:
      ray.init(address=self.address, log_to_driver=self.log_to_driver)
    else:
      ray.init(num_cpus=max(1, int(round(self.workers * self.cpus))), include_dashboard=False,
               log_to_driver=self.log_to_driver)
    res = ray.cluster_resources()
    if res.get('CPU', 0) < self.cpus or res.get('GPU', 0) < self.gpus:
      msg = (f'the Ray cluster has {res.get("CPU", 0)} CPU(s) and {res.get("GPU", 0)} GPU(s); '
             f'one worker needs {self.cpus} CPU(s) and {self.gpus} GPU(s)')
      if not self.address:
        ray.shutdown()
        raise ConfigError(msg)
      log(f'[sweep] warning: {msg} (waiting for the cluster to grow)')
    log(f'[sweep] ray: {self.workers} worker(s) x {self.cpus} CPU, {self.gpus} GPU on '
        f'{self.address or "a local cluster"}')
    return True

  def _start(self, ray, remote_cls, config_ref, workdir: str, index: int) -> _Slot:
    opts = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
    if 0 < self.gpus < 1:   # actors sharing a GPU: no preallocation of 75% of its memory each
      opts['runtime_env'] = {'env_vars': {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}}
    from jaxaudit import compilation
    actor = remote_cls.options(**opts).remote(
        config_ref, workdir, index, self.compilation_cache or compilation.enabled_cache_dir())
    return _Slot(index, actor, actor.pid.remote())

  def run(self, config, workdir: str, cells: Sequence[Cell], write: Write, log: Log) -> None:
    if not cells:
      return
    ray = import_ray()
    started = self._connect(ray, log)
    try:
      self._run(ray, config, workdir, cells, write, log)
    finally:
      for s in self.slots:
        try:
          ray.kill(s.actor, no_restart=True)
        except Exception:   # noqa: BLE001 — already dead
          pass
      self.slots = []
      if started:
        ray.shutdown()

  def _run(self, ray, config, workdir, cells, write, log) -> None:
    lost = _lost_worker_errors(ray)
    remote_cls = ray.remote(CellWorker)
    config_ref = ray.put(config)
    workdir = os.path.abspath(workdir)
    queues: dict = collections.OrderedDict()      # group -> deque of its cells, plan order
    for c in cells:
      queues.setdefault(c.group, collections.deque()).append(c)
    self.slots = [self._start(ray, remote_cls, config_ref, workdir, i)
                  for i in range(self.workers)]
    inflight: dict = {}
    failures: collections.Counter = collections.Counter()
    given_up: list[Cell] = []

    def assign(slot: _Slot, group) -> None:
      slot.group, slot.cell = group, queues[group].popleft()
      if not queues[group]:
        del queues[group]
      inflight[slot.actor.run.remote(slot.cell)] = slot

    def dispatch() -> None:
      idle = [s for s in self.slots if s.cell is None]
      for s in idle:                         # first: the group the actor holds
        if s.group in queues:
          assign(s, s.group)
      running = {s.group for s in self.slots if s.cell is not None}
      for s in idle:                         # then: a group no actor is running
        if s.cell is None:
          free = [g for g in queues if g not in running]
          if not free:
            break
          assign(s, free[0])
          running.add(free[0])

    dispatch()
    while inflight:
      ready, _ = ray.wait(list(inflight), num_returns=1, timeout=600)
      if not ready:
        log(f'[sweep] ray: waiting for {len(inflight)} running cell(s) '
            f'({sum(len(q) for q in queues.values())} queued)')
        continue
      written = []
      for ref in ready:
        slot = inflight.pop(ref)
        cell, slot.cell = slot.cell, None
        try:
          row = ray.get(ref)
        except lost as e:
          failures[cell.key] += 1
          first = str(e).strip().splitlines()[0] if str(e).strip() else ''
          log(f'[sweep] ray: worker {slot.index} died running {cell.key} '
              f'({type(e).__name__}: {first[:200]})')
          if failures[cell.key] <= self.max_retries:
            queues.setdefault(cell.group, collections.deque()).appendleft(cell)
            queues.move_to_end(cell.group, last=False)
          else:
            given_up.append(cell)
            log(f'[sweep] ray: giving up {cell.key} after {failures[cell.key]} lost workers '
                '(no row written: a re-run tries it again)')
          try:
            ray.kill(slot.actor, no_restart=True)
          except Exception:   # noqa: BLE001 — already dead
            pass
          self.slots[slot.index] = self._start(ray, remote_cls, config_ref, workdir, slot.index)
          self.replaced += 1
          continue
        if write(row):
          written.append(row)
      dispatch()
      if self.on_row is not None:
        for row in written:
          self.on_row(row)
    if given_up:
      log(f'[sweep] ray: {len(given_up)} cell(s) not computed (workers lost '
          f'{self.max_retries + 1} times each): {[c.key for c in given_up]}')


def make_executor(name: str = 'inprocess', **options) -> Executor:
  """The executor ``name`` (``inprocess`` or ``ray``; options: :class:`RayExecutor`'s)."""
  if name == 'inprocess':
    if options:
      raise ConfigError(f'the inprocess executor takes no options, got {sorted(options)}')
    return InProcess()
  if name == 'ray':
    import_ray()
    return RayExecutor(**options)
  raise ConfigError(f'unknown executor {name!r}: one of {", ".join(EXECUTORS)}')
