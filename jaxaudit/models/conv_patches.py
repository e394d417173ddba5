"""A 2-D convolution as patch extraction + matmul (im2col), backward pass as matmuls too.

:func:`patch_conv` computes what ``lax.conv_general_dilated`` computes for
NHWC inputs and HWIO kernels (no dilation, no groups), as

  patches(x) (B·Ho·Wo, kh·kw·cin) @ kernel (kh·kw·cin, cout),

with a ``jax.custom_vjp`` whose backward pass is two more matmuls on patches:

* kernel gradient: patches(x)ᵀ @ g, (kh·kw·cin, B·Ho·Wo) @ (B·Ho·Wo, cout);
* input gradient: patches(g dilated by the stride and padded for the
  transposed window) @ flipped kernel, (B·H·W, kh·kw·cout) @ (kh·kw·cout, cin),
  i.e. no col2im scatter-add.

:class:`PatchConv` is a Linen module with the parameters of ``flax.linen.Conv``
(``kernel`` (kh, kw, cin, cout), ``bias`` (cout,)), so checkpoints of either
load into the other. A lone training step is about as fast with either on this
project's 2-core CPU (``experiments/bench_cnn_cpu.py``), but inside a compiled loop
(the trainer's ``lax.scan`` over steps) XLA's gradient convolutions are ~20x slower
and these matmuls are not: :func:`xla_conv_patch_grad` keeps XLA's forward with
these gradients, the CNN's default on CPU (``CNN(conv_impl='auto')``).
"""

from __future__ import annotations

import functools
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]


def _pairs(padding: Padding, spatial: Sequence[int], window: Sequence[int],
           strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit (low, high) padding per spatial axis, as ``lax`` resolves it."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      raise ValueError(f"PatchConv supports padding 'SAME', 'VALID' or explicit pairs, "
                       f'got {padding!r}')
    return tuple(tuple(p) for p in lax.padtype_to_pads(spatial, window, strides,
                                                       padding.upper()))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != len(spatial):
    raise ValueError(f'need {len(spatial)} (low, high) padding pairs, got {padding!r}')
  return pads


def extract_patches(x: jnp.ndarray, window: Sequence[int], strides: Sequence[int],
                    pads: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """Patches of an NHWC image, in the order of a flattened HWIO kernel.

  Args:
    x: (B, H, W, C) images.
    window: (kh, kw).
    strides: (sh, sw).
    pads: ((low_h, high_h), (low_w, high_w)); negative values crop.
  Returns:
    (B, Ho, Wo, kh·kw·C) patches; entry [..., (i·kw + j)·C + c] is
    x_padded[b, i + sh·ho, j + sw·wo, c], so ``patches @ kernel.reshape(-1, cout)``
    is the convolution.
  """
  (kh, kw), (sh, sw) = window, strides
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0), (0, 0, 0)))
  hp, wp = xp.shape[1], xp.shape[2]
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  if ho <= 0 or wo <= 0:
    raise ValueError(f'window {tuple(window)} larger than the padded input {(hp, wp)}')
  cols = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (ho - 1) + 1,
                                       j + sw * (wo - 1) + 1, xp.shape[3]), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  if len(cols) == 1:
    return cols[0]
  return jnp.concatenate(cols, axis=-1)


