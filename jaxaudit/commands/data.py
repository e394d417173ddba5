"""`jaxaudit data import|show`: manage local data sets.

  jaxaudit data import mnist --npz=../shared/data/mnist.npz --data_dir=~/tfds
  jaxaudit data show mnist --data_dir=~/tfds
"""

from __future__ import annotations

import os

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('name', None, 'Data set name (or give it after the verb).')
flags.DEFINE_string('npz', None, 'Local .npz with x_train, y_train, x_test, y_test.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing imported data set.')


def main(argv):
  from jaxaudit import io_utils
  from jaxaudit.data import load_dataset
  from jaxaudit.data.tfds_io import import_npz
  from jaxaudit.errors import ConfigError
  usage = 'usage: jaxaudit data {import,show} NAME [--npz=FILE] [--data_dir=DIR] [--overwrite]'
  if len(argv) not in (2, 3) or argv[1] not in ('import', 'show'):
    raise ConfigError(usage)
  name = argv[2] if len(argv) == 3 else FLAGS.name
  if not name:
    raise ConfigError(usage)
  data_dir = os.path.expanduser(FLAGS.data_dir) if FLAGS.data_dir else None
  if argv[1] == 'import':
    if not FLAGS.npz or not data_dir:
      raise ConfigError('data import needs --npz and --data_dir')
    io_utils.check_name(name, 'data set name')
    path = import_npz(name, FLAGS.npz, data_dir, overwrite=FLAGS.overwrite)
    print(f'imported {FLAGS.npz} as TFDS data set {name!r} at {path}')
  ds = load_dataset(name, data_dir=data_dir)
  print(f'{ds.name}: source {ds.source}; train {ds.x_train.shape}, test {ds.x_test.shape}, '
        f'{ds.num_classes} classes; fingerprint {ds.fingerprint[:16]}')
