"""Multi-host JAX: joining the processes of one job, and doing host-side work once.

A multi-host job (a TPU slice, a Slurm allocation of GPU nodes, several CPU
processes) runs the same program in every process; :func:`initialize` joins
them with ``jax.distributed.initialize`` so that ``jax.devices()`` lists every
process's devices and the ensembles of :mod:`jaxaudit.train.devices` are laid
out over all of them. Each process keeps its own copy of the (small) data set
and supplies the shards of its own devices; nothing else is sent to a host
that does not need it.

The commands and experiment scripts take these flags (:func:`define_flags`)::

  --distributed=auto|on|off    auto: join when the environment names a
                               multi-process job (Slurm with more than one
                               task, a multi-host TPU slice, Open MPI);
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                               an explicit job (any process can be the
                               coordinator's host; process 0 serves it).

The processes of a job run the same code (SPMD, :func:`collective`):
host-side results are written once, by process 0, and every process waits for
them (:func:`write_once`, used by :mod:`jaxaudit.io_utils`'s writers); Orbax
checkpoints are written by every process together
(:func:`jaxaudit.checkpoint.save_checkpoint`). Work split between processes
(a statically partitioned sweep) needs processes that are *not* joined: Orbax
writes a checkpoint from a joined process only as part of the whole job's
(NumPy leaves from process 0 alone; arrays held by one process are refused).
"""

from __future__ import annotations

import os
import re
from typing import Callable

import jax

from jaxaudit.errors import ConfigError

MODES = ('auto', 'on', 'off')
_ADDRESS = re.compile(r'^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$')


def define_flags(default_mode: str = 'auto') -> None:
  """Defines --distributed (default ``default_mode``), --coordinator_address,
  --num_processes and --process_id."""
  from absl import flags
  flags.DEFINE_enum('distributed', default_mode, list(MODES),
                    'Join a multi-process JAX job: auto (when Slurm, a multi-host TPU slice or '
                    'Open MPI say there are several processes), on, or off.')
  flags.DEFINE_string('coordinator_address', None,
                      'HOST:PORT of process 0 of a multi-process job (with --num_processes and '
                      '--process_id); implies --distributed=on.')
  flags.DEFINE_integer('num_processes', None, 'Processes of the multi-process job.')
  flags.DEFINE_integer('process_id', None, 'This process\'s index in the job, 0..num_processes-1.')


def environment_is_multiprocess(env: dict | None = None) -> bool:
  """Whether the environment describes a job of several processes that JAX can detect."""
  env = os.environ if env is None else env
  def count(name):
    try:
      return int(env.get(name, '1'))
    except ValueError:
      return 1
  if count('SLURM_NTASKS') > 1 or count('OMPI_COMM_WORLD_SIZE') > 1:
    return True
  hosts = env.get('TPU_WORKER_HOSTNAMES', '') or env.get('CLOUD_TPU_TASK_ID', '')
  return ',' in hosts


def check_job(coordinator_address: str | None, num_processes: int | None,
              process_id: int | None) -> None:
  """Raises ConfigError (one line) for an inconsistent explicit job description."""
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError('a multi-process job needs all of --coordinator_address, --num_processes '
                      'and --process_id (or none of them, for auto-detection)')
  if not any(given):
    return
  if not _ADDRESS.match(coordinator_address):
    raise ConfigError(f'--coordinator_address must be HOST:PORT, got {coordinator_address!r}')
  if num_processes < 1:
    raise ConfigError(f'--num_processes must be >= 1, got {num_processes}')
  if not 0 <= process_id < num_processes:
    raise ConfigError(f'--process_id must lie in [0, {num_processes}), got {process_id}')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, mode: str = 'auto',
               log: Callable[[str], None] = lambda s: None) -> bool:
  """Joins the processes of a multi-process job; returns whether this is one.

  Args:
    coordinator_address, num_processes, process_id: an explicit job (all
      three or none).
    mode: for a job that is not explicit: ``off`` (do not join), ``on``
      (join; JAX detects the job from the cluster environment) or ``auto``
      (join when :func:`environment_is_multiprocess`). An explicit job is
      always joined.
    log: progress printer.
  Must run before any JAX computation. Calling it again is a no-op.
  """
  if mode not in MODES:
    raise ConfigError(f"distributed mode must be one of {', '.join(MODES)}, got {mode!r}")
  check_job(coordinator_address, num_processes, process_id)
  explicit = coordinator_address is not None
  if not explicit and (mode == 'off' or (mode == 'auto' and not environment_is_multiprocess())):
    return False
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  # CPU processes exchange arrays through gloo (GPUs and TPUs use their own collectives).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                process_id=process_id) if explicit else {}
  jax.distributed.initialize(**kwargs)
  log(f'[distributed] process {jax.process_index()} of {jax.process_count()}: '
      f'{jax.local_device_count()} local / {jax.device_count()} global device(s)')
  return jax.process_count() > 1


def initialize_from_flags(log: Callable[[str], None] = lambda s: None) -> bool:
  """:func:`initialize` from the flags of :func:`define_flags` (False when not defined)."""
  from absl import flags
  fv = flags.FLAGS
  if 'distributed' not in fv:
    return False
  return initialize(fv.coordinator_address, fv.num_processes, fv.process_id,
                    mode=fv.distributed, log=log)


def collective() -> bool:
  """Whether this process belongs to a multi-process JAX job, whose processes all run this
  same code (SPMD)."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def is_primary() -> bool:
  """Whether this process writes host-side results: process 0 of a job, or a lone process."""
  return not collective() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (a no-op unless :func:`collective`)."""
  if collective():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def write_once(write: Callable[[], object], name: str) -> None:
  """Runs ``write`` on process 0 only, between two barriers of every process (SPMD).

  The first barrier keeps the file system unchanged until every process has
  made the checks that led it here (a process that saw the file written
  would skip this call and leave the others waiting); the second makes the
  written file visible to all before any goes on. Outside a job, just runs it.
  """
  barrier(f'jaxaudit.write.before:{name}')
  if is_primary():
    write()
  barrier(f'jaxaudit.write.after:{name}')


def broadcast_str(value: str) -> str:
  """Process 0's ``value`` on every process (for names that must agree, e.g. a temp dir)."""
  if not collective():
    return value
  import numpy as np
  from jax.experimental import multihost_utils
  raw = np.frombuffer(value.encode().ljust(256, b'\0')[:256], np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(raw))
  return bytes(out.astype(np.uint8)).rstrip(b'\0').decode()


__all__ = ['MODES', 'define_flags', 'environment_is_multiprocess', 'check_job', 'initialize',
           'initialize_from_flags', 'collective', 'is_primary', 'barrier', 'write_once',
           'broadcast_str']
