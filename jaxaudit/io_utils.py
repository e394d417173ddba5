"""Safe file and directory writes: atomic, and never over what jaxaudit did not write.

* Every directory jaxaudit writes as a whole (a checkpoint, a report, a
  workdir, an imported data set) holds a marker file, :data:`MARKER`.
  :func:`replace_dir` refuses to replace an existing directory without it
  unless the caller passes ``overwrite=True`` (the user's ``--overwrite``), so
  no flag can make jaxaudit delete a directory it did not write.
* Replacement is atomic: the new content is built in a temporary sibling and
  renamed into place, so a reader sees the old directory or the new one.
* Names that become one path component (``--name``, a data set name) are
  checked by :func:`check_name`: no separators, no ``.``/``..``.
* Paths given by users are checked by :func:`check_path` (valid UTF-8, no NUL).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

from jaxaudit.errors import ConfigError, OutputError

MARKER = '.jaxaudit'
_NAME = re.compile(r'[A-Za-z0-9_.-]{1,128}')


def check_name(name: str, what: str = 'name') -> str:
  """Returns ``name`` if it is one safe path component; OutputError otherwise.

  A name holds 1–128 letters, digits, ``_``, ``-`` or ``.`` and is not ``.``
  or ``..``: it can never resolve outside the directory it is joined to.
  """
  if not isinstance(name, str) or not _NAME.fullmatch(name) or name in ('.', '..'):
    raise OutputError(f'{what} {name!r} is not allowed: use 1-128 letters, digits, "_", "-" '
                      'or "." (one path component, not "." or "..")')
  return name


def check_path(path: str, what: str = 'path') -> str:
  """Returns ``path`` if it is usable text (UTF-8, no NUL byte); OutputError otherwise."""
  if not isinstance(path, str) or not path:
    raise OutputError(f'{what} must be a non-empty path, got {path!r}')
  if '\x00' in path:
    raise OutputError(f'{what} {path!r} contains a NUL byte')
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:
    raise OutputError(f'{what} {path.encode("utf-8", "surrogateescape")!r} is not valid UTF-8; '
                      'use a path of UTF-8 characters') from None
  return path


def nearest_existing(path: str) -> str:
  """The path itself or its closest existing ancestor."""
  p = os.path.abspath(path)
  while not os.path.exists(p):
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  return p


def check_writable_dir(path: str, what: str = 'directory') -> str:
  """Checks that ``path`` is (or can be created as) a writable directory.

  Raises:
    OutputError: ``path`` or an ancestor is a file, or the nearest existing
      ancestor is not writable.
  """
  check_path(path, what)
  p = os.path.abspath(path)
  if os.path.exists(p) and not os.path.isdir(p):
    raise OutputError(f'{what} {path} exists and is not a directory')
  base = nearest_existing(p)
  if not os.path.isdir(base):
    raise OutputError(f'{what} {path} cannot be created: {base} is a file')
  if not os.access(base, os.W_OK | os.X_OK):
    raise OutputError(f'{what} {path} is not writable (no write permission on {base})')
  try:   # root passes os.access everywhere; an unnamed temporary file tells the truth
    with tempfile.TemporaryFile(dir=base):
      pass
  except OSError as e:
    raise OutputError(f'{what} {path} is not writable ({e.strerror} in {base})') from None
  return path


def _legacy_ours(path: str) -> bool:
  """Directories written by jaxaudit before the marker existed (checkpoints, audit reports)."""
  for name, key in (('meta.json', 'jaxaudit_version'), ('report.json', 'decision')):
    f = os.path.join(path, name)
    if os.path.isfile(f):
      try:
        with open(f, encoding='utf-8') as fh:
          obj = json.load(fh)
      except (OSError, ValueError):
        return False
      return isinstance(obj, dict) and key in obj
  return False


def written_by_jaxaudit(path: str) -> bool:
  """Whether the directory ``path`` was written by jaxaudit (holds the marker)."""
  return os.path.isdir(path) and not os.path.islink(path) and (
      os.path.isfile(os.path.join(path, MARKER)) or _legacy_ours(path))


def mark(path: str, kind: str) -> None:
  """Writes the marker file into the directory ``path``."""
  from jaxaudit import __version__
  with open(os.path.join(path, MARKER), 'w', encoding='utf-8') as f:
    json.dump({'written_by': 'jaxaudit', 'version': __version__, 'kind': kind}, f)


def check_replaceable(path: str, *, overwrite: bool = False, what: str = 'output directory') -> None:
  """Raises OutputError unless ``path`` is absent or a directory jaxaudit may replace.

  A directory without the marker is replaced only with ``overwrite=True``;
  a file, a symbolic link or another non-directory never is.
  """
  check_path(path, what)
  if not os.path.lexists(path):
    base = nearest_existing(path)
    if not os.path.isdir(base):
      raise OutputError(f'{what} {path} cannot be created: {base} is a file')
    return
  if os.path.islink(path) or not os.path.isdir(path):
    raise OutputError(f'{what} {path} exists and is not a directory; jaxaudit will not replace it')
  if not overwrite and not written_by_jaxaudit(path):
    raise OutputError(f'{what} {path} exists and was not written by jaxaudit; choose another '
                      'path or pass --overwrite to replace it')


def temp_sibling(path: str) -> str:
  """A new empty temporary directory next to ``path`` (same filesystem)."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.tmp-', dir=parent)


