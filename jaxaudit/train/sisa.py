"""SISA training (Bourtoule et al. 2021): sharded, isolated, sliced, aggregated.

The training set is split into ``shards`` disjoint shards, each into
``slices`` disjoint slices. Constituent model k is trained on shard k only and
incrementally: stage r trains on slices 0..r of its shard, starting from the
params saved after stage r − 1, for ``slice_epochs`` epochs. The params after
every stage are kept, so unlearning a record of slice r of shard k only
retrains model k from its checkpoint after stage r − 1 on the remaining
records. Prediction averages the constituents' softmax outputs.

All constituents of one stage are one :func:`jaxaudit.train.train_ensemble`
call (model axis = shards).

Determinism and equality. The assignment is a fixed table of slots
``(shards, slices, L)`` with a mask (:class:`SisaLayout`); removing records
clears mask bits and never moves a record, so every stage subset keeps the
same padded length and therefore the same batch layout, shuffles and learning
rate schedule. Shard k uses the key ``fold_in(fold_in(key, 1), k)``; stage r
trains with ``fold_in(shard_key, r)`` and stage 0 starts from the fresh
initialisation ``init_params(model, fold_in(shard_key, 'init' = 2**20))``.
Hence :func:`sisa_unlearn` gives the same params as :func:`train_sisa` run
from scratch with the same key on ``layout.without(forget)`` (exactly with
``strategy='map'``; to float rounding with ``vmap``, whose batch of models
differs between the two).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError
from jaxaudit.models import init_params as _init_params
from jaxaudit.train.devices import resolve_strategy
from jaxaudit.train.ensemble import train_ensemble
from jaxaudit.train.evaluate import sisa_logits, sisa_predict_proba
from jaxaudit.train.recipe import Recipe


Params = Any
_INIT_TAG = 2**20


class SisaLayout(NamedTuple):
  """Which pool record sits in which (shard, slice) slot.

  Attributes:
    slots: (S, R, L) int32 pool indices (0 in empty slots).
    mask: (S, R, L) bool, True where a slot holds a training record.
  """
  slots: np.ndarray
  mask: np.ndarray

  @property
  def shards(self) -> int:
    """S, the number of shards (constituent models)."""
    return int(self.slots.shape[0])

  @property
  def slices(self) -> int:
    """R, the number of slices per shard."""
    return int(self.slots.shape[1])

  def records(self) -> np.ndarray:
    """Sorted pool indices of every record in the layout."""
    return np.sort(self.slots[self.mask])

  def without(self, indices) -> 'SisaLayout':
    """The layout with the given pool indices removed (their mask bits cleared)."""
    drop = np.isin(self.slots, np.asarray(indices, np.int64)) & self.mask
    return SisaLayout(self.slots, self.mask & ~drop)

  def first_slice_holding(self, indices) -> np.ndarray:
    """(S,) first slice of each shard holding one of ``indices``; R if none."""
    hit = np.isin(self.slots, np.asarray(indices, np.int64)) & self.mask   # (S, R, L)
    any_r = hit.any(axis=2)                                                # (S, R)
    return np.where(any_r.any(axis=1), np.argmax(any_r, axis=1), self.slices)

  def stage(self, r: int, shards: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mask), each (len(shards), (r + 1) · L): slices 0..r of the shards."""
    ks = np.asarray(shards, np.int64)
    idx = self.slots[ks, :r + 1].reshape(len(ks), -1)
    mask = self.mask[ks, :r + 1].reshape(len(ks), -1)
    return idx, mask


class SisaState(NamedTuple):
  """A SISA-trained ensemble with its checkpoints.

  Attributes:
    params: params after every stage, leaves (R, S, ...) NumPy arrays (host
      memory: R · S small models): axis 0 the slice stage, axis 1 the shard
      (constituent model).
    layout: the :class:`SisaLayout` the params were trained on.
    shard_keys: (S,) PRNG keys of the shards.
    recipe: the training recipe (its ``epochs`` is unused; see slice_epochs).
    slice_epochs: epochs of every stage.
    strategy: ``vmap`` or ``map`` (ensemble batching used for training).
    input_shape: shape of one record.
  """
  params: Params
  layout: SisaLayout
  shard_keys: jax.Array
  recipe: Recipe
  slice_epochs: int
  strategy: str
  input_shape: tuple[int, ...]

  @property
  def final_params(self) -> Params:
    """The constituents after the last stage, leaves (S, ...)."""
    return jax.tree.map(lambda p: p[-1], self.params)