def _matmul(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """(..., K) @ (K, N) -> (..., N) as one 2-D matmul."""
  out = a.reshape(-1, a.shape[-1]) @ b
  return out.reshape(*a.shape[:-1], b.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def patch_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
               pads: tuple[tuple[int, int], tuple[int, int]]) -> jnp.ndarray:
  """``conv_general_dilated(x, kernel, strides, pads, ('NHWC', 'HWIO', 'NHWC'))`` via im2col.

  Args:
    x: (B, H, W, cin).
    kernel: (kh, kw, cin, cout).
    strides: (sh, sw), hashable.
    pads: ((low_h, high_h), (low_w, high_w)), hashable.
  Returns:
    (B, Ho, Wo, cout).
  """
  return _patch_conv_primal(x, kernel, strides, pads)


def _patch_conv_primal(x, kernel, strides, pads):
  kh, kw, cin, cout = kernel.shape
  patches = extract_patches(x, (kh, kw), strides, pads)
  return _matmul(patches, kernel.reshape(kh * kw * cin, cout))


# The forward rules compute the primal directly (not by calling the custom_vjp function
# again), so that forward-over-reverse differentiation (the curvature methods' HVPs,
# jax.jvp(jax.grad(f))) differentiates them and the matmul backward rule like plain code.
def _patch_conv_fwd(x, kernel, strides, pads):
  return _patch_conv_primal(x, kernel, strides, pads), (x, kernel)


def _patch_conv_bwd(strides, pads, res, g):
  """Kernel and input gradients, both as matmuls on patches (no col2im)."""
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  patches = extract_patches(x, (kh, kw), strides, pads)              # (B, Ho, Wo, kh·kw·cin)
  dk = patches.reshape(-1, kh * kw * cin).T @ g.reshape(-1, cout)
  # dx = correlation of g, dilated by the stride, with the flipped kernel
  # (cin and cout swapped); the padding makes the output exactly (H, W).
  n, o = x.shape[1:3], g.shape[1:3]
  back = tuple((k - 1 - lo, size + lo - (out - 1) * s - 1)
               for k, (lo, _), size, out, s in zip((kh, kw), pads, n, o, strides))
  gd = lax.pad(g, jnp.zeros((), g.dtype),
               ((0, 0, 0), (0, 0, strides[0] - 1), (0, 0, strides[1] - 1), (0, 0, 0)))
  gpatches = extract_patches(gd, (kh, kw), (1, 1), back)            # (B, H, W, kh·kw·cout)
  kflip = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).reshape(kh * kw * cout, cin)
  dx = _matmul(gpatches, kflip)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def xla_conv_patch_grad(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                        pads: tuple[tuple[int, int], tuple[int, int]]) -> jnp.ndarray:
  """The convolution of :func:`patch_conv` computed by XLA's own convolution, with the
  patch-matmul gradients of :func:`patch_conv`. Shapes as :func:`patch_conv`.

  Inside a compiled loop (``lax.scan`` over training steps, ``lax.map`` over batches) XLA:CPU
  runs the *gradient* convolutions of ``lax.conv_general_dilated`` an order of magnitude slower
  than outside one (jax-ml/jax#12868; BUILD_NOTES "The CNN on CPU"), while its forward
  convolution stays fast and the patch matmuls are fast in both places.
  """
  return _xla_conv_primal(x, kernel, strides, pads)


def _xla_conv_primal(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _xla_conv_fwd(x, kernel, strides, pads):
  return _xla_conv_primal(x, kernel, strides, pads), (x, kernel)


xla_conv_patch_grad.defvjp(_xla_conv_fwd, _patch_conv_bwd)


class PatchConv(nn.Module):
  """``flax.linen.Conv`` (2-D, NHWC) computed by :func:`patch_conv`.

  ``__call__(x: (B, H, W, cin)) -> (B, Ho, Wo, features)``. Parameters:
  ``kernel`` (kh, kw, cin, features) and ``bias`` (features,), initialised like
  ``flax.linen.Conv`` (LeCun normal, zeros).

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: an int or (sh, sw).
    padding: 'SAME', 'VALID' or ((low_h, high_h), (low_w, high_w)).
    use_bias: whether to add a bias.
    forward: ``'patches'`` (im2col + matmul) or ``'xla'`` (XLA's convolution forward,
      patch-matmul gradients: :func:`xla_conv_patch_grad`).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Union[int, Sequence[int]] = 1
  padding: Padding = 'SAME'
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  forward: str = 'patches'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f'PatchConv expects (B, H, W, C) inputs, got shape {x.shape}')
    window = tuple(int(k) for k in self.kernel_size)
    if len(window) != 2:
      raise ValueError(f'PatchConv is 2-D: kernel_size must have 2 entries, got {window}')
    strides = ((int(self.strides),) * 2 if isinstance(self.strides, int)
               else tuple(int(s) for s in self.strides))
    kernel = self.param('kernel', self.kernel_init, (*window, x.shape[-1], self.features),
                        jnp.float32)
    pads = _pairs(self.padding, x.shape[1:3], window, strides)
    if self.forward not in ('patches', 'xla'):
      raise ValueError(f"PatchConv forward must be 'patches' or 'xla', got {self.forward!r}")
    conv = patch_conv if self.forward == 'patches' else xla_conv_patch_grad
    y = conv(x, kernel.astype(x.dtype), strides, pads)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


# Convolution implementations of the package's conv nets (same parameters, same function).
CONV_IMPLS = ('auto', 'xla', 'patches', 'patch_grad')


def conv_layer(impl: str):
  """The Linen conv constructor of an implementation (``nn.Conv``'s signature and params).

  ``'xla'``: ``flax.linen.Conv``; ``'patches'``: :class:`PatchConv`; ``'patch_grad'``: XLA's
  forward with patch-matmul gradients (:func:`xla_conv_patch_grad`); ``'auto'``:
  ``patch_grad`` on the CPU backend (XLA:CPU's gradient convolutions inside a compiled loop
  are ~20x slower, jax-ml/jax#12868), ``xla`` elsewhere.

  Raises:
    ValueError: an unknown ``impl``.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {impl!r}')
  if impl == 'auto':
    impl = 'patch_grad' if jax.default_backend() == 'cpu' else 'xla'
  if impl == 'xla':
    return nn.Conv
  return functools.partial(PatchConv, forward='patches' if impl == 'patches' else 'xla')

