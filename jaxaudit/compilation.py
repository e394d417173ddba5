"""Compile once: counting XLA compilations, shape buckets and the persistent cache.

* :func:`count_compilations` counts the XLA backend compilations inside a
  ``with`` block (tests assert that a second audit compiles nothing).
* :func:`bucket_size` rounds a size up to a short ladder (powers of two, or a
  few significant bits), so that requests of nearby sizes share one compiled
  program; callers pad to it and slice the padding off.
* :func:`enable_persistent_cache` turns on JAX's persistent compilation cache,
  so that a new process (each CLI command) loads the programs an earlier one
  compiled instead of compiling them again.

* :data:`PROGRAMS_PER_CACHE` bounds the in-memory caches of compiled programs
  whose keys carry hyper-parameters (see there).

Environment: ``JAXAUDIT_CACHE_DIR`` (the cache directory),
``JAXAUDIT_NO_COMPILATION_CACHE=1`` (never enable the cache; the test suite
points ``JAXAUDIT_CACHE_DIR`` at a temporary directory of its own, so that tests
never write into the user's home).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
from typing import Iterator

import jax

# The event JAX records around every backend compilation (a program that was
# not in the in-memory cache: compiled by XLA, or loaded from the persistent cache).
BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
# Recorded when a program comes from the persistent cache instead of XLA.
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
NO_CACHE_ENV = 'JAXAUDIT_NO_COMPILATION_CACHE'
CACHE_DIR_ENV = 'JAXAUDIT_CACHE_DIR'

# Programs kept by each in-memory cache whose key holds hyper-parameters (a training
# program bakes in its learning rate, so each tuning trial adds one). Each compiled CPU
# program holds memory maps of JIT code (~390 for a training program of the LM study's
# transformer) and Linux stops a process at vm.max_map_count (65,530 by default): with 256
# programs a cache outgrew it after ~180 trials of `jaxaudit tune` and LLVM failed with
# "Cannot allocate memory", then a segfault. An evicted program frees its maps (tested);
# a persistent-cache hit reloads it when it comes back.
PROGRAMS_PER_CACHE = 32

_counters_lock = threading.Lock()
_active: list['CompilationCount'] = []
_hooks_installed: str | None = None   # 'monitoring' or 'logging' once installed


@dataclasses.dataclass(eq=False)   # counters are told apart by identity
class CompilationCount:
  """What :func:`count_compilations` yields; the fields grow while the block runs.

  Attributes:
    count: backend compilations (programs missing from the in-memory cache),
      including those then loaded from the persistent cache.
    cache_hits: of those, programs loaded from the persistent cache.
    names: the compiled functions' names, in order (for diagnostics).
    seconds: total time spent in backend compilation (0 with the logging fallback).
  """
  count: int = 0
  cache_hits: int = 0
  names: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def compiled(self) -> int:
    """Programs compiled by XLA (``count`` minus persistent-cache hits)."""
    return self.count - self.cache_hits


def _on_duration(event: str, duration: float, *args, **kwargs) -> None:
  if event != BACKEND_COMPILE_EVENT:
    return
  name = str(kwargs.get('fun_name', '?'))
  with _counters_lock:
    for c in _active:
      c.count += 1
      c.seconds += float(duration)
      c.names.append(name)


def _on_event(event: str, *args, **kwargs) -> None:
  if event != CACHE_HIT_EVENT:
    return
  with _counters_lock:
    for c in _active:
      c.cache_hits += 1


class _CompileLogHandler(logging.Handler):
  """Fallback when jax.monitoring lacks listeners: counts JAX's compile log lines."""

  def emit(self, record: logging.LogRecord) -> None:
    msg = record.getMessage()
    if msg.startswith('Finished XLA compilation of '):
      name = msg[len('Finished XLA compilation of '):].split(' in ')[0]
      with _counters_lock:
        for c in _active:
          c.count += 1
          c.names.append(name)
    elif msg.startswith('Persistent compilation cache hit'):
      with _counters_lock:
        for c in _active:
          c.cache_hits += 1


_LOG_NAMES = ('jax._src.dispatch', 'jax._src.interpreters.pxla', 'jax._src.compiler')
_log_handler = _CompileLogHandler(logging.DEBUG)
_saved_levels: dict[str, int] = {}


def _install_hooks() -> str:
  """Registers the listeners once per process (they stay; they only act on active counters)."""
  global _hooks_installed
  if _hooks_installed:
    return _hooks_installed
  monitoring = getattr(jax, 'monitoring', None)
  if monitoring is not None and hasattr(monitoring, 'register_event_duration_secs_listener'):
    monitoring.register_event_duration_secs_listener(_on_duration)
    if hasattr(monitoring, 'register_event_listener'):
      monitoring.register_event_listener(_on_event)
    _hooks_installed = 'monitoring'
  else:   # a JAX without the listener API: JAX's debug log lines of compilation
    for name in _LOG_NAMES:
      logging.getLogger(name).addHandler(_log_handler)
    _hooks_installed = 'logging'
  return _hooks_installed


def _debug_logging(on: bool) -> None:
  """Logging fallback: JAX's compile lines are DEBUG; enabled only while counting."""
  for name in _LOG_NAMES:
    lg = logging.getLogger(name)
    if on:
      _saved_levels[name] = lg.level
      lg.setLevel(logging.DEBUG)
      lg.propagate, _saved_levels[name + '.propagate'] = False, lg.propagate
    elif name in _saved_levels:
      lg.setLevel(_saved_levels.pop(name))
      lg.propagate = bool(_saved_levels.pop(name + '.propagate', True))