def replace_dir(tmp: str, path: str, *, overwrite: bool = False, kind: str = 'output') -> str:
  """Moves the finished directory ``tmp`` onto ``path`` atomically.

  ``tmp`` gets the marker first. An existing ``path`` is replaced only if
  :func:`check_replaceable` allows it (jaxaudit wrote it, or ``overwrite``).

  Returns:
    The absolute path written.
  """
  path = os.path.abspath(path)
  check_replaceable(path, overwrite=overwrite)
  mark(tmp, kind)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)   # mkdtemp made it 0700
  if os.path.exists(path):
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old-', dir=os.path.dirname(path))
    os.replace(path, os.path.join(old, 'x'))
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, path)
  return path


def remove_dir(path: str) -> None:
  """Removes a directory jaxaudit wrote; refuses any other (OutputError)."""
  if not os.path.lexists(path):
    return
  if not written_by_jaxaudit(path):
    raise OutputError(f'{path} was not written by jaxaudit; it is not removed')
  shutil.rmtree(path)


def read_npz(path: str, error: type = ConfigError, what: str = 'npz file') -> dict[str, np.ndarray]:
  """Every array of an ``.npz`` archive (no pickles), or one clear ``error``.

  The file is opened (and closed) here: numpy leaks the descriptor when it
  opens a damaged archive itself.
  """
  import zipfile
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise error(f'{what} {path!r} does not exist')
  try:
    with open(path, 'rb') as fh:
      loaded = np.load(fh, allow_pickle=False)
      if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise error(f'{what} {path!r} holds a single array, not an .npz archive')
      with loaded:
        return {k: loaded[k] for k in loaded.files}
  except error:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise error(f'cannot read {what} {path!r}: {e}') from e


def jsonable(obj: Any) -> Any:
  """A JSON-safe copy: str keys, lists for tuples and arrays, Python numbers, NaN/inf as None.

  The one sanitiser of jaxaudit (reports, results rows, checkpoint metadata):
  the output is standard JSON (``allow_nan=False`` holds).
  """
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return jsonable(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    return v if math.isfinite(v) else None
  return obj


def write_bytes(path: str, data: bytes) -> str:
  """Writes ``data`` to ``path`` atomically: a unique temporary sibling, fsync, rename.

  Readers see the old file or the new one, never a partial file; the parent
  directory is created if needed. In a multi-process job running one program,
  process 0 writes and every process returns once the file is there
  (:func:`jaxaudit.distributed.write_once`). Returns ``path``.
  """
  from jaxaudit import distributed
  path = os.fspath(path)
  distributed.write_once(lambda: _write_bytes(path, data), path)
  return path


def _write_bytes(path: str, data: bytes) -> None:
  """:func:`write_bytes` in this process."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_text(path: str, text: str) -> str:
  """Writes ``text`` (UTF-8) to ``path`` atomically (:func:`write_bytes`)."""
  return write_bytes(path, text.encode('utf-8'))


def write_json(path: str, obj: Any) -> None:
  """Writes ``jsonable(obj)`` to ``path`` atomically (temporary file + rename)."""
  write_text(path, json.dumps(jsonable(obj), indent=1, sort_keys=True, default=str,
                              allow_nan=False))


def append_jsonl(path: str, row: Mapping[str, Any]) -> None:
  """Appends one row to a JSON-lines file as one write, flushed and fsynced.

  A crash can leave at most a truncated *last* line, which :func:`read_jsonl`
  ignores (and removes with ``repair=True``), so no finished row is lost. In a
  multi-process job running one program, process 0 alone appends
  (:func:`jaxaudit.distributed.write_once`).
  """
  from jaxaudit import distributed
  line = json.dumps(jsonable(dict(row)), sort_keys=True, allow_nan=False) + '\n'
  distributed.write_once(lambda: _append_line(path, line), path)


def _append_line(path: str, line: str) -> None:
  """Appends ``line`` in this process, flushed and fsynced."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a', encoding='utf-8') as f:
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str, *, repair: bool = False, missing_ok: bool = True,
               log: Callable[[str], None] = lambda s: None) -> list[dict]:
  """Rows of a JSON-lines file written by :func:`append_jsonl`.

  A last line without its newline (a writer killed mid-write) is ignored, and
  cut off the file when ``repair``; a damaged line elsewhere, or a line that is
  not a JSON object, is a ConfigError naming the file and the line.

  Args:
    missing_ok: a missing file reads as no rows (else ConfigError).
  """
  if not os.path.exists(path):
    if missing_ok:
      return []
    raise ConfigError(f'results file {path} does not exist')
  if not os.path.isfile(path):
    raise ConfigError(f'results file {path} is not a file')
  with open(path, 'rb') as f:
    data = f.read()
  rows, pos = [], 0
  lines = data.split(b'\n')
  for i, line in enumerate(lines):
    end = pos + len(line) + 1
    if not line.strip():
      pos = end
      continue
    last = i == len(lines) - 1 or all(not l.strip() for l in lines[i + 1:])
    try:
      if i == len(lines) - 1:
        raise ValueError('no trailing newline')
      row = json.loads(line)
    except ValueError as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
      if not last:
        raise ConfigError(f'{path}: line {i + 1} is not valid JSON ({e}); the file is damaged '
                          'in the middle: fix or remove that line') from None
      log(f'ignoring a truncated last line of {path} ({len(line)} bytes)')
      if repair:
        with open(path, 'r+b') as f:
          f.truncate(pos)
          f.flush()
          os.fsync(f.fileno())
      break
    if not isinstance(row, dict):
      raise ConfigError(f'{path}: line {i + 1} is not a JSON object')
    rows.append(row)
    pos = end
  return rows
