"""``python -m jaxaudit.cli ARGS`` for the CLI tests, without paying Python's and JAX's
import time on every call.

A fork server (one per test process, started on first use) imports the stack once
(jax, flax, optax, orbax, scipy, jaxaudit's library) and forks a child per call; the
child runs :func:`jaxaudit.cli.run` exactly as ``python -m jaxaudit.cli`` would, with
its own working directory, environment, stdout and stderr, and exits with the
command's status (an uncaught exception prints its traceback and exits 1, as the
interpreter does). JAX reads its ``JAX_*`` settings at import, so a call whose
environment differs from the server's, or any call where the server is unavailable
or found a JAX backend already initialised after its imports (forking then would
be unsafe), runs as a real subprocess instead. ``JAXAUDIT_CLI_TESTS_FORK=0`` turns
the server off.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

_SERVER = r'''
import json, os, sys, traceback
import numpy, scipy.stats, jax, jax.numpy, flax.linen, optax, orbax.checkpoint, ml_collections
import absl.app, absl.flags
import jaxaudit.cli
# The library, not jaxaudit.commands.*: a command module defines its absl flags on import.
for name in ('configs', 'workdir', 'checkpoint', 'pipeline', 'audit', 'unlearn', 'peers', 'train',
             'data', 'models', 'tasks', 'study.sweep', 'tune'):
  __import__(f'jaxaudit.{name}')
from jax._src import xla_bridge
if getattr(xla_bridge, '_backends', None):
  print(json.dumps({'ready': False}), flush=True)
  raise SystemExit(0)
print(json.dumps({'ready': True}), flush=True)
for line in sys.stdin:
  req = json.loads(line)
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      fd_in = os.open(os.devnull, os.O_RDONLY)
      fd_out = os.open(req['stdout'], os.O_WRONLY | os.O_TRUNC)
      fd_err = os.open(req['stderr'], os.O_WRONLY | os.O_TRUNC)
      os.dup2(fd_in, 0); os.dup2(fd_out, 1); os.dup2(fd_err, 2)
      sys.stdin = open(0, closefd=False)
      sys.stdout = open(1, 'w', closefd=False, errors='surrogateescape', buffering=1)
      sys.stderr = open(2, 'w', closefd=False, errors='backslashreplace', buffering=1)
      os.chdir(req['cwd'])
      os.environ.clear(); os.environ.update(req['env'])
      sys.argv = [jaxaudit.cli.__file__, *req['args']]
      try:
        jaxaudit.cli.run(sys.argv)
        code = 0
      except SystemExit as e:
        if e.code is None:
          code = 0
        elif isinstance(e.code, int):
          code = e.code
        else:
          print(e.code, file=sys.stderr)
          code = 1
      except BaseException:
        traceback.print_exc()
        code = 1
    finally:
      try:
        sys.stdout.flush(); sys.stderr.flush()
      finally:
        os._exit(code)
  print(json.dumps({'pid': pid}), flush=True)
  _, status = os.waitpid(pid, 0)
  print(json.dumps({'code': os.waitstatus_to_exitcode(status)}), flush=True)
'''


def _env(extra: dict | None = None) -> dict:
  return dict(os.environ, PYTHONUNBUFFERED='1', **(extra or {}))


# Variables that change between calls without changing what the server imported (a child
# still gets the call's own values): pytest names the running test and its phase in
# PYTEST_CURRENT_TEST, and `ray.init` in a test process sets PYTHONBREAKPOINT and RAY_*.
# Comparing them sent every call after the first test to a subprocess (~2 s of imports each).
_VOLATILE = ('PYTEST_CURRENT_TEST', 'PYTHONBREAKPOINT')


def _stable(env: dict) -> dict:
  return {k: v for k, v in env.items() if k not in _VOLATILE and not k.startswith('RAY_')}


class _LineReader:
  """Lines from a pipe with a timeout. ``select`` sees only the OS pipe, so lines must not
  wait in a Python buffer: with a buffered reader, a fast child's two lines (its pid and
  its exit code) arrived together, the second stayed unseen until the 300 s timeout, and
  every later call of that test process fell back to a subprocess."""

  def __init__(self, fd: int):
    self.fd = fd
    self.buf = b''

  def read(self, timeout: float) -> str | None:
    """The next line (with its newline), or None at end of file or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while b'\n' not in self.buf:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self.fd], [], [], left)[0]:
        return None
      chunk = os.read(self.fd, 65536)
      if not chunk:
        return None
      self.buf += chunk
    line, self.buf = self.buf.split(b'\n', 1)
    return line.decode('utf-8', 'replace') + '\n'


class _Server:
  def __init__(self):
    self.env = _env()
    self.proc = subprocess.Popen([sys.executable, '-c', _SERVER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
                                 env=self.env, cwd=os.path.dirname(os.path.dirname(
                                     os.path.abspath(__file__))))
    self.lines = _LineReader(self.proc.stdout.fileno())
    self.lock = threading.Lock()
    self.ready = False
    while True:   # the first JSON line (anything an import printed before it is skipped)
      line = self.lines.read(300)
      if not line:
        break
      if line.startswith('{'):
        self.ready = bool(json.loads(line).get('ready'))
        break

  def alive(self) -> bool:
    return self.ready and self.proc.poll() is None

  def run(self, args: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    with self.lock, tempfile.TemporaryDirectory() as tmp:
      out, err = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
      open(out, 'w').close()
      open(err, 'w').close()
      data = (json.dumps(dict(args=[str(a) for a in args], cwd=str(cwd), env=_env(),
                              stdout=out, stderr=err)) + '\n').encode()
      while data:                     # an unbuffered pipe may take part of it per call
        data = data[self.proc.stdin.write(data):]
      pid = json.loads(self.lines.read(60))['pid']
      line = self.lines.read(timeout)
      if line is None:
        os.kill(pid, signal.SIGKILL)
        self.lines.read(60)
        raise subprocess.TimeoutExpired(['jaxaudit', *args], timeout)
      code = json.loads(line)['code']
      read = lambda p: open(p, encoding='utf-8', errors='replace').read()
      return subprocess.CompletedProcess(['jaxaudit', *args], code, read(out), read(err))


_server: _Server | None = None
_unavailable = False      # the server could not start here: subprocesses from now on
calls = {'fork': 0, 'subprocess': 0}   # how this process's calls ran (tests/test_cli_runner.py)


def run_cli(args, cwd, *, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
  """Runs ``python -m jaxaudit.cli *args`` in ``cwd``; text stdout/stderr captured.

  ``env``: variables added to this process's environment (a call with any runs as a
  real subprocess)."""
  global _server, _unavailable
  use = os.environ.get('JAXAUDIT_CLI_TESTS_FORK', '1') != '0' and not env and not _unavailable
  if use and (_server is None or not _server.alive()):
    try:
      _server = _Server()
    except (OSError, ValueError, TypeError):
      _server = None
    _unavailable = _server is None or not _server.alive()
  if use and _server is not None and _server.alive() and _stable(_server.env) == _stable(_env()):
    try:
      r = _server.run(list(args), cwd, timeout)
      calls['fork'] += 1
      return r
    except (OSError, ValueError, KeyError, TypeError):   # the server died before answering
      _unavailable = True
  calls['subprocess'] += 1
  return subprocess.run([sys.executable, '-m', 'jaxaudit.cli', *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout, env=_env(env),
                        errors='replace')
