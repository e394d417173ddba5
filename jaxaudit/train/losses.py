"""Masked losses and per-example signals shared by training and unlearning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def per_example_ce(logits: jnp.ndarray, labels: jnp.ndarray,
                   label_smoothing: float = 0.0) -> jnp.ndarray:
  """Cross-entropy per example: the one softmax cross-entropy of jaxaudit.

  logits (..., C) (computed in at least float32: bf16 logits are upcast),
  labels int, broadcastable to logits.shape[:-1] -> (...).
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  labels = jnp.broadcast_to(labels, logits.shape[:-1])
  if label_smoothing:
    n = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, n)
    onehot = onehot * (1 - label_smoothing) + label_smoothing / n
    return optax.softmax_cross_entropy(logits, onehot)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(values * weights) / max(sum(weights), 1). values, weights (B,) -> ()."""
  weights = weights.astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_ce(logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray,
              label_smoothing: float = 0.0) -> jnp.ndarray:
  """Weighted mean cross-entropy. logits (B, C), labels (B,), weights (B,) -> ()."""
  return masked_mean(per_example_ce(logits, labels, label_smoothing), weights)
