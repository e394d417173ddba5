"""Shared helpers of the curvature package: validation, pytree algebra, chunking.

Private: nothing here is re-exported. Every check runs on static information
(shapes, dtypes, Python scalars) or on concrete host values; traced values
(inside ``jax.jit``) are passed through unchecked, so the public functions stay
traceable.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError
from jaxaudit.train.losses import per_example_ce

PyTree = Any
ApplyFn = Callable[[PyTree, Any], jax.Array]

# --------------------------------------------------------------------------
# Scalar validation.
# --------------------------------------------------------------------------


def is_traced(value: Any) -> bool:
  """True when ``value`` is an abstract value (inside jit/vmap/grad tracing)."""
  return isinstance(value, jax.core.Tracer)


def check_positive_int(name: str, value: Any) -> int:
  """Returns ``value`` as an int; raises ConfigError unless it is an int >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ConfigError(f'{name} must be a positive int, got {value!r}.')
  if value < 1:
    raise ConfigError(f'{name} must be a positive int (>= 1), got {value}.')
  return int(value)


def _concrete_float(name: str, value: Any) -> float | None:
  """Host float of a concrete real scalar, None if traced; raises if not a scalar."""
  if is_traced(value):
    if jnp.ndim(value) != 0:
      raise ConfigError(f'{name} must be a scalar, got shape {jnp.shape(value)}.')
    return None
  if isinstance(value, bool):
    raise ConfigError(f'{name} must be a real number, got {value!r}.')
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'{name} must be a real number, got {value!r}.') from e
  if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ConfigError(f'{name} must be a real scalar, got {value!r}.')
  out = float(arr)
  if math.isnan(out) or math.isinf(out):
    raise ConfigError(f'{name} must be finite, got {out}.')
  return out


def check_nonnegative(name: str, value: Any) -> None:
  """Raises ConfigError if a concrete ``value`` is negative, NaN or inf."""
  v = _concrete_float(name, value)
  if v is not None and v < 0:
    raise ConfigError(f'{name} must be >= 0, got {v}.')


def check_positive(name: str, value: Any) -> None:
  """Raises ConfigError if a concrete ``value`` is <= 0, NaN or inf."""
  v = _concrete_float(name, value)
  if v is not None and v <= 0:
    raise ConfigError(f'{name} must be > 0, got {v}.')


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ConfigError(f'{name} must be one of {choices}, got {value!r}.')


def check_key(name: str, key: Any) -> None:
  """Raises ConfigError unless ``key`` looks like a PRNG key (typed or raw)."""
  if key is None:
    raise ConfigError(f'{name} is required (a jax.random key), got None.')
  dtype = getattr(key, 'dtype', None)
  if dtype is None:
    raise ConfigError(f'{name} must be a jax.random key, got {type(key).__name__}.')
  if jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if jnp.ndim(key) != 0:
      raise ConfigError(f'{name} must be a single key, got shape {jnp.shape(key)}.')
  elif not (jnp.shape(key) == (2,) and jnp.issubdtype(dtype, jnp.unsignedinteger)):
    raise ConfigError(
        f'{name} must be a jax.random key, got dtype {dtype} shape {jnp.shape(key)}.')


# --------------------------------------------------------------------------
# Pytree validation and algebra.
# --------------------------------------------------------------------------


def check_same_structure(name: str, tree: PyTree, ref_name: str, ref: PyTree) -> None:
  """Raises ConfigError unless ``tree`` has the structure and leaf shapes of ``ref``."""
  s, s_ref = jax.tree.structure(tree), jax.tree.structure(ref)
  if s != s_ref:
    raise ConfigError(
        f'{name} must have the pytree structure of {ref_name}: got {s}, expected {s_ref}.')
  for i, (a, b) in enumerate(zip(jax.tree.leaves(tree), jax.tree.leaves(ref))):
    if jnp.shape(a) != jnp.shape(b):
      raise ConfigError(
          f'{name} leaf {i} has shape {jnp.shape(a)}, but {ref_name} has {jnp.shape(b)}.')


def check_inexact(name: str, tree: PyTree) -> None:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ConfigError(f'{name} is an empty pytree.')
  for i, leaf in enumerate(leaves):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
      raise ConfigError(
          f'{name} leaf {i} must be floating point, got {jnp.result_type(leaf)}.')


