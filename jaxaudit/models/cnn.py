"""The small CNN of the seed audit code: conv32 → pool → conv64 → pool → dense128."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Small CNN. ``__call__(x: (B, H, W, C)) -> logits (B, num_classes)``."""
  num_classes: int
  width: int = 32
  dense: int = 128

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f'CNN expects (B, H, W, C) images, got shape {x.shape}')
    x = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME', name='conv1')(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), padding='SAME', name='conv2')(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, name='fc')(x))
    return nn.Dense(self.num_classes, name='head')(x)
