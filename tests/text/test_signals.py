"""Per-document signals against naive loops over records and tokens."""

import math
import zlib

import numpy as np
import pytest

from jaxaudit.errors import ConfigError, DataError
from jaxaudit.text import signals

T = 12


def _features(shape, seed=0):
  """Random features (*shape, T, 5) with right padding; one record without valid tokens."""
  rng = np.random.default_rng(seed)
  f = np.zeros(shape + (T, 5))
  lengths = rng.integers(1, T + 1, shape)
  lengths.flat[1] = 0
  valid = np.arange(T) < lengths[..., None]
  f[..., 0] = -rng.exponential(2.0, shape + (T,))
  f[..., 1] = -rng.uniform(0.5, 3.0, shape + (T,))
  f[..., 2] = rng.uniform(0.0, 2.0, shape + (T,))
  f[..., 2].flat[3] = 0.0   # a zero sigma (floored)
  f[..., 3] = rng.integers(0, 50, shape + (T,))
  f[..., 4] = valid
  f[..., :4] *= valid[..., None]
  return f


def _count(k, n):
  return max(math.ceil(round(k * n, 9)), 1)


def _naive(f, fn):
  out = np.empty(f.shape[:-2])
  for idx in np.ndindex(*f.shape[:-2]):
    rec = f[idx]
    toks = [rec[t] for t in range(T) if rec[t, 4] > 0.5]
    out[idx] = fn(toks) if toks else np.nan
  return out


def _lowest(vals, k):
  vals = sorted(vals)
  c = _count(k, len(vals))
  return sum(vals[:c]) / c


@pytest.mark.parametrize('shape', [(7,), (3, 6)])
@pytest.mark.parametrize('k', [0.2, 0.5, 1.0])
def test_signals_match_naive_loops(shape, k):
  f = _features(shape, seed=len(shape))
  np.testing.assert_allclose(signals.mean_loglik(f),
                             _naive(f, lambda ts: np.mean([t[0] for t in ts])), rtol=1e-12)
  np.testing.assert_allclose(signals.min_k(f, k),
                             _naive(f, lambda ts: _lowest([t[0] for t in ts], k)), rtol=1e-12)
  zpp = lambda ts: _lowest([(t[0] - t[1]) / max(t[2], 1e-6) for t in ts], k)
  np.testing.assert_allclose(signals.min_k_plus_plus(f, k), _naive(f, zpp), rtol=1e-12)
  bits = np.arange(1, shape[-1] + 1) * 80.0
  want = np.empty(shape)
  for idx in np.ndindex(*shape):
    rec = f[idx]
    s = sum(rec[t, 0] for t in range(T) if rec[t, 4] > 0.5)
    want[idx] = s / bits[idx[-1]] if rec[:, 4].any() else np.nan
  np.testing.assert_allclose(signals.zlib_ratio(f, bits), want, rtol=1e-12)
  assert np.isnan(signals.min_k(f, k).flat[1])
  for name in signals.SIGNALS:
    out = signals.compute(name, f, zlib_bits=bits, k=k)
    assert out.shape == shape


def test_float_rounding_of_k():
  """ceil(0.2 * 15) is 3, not 4 (0.2 * 15 == 3.0000000000000004 in floating point)."""
  f = np.zeros((1, 15, 5))
  f[0, :, 0] = -np.arange(15.0)
  f[0, :, 4] = 1
  assert signals.min_k(f, 0.2)[0] == pytest.approx(-(14 + 13 + 12) / 3)


def test_min_k_plus_plus_from_explicit_logits():
  rng = np.random.default_rng(3)
  n, v = 4, 9
  logits = rng.normal(size=(n, T, v)) * 2
  tokens = rng.integers(0, v, (n, T))
  lengths = np.array([T, 5, 1, 9])
  f = np.zeros((n, T, 5))
  for i in range(n):
    for t in range(lengths[i]):
      p = np.exp(logits[i, t]) / np.exp(logits[i, t]).sum()
      logp = np.log(p)
      mu = (p * logp).sum()
      f[i, t] = [logp[tokens[i, t]], mu, np.sqrt((p * logp ** 2).sum() - mu ** 2),
                 np.argmax(p), 1.0]
  k = 0.3
  for i, score in enumerate(signals.min_k_plus_plus(f, k)):
    z = []
    for t in range(lengths[i]):   # the formula of Zhang et al., straight from the softmax
      p = np.exp(logits[i, t]) / np.exp(logits[i, t]).sum()
      mean = sum(p[j] * np.log(p[j]) for j in range(v))
      var = sum(p[j] * (np.log(p[j]) - mean) ** 2 for j in range(v))
      z.append((np.log(p[tokens[i, t]]) - mean) / np.sqrt(var))
    z.sort()
    c = _count(k, lengths[i])
    assert score == pytest.approx(np.mean(z[:c]), rel=1e-9)


def test_zlib_bits():
  texts = ['hello hello hello hello', 'the quick brown fox', '']
  got = signals.zlib_bits(texts)
  assert got.shape == (3,) and got.dtype == np.float64
  assert list(got) == [8 * len(zlib.compress(t.encode())) for t in texts]
  np.testing.assert_array_equal(signals.zlib_bits([t.encode() for t in texts]), got)
  np.testing.assert_array_equal(signals.zlib_bits(np.array(texts)), got)
  with pytest.raises(DataError):
    signals.zlib_bits('hello')


def test_errors():
  f = _features((4,))
  with pytest.raises(ConfigError, match='unknown signal'):
    signals.compute('ppl', f)
  with pytest.raises(ConfigError, match='zlib_bits'):
    signals.compute('zlib', f)
  with pytest.raises(ConfigError, match='k must'):
    signals.min_k(f, 0.0)
  with pytest.raises(DataError, match='features'):
    signals.mean_loglik(np.zeros((4, T)))
  with pytest.raises(DataError, match='zlib_bits'):
    signals.zlib_ratio(f, np.ones(3))
