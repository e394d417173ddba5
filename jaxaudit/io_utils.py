"""Atomic file and directory writes: a reader sees the old content or the new, never a mix."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any


def temp_sibling(path: str) -> str:
  """A new empty temporary directory next to ``path`` (same filesystem)."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.tmp-', dir=parent)


def replace_dir(tmp: str, path: str) -> str:
  """Moves the finished directory ``tmp`` onto ``path``, replacing any old one."""
  path = os.path.abspath(path)
  if os.path.exists(path):
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old-', dir=os.path.dirname(path))
    os.replace(path, os.path.join(old, 'x'))
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, path)
  return path


def write_json(path: str, obj: Any) -> None:
  """Writes JSON to ``path`` atomically (temporary file + rename)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True, default=str)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