@contextlib.contextmanager
def count_compilations() -> Iterator[CompilationCount]:
  """Counts the XLA backend compilations that happen inside the block.

  Counters nest (an outer block also counts what an inner one does) and are
  process-wide: compilations of other threads count too. Uses
  ``jax.monitoring`` listeners (JAX's backend-compile duration event), or
  where those are missing JAX's compile log lines.

  Example::

    with count_compilations() as c:
      audit(...)
    assert c.count == 0, c.names

  Yields:
    A :class:`CompilationCount` whose ``count`` is the number of programs
    compiled so far in the block (``cache_hits`` of them loaded from the
    persistent cache; ``names`` the functions' names).
  """
  mode = _install_hooks()
  counter = CompilationCount()
  with _counters_lock:
    _active.append(counter)
    if mode == 'logging' and len(_active) == 1:
      _debug_logging(True)
  try:
    yield counter
  finally:
    with _counters_lock:
      _active.remove(counter)
      if mode == 'logging' and not _active:
        _debug_logging(False)


def bucket_size(n: int, *, bits: int = 3, pow2_upto: int = 0) -> int:
  """Rounds a size up to a short ladder, so that nearby sizes share one program.

  Sizes up to ``pow2_upto`` go to the next power of two (small sizes are
  cheap, and coarse rungs there keep the number of programs low); larger
  sizes go to the smallest number with at most ``bits`` significant binary
  digits: with ``bits=3`` the ladder is ..., 8, 10, 12, 14, 16, 20, 24, 28,
  32, 40, ... (at most 25% of padding), ``bits=1`` gives powers of two.

  Args:
    n: a size (>= 0; 0 gives 0).
    bits: significant bits kept above ``pow2_upto`` (>= 1).
    pow2_upto: sizes up to this are rounded to a power of two.
  Returns:
    The bucket, an int >= n.
  """
  n = int(n)
  if bits < 1:
    raise ValueError(f'bits must be >= 1, got {bits}')
  if n <= 0:
    return 0
  if n <= pow2_upto:
    bits = 1
  shift = max(n.bit_length() - bits, 0)
  return -(-n >> shift) << shift   # ceil(n / 2**shift) * 2**shift


# ---------------------------------------------------------------------------
# The persistent compilation cache.

_enabled_path: str | None = None


def default_cache_dir() -> str:
  """The cache directory: ``$JAXAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxaudit/xla``,
  else ``~/.cache/jaxaudit/xla``."""
  if os.environ.get(CACHE_DIR_ENV):
    return os.path.expanduser(os.environ[CACHE_DIR_ENV])
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'jaxaudit', 'xla')


def cache_disabled_by_env() -> bool:
  """Whether ``JAXAUDIT_NO_COMPILATION_CACHE`` is set to a true value."""
  return os.environ.get(NO_CACHE_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def _warn(message: str) -> None:
  print(f'jaxaudit: warning: {message}', file=sys.stderr)


def _set_config(name: str, value, fallback=None) -> None:
  try:
    jax.config.update(name, value)
  except (AttributeError, ValueError, TypeError):   # unknown option or refused value
    if fallback is not None:
      try:
        jax.config.update(name, fallback)
      except (AttributeError, ValueError, TypeError):
        pass


def enable_persistent_cache(path: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache (every program, however small).

  Idempotent: a second call with the same path does nothing. Never deletes
  anything (nor does JAX's cache, whose size limit stays unset).

  Args:
    path: the cache directory (created if missing); None:
      :func:`default_cache_dir`.
  Returns:
    The directory used, or None (nothing done) when
    ``JAXAUDIT_NO_COMPILATION_CACHE`` is set or the directory cannot be
    created (one warning line on stderr).
  """
  global _enabled_path
  if cache_disabled_by_env():
    return None
  path = os.path.abspath(os.path.expanduser(path or default_cache_dir()))
  if _enabled_path == path:
    return path
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
      raise PermissionError(f'{path} is not writable')
  except OSError as e:
    _warn(f'no persistent compilation cache ({e}); every program will be compiled')
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  _set_config('jax_persistent_cache_min_compile_time_secs', 0.0)
  # -1: no size restriction (0 lets JAX pick a filesystem-dependent minimum).
  _set_config('jax_persistent_cache_min_entry_size_bytes', -1, fallback=0)
  _set_config('jax_enable_compilation_cache', True)
  # JAX decides once per process whether the cache is used (at the first
  # compilation); a compilation before this call would have decided "no".
  try:
    from jax.experimental.compilation_cache import compilation_cache as _cc
    _cc.reset_cache()
  except (ImportError, AttributeError):
    pass
  _enabled_path = path
  return path


def enabled_cache_dir() -> str | None:
  """The persistent cache directory this process enabled (:func:`enable_persistent_cache`),
  or None."""
  return _enabled_path


__all__ = ['BACKEND_COMPILE_EVENT', 'CompilationCount', 'count_compilations', 'bucket_size',
           'default_cache_dir', 'enable_persistent_cache', 'enabled_cache_dir',
           'cache_disabled_by_env']
