"""MNIST from ../shared/data/mnist.npz with an MLP (the audit-validation model).

  jaxaudit train --config=experiments/configs/mnist_mlp.py:local --workdir=runs/mnist_mlp
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'mnist'
  c.npz = '../shared/data/mnist.npz'
  c.model = 'mlp'
  c.model_kwargs.hidden = (256, 256)
  c.split.ref_fraction = 0.1
  c.split.train_size = 10_000 if arg == 'local' else None
  c.split.forget_size = 500 if arg == 'local' else None
  c.split.test_size = 2_000 if arg == 'local' else None
  c.train.epochs = 10 if arg == 'local' else 20
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  return c
