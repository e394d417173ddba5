"""digits (embedded) with the small CNN of the seed audit code.

  jaxaudit train --config=experiments/configs/digits_cnn.py:local --workdir=runs/digits_cnn
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'digits'
  c.model = 'cnn'
  c.train.epochs = 20 if arg == 'local' else 40
  c.train.batch_size = 64
  c.train.learning_rate = 2e-3
  return c
