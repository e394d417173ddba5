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