def make_layout(train_indices, key: jax.Array, shards: int, slices: int) -> SisaLayout:
  """Randomly assigns the training records to (shard, slice) slots.

  The records are permuted with ``key`` and cut into ``shards`` contiguous
  chunks of (nearly) equal size, each cut into ``slices`` slices.

  Args:
    train_indices: (n,) pool indices of the training set.
    key: PRNG key of the assignment.
    shards: S >= 1.
    slices: R >= 1.
  Returns:
    A SisaLayout with L = the largest slice size.
  """
  idx = np.asarray(train_indices, np.int64).reshape(-1)
  if shards < 1 or slices < 1:
    raise ConfigError(f'shards and slices must be >= 1, got {shards} and {slices}')
  if idx.size < shards * slices:
    raise ConfigError(f'{idx.size} training records cannot fill {shards} shards x {slices} '
                      f'slices (every slice needs at least one record)')
  if np.unique(idx).size != idx.size:
    raise ConfigError('train_indices holds duplicated indices')
  perm = idx[np.asarray(jax.random.permutation(key, idx.size))]
  pieces = [np.array_split(chunk, slices) for chunk in np.array_split(perm, shards)]
  cap = max(len(p) for ps in pieces for p in ps)
  slots = np.zeros((shards, slices, cap), np.int32)
  mask = np.zeros((shards, slices, cap), bool)
  for k, ps in enumerate(pieces):
    for r, p in enumerate(ps):
      slots[k, r, :len(p)] = p
      mask[k, r, :len(p)] = True
  return SisaLayout(slots, mask)


def _shard_keys(key: jax.Array, shards: int) -> jax.Array:
  base = jax.random.fold_in(key, 1)
  return jnp.stack([jax.random.fold_in(base, k) for k in range(shards)])


@functools.lru_cache(maxsize=32)
def _init_program(model: nn.Module, input_shape: tuple[int, ...]):
  return jax.jit(lambda k: _init_params(model, k, input_shape))


def _fresh(model: nn.Module, shard_key: jax.Array, input_shape) -> Params:
  """Fresh params of a shard (one jitted program per model and shape), on the host."""
  params = _init_program(model, tuple(input_shape))(jax.random.fold_in(shard_key, _INIT_TAG))
  return jax.tree.map(np.asarray, params)


def _train_stage(model, x, y, layout: SisaLayout, r: int, members: list[int],
                 start: list[Params], shard_keys, recipe: Recipe, strategy: str,
                 input_shape) -> dict[int, Params]:
  """Trains stage r of the given shards from ``start``; returns {shard: params}."""
  idx, mask = layout.stage(r, members)
  live = [i for i in range(len(members)) if mask[i].any()]
  out = {k: p for k, p in zip(members, start)}  # shards with no record left keep their params
  if not live:
    return out
  keys = jnp.stack([jax.random.fold_in(shard_keys[members[i]], r) for i in live])
  res = train_ensemble(model, x, y, idx[live], keys, recipe, subset_masks=mask[live],
                       init_params=_host_stack([start[i] for i in live]), strategy=strategy,
                       input_shape=input_shape)
  trained = jax.tree.map(np.asarray, res.params)
  for j, i in enumerate(live):
    out[members[i]] = jax.tree.map(lambda p: p[j], trained)
  return out


def _host_stack(members: Sequence[Params]) -> Params:
  """Stacks pytrees on the host (NumPy): no device program per leaf shape."""
  return jax.tree.map(lambda *ps: np.stack([np.asarray(p) for p in ps]), *members)


def default_slice_epochs(recipe: Recipe, slices: int) -> int:
  """Epochs per stage when none are given: ``max(1, round(2 · epochs / (R + 1)))``."""
  return max(1, int(round(2 * recipe.epochs / (slices + 1))))


