"""The common start of the experiment scripts' absl ``main``."""

from __future__ import annotations

from typing import Sequence

from jaxaudit.errors import ConfigError


def check_main_args(argv: Sequence[str], flag_values, required: Sequence[str] = ()) -> None:
  """No positional arguments, the ``required`` flags set, absl logging at WARNING.

  Args:
    argv: the argv absl passes to ``main``.
    flag_values: the parsed flags (``absl.flags.FLAGS``).
    required: names of flags that must not be None.
  Raises:
    ConfigError: a positional argument or a missing required flag.
  """
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {list(argv[1:])}')
  missing = [f'--{name}' for name in required if getattr(flag_values, name) is None]
  if missing:
    raise ConfigError(f'{", ".join(missing)} required')
  from absl import logging
  logging.set_verbosity(logging.WARNING)
