"""The one training loop of jaxaudit: every optimisation step is :func:`train_step`.

One step is value_and_grad of an objective → optimiser update → learning-rate
scaling (when the optimiser runs at unit rate) → update mask/scale → apply the
updates → keep the old state on an all-padding batch. Two epoch drivers run it:

* :func:`member_epoch`, one ensemble member's epoch (used by
  :func:`jaxaudit.train.ensemble.train_ensemble`, vmapped or ``lax.map``-ped
  over the K members): one index stream padded and masked, the optimiser at
  unit rate and the learning rate of the member's own live-step count, the
  objective :class:`MeanLoss` of a per-example loss (default
  :class:`SoftmaxCE`).
* :func:`fit`, one model with a custom objective over one or more index
  streams (the unlearning methods): the scheduled optimiser, optional
  ``update_scale``, optimiser-state continuation.

Objectives are *values*: any hashable callable

    ``loss(apply_fn, params, batches: tuple[Batch, ...], key, aux, info) -> ()``

(typically a frozen dataclass holding its hyper-parameters, see
:mod:`jaxaudit.unlearn.objectives` and :class:`MeanLoss`). Everything
array-valued a loss needs (teacher params, per-record flags, class weights)
travels in ``aux``, a pytree passed at run time, so compiled programs are
cached by ``functools.lru_cache`` on (model, loss, optimiser spec, steps,
epochs) and a second call with the same shapes does not recompile.

:func:`fit` in detail. All E epochs are one jitted XLA program (``lax.scan``
over epochs of ``lax.scan`` over steps); batches are gathered on the device
and have fixed shapes (the last batch of an epoch is padded and its padding
carries weight 0). Stream 0 leads (an epoch is one pass over it,
``ceil(M0 / B)`` steps); every other stream is shuffled once per epoch and
cycled, so each step sees one batch of every stream (e.g. a retain batch
paired with a forget batch for NG+). Keys: epoch e uses
``ekey = fold_in(key, e)``; stream j is shuffled with
``fold_in(fold_in(ekey, 0), j)``; step s draws augmentation and loss
randomness from ``fold_in(fold_in(ekey, 1), s)``. The batch layouts and step
keys of all epochs are computed by a separate small program shared by every
loss (random number generation is slow to compile on CPU), and losses marked
``stochastic = False`` get no key at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxaudit import compilation
from jaxaudit.errors import ConfigError
from jaxaudit.models import make_apply_fn
from jaxaudit.train.losses import masked_mean, per_example_ce
from jaxaudit.train.memory import check_fits
from jaxaudit.train.recipe import Recipe, learning_rate_at, make_optimizer

Params = Any
LossFn = Callable[..., jax.Array]


class Batch(NamedTuple):
  """One fixed-shape batch of one stream.

  Attributes:
    x: (B, *input_shape) inputs.
    y: (B, ...) targets (int32 labels, or floating targets kept as given).
    w: (B,) float32 weights: 1 for records, 0 for padding.
    idx: (B,) int32 pool indices (to look up per-record arrays in ``aux``).
  """
  x: jax.Array
  y: jax.Array
  w: jax.Array
  idx: jax.Array


class StepInfo(NamedTuple):
  """Where a step is. ``epoch``/``step`` are traced int32 scalars.

  Attributes:
    epoch: absolute epoch (``start_epoch`` + epochs run so far in this call).
    step: step within the epoch.
    epochs: total epochs of the optimiser spec (static int).
    steps_per_epoch: static int.
  """
  epoch: jax.Array
  step: jax.Array
  epochs: int
  steps_per_epoch: int


class FitResult(NamedTuple):
  """Output of :func:`fit`.

  Attributes:
    params: the trained params.
    opt_state: optimiser state, to continue with ``start_epoch`` (same spec).
    losses: (num_epochs,) mean loss of each epoch.
  """
  params: Params
  opt_state: Any
  losses: jax.Array


# ---------------------------------------------------------------------------
# Losses as hashable values.

@dataclasses.dataclass(frozen=True)
class SoftmaxCE:
  """The default per-example loss: :func:`per_example_ce` with a fixed label smoothing.

  ``(logits (B, C), labels (B,) int) -> (B,)``; a value, so it keys compiled programs.
  """
  label_smoothing: float = 0.0

  def __call__(self, logits, targets):
    return per_example_ce(logits, targets, self.label_smoothing)


@dataclasses.dataclass(frozen=True)
class TokenCE:
  """Per-record next-token loss of a language model: the mean NLL over its valid tokens.

  ``(logits (B, T, V), targets (B, T) int, -1 = padding) -> (B,)``: for each record
  the mean of :func:`per_example_ce` over the positions whose target is >= 0, and 0
  for a record without any. A value, so it keys compiled programs; use it as the
  ``loss=`` of :func:`jaxaudit.train.train_ensemble` or inside :class:`MeanLoss`.
  """
  label_smoothing: float = 0.0

  def __call__(self, logits, targets):
    targets = targets.astype(jnp.int32)
    valid = targets >= 0
    nll = per_example_ce(logits, jnp.where(valid, targets, 0), self.label_smoothing)
    w = valid.astype(nll.dtype)
    return jnp.sum(nll * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)


@dataclasses.dataclass(frozen=True)
class MeanLoss:
  """An objective from a per-example loss: its weighted mean over stream 0.

  ``per_example`` is a hashable callable ``(outputs (B, ...), targets (B, ...)) -> (B,)``
  (e.g. :class:`SoftmaxCE`, or a squared error for regression); padding
  (weight 0) never contributes.
  """
  per_example: Callable[[jax.Array, jax.Array], jax.Array]

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    return masked_mean(self.per_example(apply_fn(params, b.x), b.y), b.w)


# ---------------------------------------------------------------------------
# Batches.

def epoch_batches(key: jax.Array, subset: jnp.ndarray, mask: jnp.ndarray,
                  batch_size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Shuffles one index stream into fixed-shape batches.

  Args:
    key: PRNG key of this epoch.
    subset: (M,) int indices into the pool.
    mask: (M,) bool, False for padding.
    batch_size: B.
  Returns:
    (indices (S, B), weights (S, B) float32) with S = ceil(M / B); valid
    records come first in random order, padding last with weight 0.
  """
  m = subset.shape[0]
  steps = max(math.ceil(m / batch_size), 1)
  # One draw per position, so the order of the valid records does not depend
  # on how much padding follows them.
  pos_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(m))
  r = jax.vmap(lambda k: jax.random.uniform(k))(pos_keys)
  r = jnp.where(mask, r, 2.0)
  order = jnp.argsort(r)
  pad = steps * batch_size - m
  idx = jnp.pad(subset[order], (0, pad))
  w = jnp.pad(mask[order].astype(jnp.float32), (0, pad))
  return idx.reshape(steps, batch_size), w.reshape(steps, batch_size)