def cast_like(tree: PyTree, ref: PyTree) -> PyTree:
  """Casts the leaves of ``tree`` to the dtypes of the matching ``ref`` leaves."""
  return jax.tree.map(lambda t, r: jnp.asarray(t, jnp.result_type(r)), tree, ref)


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  """Σ over leaves of Σ a*b, as an elementwise product and sum.

  An elementwise reduction rather than ``jnp.vdot`` keeps full float32 precision
  on accelerators whose default matmul precision is lower (TF32, bf16 passes).
  """
  parts = [jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  return sum(parts[1:], parts[0])


def tree_axpy(alpha: Any, x: PyTree, y: PyTree) -> PyTree:
  """``y + alpha * x`` leafwise, keeping the dtypes of ``y``."""
  return jax.tree.map(lambda xl, yl: (yl + alpha * xl).astype(yl.dtype), x, y)


def tree_scale(alpha: Any, x: PyTree) -> PyTree:
  return jax.tree.map(lambda xl: (alpha * xl).astype(xl.dtype), x)


def tree_zeros_like(x: PyTree) -> PyTree:
  return jax.tree.map(jnp.zeros_like, x)


# --------------------------------------------------------------------------
# Data validation and static-shape micro-batching.
# --------------------------------------------------------------------------


def num_examples(name: str, x: PyTree) -> int:
  """Leading size N shared by every leaf of ``x``; raises on empty or ragged data."""
  leaves = jax.tree.leaves(x)
  if not leaves:
    raise ConfigError(f'{name} is empty (no arrays).')
  sizes = set()
  for leaf in leaves:
    if jnp.ndim(leaf) < 1:
      raise ConfigError(f'{name} must have a leading example axis, got a scalar.')
    sizes.add(jnp.shape(leaf)[0])
  if len(sizes) != 1:
    raise ConfigError(f'{name} leaves disagree on the number of examples: {sorted(sizes)}.')
  n = sizes.pop()
  if n == 0:
    raise ConfigError(f'{name} is empty (0 examples).')
  return n


def check_labels(y: Any, n: int, *, integer: bool = True) -> None:
  """Checks that labels ``y`` are (N,) integers (or N-leading for custom losses)."""
  if jnp.ndim(y) < 1 or jnp.shape(y)[0] != n:
    raise ConfigError(
        f'x and y have mismatched lengths: x has {n} examples, y has shape {jnp.shape(y)}.')
  if integer:
    if jnp.ndim(y) != 1:
      raise ConfigError(f'y must be integer class labels of shape (N,), got {jnp.shape(y)}.')
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
      raise ConfigError(f'y must hold integer class labels, got dtype {jnp.result_type(y)}.')
    if isinstance(y, np.ndarray) and y.min() < 0:
      raise ConfigError(f'y holds negative labels (min {y.min()}).')


def check_label_range(y: Any, num_classes: int) -> None:
  """Checks host (numpy) labels lie in [0, num_classes); device arrays are not pulled."""
  if isinstance(y, np.ndarray) and y.size and y.max() >= num_classes:
    raise ConfigError(
        f'y holds label {y.max()} but the model outputs {num_classes} classes.')


def check_mask(mask: Any, n: int) -> jax.Array:
  """Validates an (N,) bool/float weight vector and returns it as floats."""
  if isinstance(mask, (list, tuple)):
    mask = np.asarray(mask)
  if jnp.shape(mask) != (n,):
    raise ConfigError(f'mask must have shape ({n},) to match x, got {jnp.shape(mask)}.')
  dtype = jnp.result_type(mask)
  if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.number)):
    raise ConfigError(f'mask must be bool or numeric, got dtype {dtype}.')
  if isinstance(mask, np.ndarray):
    m = mask.astype(np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
      raise ConfigError('mask weights must be finite and >= 0.')
    if m.sum() <= 0:
      raise ConfigError('mask excludes every example (its weights sum to 0).')
  fdtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32
  return jnp.asarray(mask).astype(fdtype)


def chunk(tree: PyTree, n: int, microbatch: int) -> tuple[PyTree, jax.Array]:
  """Pads the leading axis of every leaf to K*B rows and reshapes to (K, B, ...).

  B = min(microbatch, n), K = ceil(n / B). The pad rows copy the last real row
  (so they are finite wherever the data are); callers mask them out with the
  returned validity mask. Static shapes only.

  Returns:
    (chunked tree with leaves (K, B, ...), valid: bool (K, B), False on pad rows).
  """
  b = min(microbatch, n)
  k = -(-n // b)
  pad = k * b - n

  def one(a):
    a = jnp.asarray(a)
    if pad:
      a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (pad,) + a.shape[1:])], axis=0)
    return a.reshape((k, b) + a.shape[1:])

  valid = (jnp.arange(k * b) < n).reshape((k, b))
  return jax.tree.map(one, tree), valid


def unchunk(tree: PyTree, n: int) -> PyTree:
  """Inverse of :func:`chunk` on outputs: (K, B, ...) -> (n, ...)."""
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], tree)


def check_logits_fn(apply_fn: ApplyFn, params: PyTree, x: PyTree) -> int:
  """Checks ``apply_fn(params, x[:1])`` returns (1, C) float logits; returns C."""
  if not callable(apply_fn):
    raise ConfigError(f'apply_fn must be callable, got {type(apply_fn).__name__}.')
  x1 = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + jnp.shape(a)[1:],
                                                   jnp.result_type(a)), x)
  out = jax.eval_shape(apply_fn, params, x1)
  if not hasattr(out, 'shape') or len(out.shape) != 2 or out.shape[0] != 1:
    raise ConfigError(
        'apply_fn(params, x) must return logits of shape (B, C); for a batch of 1 it '
        f'returned {getattr(out, "shape", type(out).__name__)}.')
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ConfigError(f'apply_fn must return floating logits, got {out.dtype}.')
  if out.shape[1] < 1:
    raise ConfigError('apply_fn returned logits with 0 classes.')
  return int(out.shape[1])


def check_scalar_loss(loss_fn: Callable[[PyTree], jax.Array], params: PyTree) -> None:
  """Checks that ``loss_fn(params)`` is a real floating scalar (by abstract evaluation)."""
  if not callable(loss_fn):
    raise ConfigError(f'loss_fn must be callable, got {type(loss_fn).__name__}.')
  out = jax.eval_shape(loss_fn, params)
  if not hasattr(out, 'shape') or out.shape != ():
    raise ConfigError(
        'loss_fn(params) must return a scalar, got '
        f'{getattr(out, "shape", type(out).__name__)}.')
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ConfigError(f'loss_fn(params) must be floating point, got {out.dtype}.')


def log_probs(logits: jax.Array) -> jax.Array:
  """Log-softmax over the last axis in at least float32 (bf16 logits are upcast)."""
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  return jax.nn.log_softmax(logits.astype(dtype), axis=-1)


def cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Softmax cross-entropy of one example: logits (C,), integer label () -> ()."""
  return per_example_ce(logits, label)
