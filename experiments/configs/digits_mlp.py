"""digits (embedded, 1,797 images) with an MLP.

  jaxaudit train --config=experiments/configs/digits_mlp.py:local --workdir=runs/digits_mlp
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'digits'
  c.model = 'mlp'
  c.model_kwargs.hidden = (256, 256)
  c.train.epochs = 30 if arg == 'local' else 60
  c.train.batch_size = 64
  c.train.learning_rate = 2e-3
  return c
