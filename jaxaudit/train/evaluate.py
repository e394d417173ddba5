"""Batched evaluation of one model or a stacked ensemble, in one compiled program.

Records are padded on the host to a bucket of sizes and run under ``lax.map``
(:func:`padded_layout`): up to ``batch_size`` records, one batch whose rows
are rounded up to a power of two; beyond, batches of ``batch_size`` rows and
a bucketed number of batches. Requests of nearby sizes (every audit queries
sets of its own size) therefore reuse one compiled program, and no per-N
padding or slicing program is compiled (both happen in NumPy). With several
devices the rows of every batch are split over them
(:func:`jaxaudit.train.devices.record_mesh`); the parameters are replicated.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxaudit.compilation import bucket_size
from jaxaudit.errors import ConfigError
from jaxaudit.models import make_apply_fn
from jaxaudit.train.devices import RECORD_AXIS, batched, place, record_mesh, resolve_strategy, \
    shard_map, to_host

Params = Any


@functools.lru_cache(maxsize=64)
def _logits_program(model: nn.Module, batch_size: int, ensemble: bool | str, strategy: str,
                    mesh: Mesh | None = None):
  """The jitted scoring program; with a ``mesh`` the rows of every batch are split over it."""
  apply_fn = make_apply_fn(model)

  def one_model(params, xb):   # xb (S, B, ...) -> (S, B, C)
    return jax.lax.map(lambda b: apply_fn(params, b), xb)

  rows = PartitionSpec(None, RECORD_AXIS)              # (S, B, ...): B split
  if ensemble == 'gathered':     # model k on rows idx[k] of a shared x
    def gathered(params, x, idx):      # idx (S, B) -> (S, B, C)
      return jax.lax.map(lambda r: apply_fn(params, x[r]), idx)
    fn = jax.vmap(gathered, in_axes=(0, None, 0))
    specs, out = (PartitionSpec(), PartitionSpec(), PartitionSpec(None, None, RECORD_AXIS)), \
        PartitionSpec(None, None, RECORD_AXIS)
  elif ensemble:
    fn = batched(one_model, strategy, (0, None))
    specs, out = (PartitionSpec(), rows), PartitionSpec(None, None, RECORD_AXIS)
  else:
    fn, specs, out = one_model, (PartitionSpec(), rows), rows
  if mesh is not None:
    fn = shard_map(fn, mesh=mesh, in_specs=specs, out_specs=out)
  return jax.jit(fn)


# Batches per call beyond one: powers of two up to 8, then 3 significant bits (<= 25% padding).
STEPS_POW2_UPTO = 8


def padded_layout(n: int, batch_size: int) -> tuple[int, int]:
  """(steps, rows per step) of the bucketed layout of n records (n >= 0).

  Up to ``batch_size`` records: one step, rows rounded up to a power of two
  (at most ``batch_size``); beyond: batches of ``batch_size`` rows, their
  number rounded up by :func:`jaxaudit.compilation.bucket_size` (powers of two
  up to :data:`STEPS_POW2_UPTO`, then 3 significant bits).
  """
  batch_size = max(1, int(batch_size))
  if n <= batch_size:
    return 1, max(1, min(batch_size, bucket_size(n, bits=1)))
  steps = math.ceil(n / batch_size)
  return bucket_size(steps, bits=3, pow2_upto=STEPS_POW2_UPTO), batch_size


def predict_logits(model: nn.Module, params: Params, x, *, batch_size: int = 512,
                   ensemble: bool = False, strategy: str = 'auto',
                   min_records: int = 0) -> np.ndarray:
  """Logits of one model or K stacked models.

  The records are padded on the host to :func:`padded_layout` (a shape
  bucket, so nearby N share one compiled program) and the padding is sliced
  off; a record's logits do not depend on the padding (up to float32
  rounding where the batch shape differs).

  Args:
    model: the Linen module.
    params: a single model's params, or stacked (K, ...) when ``ensemble``.
    x: (N, *input_shape) inputs (NumPy or a JAX array, copied to the host).
    batch_size: records per step (the last batch is padded).
    ensemble: whether params carry a leading model axis.
    strategy: ``vmap`` / ``map`` over models (``auto``: as for training).
    min_records: pad to the layout of at least this many records: a caller
      whose N varies under a known cap (the audit's class-matched samples)
      passes the cap, so that every request runs one program.
  Returns:
    float32 outputs, (N, *output_shape) or (K, N, *output_shape) ((N, C) logits for
    classifiers), as a NumPy array.
  """
  strategy = resolve_strategy(strategy, model)
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  steps, b = padded_layout(max(n, int(min_records)), batch_size)
  xp = np.zeros((steps * b,) + x.shape[1:], np.float32)
  xp[:n] = x
  xb = xp.reshape((steps, b) + x.shape[1:])
  mesh = record_mesh(b)
  program = _logits_program(model, b, ensemble, strategy, mesh)
  out = to_host(program(place(params, mesh), place(xb, mesh, PartitionSpec(None, RECORD_AXIS))))
  lead = 1 if ensemble else 0      # (K?, steps, b, *output_shape)
  out = out.reshape(out.shape[:lead] + (steps * b,) + out.shape[lead + 2:])
  return np.ascontiguousarray(out[:, :n] if lead else out[:n])


def predict_logits_gathered(model: nn.Module, params: Params, x, idx, *,
                            batch_size: int = 256) -> np.ndarray:
  """Logits of each of K stacked models on its own rows of one shared input array.

  One vmapped program over the models; each gathers its rows on the device, so
  the (K, L) selection is never copied on the host.

  Args:
    model: the Linen module.
    params: stacked (K, ...) parameters.
    x: (N, *input_shape) inputs shared by the models.
    idx: (K, L) int row indices into x, row k for model k.
    batch_size: rows per step (L is padded to :func:`padded_layout`).
  Returns:
    float32 (K, L, *output_shape): ``out[k, j] = model_k(x[idx[k, j]])``.
  """
  x = np.asarray(x, np.float32)
  idx = np.asarray(idx, np.int32)
  k, n = idx.shape
  steps, b = padded_layout(n, batch_size)
  ip = np.zeros((k, steps * b), np.int32)
  ip[:, :n] = idx
  mesh = record_mesh(b)
  program = _logits_program(model, b, 'gathered', 'vmap', mesh)
  out = to_host(program(place(params, mesh), place(x, mesh),
                        place(ip.reshape(k, steps, b), mesh,
                              PartitionSpec(None, None, RECORD_AXIS))))
  return out.reshape((k, steps * b) + out.shape[3:])[:, :n]


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
  # On the host: eager jnp ops would compile one program per N.
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return (z / z.sum(axis=-1, keepdims=True)).mean(axis=0).astype(np.float32)


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
  A language model (a module with an ``output`` attribute) reports its token top-1
  accuracy (:func:`jaxaudit.tasks.language.token_accuracy`).
  """
  if aggregate not in (None, MEAN_SOFTMAX):
    raise ConfigError(f'unknown ensemble aggregate {aggregate!r}; known: {MEAN_SOFTMAX!r}')
  sets = (('retain', dataset.x_train[split.retain], dataset.y_train[split.retain]),
          ('forget', dataset.x_train[split.forget], dataset.y_train[split.forget]),
          ('ref', dataset.x_train[split.ref], dataset.y_train[split.ref]),
          ('test', dataset.x_test[split.test], dataset.y_test[split.test]))
  if getattr(model, 'output', None) is not None:     # a language model: token top-1 accuracy
    from jaxaudit.tasks.language import token_accuracy
    model, score = model.clone(output='features'), token_accuracy
  else:
    score = accuracy
  out = {}
  for name, x, y in sets:
    if aggregate:
      out[name] = float(score(sisa_logits(model, params, x), y))
      continue
    acc = np.asarray(score(predict_logits(model, params, x, ensemble=ensemble), y))
    out[name] = acc.tolist() if ensemble else float(acc)
  return out


def format_accs(accs: dict[str, float]) -> str:
  """'retain  98.0%  forget  97.1%  ...' for a dict of accuracies in [0, 1]."""
  return '  '.join(f'{k} {100 * v:5.1f}%' for k, v in accs.items())
