"""MNIST from ../shared/data/mnist.npz with the small CNN.

`local`: |D| = 10k records, 4 epochs (CPU, minutes). `full`: all 51k, 12 epochs.

  jaxaudit train --config=experiments/configs/mnist_cnn.py:local --workdir=runs/mnist_cnn
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'mnist'
  c.npz = '../shared/data/mnist.npz'
  c.model = 'cnn'
  c.split.ref_fraction = 0.1
  c.split.train_size = 10_000 if arg == 'local' else None
  c.split.forget_size = 500 if arg == 'local' else None
  c.split.test_size = 2_000 if arg == 'local' else None
  c.train.epochs = 4 if arg == 'local' else 12
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  return c
