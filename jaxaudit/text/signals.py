"""Per-document membership signals of a language model, from per-token features.

Every signal reads the features of :class:`jaxaudit.models.transformer.TransformerLM`
(``output='features'``), an array (..., n, T, 5) over n records of T positions
in the order of :data:`jaxaudit.models.transformer.FEATURES` (logp, mu, sigma,
argmax, valid), and returns (..., n) float64 scores, higher = more familiar to
the model (more likely a training member). A record without a valid token
scores NaN. Everything is vectorised NumPy on the host (sorts with masking).

* ``mean_loglik``: the mean log-probability of the record's tokens (minus the
  LOSS attack's mean NLL).
* ``min_k``: Min-K% (Shi et al. 2024), the mean of the lowest ceil(k·L)
  token log-probs, L = the record's valid tokens.
* ``min_k_plus_plus``: Min-K%++ (Zhang et al. 2024), each token's
  (logp − mu) / sigma, then the mean of the lowest ceil(k·L).
* ``zlib``: :func:`zlib_ratio`, the record's total log-probability over its
  zlib-compressed length (Carlini et al. 2021, negated so that higher = more
  familiar).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from jaxaudit.errors import ConfigError, DataError

SIGNALS = ('mean_loglik', 'min_k', 'min_k_plus_plus', 'zlib')
SIGMA_FLOOR = 1e-6
_LOGP, _MU, _SIGMA, _VALID = 0, 1, 2, 4


def _check(f) -> np.ndarray:
  f = np.asarray(f, np.float64)
  if f.ndim < 3 or f.shape[-1] != 5:
    raise DataError(f'features must have shape (..., n, T, 5), got {f.shape}')
  return f


def _check_k(k: float) -> float:
  if not 0 < k <= 1:
    raise ConfigError(f'k must lie in (0, 1], got {k!r}')
  return float(k)


def _valid(f: np.ndarray) -> np.ndarray:
  return f[..., _VALID] > 0.5


def _lowest_mean(values: np.ndarray, valid: np.ndarray, k: float) -> np.ndarray:
  """Mean of the lowest ceil(k·L) valid entries along the last axis (NaN where L = 0).

  ceil is taken of k·L rounded to 9 decimals, so that float error (0.2·15 =
  3.0000000000000004) does not add a token; the count is at least 1.
  """
  k = _check_k(k)
  length = valid.sum(-1)
  count = np.maximum(np.ceil(np.round(k * length, 9)), 1).astype(np.int64)
  ranked = np.sort(np.where(valid, values, np.inf), axis=-1)
  take = np.arange(values.shape[-1]) < count[..., None]
  total = np.where(take, ranked, 0.0).sum(-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(length > 0, total / count, np.nan)


def mean_loglik(f) -> np.ndarray:
  """Mean log-probability of each record's valid tokens.

  Args:
    f: (..., n, T, 5) features.
  Returns:
    (..., n) float64: sum_t valid·logp / L (NaN where L = 0).
  """
  f = _check(f)
  valid = _valid(f)
  length = valid.sum(-1)
  total = np.where(valid, f[..., _LOGP], 0.0).sum(-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(length > 0, total / length, np.nan)


def min_k(f, k: float = 0.2) -> np.ndarray:
  """Min-K%: mean of the lowest ceil(k·L) token log-probs of each record.

  Args:
    f: (..., n, T, 5) features.
    k: fraction of tokens in (0, 1] (ConfigError otherwise).
  Returns:
    (..., n) float64 (NaN where L = 0).
  """
  f = _check(f)
  return _lowest_mean(f[..., _LOGP], _valid(f), k)


def min_k_plus_plus(f, k: float = 0.2) -> np.ndarray:
  """Min-K%++: mean of the lowest ceil(k·L) standardised token log-probs.

  Each valid token scores (logp − mu) / max(sigma, 1e-6), mu and sigma the mean
  and standard deviation of log p(z) under the model's own next-token
  distribution at that position (features 1 and 2).

  Args:
    f: (..., n, T, 5) features.
    k: fraction of tokens in (0, 1] (ConfigError otherwise).
  Returns:
    (..., n) float64 (NaN where L = 0).
  """
  f = _check(f)
  z = (f[..., _LOGP] - f[..., _MU]) / np.maximum(f[..., _SIGMA], SIGMA_FLOOR)
  return _lowest_mean(z, _valid(f), k)


def zlib_ratio(f, zlib_bits) -> np.ndarray:
  """zlib ratio: total log-probability of a record over its zlib code length.

  ``score = (sum over valid tokens of logp, in nats) / zlib_bits``, where
  ``zlib_bits`` is 8 × the length in bytes of ``zlib.compress`` of the record's
  UTF-8 text (:func:`zlib_bits`). The score is negative; higher (closer to 0)
  means the model finds the record cheap relative to its generic
  compressibility, i.e. more familiar. (Carlini et al.'s ratio is the
  negation, up to the constant per-token vs per-record normalisation.)

  Args:
    f: (..., n, T, 5) features.
    zlib_bits: (n,) (or broadcastable to (..., n)) positive compressed lengths in bits.
  Returns:
    (..., n) float64 (NaN where the record has no valid token).
  """
  f = _check(f)
  bits = np.asarray(zlib_bits, np.float64)
  try:
    bits = np.broadcast_to(bits, f.shape[:-2])
  except ValueError:
    raise DataError(f'zlib_bits of shape {bits.shape} does not match {f.shape[-3]} '
                    f'records of features {f.shape}') from None
  if not np.all(bits > 0):
    raise DataError('zlib_bits must be positive compressed lengths in bits')
  valid = _valid(f)
  total = np.where(valid, f[..., _LOGP], 0.0).sum(-1)
  return np.where(valid.any(-1), total / bits, np.nan)


def zlib_bits(texts: Sequence[str | bytes]) -> np.ndarray:
  """Compressed length in bits of each text: 8 · len(zlib.compress(utf8 bytes)).

  Args:
    texts: n strings (encoded as UTF-8) or byte strings.
  Returns:
    (n,) float64, default zlib level.
  """
  if isinstance(texts, (str, bytes)):
    raise DataError('zlib_bits takes a sequence of texts, not a single string')
  out = []
  for t in texts:
    if isinstance(t, np.str_):
      t = str(t)
    if isinstance(t, str):
      t = t.encode('utf-8')
    elif not isinstance(t, (bytes, bytearray, np.bytes_)):
      raise DataError(f'zlib_bits takes str or bytes texts, got {type(t).__name__}')
    out.append(8 * len(zlib.compress(bytes(t))))
  return np.asarray(out, np.float64)


def compute(name: str, f, zlib_bits=None, k: float = 0.2) -> np.ndarray:
  """Signal ``name`` (one of :data:`SIGNALS`) of features (..., n, T, 5) -> (..., n).

  ``zlib_bits`` (n,) is required by ``'zlib'``; ``k`` is used by the Min-K% signals.
  """
  if name == 'mean_loglik':
    return mean_loglik(f)
  if name == 'min_k':
    return min_k(f, k)
  if name == 'min_k_plus_plus':
    return min_k_plus_plus(f, k)
  if name == 'zlib':
    if zlib_bits is None:
      raise ConfigError("signal 'zlib' needs zlib_bits (the records' compressed lengths)")
    return zlib_ratio(f, zlib_bits)
  raise ConfigError(f'unknown signal {name!r}; choose one of {SIGNALS}')


__all__ = ['SIGNALS', 'mean_loglik', 'min_k', 'min_k_plus_plus', 'zlib_ratio', 'zlib_bits',
           'compute', 'SIGMA_FLOOR']
