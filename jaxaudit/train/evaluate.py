"""Batched evaluation of one model or a stacked ensemble, in one compiled program.

Records are padded to a multiple of the batch size and run under ``lax.map``
so that every call with the same (N, batch size) reuses one program.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError
from jaxaudit.models import make_apply_fn
from jaxaudit.train.devices import resolve_strategy

Params = Any


@functools.lru_cache(maxsize=64)
def _logits_program(model: nn.Module, batch_size: int, ensemble: bool, strategy: str):
  apply_fn = make_apply_fn(model)

  def one_model(params, xb):   # xb (S, B, ...) -> (S, B, C)
    return jax.lax.map(lambda b: apply_fn(params, b), xb)

  if ensemble:
    fn = jax.vmap(one_model, in_axes=(0, None)) if strategy == 'vmap' else (
        lambda params, xb: jax.lax.map(lambda p: one_model(p, xb), params))
  else:
    fn = one_model
  return jax.jit(fn)


def predict_logits(model: nn.Module, params: Params, x, *, batch_size: int = 512,
                   ensemble: bool = False, strategy: str = 'auto') -> np.ndarray:
  """Logits of one model or K stacked models.

  Args:
    model: the Linen module.
    params: a single model's params, or stacked (K, ...) when ``ensemble``.
    x: (N, *input_shape) inputs.
    batch_size: records per step (the last batch is padded).
    ensemble: whether params carry a leading model axis.
    strategy: ``vmap`` / ``map`` over models (``auto``: as for training).
  Returns:
    float32 logits, (N, C) or (K, N, C), as a NumPy array.
  """
  strategy = resolve_strategy(strategy, model)
  x = jnp.asarray(x, jnp.float32)
  n = x.shape[0]
  b = max(1, min(batch_size, n))
  steps = max(math.ceil(n / b), 1)
  xp = jnp.pad(x, ((0, steps * b - n),) + ((0, 0),) * (x.ndim - 1))
  xb = xp.reshape((steps, b) + x.shape[1:])
  out = _logits_program(model, b, ensemble, strategy)(params, xb)
  out = out.reshape(out.shape[:-3] + (steps * b, out.shape[-1]))
  return np.asarray(out[..., :n, :])


def accuracy(logits, y) -> np.ndarray:
  """Top-1 accuracy. logits (..., N, C), y (N,) -> (...)."""
  return np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y), axis=-1)


MEAN_SOFTMAX = 'mean_softmax'   # the aggregate of a SISA ensemble: the mean of its softmax outputs


def sisa_predict_proba(model: nn.Module, params: Params, x, *, batch_size: int = 512) -> np.ndarray:
  """Aggregated SISA prediction: mean of the constituents' softmax.

  Args:
    model: the Linen module.
    params: constituent params stacked (S, ...) (e.g. ``state.final_params``).
    x: (N, *input_shape) inputs.
  Returns:
    (N, C) float32 probabilities.
  """
  logits = predict_logits(model, params, x, batch_size=batch_size, ensemble=True)
  return np.asarray(jnp.mean(jax.nn.softmax(jnp.asarray(logits), axis=-1), axis=0))


def sisa_logits(model: nn.Module, params: Params, x, *, batch_size: int = 512) -> np.ndarray:
  """log of :func:`sisa_predict_proba`, usable wherever logits are expected. (N, C)."""
  return np.log(np.maximum(sisa_predict_proba(model, params, x, batch_size=batch_size), 1e-30))


def evaluate_sets(model, params, dataset, split, *, ensemble=False,
                  aggregate: str | None = None) -> dict[str, Any]:
  """Accuracy on Dr, Du, D_ref and test.

  Args:
    params: one model's params, or stacked (K, ...) with ``ensemble`` or ``aggregate``.
    ensemble: accuracy of every member (lists of K floats).
    aggregate: ``'mean_softmax'``: accuracy of the K stacked models' mean
      softmax (a SISA ensemble), one float per set.
  """
  if aggregate not in (None, MEAN_SOFTMAX):
    raise ConfigError(f'unknown ensemble aggregate {aggregate!r}; known: {MEAN_SOFTMAX!r}')
  out = {}
  for name, x, y in (('retain', dataset.x_train[split.retain], dataset.y_train[split.retain]),
                     ('forget', dataset.x_train[split.forget], dataset.y_train[split.forget]),
                     ('ref', dataset.x_train[split.ref], dataset.y_train[split.ref]),
                     ('test', dataset.x_test[split.test], dataset.y_test[split.test])):
    if aggregate:
      out[name] = float(accuracy(sisa_logits(model, params, x), y))
      continue
    acc = accuracy(predict_logits(model, params, x, ensemble=ensemble), y)
    out[name] = acc.tolist() if ensemble else float(acc)
  return out


def format_accs(accs: dict[str, float]) -> str:
  """'retain  98.0%  forget  97.1%  ...' for a dict of accuracies in [0, 1]."""
  return '  '.join(f'{k} {100 * v:5.1f}%' for k, v in accs.items())
