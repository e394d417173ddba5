"""Flags shared by the CLI commands."""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), 'default_config.py')


def define_config_and_workdir(workdir_required: bool = True) -> None:
  """--config (an ml_collections config file, default: digits + MLP) and --workdir."""
  config_flags.DEFINE_config_file(
      'config', DEFAULT_CONFIG,
      'Experiment config file (get_config(arg)); append ":local" or ":full". '
      'Fields can be overridden, e.g. --config.train.epochs=5.', lock_config=False)
  flags.DEFINE_string('workdir', None, 'Directory for splits, checkpoints and reports.',
                      required=workdir_required)


def define_compilation_cache() -> None:
  """--compilation_cache, for the commands that compile programs (train, unlearn, audit, demo)."""
  flags.DEFINE_string(
      'compilation_cache', None,
      'Directory of the persistent XLA compilation cache, shared by every run (programs '
      'compiled once are loaded by later processes). Default: $JAXAUDIT_CACHE_DIR, else '
      '$XDG_CACHE_HOME/jaxaudit/xla, else ~/.cache/jaxaudit/xla; "" or "none" disables it, '
      'as does the environment variable JAXAUDIT_NO_COMPILATION_CACHE=1.')


def define_scale_out() -> None:
  """--compilation_cache and the multi-process flags (:func:`jaxaudit.distributed.define_flags`)."""
  define_compilation_cache()
  from jaxaudit import distributed
  distributed.define_flags()


def start_compilation_cache() -> str | None:
  """Enables the persistent compilation cache named by --compilation_cache (at start-up).

  Returns:
    The cache directory, or None (the command defines no such flag, the flag
    or the environment disables the cache, or the directory is unusable).
  """
  from jaxaudit import compilation
  fv = flags.FLAGS
  if 'compilation_cache' not in fv:
    return None
  value = fv.compilation_cache
  if value is not None and value.strip().lower() in ('', 'none'):
    return None
  return compilation.enable_persistent_cache(value)
