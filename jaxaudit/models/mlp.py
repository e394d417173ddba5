"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """ReLU MLP. ``__call__(x: (B, *input_shape)) -> logits (B, num_classes)``."""
  num_classes: int
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes, name='head')(x)
