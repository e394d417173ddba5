"""Pad + mask helpers so that every evaluation batch has one static shape.

Host-side NumPy: pad or index on the host, then transfer; a jitted function
sees a single shape and compiles once. Padded entries carry ``mask == False``
and must be excluded from every reduction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxaudit.data.validate import check_int
from jaxaudit.errors import ConfigError


def num_batches(n: int, batch_size: int) -> int:
  """Number of batches of ``batch_size`` needed for ``n`` examples, ceil(n/b).

  Raises:
    ConfigError: n < 0 or batch_size < 1.
  """
  n = check_int('n', n, minimum=0, error=ConfigError)
  batch_size = check_int('batch_size', batch_size, minimum=1, error=ConfigError)
  return -(-n // batch_size)


def pad_to_multiple(x: Any, multiple: int,
                    axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Zero-pads ``x`` along ``axis`` up to a multiple of ``multiple``.

  Args:
    x: array-like with ``N`` entries along ``axis``.
    multiple: the padded length is the smallest multiple of it that is >= N.
    axis: the axis to pad.

  Returns:
    ``(padded, mask)``: padded has x's dtype and shape except
    ``N_padded = multiple * ceil(N / multiple)`` along axis (x itself, not a
    copy, when no padding is needed); mask is bool ``(N_padded,)``, True for
    the N real entries.

  Raises:
    ConfigError: multiple < 1 or axis out of range.
  """
  x = np.asarray(x)
  if x.ndim == 0:
    raise ConfigError('pad_to_multiple needs an array with at least one axis')
  axis = check_int('axis', axis, minimum=-x.ndim, maximum=x.ndim - 1,
                   error=ConfigError) % x.ndim
  multiple = check_int('multiple', multiple, minimum=1, error=ConfigError)
  n = x.shape[axis]
  n_padded = num_batches(n, multiple) * multiple
  mask = np.arange(n_padded) < n
  if n_padded == n:
    return x, mask
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, n_padded - n)
  return np.pad(x, widths), mask


def batch_indices(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices ``0..n-1`` cut into equal batches, the last one padded.

  Args:
    n: number of examples.
    batch_size: examples per batch.

  Returns:
    ``(indices, mask)``: indices int32 ``(num_batches, batch_size)`` in order,
    padded with index 0; mask bool of the same shape, False on padding.

  Raises:
    ConfigError: n < 0, n >= 2**31 or batch_size < 1.
  """
  check_int('n', n, maximum=np.iinfo(np.int32).max, error=ConfigError)
  nb = num_batches(n, batch_size)
  flat = np.arange(nb * batch_size, dtype=np.int64)
  mask = flat < n
  indices = np.where(mask, flat, 0).astype(np.int32)
  return (indices.reshape(nb, batch_size), mask.reshape(nb, batch_size))
