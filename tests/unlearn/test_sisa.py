"""SISA: sharded, sliced training and exact unlearning from checkpoints."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.train import Recipe
from jaxaudit.train.sisa import make_layout, sisa_predict_proba, sisa_unlearn, train_sisa
from jaxaudit import unlearn as U
from tests.unlearn.conftest import assert_trees_close

pytestmark = pytest.mark.usefixtures('fast_compiles')

RECIPE = Recipe(epochs=3, batch_size=64, learning_rate=3e-3)


def test_layout_assigns_every_record_once():
  train = np.arange(100, 203)
  layout = make_layout(train, jax.random.key(0), shards=3, slices=4)
  assert layout.slots.shape[:2] == (3, 4)
  np.testing.assert_array_equal(layout.records(), train)
  sizes = layout.mask.sum(axis=(1, 2))
  assert sizes.max() - sizes.min() <= 1
  removed = layout.without([100, 150])
  assert removed.mask.sum() == 101 and not set(removed.records()) & {100, 150}
  with pytest.raises(ConfigError, match='cannot fill'):
    make_layout(np.arange(5), jax.random.key(0), shards=3, slices=2)


def test_first_affected_slice():
  layout = make_layout(np.arange(40), jax.random.key(1), shards=2, slices=4)
  rec = lambda k, r: int(layout.slots[k, r][layout.mask[k, r]][0])
  np.testing.assert_array_equal(layout.first_slice_holding([rec(0, 2), rec(0, 3)]), [2, 4])
  np.testing.assert_array_equal(layout.first_slice_holding([rec(1, 0), rec(0, 1)]), [1, 0])
  np.testing.assert_array_equal(layout.first_slice_holding([]), [4, 4])


def test_sisa_unlearning_equals_sisa_retraining_without_du(setup):
  model, x, y = setup.model, setup.data.x, setup.data.y
  key = jax.random.key(11)
  state = train_sisa(model, x, y, setup.pool, key, RECIPE, shards=2, slices=2, slice_epochs=2)
  leaves = jax.tree.leaves(state.params)
  assert all(p.shape[:2] == (2, 2) for p in leaves)
  slots, mask = state.layout.slots, state.layout.mask
  # Both shards lose records of their second slice only: they restart from their
  # stage-0 checkpoints. (Records of a first slice would mean a fresh start; see
  # test_first_affected_slice.)
  forget = np.concatenate([slots[0, 1][mask[0, 1]][:3], slots[1, 1][mask[1, 1]][:2]])
  np.testing.assert_array_equal(state.layout.first_slice_holding(forget), [1, 1])
  unlearned = sisa_unlearn(state, model, x, y, forget)
  scratch = train_sisa(model, x, y, None, key, RECIPE, shards=2, slices=2, slice_epochs=2,
                       layout=state.layout.without(forget))
  assert_trees_close(unlearned.params, scratch.params, rtol=1e-5, atol=1e-6)
  # The stage-0 checkpoints were reused as they are; the last stage changed.
  for a, b in zip(jax.tree.leaves(unlearned.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert any(not np.array_equal(np.asarray(a[1]), np.asarray(b[1]))
             for a, b in zip(jax.tree.leaves(unlearned.params), jax.tree.leaves(state.params)))

  # The registered method returns the final constituents, stacked (S, ...).
  retain = np.setdiff1d(setup.pool, forget)
  data = setup.data._replace(forget=forget.astype(np.int32), retain=retain.astype(np.int32),
                             sisa=state)
  method = U.get_method('sisa')
  assert method.output == 'ensemble'
  out = method.fn(state.final_params, model, data, jax.random.key(0))
  assert_trees_close(out, scratch.final_params, rtol=1e-5, atol=1e-6)

  probs = sisa_predict_proba(model, out, setup.x_np[setup.test])
  assert probs.shape == (len(setup.test), 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert np.mean(probs.argmax(-1) == setup.y_np[setup.test]) > 0.5

  with pytest.raises(ConfigError, match='data.sisa'):
    method.fn(out, model, setup.data, jax.random.key(0))
