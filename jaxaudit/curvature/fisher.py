"""Per-example gradients and diagonal Fisher information of a classifier.

The model is a pure ``apply_fn(params, x (B, ...)) -> logits (B, C)``. Work is
done per example with ``jax.vmap`` inside fixed-size micro-batches iterated by
``lax.map`` / ``lax.scan``: memory is O(microbatch × P) whatever N is, shapes
are static (the last micro-batch is padded with copies of a real row and
masked), and results do not depend on the micro-batch size beyond round-off.

Fisher estimators (Golatkar et al. 2020 use ``'true'``; SSD's importances are
mean squared gradients, ``'empirical'``)::

  true       F = Σ_i w_i Σ_c p(c|x_i) (∂ log p(c|x_i)/∂θ)²    C backward passes/example
  empirical  F = Σ_i w_i (∂ CE(x_i, y_i)/∂θ)²                 1 backward pass/example
  sampled    F = Σ_i w_i (1/S) Σ_s (∂ log p(ŷ_s|x_i)/∂θ)²,  ŷ_s ~ p(·|x_i)

with ``w_i = mask_i / Σ mask`` (uniform without a mask). Each example's forward
pass is shared by its class (or sample) backward passes through ``jax.vjp``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxaudit.curvature import _common
from jaxaudit.errors import ConfigError

PyTree = Any
ApplyFn = Callable[[PyTree, Any], jax.Array]
ExampleLoss = Callable[[jax.Array, Any], jax.Array]

_KINDS = ('true', 'empirical', 'sampled')


def _one(apply_fn: ApplyFn, params: PyTree, xi: Any) -> jax.Array:
  """Logits (C,) of one example (the model sees a batch of 1)."""
  return apply_fn(params, jax.tree.map(lambda a: a[None], xi))[0]


def per_example_grads(apply_fn: ApplyFn, params: PyTree, x: Any, y: Any, *,
                      microbatch: int = 256,
                      loss: str | ExampleLoss = 'ce') -> PyTree:
  """Gradients of the per-example loss, one per example.

  Computes ``jax.vmap(jax.grad(ℓ))`` over each micro-batch and ``lax.map`` over
  micro-batches. N need not divide by ``microbatch``.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree with P numbers in all.
    x: inputs (N, ...) (or a pytree of arrays with leading axis N).
    y: labels with leading axis N: integer (N,) for ``loss='ce'``; anything a
      custom ``loss`` accepts otherwise.
    microbatch: examples per vmapped micro-batch (static), >= 1.
    loss: ``'ce'`` (softmax cross-entropy with integer labels) or a callable
      ``loss(logits (C,), y_i) -> ()`` for one example.

  Returns:
    A pytree shaped like ``params`` whose leaves have a leading axis N:
    leaf ``(N, *param_leaf_shape)``; row i is ``∇_θ ℓ(θ; x_i, y_i)``.

  Raises:
    ConfigError: on empty data, mismatched x/y lengths, non-integer labels for
      ``'ce'``, an unknown loss, a non-positive microbatch, or logits not (B, C).
  """
  n = _common.num_examples('x', x)
  microbatch = _common.check_positive_int('microbatch', microbatch)
  num_classes = _common.check_logits_fn(apply_fn, params, x)
  if isinstance(loss, str):
    _common.check_choice('loss', loss, ('ce',))
    _common.check_labels(y, n)
    _common.check_label_range(y, num_classes)
    loss_fn = _common.cross_entropy
  elif callable(loss):
    n_y = _common.num_examples('y', y)
    if n_y != n:
      raise ConfigError(f'x and y have mismatched lengths: {n} vs {n_y}.')
    loss_fn = loss
  else:
    raise ConfigError(f"loss must be 'ce' or a callable, got {loss!r}.")

  def example_loss(p, xi, yi):
    return loss_fn(_one(apply_fn, p, xi), yi)

  grad_batch = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))
  (xs, ys), _ = _common.chunk((x, y), n, microbatch)
  grads = jax.lax.map(lambda batch: grad_batch(params, *batch), (xs, ys))
  return _common.unchunk(grads, n)


def diag_fisher(apply_fn: ApplyFn, params: PyTree, x: Any, y: Any = None, *,
                mask: Any = None, kind: str = 'true', microbatch: int = 256,
                key: jax.Array | None = None, n_samples: int = 1) -> PyTree:
  """Diagonal of the Fisher information, averaged over the (masked) examples.

  See the module docstring for the three estimators. ``'true'`` is exact (an
  expectation over the model's predictive distribution, no sampling) and costs
  C backward passes per example, done sequentially over classes so memory stays
  O(microbatch × P) for any C; prefer ``'sampled'`` for many classes.
  ``'sampled'`` draws labels per example from ``fold_in(key, i)`` (i the
  example's index), so it does not depend on ``microbatch``.

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree.
    x: inputs (N, ...) (or a pytree of arrays with leading axis N).
    y: integer labels (N,); required for ``kind='empirical'``, ignored by the
      other kinds (checked for length when given).
    mask: optional (N,) bool/float weights; 0 excludes a row (e.g. padding),
      float weights give a weighted average. Masked-out rows never contribute,
      even if their gradients are not finite.
    kind: ``'true'``, ``'empirical'`` or ``'sampled'``.
    microbatch: examples per micro-batch (static), >= 1.
    key: PRNG key, required for ``kind='sampled'``.
    n_samples: labels drawn per example for ``'sampled'``, >= 1.

  Returns:
    A pytree shaped like ``params`` (same dtypes), entrywise >= 0. Under jit,
    an all-zero mask gives NaN (it is rejected eagerly for host masks).

  Raises:
    ConfigError: on empty data, mismatched x/y or mask lengths, negative or
      all-zero host masks, an unknown kind, a missing key or labels, or
      non-positive microbatch / n_samples.
  """
  _common.check_choice('kind', kind, _KINDS)
  n = _common.num_examples('x', x)
  microbatch = _common.check_positive_int('microbatch', microbatch)
  n_samples = _common.check_positive_int('n_samples', n_samples)
  num_classes = _common.check_logits_fn(apply_fn, params, x)
  if kind == 'empirical' and y is None:
    raise ConfigError("y (labels) is required for kind='empirical'.")
  if y is not None:
    _common.check_labels(y, n)
    _common.check_label_range(y, num_classes)
  if kind == 'sampled':
    _common.check_key('key', key)
  weights = jnp.ones((n,), jnp.float32) if mask is None else _common.check_mask(mask, n)

  labels = jnp.zeros((n,), jnp.int32) if y is None else jnp.asarray(y).astype(jnp.int32)
  index = jnp.arange(n, dtype=jnp.int32)
  (xs, ys, ws, idx), valid = _common.chunk((x, labels, weights, index), n, microbatch)
  ws = jnp.where(valid, ws, 0)

  def example_fisher(xi, yi, wi, ii):
    logp, vjp_fn = jax.vjp(lambda p: _common.log_probs(_one(apply_fn, p, xi)), params)

    def sq_grad(c):
      (g,) = vjp_fn(jax.nn.one_hot(c, num_classes, dtype=logp.dtype))
      return jax.tree.map(jnp.square, g)

    def accumulate(acc, coef, c):
      return jax.tree.map(lambda a, g2: a + (coef * g2).astype(a.dtype), acc, sq_grad(c))

    zeros = _common.tree_zeros_like(params)
    if kind == 'empirical':
      f = sq_grad(yi)
    elif kind == 'true':
      probs = jnp.exp(logp)
      f = jax.lax.fori_loop(
          0, num_classes, lambda c, acc: accumulate(acc, probs[c], c), zeros)
    else:  # sampled
      draws = jax.random.categorical(
          jax.random.fold_in(key, ii), logp, shape=(n_samples,))
      f = jax.lax.fori_loop(
          0, n_samples, lambda s, acc: accumulate(acc, 1.0 / n_samples, draws[s]), zeros)
    return jax.tree.map(lambda fl: jnp.where(wi != 0, wi * fl, 0).astype(fl.dtype), f)

  batch_fisher = jax.vmap(example_fisher)

  def body(acc, batch):
    f = batch_fisher(*batch)
    return jax.tree.map(lambda a, fl: a + jnp.sum(fl, axis=0), acc, f), None

  # Accumulate in at least float32 (bf16 parameters would lose the small terms).
  zeros = jax.tree.map(
      lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32)),
      params)
  total, _ = jax.lax.scan(body, zeros, (xs, ys, ws, idx))
  norm = jnp.sum(ws)
  return jax.tree.map(lambda t, p: (t / norm).astype(jnp.result_type(p)), total, params)


def mean_squared_grads(apply_fn: ApplyFn, params: PyTree, x: Any, y: Any, *,
                       mask: Any = None, microbatch: int = 256) -> PyTree:
  """Mean of squared per-example cross-entropy gradients (SSD importances).

  The per-example (empirical-Fisher) version: ``Σ_i w_i (∂CE(x_i, y_i)/∂θ)²``,
  i.e. ``diag_fisher(..., kind='empirical')``. (The SSD reference code squares
  mini-batch gradients instead, which scales with the batch size.)

  Args:
    apply_fn: ``apply_fn(params, x (B, ...)) -> logits (B, C)``.
    params: parameter pytree.
    x: inputs (N, ...).
    y: integer labels (N,).
    mask: optional (N,) bool/float weights.
    microbatch: examples per micro-batch, >= 1.

  Returns:
    A pytree shaped like ``params``, entrywise >= 0.

  Raises:
    ConfigError: as :func:`diag_fisher`.
  """
  if y is None:
    raise ConfigError('mean_squared_grads needs labels y, got None.')
  return diag_fisher(apply_fn, params, x, y, mask=mask, kind='empirical',
                     microbatch=microbatch)
