"""Training one model or an ensemble of K models in one compiled program.

Every member has its own PRNG key and its own training subset (an index array
into the device-resident training pool, padded to a common length with a
mask). One epoch of all K members is a single jitted XLA program: batches are
gathered on the device and the steps run under ``lax.scan``, so there is no
per-step host round trip. The Python loop only iterates over epochs (for
progress reporting) and reuses the same compiled program each time. The
common length is padded further to a bucketed number of steps
(:func:`pad_subsets`), so that subsets of nearby sizes (verifiers of another
request) share the program too.

Members are batched either with ``jax.vmap`` (one program, the model axis
vectorised) or with ``jax.lax.map`` (one program, members run one after the
other). Which is faster depends on the backend and the model (vmapped
convolutions become grouped convolutions, slow on CPU), so ``strategy='auto'``
is decided in one place, :mod:`jaxaudit.train.devices`.

The step and the epoch are those of :mod:`jaxaudit.train.loop` (the one
training loop, shared with the unlearning methods); this module adds the model
axis. The loss is a per-example loss ``(outputs (B, ...), targets (B, ...)) ->
(B,)``, a hashable value; by default the softmax cross-entropy with the
recipe's label smoothing.

Axis conventions: axis 0 of stacked params, subsets and keys is the model axis.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxaudit import compilation
from jaxaudit.compilation import bucket_size
from jaxaudit.errors import ConfigError, DataError
from jaxaudit.models import init_params as _init_params
from jaxaudit.models import make_apply_fn
from jaxaudit.train.devices import (MODEL_AXIS, Layout, model_layout, map_models, pad_members, place,
                                    to_host)
from jaxaudit.train.loop import MeanLoss, SoftmaxCE, member_epoch
from jaxaudit.train.memory import check_fits
from jaxaudit.train.recipe import Recipe, make_base_optimizer

Params = Any
STEP_BUCKET_BITS = 4   # steps per epoch are padded to 4 significant bits (<= 12.5% more)


class TrainResult(NamedTuple):
  """Output of :func:`train_ensemble`.

  Attributes:
    params: stacked parameters, every leaf with a leading model axis (K, ...).
    losses: (epochs, K) mean training loss of each member per epoch.
    nonfinite_step: (K,) int, the first step (counted over all epochs) whose
      training loss was NaN or infinite, -1 where every loss was finite. A
      member with a step >= 0 has diverged: its parameters must not be used.
  """
  params: Params
  losses: np.ndarray
  nonfinite_step: np.ndarray | None = None

  def diverged(self) -> list[int]:
    """Indices of the members whose training diverged (non-finite loss)."""
    if self.nonfinite_step is None:
      return []
    return np.flatnonzero(np.asarray(self.nonfinite_step) >= 0).tolist()


def member_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(init_key, data_key) derived from one member's key."""
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def stack_subsets(subsets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Pads ragged index arrays to one length.

  Args:
    subsets: K int arrays of possibly different lengths.
  Returns:
    (indices (K, M) int32, mask (K, M) bool) with M the longest subset; padded
    slots hold index 0 and mask False.
  """
  if len(subsets) == 0:
    raise ConfigError('no training subsets given')
  m = max(len(s) for s in subsets)
  idx = np.zeros((len(subsets), m), np.int32)
  mask = np.zeros((len(subsets), m), bool)
  for k, s in enumerate(subsets):
    idx[k, :len(s)] = np.asarray(s, np.int64)
    mask[k, :len(s)] = True
  return idx, mask


def per_example_loss(recipe: Recipe, loss: Callable | None = None) -> Callable:
  """``loss``, or by default the softmax cross-entropy with ``recipe.label_smoothing``."""
  return SoftmaxCE(recipe.label_smoothing) if loss is None else loss


@functools.lru_cache(maxsize=compilation.PROGRAMS_PER_CACHE)
def _programs(model: nn.Module, recipe: Recipe, layout: Layout, steps_per_epoch: int,
              input_shape: tuple[int, ...], loss: Callable | None = None,
              key_impl: str = 'threefry2x32'):
  """Compiled (init, opt_init, epoch) programs for one (model, recipe, layout, shape, loss).

  The number of epochs is a traced argument of the epoch program, so recipes
  that differ only in ``epochs`` share one compiled program (callers pass
  ``recipe.replace(epochs=0)`` as the cache key). ``loss`` is the per-example
  loss (None: :func:`per_example_loss`'s default). Keys enter as raw key data
  (K, ...) uint32 of the PRNG implementation ``key_impl``, which can be laid out
  over devices like any array.
  """
  del steps_per_epoch   # part of the cache key: the epoch program's shapes
  apply_fn = make_apply_fn(model)
  tx = make_base_optimizer(recipe)
  objective = MeanLoss(per_example_loss(recipe, loss))

  def init_one(init_key_data):
    return _init_params(model, jax.random.wrap_key_data(init_key_data, impl=key_impl),
                        input_shape)

  def opt_init_one(params):
    return tx.init(params), jnp.zeros((), jnp.int32)

  def epoch_one(carry, x, y, subset, mask, data_key_data, epoch, num_epochs):
    return member_epoch(apply_fn, tx, recipe, objective, carry, x, y, subset, mask,
                        jax.random.wrap_key_data(data_key_data, impl=key_impl), epoch,
                        num_epochs)

  epoch_all = map_models(epoch_one, layout, (0, None, None, 0, 0, 0, None, None))
  init_all = map_models(init_one, layout, (0,))
  opt_init_all = map_models(opt_init_one, layout, (0,))
  return (jax.jit(init_all), jax.jit(opt_init_all),
          jax.jit(epoch_all, donate_argnums=(0,)))


def _check_inputs(x, y, subsets, masks, keys, input_shape):
  if x.shape[0] != y.shape[0]:
    raise DataError(f'x has {x.shape[0]} records but y has {y.shape[0]}')
  if tuple(x.shape[1:]) != tuple(input_shape):
    raise DataError(f'x records have shape {tuple(x.shape[1:])}, expected {tuple(input_shape)}')
  if subsets.ndim != 2 or masks.shape != subsets.shape:
    raise ConfigError(f'subsets must be (K, M) with a mask of the same shape; got '
                      f'{subsets.shape} and {masks.shape}')
  if keys.shape[0] != subsets.shape[0]:
    raise ConfigError(f'{keys.shape[0]} keys for {subsets.shape[0]} subsets')
  valid = subsets[masks]
  if valid.size and (valid.min() < 0 or valid.max() >= x.shape[0]):
    raise ConfigError(f'subset indices must lie in [0, {x.shape[0]}); '
                      f'got range [{valid.min()}, {valid.max()}]')
  empty = np.flatnonzero(masks.sum(1) == 0)
  if empty.size:
    raise ConfigError(f'training subset(s) {empty.tolist()} are empty')


def as_targets(y) -> jax.Array:
  """Device targets: floating arrays keep their dtype, anything else becomes int32."""
  y = y if isinstance(y, jax.Array) else np.asarray(y)
  return as_device(y, y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.int32)


def as_device(a, dtype) -> jax.Array:
  """``a`` as a device array of ``dtype``.

  Host arrays are converted by NumPy and transferred with ``jax.device_put``,
  which compiles nothing (``jnp.asarray`` of a NumPy array compiles a small
  program per shape); device arrays are cast only when their dtype differs.
  """
  if isinstance(a, jax.Array):
    return a if a.dtype == dtype else a.astype(dtype)
  return jax.device_put(np.asarray(a, dtype=dtype))


def pad_subsets(subsets: np.ndarray, masks: np.ndarray, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Pads (K, M) subsets and masks to a bucketed number of whole batches.

  The steps per epoch, ceil(M / B), are rounded up by
  :func:`jaxaudit.compilation.bucket_size` with 4 significant bits (at most
  12.5% more steps), so that requests whose subsets differ a little in size
  share one compiled epoch program. Padding changes no result: the shuffle
  draws one number per position, padding sorts last, all-padding steps leave
  the state untouched and the schedule counts live steps only.

  Returns:
    (subsets (K, S·B) int32, masks (K, S·B) bool), padded slots 0 / False.
  """
  k, m = subsets.shape
  steps = bucket_size(max(math.ceil(m / batch_size), 1), bits=STEP_BUCKET_BITS)
  width = steps * batch_size
  if width == m:
    return subsets, masks
  idx = np.zeros((k, width), np.int32)
  mask = np.zeros((k, width), bool)
  idx[:, :m] = subsets
  mask[:, :m] = masks
  return idx, mask


def as_keys(keys) -> jax.Array:
  """Accepts typed keys (K,), raw uint32 keys (K, 2) or a list of ints (seeds)."""
  if isinstance(keys, (list, tuple)) and keys and isinstance(keys[0], (int, np.integer)):
    return jax.vmap(jax.random.key)(jnp.asarray(keys, jnp.uint32))
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    keys = jax.random.wrap_key_data(keys)
  return keys


def train_ensemble(model: nn.Module, x, y, subsets, keys, recipe: Recipe, *,
                   subset_masks=None, init_params: Params | None = None,
                   strategy: str = 'auto', input_shape: tuple[int, ...] | None = None,
                   callback: Callable[[int, np.ndarray], None] | None = None,
                   loss: Callable | None = None,
                   devices: Sequence[jax.Device] | int | None = None) -> TrainResult:
  """Trains K models, each on its own subset with its own key.

  Args:
    model: a Linen module (hashable; keys the compiled-program cache).
    x: (N, *input_shape) float32 training pool (numpy or device array).
    y: (N, ...) targets: int labels (cast to int32), or floating targets
      (kept in their dtype) for a ``loss`` that reads them.
    subsets: (K, M) int indices into the pool, or a list of K ragged arrays.
    keys: (K,) PRNG keys (or K integer seeds); member k uses keys[k] for its
      initialisation and data order, so it equals a lone run with that key.
    recipe: the training recipe.
    subset_masks: (K, M) bool, False marks padding (default: all valid).
    init_params: stacked (K, ...) parameters to start from (warm start);
      default: fresh initialisation from each member's key.
    strategy: ``vmap``, ``map`` or ``auto`` (see :func:`default_strategy`).
    input_shape: shape of one record (default ``x.shape[1:]``).
    callback: called after each epoch with (epoch, losses (K,)).
    loss: per-example loss ``(outputs (B, ...), targets (B, ...)) -> (B,)``, a
      hashable callable (it keys the compiled programs: pass a function or a
      frozen dataclass, not a fresh lambda or ``functools.partial`` per call);
      default: softmax cross-entropy with ``recipe.label_smoothing``
      (:class:`jaxaudit.train.loop.SoftmaxCE`). The training loss is its
      weighted mean over each batch.
    devices: the devices the model axis is split over (a list, a count, or
      None: every device; see :func:`jaxaudit.train.devices.model_layout`).
      With D > 1 devices the params come back laid out over them (axis 0
      split when D divides K).
  Returns:
    TrainResult(params stacked (K, ...), losses (epochs, K)).
  """
  if isinstance(subsets, (list, tuple)):
    subsets, auto_masks = stack_subsets(subsets)
    subset_masks = auto_masks if subset_masks is None else subset_masks
  subsets = np.asarray(subsets)
  masks = np.ones(subsets.shape, bool) if subset_masks is None else np.asarray(subset_masks, bool)
  keys = as_keys(keys)
  input_shape = tuple(x.shape[1:]) if input_shape is None else tuple(input_shape)
  _check_inputs(x, y, subsets, masks, keys, input_shape)
  k = subsets.shape[0]
  layout = model_layout(k, strategy, model, devices=devices)
  check_fits(model, input_shape, recipe.batch_size, layout.per_device(k),
             parallel=layout.strategy == 'vmap', what='training')

  steps = max(math.ceil(subsets.shape[1] / recipe.batch_size), 1)
  subsets, masks = pad_subsets(subsets, masks, recipe.batch_size)
  init_all, opt_init_all, epoch_all = _programs(model, recipe.replace(epochs=0), layout,
                                                subsets.shape[1] // recipe.batch_size,
                                                input_shape, loss,
                                                str(jax.random.key_impl(keys)))
  # Padding members (K up to a multiple of the device count) repeat member 0's key with
  # an all-False mask: they never take a step, and are dropped at the end.
  kp = layout.padded(k)
  init_keys, data_keys = jax.vmap(member_keys)(keys)
  init_data, data_data = pad_members((np.asarray(jax.random.key_data(init_keys)),
                                      np.asarray(jax.random.key_data(data_keys))), kp)
  subsets, masks = pad_members((subsets, masks), kp)
  masks[k:] = False
  mesh, members = layout.mesh, PartitionSpec(MODEL_AXIS)
  if init_params is None:
    params = init_all(place(init_data, mesh, members))
  else:    # a host copy: the epoch program donates its carry, never the caller's arrays
    params = place(pad_members(to_host(init_params), kp), mesh, members)
  opt_state, t = opt_init_all(params)
  carry = (params, opt_state, t)
  x = place(np.asarray(x, np.float32) if not isinstance(x, jax.Array) else x.astype(jnp.float32),
            mesh)
  y = place(as_targets(y), mesh)
  subsets_d, masks_d, data_keys_d = place((subsets.astype(np.int32), masks, data_data), mesh,
                                          members)
  total_epochs = place(np.int32(recipe.epochs), mesh)
  losses, bads = [], []
  for epoch in range(recipe.epochs):
    carry, (loss, bad) = epoch_all(carry, x, y, subsets_d, masks_d, data_keys_d,
                                   place(np.int32(epoch), mesh), total_epochs)
    if callback is not None:
      loss = to_host(loss)[:k]
      callback(epoch, loss)
    losses.append(loss)
    bads.append(bad)
  losses = (np.stack([to_host(l)[:k] for l in losses]) if losses
            else np.zeros((0, k)))
  nonfinite = np.full((k,), -1, np.int64)
  for epoch, bad in enumerate(bads):   # first non-finite step over all epochs, per member
    bad = to_host(bad)[:k]
    new = (nonfinite < 0) & (bad >= 0)
    nonfinite[new] = epoch * steps + bad[new]
  params = carry[0] if kp == k else jax.tree.map(lambda p: p[:k], carry[0])
  return TrainResult(params, losses, nonfinite)


def train_model(model: nn.Module, x, y, subset, key, recipe: Recipe, *,
                init_params: Params | None = None, strategy: str = 'auto',
                callback: Callable[[int, np.ndarray], None] | None = None,
                loss: Callable | None = None) -> TrainResult:
  """Trains one model on ``x[subset]``; returns unstacked params, losses (epochs,).

  This is a K = 1 ensemble run with the same per-member program, so member k of
  :func:`train_ensemble` (same key, subset, strategy) equals it.
  """
  subset = np.asarray(subset)
  stacked_init = None if init_params is None else stack([init_params])
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  res = train_ensemble(model, x, y, subset[None], as_keys(jnp.asarray(key)[None]), recipe,
                       init_params=stacked_init, strategy=strategy, callback=callback,
                       loss=loss)
  return TrainResult(jax.tree.map(lambda p: p[0], res.params), res.losses[:, 0],
                     res.nonfinite_step)


def unstack(params: Params, k: int) -> Params:
  """Member k of stacked params."""
  return jax.tree.map(lambda p: p[k], params)


def stack(members: Sequence[Params]) -> Params:
  """Stacks K single-model pytrees into (K, ...) leaves."""
  return jax.tree.map(lambda *ps: jnp.stack(ps), *members)
