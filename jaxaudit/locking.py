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
  Raises:
    CheckpointError: the lock file cannot be created (e.g. no write permission).
  """
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
  try:
    yield
  finally:
    lock.release()
