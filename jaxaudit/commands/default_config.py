"""Default config of the CLI: the embedded digits data set with an MLP.

Any field can be overridden on the command line, e.g. ``--config.train.epochs=5``.
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.model_kwargs.hidden = (256, 256)
  if arg == 'tiny':   # used by tests
    c.model_kwargs.hidden = (64,)
    c.train.epochs = 5
  return c
