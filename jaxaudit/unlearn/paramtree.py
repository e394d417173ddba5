"""Parameter-pytree helpers: layer blocks, kernel selection, masks and transforms.

A *block* is one top-level entry of the ``params`` dict; "the last k layers"
of CF-k and EU-k are the last k blocks in forward order (``Dense_0 … head``,
``conv1, conv2, fc, head``, ``stem, GroupNorm_0, BasicBlock_0 … head``). That
order is the model's module-creation order, which :func:`forward_blocks` reads
from an abstract ``model.init``; the order of a params dict itself is not
reliable, because JAX rebuilds dicts with sorted keys after ``jit``, tree maps
or a checkpoint restore (``stem`` then sorts after ``BasicBlock_0``).

A *conv kernel* is a leaf named ``kernel`` with 4 dimensions (Flax layout
(kh, kw, in, out)); a *dense kernel* is a ``kernel`` leaf with 2.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError

Params = Any
Path = tuple


def path_str(path: Path) -> str:
  """'conv1/kernel' for a tree_util key path."""
  parts = []
  for p in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return '/'.join(parts)


def _leaf_name(path: Path) -> str:
  return path_str(path[-1:]) if path else ''


def forward_blocks(model, input_shape: tuple[int, ...]) -> list[str]:
  """Top-level block names of ``model`` in module-creation (forward) order.

  Read from ``model.init`` traced abstractly (``jax.eval_shape``: no FLOPs, no
  compilation) on a (1, *input_shape) input; the dict that ``init`` builds is
  captured before JAX could re-sort its keys.
  """
  order: list[str] = []

  def init(key):
    v = model.init(key, jnp.zeros((1,) + tuple(input_shape), jnp.float32))
    order[:] = list(v['params'].keys())
    return 0

  jax.eval_shape(init, jax.random.key(0))
  return order


def blocks(params: Params, model=None, input_shape: tuple[int, ...] | None = None) -> list[str]:
  """Top-level block names of a params dict, in forward order.

  With ``model`` and ``input_shape`` the order is the model's (see
  :func:`forward_blocks`) and must name the same blocks as ``params``;
  without them it is the dict's own order (right only for a dict built in
  creation order, e.g. a hand-made one).
  """
  if not hasattr(params, 'keys'):
    raise ConfigError('params must be a dict of layer blocks (Flax "params" collection)')
  if model is None:
    return list(params.keys())
  order = forward_blocks(model, input_shape)
  if sorted(order) != sorted(params.keys()):
    raise ConfigError(f'params blocks {sorted(params.keys())} are not those of the model '
                      f'({order})')
  return order


def last_blocks(params: Params, k: int, model=None,
                input_shape: tuple[int, ...] | None = None) -> list[str]:
  """The last ``k`` block names in forward order (see :func:`blocks`).

  ConfigError unless 1 <= k <= number of blocks.
  """
  names = blocks(params, model, input_shape)
  if not 1 <= k <= len(names):
    raise ConfigError(f'k={k} must lie in [1, {len(names)}] (the model has {len(names)} '
                      f'parameter blocks: {names})')
  return names[-k:]


def block_scale(params: Params, names, inside: float = 1.0, outside: float = 0.0) -> Params:
  """A pytree like ``params`` holding ``inside`` on the named blocks, ``outside`` elsewhere.

  The leaves are host (NumPy) float32 arrays: building them compiles nothing.
  """
  names = set(names)
  return {b: jax.tree.map(lambda p, v=(inside if b in names else outside):
                          np.full(np.shape(p), v, np.float32), sub)
          for b, sub in params.items()}


def replace_blocks(params: Params, new: Params, names) -> Params:
  """``params`` with the named blocks taken from ``new`` (same structure)."""
  names = set(names)
  return {b: (new[b] if b in names else sub) for b, sub in params.items()}


def is_conv_kernel(path: Path, leaf) -> bool:
  """Whether a leaf is a convolution kernel (named ``kernel``, 4-D)."""
  return _leaf_name(path) == 'kernel' and jnp.ndim(leaf) == 4


def is_dense_kernel(path: Path, leaf) -> bool:
  """Whether a leaf is a dense kernel (named ``kernel``, 2-D)."""
  return _leaf_name(path) == 'kernel' and jnp.ndim(leaf) == 2


def has_conv(params: Params) -> bool:
  """Whether any leaf is a conv kernel."""
  return any(is_conv_kernel(p, l) for p, l in jax.tree_util.tree_leaves_with_path(params))


def feature_kernel_selector(params: Params, order: tuple[str, ...] | None = None
                            ) -> Callable[[Path, Any], bool]:
  """Selects the "feature" kernels of MSG/CFW-style methods.

  The conv kernels when the model has any; otherwise (an MLP) the dense
  kernels of every block but the last (the classifier head), or every dense
  kernel if the model has a single dense layer. ``order``: the top-level
  block names in forward order (:func:`blocks` with the model); without it
  the params dict's order, which JAX sorts after jit or restore.
  """
  if has_conv(params):
    return is_conv_kernel
  names = list(order) if order else blocks(params)
  hidden = set(names[:-1])
  has_hidden = any(is_dense_kernel(p, l) and path_str(p[:1]) in hidden
                   for p, l in jax.tree_util.tree_leaves_with_path(params))
  if not has_hidden:
    return is_dense_kernel
  return lambda p, l: is_dense_kernel(p, l) and path_str(p[:1]) in hidden


def select(params: Params, selector: Callable[[Path, Any], bool]) -> Params:
  """A bool pytree (Python bools per leaf) marking the selected leaves."""
  return jax.tree_util.tree_map_with_path(lambda p, l: bool(selector(p, l)), params)


def transpose_conv_kernels(params: Params) -> Params:
  """Swaps the two spatial axes of every conv kernel: k[h, w, i, o] → k[w, h, i, o].

  Other leaves are returned unchanged (the same arrays).

  Raises:
    ConfigError: the model has no conv kernel, or a kernel is not square.
  """
  if not has_conv(params):
    raise ConfigError('the model has no convolution kernels (4-D "kernel" leaves) to '
                      'transpose; CT needs a convolutional model (cnn, resnet18)')

  def tr(path, leaf):
    if not is_conv_kernel(path, leaf):
      return leaf
    if leaf.shape[0] != leaf.shape[1]:
      raise ConfigError(f'conv kernel {path_str(path)} has non-square spatial shape '
                        f'{leaf.shape[:2]}; its spatial axes cannot be transposed in place')
    return jnp.swapaxes(leaf, 0, 1)

  return jax.tree_util.tree_map_with_path(tr, params)


def _exact_top(flat: jnp.ndarray, count: int, largest: bool) -> jnp.ndarray:
  """Bool mask with exactly ``count`` True entries at the largest/smallest values."""
  n = flat.shape[0]
  if count <= 0:
    return jnp.zeros((n,), bool)
  if count >= n:
    return jnp.ones((n,), bool)
  order = jnp.argsort(-flat if largest else flat, stable=True)
  return jnp.zeros((n,), bool).at[order[:count]].set(True)


def fraction_count(fraction: float, n: int) -> int:
  """round(fraction * n), the number of entries a fraction selects."""
  return int(np.round(float(fraction) * n))


def top_fraction_mask(scores: Params, fraction: float, *, largest: bool = True,
                      per_leaf: bool = False, selected: Params | None = None) -> Params:
  """Exact top-fraction masks of a score pytree.

  Args:
    scores: pytree of float arrays (e.g. |gradient|).
    fraction: in [0, 1]; exactly round(fraction · n) entries are marked, n
      the number of candidate entries (all of them when ``per_leaf`` is False,
      each leaf's when it is True).
    largest: mark the largest (True) or the smallest (False) scores.
    per_leaf: rank within each leaf instead of globally.
    selected: optional pytree of Python bools; leaves marked False are never
      candidates (their mask is all False).
  Returns:
    A bool pytree shaped like ``scores``. Ties are broken by position.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ConfigError(f'fraction must lie in [0, 1], got {fraction}')
  leaves, treedef = jax.tree.flatten(scores)
  sel = [True] * len(leaves) if selected is None else jax.tree.leaves(selected)
  if len(sel) != len(leaves):
    raise ConfigError('selected must have the structure of scores')
  if per_leaf:
    out = [(_exact_top(jnp.ravel(l), fraction_count(fraction, l.size), largest).reshape(l.shape)
            if s else jnp.zeros(l.shape, bool)) for l, s in zip(leaves, sel)]
    return jax.tree.unflatten(treedef, out)
  cand = [jnp.ravel(l) for l, s in zip(leaves, sel) if s]
  if not cand:
    return jax.tree.unflatten(treedef, [jnp.zeros(l.shape, bool) for l in leaves])
  flat = jnp.concatenate(cand)
  mask = _exact_top(flat, fraction_count(fraction, flat.shape[0]), largest)
  out, start = [], 0
  for l, s in zip(leaves, sel):
    if s:
      out.append(mask[start:start + l.size].reshape(l.shape))
      start += l.size
    else:
      out.append(jnp.zeros(l.shape, bool))
  return jax.tree.unflatten(treedef, out)
