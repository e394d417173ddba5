"""CIFAR-10 from ../shared/data/cifar10_jpeg.npz with the small CNN of the seed audit code.

`local`: |D| = 2,500 records (random 10% forgotten), 2,000 reference records, a 1,000-record
test split, 8 epochs with flips and crops: a CPU-sized model (about a minute to train on 2
cores, ~45% test accuracy) for the study's CIFAR-10 entry. `full`: all 45k records of the
pool, 30 epochs, for an accelerator (ResNet-18: cifar10_resnet.py).

  jaxaudit train --config=experiments/configs/cifar10_cnn.py:local --workdir=runs/cifar10_cnn
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'cifar10'
  c.npz = '../shared/data/cifar10_jpeg.npz'
  c.model = 'cnn'
  local = arg == 'local'
  c.split.ref_fraction = 0.04 if local else 0.1
  c.split.train_size = 2_500 if local else None
  c.split.forget_size = None
  c.split.forget_fraction = 0.1
  c.split.test_size = 1_000 if local else None
  c.train.epochs = 8 if local else 30
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3
  c.train.augment = 'flip_crop'
  c.audit.num_verifiers = 6
  c.audit.ref_sample = 2_000 if local else 5_000
  return c