def train_sisa(model: nn.Module, x, y, train_indices, key: jax.Array, recipe: Recipe, *,
               shards: int, slices: int, layout: SisaLayout | None = None,
               slice_epochs: int | None = None, strategy: str = 'auto',
               input_shape: tuple[int, ...] | None = None) -> SisaState:
  """Trains a SISA ensemble of ``shards`` constituent models over ``slices`` slices.

  Args:
    model: the Linen module of every constituent.
    x: (N, *input_shape) float32 pool; y: (N,) int labels.
    train_indices: (n,) pool indices of the training set (ignored when
      ``layout`` is given).
    key: PRNG key: the assignment uses ``fold_in(key, 0)``, shard k
      ``fold_in(fold_in(key, 1), k)``.
    recipe: optimiser recipe of every stage (``epochs`` is replaced by
      ``slice_epochs``).
    shards: S, number of constituent models.
    slices: R, number of incremental stages.
    layout: a fixed assignment (e.g. ``state.layout.without(forget)`` to
      retrain without some records); must have S shards and R slices.
    slice_epochs: epochs per stage; default ``max(1, round(2 · epochs /
      (R + 1)))`` (Bourtoule et al.'s choice, about the cost of one
      ``epochs``-long training on the shard).
    strategy: ensemble batching (``auto``: :func:`jaxaudit.train.devices.default_strategy`).
    input_shape: shape of one record (default ``x.shape[1:]``).
  Returns:
    A :class:`SisaState` with params stacked (R, S, ...).
  """
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  if layout is None:
    layout = make_layout(train_indices, jax.random.fold_in(key, 0), shards, slices)
  if layout.shards != shards or layout.slices != slices:
    raise ConfigError(f'layout has {layout.shards} shards x {layout.slices} slices, '
                      f'expected {shards} x {slices}')
  strategy = resolve_strategy(strategy, model)
  slice_epochs = default_slice_epochs(recipe, slices) if slice_epochs is None else slice_epochs
  if slice_epochs < 1:
    raise ConfigError(f'slice_epochs must be >= 1, got {slice_epochs}')
  input_shape = tuple(x.shape[1:]) if input_shape is None else tuple(input_shape)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  shard_keys = _shard_keys(key, shards)
  stage_recipe = recipe.replace(epochs=slice_epochs)
  members = list(range(shards))
  current = [_fresh(model, shard_keys[k], input_shape) for k in members]
  per_stage = []
  for r in range(slices):
    out = _train_stage(model, x, y, layout, r, members, current, shard_keys, stage_recipe,
                       strategy, input_shape)
    current = [out[k] for k in members]
    per_stage.append(_host_stack(current))
  return SisaState(_host_stack(per_stage), layout, shard_keys, recipe, slice_epochs, strategy,
                   input_shape)


def sisa_unlearn(state: SisaState, model: nn.Module, x, y, forget) -> SisaState:
  """Removes pool records ``forget`` from a SISA ensemble.

  Every shard holding a record of ``forget`` restarts from its params saved
  after the last stage before the first slice that holds one (fresh
  initialisation if that is slice 0) and is retrained on the remaining stages
  without the removed records; other shards are untouched.

  Args:
    state: the trained :class:`SisaState`.
    model: the Linen module.
    x: (N, ...) pool; y: (N,) labels (the pool the state was trained on).
    forget: (Mf,) pool indices to remove.
  Returns:
    The new SisaState (params (R, S, ...), layout without ``forget``).
  """
  layout = state.layout
  first = layout.first_slice_holding(forget)
  new_layout = layout.without(forget)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  shards, slices = layout.shards, layout.slices
  host = jax.tree.map(np.asarray, state.params)
  stage_params = [[jax.tree.map(lambda p: p[r, k], host) for k in range(shards)]
                  for r in range(slices)]
  stage_recipe = state.recipe.replace(epochs=state.slice_epochs)
  for r in range(slices):
    members = [k for k in range(shards) if first[k] <= r]
    if not members:
      continue
    start = []
    for k in members:
      if r > 0:
        start.append(stage_params[r - 1][k])   # clean checkpoint or already-retrained stage
      else:
        start.append(_fresh(model, state.shard_keys[k], state.input_shape))
    out = _train_stage(model, x, y, new_layout, r, members, start, state.shard_keys,
                       stage_recipe, state.strategy, state.input_shape)
    for k in members:
      stage_params[r][k] = out[k]
  params = _host_stack([_host_stack(row) for row in stage_params])
  return state._replace(params=params, layout=new_layout)


