"""shakespeare_speakers (speaker attribution on tiny-shakespeare: hashed word
uni+bigrams of the 962 speeches of the ten most frequent speakers) with an MLP.

Reads ../shared/data/tiny_shakespeare.txt (or DATA_DIR/tiny_shakespeare.txt
with --config.data_dir=DATA_DIR); see jaxaudit.data.text_features.

  jaxaudit train --config=experiments/configs/shakespeare_mlp.py:local --workdir=runs/shakespeare_mlp
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'shakespeare_speakers'
  c.model = 'mlp'
  c.model_kwargs.hidden = (256,)
  c.split.ref_fraction = 0.3
  c.split.forget_fraction = 0.3       # random forget set
  c.train.epochs = 30 if arg == 'local' else 60
  c.train.batch_size = 64
  c.train.learning_rate = 2e-3
  c.audit.num_verifiers = 8
  return c
