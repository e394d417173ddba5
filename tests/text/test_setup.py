"""From a corpus name to the data set and the base LM (jaxaudit.text.setup)."""

import jax
import numpy as np
import pytest

from jaxaudit.errors import CheckpointError, ConfigError
from jaxaudit.models import get_model
from jaxaudit.text import setup
from jaxaudit.train import Recipe


def test_text_file_with_document_units(tmp_path):
  f = tmp_path / 'c.txt'
  f.write_text('\n\n'.join(f'document number {i} says hello .' for i in range(30)))
  ds = setup.load_text_dataset(str(f), unit='document', context=16)
  every = np.concatenate([ds.groups, ds.test_groups, ds.pretrain_groups])
  assert len(np.unique(every)) == len(every) == 30          # every document its own unit
  with pytest.raises(ConfigError, match='unit must be one of'):
    setup.load_text_dataset(str(f), unit='speaker')
  with pytest.raises(ConfigError, match='knowledge probes belong to groups'):
    setup.load_text_dataset('synthetic', num_people=10, unit='document')
  with pytest.raises(ConfigError, match='needs data_dir'):
    setup.load_text_dataset('tfds:imdb_reviews')


def test_refusal_is_in_the_vocabulary_and_the_base_lm_is_cached(tmp_path):
  ds = setup.load_text_dataset('synthetic', num_people=20, context=48)
  from jaxaudit.text.dataset import dataset_tokenizer
  ids = setup.refusal_tokens(ds)                                     # in the word vocabulary
  assert ids.dtype == np.int32 and dataset_tokenizer(ds).decode(ids) == setup.REFUSAL
  model = get_model('transformer', ds.num_classes, ds.input_shape, width=16, depth=1, heads=2)
  recipe = Recipe(optimizer='adam', learning_rate=3e-3, epochs=1, batch_size=16)
  path = str(tmp_path / 'base')
  p1, _ = setup.pretrain_base(model, ds, recipe, path)
  p2, _ = setup.pretrain_base(model, ds, recipe, path)               # loaded, not retrained
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(CheckpointError):
    setup.pretrain_base(model, ds, recipe.replace(epochs=2), path)  # another recipe: refused
