"""The small CNN of the seed audit code: conv32 → pool → conv64 → pool → dense128.

Two implementation switches leave the parameters (names, shapes, values) and
the function computed unchanged, so checkpoints are interchangeable:

* ``conv_impl``: ``'xla'`` (``flax.linen.Conv``), ``'patches'``
  (:class:`jaxaudit.models.conv_patches.PatchConv`, im2col + matmul),
  ``'patch_grad'`` (XLA's forward convolution, patch-matmul gradients) or
  ``'auto'`` (the default: ``patch_grad`` on CPU, where XLA's gradient
  convolutions inside the trainer's ``lax.scan`` are ~20x slower than outside
  it, jax-ml/jax#12868; ``xla`` elsewhere).
* ``pool_impl``: ``'xla'`` (``flax.linen.max_pool``: ``reduce_window``, whose
  gradient is XLA's ``select_and_scatter``) or ``'reshape'``
  (:func:`window_max_pool`: the same ``reduce_window`` forward; a gradient
  of a reshape into windows and elementwise ops that routes each window's
  gradient to its first maximum, as ``select_and_scatter`` does). On the 2-core CPU ``select_and_scatter`` is
  most of the training step (``experiments/bench_cnn_cpu.py``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxaudit.models.conv_patches import conv_layer

POOL_IMPLS = ('xla', 'reshape')


def _window_pads(shape: Sequence[int], window: Sequence[int], padding: str):
  return tuple(tuple(p) for p in lax.padtype_to_pads(shape, window, window, padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def window_max_pool(x: jnp.ndarray, window: tuple[int, int], padding: str = 'VALID'
                    ) -> jnp.ndarray:
  """Max pooling over non-overlapping windows (stride = window) of NHWC images.

  Equals ``flax.linen.max_pool(x, window, strides=window, padding=padding)``,
  value and gradient (ties: the first maximum in row-major window order gets
  the whole gradient).

  Args:
    x: (B, H, W, C).
    window: (wh, ww), also the strides.
    padding: 'SAME' (pads with -inf) or 'VALID' (drops the remainder).
  Returns:
    (B, Ho, Wo, C).
  """
  return _pool_fwd(x, window, padding)[0]


def _pool_windows(x, window, padding):
  """(B, Ho, wh, Wo, ww, C) windows of x, padded with -inf / cropped as ``padding`` says."""
  (wh, ww), (b, h, w, c) = window, x.shape
  (lh, hh), (lw, hw) = _window_pads((h, w), window, padding)
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype),
               ((0, 0, 0), (lh, hh, 0), (lw, hw, 0), (0, 0, 0)))
  ho, wo = (xp.shape[1] - wh) // wh + 1, (xp.shape[2] - ww) // ww + 1
  xp = xp[:, :ho * wh, :wo * ww]
  return xp.reshape(b, ho, wh, wo, ww, c), ((lh, hh), (lw, hw))


def _pool_fwd(x, window, padding):
  # The forward is XLA's reduce_window (as flax's max_pool): faster than a
  # reshape + max on CPU for inference; only the backward pass is replaced.
  y = lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *window, 1), padding)
  return y, x


def _pool_bwd(window, padding, x, g):
  xw, ((lh, _), (lw, _)) = _pool_windows(x, window, padding)
  y = jnp.max(xw, axis=(2, 4))
  (wh, ww) = window
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(wh):
    cols = []
    for j in range(ww):
      first = (xw[:, :, i, :, j, :] == y) & ~taken
      taken = taken | first
      cols.append(jnp.where(first, g, jnp.zeros_like(g)))
    rows.append(jnp.stack(cols, axis=3))                     # (B, Ho, Wo, ww, C)
  dxw = jnp.stack(rows, axis=2)                              # (B, Ho, wh, Wo, ww, C)
  b, ho, _, wo, _, c = dxw.shape
  dxp = dxw.reshape(b, ho * wh, wo * ww, c)
  h, w = x.shape[1:3]
  # Undo the -inf padding / cropping: take the (h, w) window starting at (lh, lw).
  dx = lax.pad(dxp, jnp.zeros((), g.dtype),
               ((0, 0, 0), (-lh, h + lh - dxp.shape[1], 0),
                (-lw, w + lw - dxp.shape[2], 0), (0, 0, 0)))
  return (dx,)


window_max_pool.defvjp(_pool_fwd, _pool_bwd)


class CNN(nn.Module):
  """Small CNN. ``__call__(x: (B, H, W, C)) -> logits (B, num_classes)``.

  Attributes:
    num_classes: output size.
    width: channels of the first conv (the second has twice as many).
    dense: width of the hidden dense layer.
    conv_impl: 'auto' (default), 'xla', 'patches' or 'patch_grad' (same parameters, same
      function; module docstring).
    pool_impl: 'reshape' (default: about 2× faster training on CPU) or 'xla' (same function
      and gradient).
  """
  num_classes: int
  width: int = 32
  dense: int = 128
  conv_impl: str = 'auto'
  pool_impl: str = 'reshape'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f'CNN expects (B, H, W, C) images, got shape {x.shape}')
    if self.pool_impl not in POOL_IMPLS:
      raise ValueError(f'pool_impl must be one of {POOL_IMPLS}, got {self.pool_impl!r}')
    conv = conv_layer(self.conv_impl)

    def pool(h):
      if self.pool_impl == 'reshape':
        return window_max_pool(h, (2, 2), 'SAME')
      return nn.max_pool(h, (2, 2), strides=(2, 2), padding='SAME')

    x = pool(nn.relu(conv(self.width, (3, 3), padding='SAME', name='conv1')(x)))
    x = pool(nn.relu(conv(2 * self.width, (3, 3), padding='SAME', name='conv2')(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, name='fc')(x))
    return nn.Dense(self.num_classes, name='head')(x)
