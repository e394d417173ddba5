"""CIFAR-style ResNet-18 with GroupNorm, so that ``apply`` stays pure.

Batch statistics would make ``apply`` depend on mutable state and on the
composition of a batch; GroupNorm has neither problem and vmaps cleanly over
an ensemble axis.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxaudit.models.conv_patches import conv_layer


class BasicBlock(nn.Module):
  """Two 3×3 convolutions with a residual connection (``conv_impl``: as ResNet18's)."""
  features: int
  strides: int = 1
  groups: int = 8
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = conv_layer(self.conv_impl)   # explicit names: those nn.Conv would get
    residual = x
    y = conv(self.features, (3, 3), (self.strides, self.strides),
             padding='SAME', use_bias=False, name='Conv_0')(x)
    y = nn.relu(nn.GroupNorm(num_groups=self.groups)(y))
    y = conv(self.features, (3, 3), padding='SAME', use_bias=False, name='Conv_1')(y)
    y = nn.GroupNorm(num_groups=self.groups)(y)
    if residual.shape != y.shape:
      residual = conv(self.features, (1, 1), (self.strides, self.strides),
                      padding='SAME', use_bias=False, name='shortcut')(residual)
      residual = nn.GroupNorm(num_groups=self.groups)(residual)
    return nn.relu(y + residual)


class ResNet18(nn.Module):
  """ResNet-18 for small images. ``(B, H, W, C) -> (B, num_classes)``.

  ``conv_impl``: :func:`jaxaudit.models.conv_patches.conv_layer` (``auto``: XLA's forward
  with patch-matmul gradients on CPU; the parameters are those of ``flax.linen.Conv``).
  """
  num_classes: int
  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  groups: int = 8
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f'ResNet18 expects (B, H, W, C) images, got shape {x.shape}')
    x = conv_layer(self.conv_impl)(self.width, (3, 3), padding='SAME', use_bias=False,
                                   name='stem')(x)
    x = nn.relu(nn.GroupNorm(num_groups=self.groups)(x))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, self.groups, self.conv_impl)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(x)