def state_arrays(state: SisaState) -> dict[str, np.ndarray]:
  """The non-parameter arrays of a SisaState, for saving next to its params.

  Returns:
    dict(slots=(S, R, L) int32, mask=(S, R, L) bool, shard_key_data=(S, ...)
    uint32 raw key data (``jax.random.key_data``)). The key implementation is
    ``jax.random.key_impl(state.shard_keys)`` (store it with the arrays).
  """
  return dict(slots=np.asarray(state.layout.slots, np.int32),
              mask=np.asarray(state.layout.mask, bool),
              shard_key_data=np.asarray(jax.random.key_data(state.shard_keys)))


def state_from_arrays(params: Params, arrays, *, key_impl: str, recipe: Recipe,
                      slice_epochs: int, strategy: str, input_shape) -> SisaState:
  """Rebuilds a SisaState from its params and :func:`state_arrays`, checking both agree.

  Args:
    params: per-stage params, leaves (R, S, ...).
    arrays: mapping with ``slots`` and ``mask`` (S, R, L) and ``shard_key_data`` (S, ...).
    key_impl: the PRNG implementation of the shard keys (e.g. ``threefry2x32``).
    recipe, slice_epochs, strategy, input_shape: as in :class:`SisaState`.
  Raises:
    ConfigError: missing arrays or shapes that do not fit together.
  """
  missing = [k for k in ('slots', 'mask', 'shard_key_data') if k not in arrays]
  if missing:
    raise ConfigError(f'SISA state arrays lack {missing}')
  slots, mask = np.asarray(arrays['slots']), np.asarray(arrays['mask'])
  key_data = np.asarray(arrays['shard_key_data'])
  if slots.ndim != 3 or slots.shape != mask.shape:
    raise ConfigError(f'SISA layout slots {slots.shape} and mask {mask.shape} must be equal '
                      '(S, R, L) shapes')
  if not np.issubdtype(slots.dtype, np.integer) or mask.dtype != bool:
    raise ConfigError(f'SISA layout has dtypes slots {slots.dtype}, mask {mask.dtype}; '
                      'expected integer and bool')
  s, r = slots.shape[:2]
  if not mask.any(axis=2).all():
    raise ConfigError('SISA layout has an empty slice')
  if np.unique(slots[mask]).size != int(mask.sum()):
    raise ConfigError('SISA layout holds a record twice')
  bad = [p.shape for p in jax.tree.leaves(params) if tuple(p.shape[:2]) != (r, s)]
  if bad or not jax.tree.leaves(params):
    raise ConfigError(f'SISA params must have leading axes (slices R={r}, shards S={s}) as '
                      f'the layout; got leaves of shapes {bad[:3]}')
  if key_data.shape[:1] != (s,):
    raise ConfigError(f'SISA shard keys {key_data.shape} do not match S={s} shards')
  try:
    keys = jax.random.wrap_key_data(jnp.asarray(key_data), impl=key_impl)
  except Exception as e:
    raise ConfigError(f'cannot rebuild SISA shard keys ({key_impl}, {key_data.shape}): {e}') from e
  if slice_epochs < 1:
    raise ConfigError(f'slice_epochs must be >= 1, got {slice_epochs}')
  return SisaState(jax.tree.map(np.asarray, params), SisaLayout(slots.astype(np.int32), mask),
                   keys, recipe, int(slice_epochs), str(strategy), tuple(input_shape))


__all__ = ['SisaLayout', 'SisaState', 'make_layout', 'train_sisa', 'sisa_unlearn',
           'default_slice_epochs', 'state_arrays', 'state_from_arrays',
           'sisa_predict_proba', 'sisa_logits']