def augment_images(key: jax.Array, x: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Random flips and/or ±2 px translations of a batch x (B, H, W, C)."""
  if mode == 'none' or x.ndim != 4:
    return x
  kf, kc = jax.random.split(key)
  if 'flip' in mode:
    flip = jax.random.bernoulli(kf, 0.5, (x.shape[0], 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1, :], x)
  if 'crop' in mode:
    pad = 2
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
    offs = jax.random.randint(kc, (x.shape[0], 2), 0, 2 * pad + 1)
    x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))(xp, offs)
  return x


def gather_batch(x, y, idx, w, augment: str, key: jax.Array | None) -> Batch:
  """The batch ``idx`` (B,) of the device-resident pool, augmented with ``key``
  (which may be None when ``augment == 'none'``)."""
  xb = x[idx]
  if augment != 'none':
    xb = augment_images(key, xb, augment)
  return Batch(xb, y[idx], w, idx)


# ---------------------------------------------------------------------------
# The step.

def train_step(apply_fn: Callable, tx: optax.GradientTransformation, loss: LossFn, params,
               opt_state, batches: tuple[Batch, ...], key=None, aux=None, info=None, *,
               lr=None, update_scale=None, live=None):
  """One optimisation step; every training loop of jaxaudit runs this.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``.
    tx: the optimiser.
    loss: an objective ``loss(apply_fn, params, batches, key, aux, info) -> ()``.
    params, opt_state: the state.
    batches: one :class:`Batch` per stream.
    key, aux, info: passed to ``loss``.
    lr: optional (traced) learning rate multiplying the updates, for an
      optimiser built at unit rate (None: ``tx`` carries its schedule).
    update_scale: optional pytree like ``params`` multiplying the updates;
      entries equal to 0 are frozen exactly.
    live: optional bool scalar; where False (an all-padding batch) params and
      optimiser state are returned unchanged.
  Returns:
    (params, opt_state, loss value).
  """
  value, grads = jax.value_and_grad(
      lambda p: loss(apply_fn, p, batches, key, aux, info))(params)
  updates, new_opt = tx.update(grads, opt_state, params)
  if lr is not None:
    updates = jax.tree.map(lambda u: lr * u, updates)
  if update_scale is not None:
    updates = jax.tree.map(lambda u, c: jnp.where(c == 0, jnp.zeros_like(u), u * c),
                           updates, update_scale)
  new_params = optax.apply_updates(params, updates)
  if live is not None:
    keep = lambda new, old: jnp.where(live, new, old)
    new_params = jax.tree.map(keep, new_params, params)
    new_opt = jax.tree.map(keep, new_opt, opt_state)
  return new_params, new_opt, value


# ---------------------------------------------------------------------------
# Ensemble members: one padded, masked stream; per-member schedule.

def member_epoch(apply_fn: Callable, tx: optax.GradientTransformation, recipe: Recipe,
                 loss: LossFn, carry, x, y, subset, mask, data_key, epoch, num_epochs):
  """One epoch of one ensemble member: carry = (params, opt_state, t) -> (carry, (mean loss, bad)).

  ``tx`` runs at unit rate; ``t`` counts this member's live steps and its
  learning-rate schedule spans ceil(|subset| / B) · epochs steps, so a padded
  member follows exactly the schedule of a lone run on its own subset.
  ``bad`` is the index of the epoch's first live step with a non-finite loss
  (-1: none).
  """
  ekey = jax.random.fold_in(data_key, epoch)
  idx, w = epoch_batches(ekey, subset, mask, recipe.batch_size)
  n_valid = jnp.sum(mask)
  total = (n_valid + recipe.batch_size - 1) // recipe.batch_size * num_epochs

  def step(carry, batch):
    params, opt_state, t = carry
    s, bi, bw = batch
    b = gather_batch(x, y, bi, bw, recipe.augment, jax.random.fold_in(ekey, s))
    live = jnp.sum(bw) > 0   # an all-padding batch leaves the state untouched
    params, opt_state, value = train_step(apply_fn, tx, loss, params, opt_state, (b,),
                                          lr=learning_rate_at(recipe, t, total), live=live)
    return (params, opt_state, t + live.astype(t.dtype)), (value * jnp.sum(bw), jnp.sum(bw))

  steps = jnp.arange(idx.shape[0])
  carry, (lsum, wsum) = jax.lax.scan(step, carry, (steps, idx, w))
  bad_steps = (~jnp.isfinite(lsum)) & (wsum > 0)
  bad = jnp.where(jnp.any(bad_steps), jnp.argmax(bad_steps), -1)
  return carry, (jnp.sum(lsum) / jnp.maximum(jnp.sum(wsum), 1.0), bad)


# ---------------------------------------------------------------------------
# One model, custom objective, several streams.

def make_spec(*, epochs: int, lr: float, batch_size: int, optimizer: str = 'sgd',
              momentum: float = 0.9, weight_decay: float = 0.0,
              schedule: str = 'cosine', augment: str = 'none') -> Recipe:
  """The optimiser spec of a :func:`fit` phase, as a (hashable) :class:`Recipe`.

  Raises ConfigError (from Recipe) on invalid values.
  """
  return Recipe(optimizer=optimizer, learning_rate=float(lr), momentum=float(momentum),
                weight_decay=float(weight_decay), schedule=schedule, epochs=int(epochs),
                batch_size=int(batch_size), augment=augment)


def steps_per_epoch(lead_size: int, batch_size: int) -> int:
  """ceil(lead_size / batch_size), at least 1."""
  return max(math.ceil(int(lead_size) / int(batch_size)), 1)


def _needs_keys(loss: LossFn, spec: Recipe) -> bool:
  return bool(getattr(loss, 'stochastic', True)) or spec.augment != 'none'


@functools.lru_cache(maxsize=64)
def _schedule_program(batch_size: int, num_epochs: int, steps: int, with_keys: bool):
  """Jitted batch layouts (and step keys) of E epochs, shared by every loss.

  Shuffling lives in its own program so that the (compile-heavy) random number
  generation is compiled once per (stream lengths, batch size, epochs) rather
  than once per loss.
  """

  def run(key, start_epoch, streams):
    def one_epoch(e):
      ekey = jax.random.fold_in(key, start_epoch + e)
      skey = jax.random.fold_in(ekey, 0)
      layout = tuple(epoch_batches(jax.random.fold_in(skey, j), s, jnp.ones(s.shape, bool),
                                   batch_size) for j, s in enumerate(streams))
      if not with_keys:
        return layout, None
      kkey = jax.random.fold_in(ekey, 1)
      return layout, jax.vmap(lambda t: jax.random.fold_in(kkey, t))(jnp.arange(steps))

    return jax.vmap(one_epoch)(jnp.arange(num_epochs))

  return jax.jit(run)


@functools.lru_cache(maxsize=compilation.PROGRAMS_PER_CACHE)
def _fit_program(model: nn.Module, loss: LossFn, spec: Recipe, steps: int, num_epochs: int):
  """The jitted E-epoch program for one (model, loss, spec, steps, epochs)."""
  apply_fn = make_apply_fn(model)
  tx = make_optimizer(spec, steps * spec.epochs)

  def run(params, opt_state, x, y, layouts, step_keys, aux, scale, start_epoch):
    # layouts: per stream (idx (E, S_j, B), w (E, S_j, B)); step_keys: (E, S) or None.
    def one_epoch(carry, inputs):
      e, layout, keys = inputs
      epoch = start_epoch + e

      def step(carry, s_inputs):
        params, opt_state = carry
        s, k = s_inputs
        batches = []
        for j, (idx, w) in enumerate(layout):
          row = s % idx.shape[0]
          akey = None if spec.augment == 'none' else jax.random.fold_in(jax.random.fold_in(k, 0), j)
          batches.append(gather_batch(x, y, idx[row], w[row], spec.augment, akey))
        info = StepInfo(epoch, s, spec.epochs, steps)
        lkey = None if k is None else jax.random.fold_in(k, 1)
        params, opt_state, value = train_step(apply_fn, tx, loss, params, opt_state,
                                              tuple(batches), lkey, aux, info,
                                              update_scale=scale)
        return (params, opt_state), value

      carry, values = jax.lax.scan(step, carry, (jnp.arange(steps), keys))
      bad = ~jnp.isfinite(values)
      return carry, (jnp.mean(values), jnp.where(jnp.any(bad), jnp.argmax(bad), -1))

    (params, opt_state), (losses, bad) = jax.lax.scan(
        one_epoch, (params, opt_state), (jnp.arange(num_epochs), layouts, step_keys))
    return params, opt_state, losses, bad

  return jax.jit(run)


def _as_stream(s, n: int, name: str) -> jax.Array:
  if isinstance(s, jax.core.Tracer):
    return s
  arr = np.asarray(s)
  if arr.ndim != 1 or arr.size == 0:
    raise ConfigError(f'{name} must be a non-empty 1-D index array, got shape {arr.shape}')
  if arr.min() < 0 or arr.max() >= n:
    raise ConfigError(f'{name} indices must lie in [0, {n}); got [{arr.min()}, {arr.max()}]')
  return jnp.asarray(arr, jnp.int32)


def fit(model: nn.Module, params: Params, x, y, streams: Sequence, key: jax.Array,
        spec: Recipe, loss: LossFn, *, aux: Any = None, update_scale: Params | None = None,
        opt_state: Any = None, start_epoch: int = 0,
        num_epochs: int | None = None) -> FitResult:
  """Trains ``params`` on the pool with a custom loss, one program for all epochs.

  Args:
    model: the Linen module (hashable: keys the program cache).
    params: initial params of one model.
    x: (N, *input_shape) float32 pool (device array).
    y: (N,) int32 labels; pass relabelled targets here to override labels.
    streams: one or more 1-D index arrays into the pool (non-empty); stream 0
      leads, the others are cycled (see the module docstring). Indices may be
      traced (e.g. a random subset drawn from the key) as long as the lengths
      are static.
    key: PRNG key of this phase.
    spec: optimiser spec (:func:`make_spec`): optimizer, learning rate,
      momentum, weight decay, schedule over ``spec.epochs`` epochs, batch size.
    loss: a hashable loss ``loss(apply_fn, params, batches, key, aux, info)``
      (``MeanLoss(per_example)`` lifts a per-example loss).
    aux: pytree of arrays the loss reads (teacher params, flags, ...).
    update_scale: optional pytree like ``params``: every optimiser update is
      multiplied by it elementwise, and entries equal to 0 are frozen exactly
      (bit-identical). Scaling updates equals scaling gradients for SGD and
      stays meaningful for Adam.
    opt_state: optimiser state to continue from (default: fresh).
    start_epoch: absolute index of the first epoch (keys, schedule position
      via ``opt_state``, :class:`StepInfo`).
    num_epochs: epochs to run now (default ``spec.epochs - start_epoch``).
  Returns:
    FitResult(params, opt_state, losses (num_epochs,)).
  """
  if num_epochs is None:
    num_epochs = spec.epochs - start_epoch
  if num_epochs < 0:
    raise ConfigError(f'num_epochs must be >= 0, got {num_epochs}')
  if not streams:
    raise ConfigError('fit needs at least one stream of indices')
  n = x.shape[0]
  streams = tuple(_as_stream(s, n, f'stream {j}') for j, s in enumerate(streams))
  if num_epochs == 0:
    return FitResult(params, opt_state, jnp.zeros((0,), jnp.float32))
  check_fits(model, tuple(x.shape[1:]), spec.batch_size, len(streams), parallel=True,
             what='unlearning')   # one batch of every stream per step
  steps = steps_per_epoch(streams[0].shape[0], spec.batch_size)
  start = jnp.int32(start_epoch)
  layouts, step_keys = _schedule_program(spec.batch_size, int(num_epochs), steps,
                                         _needs_keys(loss, spec))(key, start, streams)
  program = _fit_program(model, loss, spec, steps, int(num_epochs))
  if opt_state is None:
    # Eager on purpose: zeros of the params' shapes, compiled once per shape for every
    # optimiser, where a jitted init would compile once per spec.
    opt_state = make_optimizer(spec, steps * spec.epochs).init(params)
  params, opt_state, losses, bad = program(params, opt_state, x, y, layouts, step_keys, aux,
                                          update_scale, start)
  probe = _PROBE.get()
  if probe is not None and not isinstance(bad, jax.core.Tracer):
    probe.record(np.asarray(bad), start_epoch, steps)
  return FitResult(params, opt_state, losses)


class DivergenceProbe:
  """Where the first non-finite loss of the :func:`fit` calls inside a probe was.

  Attributes:
    phase: index of the fit call (0 = the first one run inside the probe), or None.
    epoch: its absolute epoch; step: the step within that epoch (0-based).
    steps_per_epoch: steps of that call's epochs.
  """

  def __init__(self):
    self.calls = 0
    self.phase = self.epoch = self.step = self.steps_per_epoch = None

  def record(self, bad: np.ndarray, start_epoch: int, steps: int) -> None:
    """Notes one fit call's (E,) first-bad-step-per-epoch array (-1: finite)."""
    hit = np.flatnonzero(np.asarray(bad) >= 0)
    if self.phase is None and hit.size:
      e = int(hit[0])
      self.phase, self.epoch = self.calls, int(start_epoch) + e
      self.step, self.steps_per_epoch = int(bad[e]), int(steps)
    self.calls += 1

  def describe(self) -> str | None:
    """'step S of epoch E (phase P)' or None when every loss was finite."""
    if self.phase is None:
      return None
    return (f'step {self.step + 1} of {self.steps_per_epoch} in epoch {self.epoch + 1} of '
            f'training phase {self.phase + 1}')


_PROBE: contextvars.ContextVar[DivergenceProbe | None] = contextvars.ContextVar(
    'jaxaudit_divergence_probe', default=None)


@contextlib.contextmanager
def divergence_probe():
  """Records where the loss of :func:`fit` first became non-finite, for the calls made inside.

  Costs one small device-to-host copy per fit call (the per-epoch first-bad
  step), only while a probe is active; calls traced under jit/vmap are skipped.
  """
  probe = DivergenceProbe()
  token = _PROBE.set(probe)
  try:
    yield probe
  finally:
    _PROBE.reset(token)


@functools.lru_cache(maxsize=64)
def _grad_program(model: nn.Module, loss: LossFn, batch_size: int):
  apply_fn = make_apply_fn(model)

  def run(params, x, y, idx, key, aux):
    m = idx.shape[0]
    steps = max(math.ceil(m / batch_size), 1)
    pad = steps * batch_size - m
    bidx = jnp.pad(idx, (0, pad)).reshape(steps, batch_size)
    bw = jnp.pad(jnp.ones((m,), jnp.float32), (0, pad)).reshape(steps, batch_size)

    def body(acc, s):
      bi, w = bidx[s], bw[s]
      info = StepInfo(jnp.int32(0), s, 1, steps)
      k = jax.random.fold_in(key, s) if getattr(loss, 'stochastic', True) else None
      g = jax.grad(lambda p: loss(apply_fn, p, (Batch(x[bi], y[bi], w, bi),), k, aux,
                                  info))(params)
      return jax.tree.map(lambda a, b: a + b * jnp.sum(w), acc, g), None

    zero = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(body, zero, jnp.arange(steps))
    return jax.tree.map(lambda t: t / m, total)

  return jax.jit(run)


def mean_gradient(model: nn.Module, params: Params, x, y, indices, loss: LossFn, *,
                  key: jax.Array | None = None, aux: Any = None,
                  batch_size: int = 256) -> Params:
  """Gradient of a (per-batch mean) loss averaged over a whole index set.

  Batches are fixed-shape with zero-weight padding; each batch gradient is
  weighted by its number of records, so for a masked-mean loss the result is
  the exact gradient of the mean loss over ``x[indices]``.

  Args:
    model: the Linen module.
    params: params of one model.
    x: (N, ...) pool; y: (N,) labels.
    indices: (M,) int indices (may be traced; M static).
    loss: a hashable loss (see :func:`fit`); it sees one stream.
    key: PRNG key for stochastic losses (default: key 0).
    aux: arrays the loss reads.
    batch_size: records per batch.
  Returns:
    A pytree like ``params``.
  """
  key = jax.random.key(0) if key is None else key
  indices = _as_stream(indices, x.shape[0], 'indices')
  return _grad_program(model, loss, int(batch_size))(params, x, y, indices, key, aux)


__all__ = ['Batch', 'StepInfo', 'FitResult', 'SoftmaxCE', 'TokenCE', 'MeanLoss', 'epoch_batches',
           'augment_images', 'gather_batch', 'train_step', 'member_epoch', 'make_spec',
           'steps_per_epoch', 'fit', 'mean_gradient', 'divergence_probe', 'DivergenceProbe']
