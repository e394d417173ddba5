"""Inter-process locks on files of a work directory (caches shared by concurrent runs).

The locks are the operating system's advisory locks (``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows) held through the PyPI package ``filelock``: the
kernel releases them when the holding process exits or is killed, so a lock
file left behind by a dead process never blocks anyone (it is only a file).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import filelock

from jaxaudit.errors import CheckpointError


@contextlib.contextmanager
def file_lock(path: str, *, what: str, log: Callable[[str], None] = lambda s: None
              ) -> Iterator[None]:
  """Holds an exclusive inter-process lock on ``path`` for the ``with`` block.

  Waits as long as another live process holds it (logging once that it
  waits); a lock of a process that died is free at once.

  Args:
    path: the lock file (created with its parent directory if needed).
    what: what the lock protects, for the log and error messages.
    log: progress printer.
  In a multi-process job running one program (:func:`jaxaudit.distributed.collective`)
  the processes are one holder: process 0 takes the lock for all of them and
  every process enters the block together (a lock per process would
  deadlock the collective work inside it).
  Raises:
    CheckpointError: the lock file cannot be created (e.g. no write permission).
  """
  from jaxaudit import distributed
  lock = _acquire(path, what, log) if distributed.is_primary() else None
  distributed.barrier(f'jaxaudit.lock.enter:{path}')
  try:
    yield
  finally:
    distributed.barrier(f'jaxaudit.lock.exit:{path}')
    if lock is not None:
      lock.release()


def _acquire(path: str, what: str, log: Callable[[str], None]) -> filelock.FileLock:
  """The held lock on ``path`` (waiting for another holder; see :func:`file_lock`)."""
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lock = filelock.FileLock(path)
    try:
      lock.acquire(timeout=0)
    except filelock.Timeout:
      log(f'[lock] waiting: another process or thread holds {what} ({path})')
      lock.acquire()
  except OSError as e:
    raise CheckpointError(f'cannot lock {what}: {path}: {e.strerror or e}') from e
  return lock
