"""CIFAR-10 from ../shared/data/cifar10_jpeg.npz with ResNet-18 (GroupNorm).

`local` shrinks to a narrow ResNet on 5k records for a CPU smoke run; `full` is
meant for an accelerator.

  jaxaudit train --config=experiments/configs/cifar10_resnet.py:full --workdir=runs/cifar10
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'cifar10'
  c.npz = '../shared/data/cifar10_jpeg.npz'
  c.model = 'resnet18'
  local = arg == 'local'
  c.model_kwargs.width = 16 if local else 64
  c.split.ref_fraction = 0.1
  c.split.train_size = 5_000 if local else None
  c.split.forget_size = 250 if local else None
  c.split.test_size = 1_000 if local else None
  c.train.optimizer = 'sgd'
  c.train.learning_rate = 0.05 if local else 0.1
  c.train.weight_decay = 5e-4
  c.train.epochs = 3 if local else 60
  c.train.batch_size = 128
  c.train.augment = 'flip_crop'
  return c
