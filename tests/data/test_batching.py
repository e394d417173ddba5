"""Tests of jaxaudit.data.batching."""

from __future__ import annotations

import numpy as np
import pytest

from jaxaudit.data import batch_indices, num_batches, pad_to_multiple
from jaxaudit.errors import ConfigError


@pytest.mark.parametrize('n,b,expected', [(0, 4, 0), (1, 4, 1), (4, 4, 1),
                                          (5, 4, 2), (17, 5, 4)])
def test_num_batches(n, b, expected):
  assert num_batches(n, b) == expected


def test_pad_to_multiple_axis0():
  x = np.arange(10, dtype=np.float32).reshape(5, 2)
  padded, mask = pad_to_multiple(x, 4)
  assert padded.shape == (8, 2) and padded.dtype == np.float32
  np.testing.assert_array_equal(padded[:5], x)
  np.testing.assert_array_equal(padded[5:], 0)
  assert mask.dtype == np.bool_ and mask.shape == (8,)
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0])


def test_pad_to_multiple_other_axis_and_exact_fit():
  x = np.ones((2, 3, 4), np.int32)
  padded, mask = pad_to_multiple(x, 2, axis=1)
  assert padded.shape == (2, 4, 4)
  np.testing.assert_array_equal(padded[:, 3], 0)
  np.testing.assert_array_equal(mask, [True, True, True, False])
  padded, mask = pad_to_multiple(x, 4, axis=-1)
  assert padded is x and mask.all() and mask.shape == (4,)


def test_batch_indices():
  idx, mask = batch_indices(10, 4)
  assert idx.shape == mask.shape == (3, 4)
  assert idx.dtype == np.int32 and mask.dtype == np.bool_
  np.testing.assert_array_equal(idx.ravel()[:10], np.arange(10))
  np.testing.assert_array_equal(idx.ravel()[10:], 0)
  np.testing.assert_array_equal(mask.ravel(), np.arange(12) < 10)
  # A masked sum over the padded batches equals the plain sum.
  values = np.arange(10.0) + 1
  assert np.sum(values[idx] * mask) == values.sum()
  idx, mask = batch_indices(0, 3)
  assert idx.shape == (0, 3) and mask.shape == (0, 3)


@pytest.mark.parametrize('call,pattern', [
    (lambda: num_batches(5, 0), 'batch_size must be >= 1'),
    (lambda: num_batches(-1, 2), 'n must be >= 0'),
    (lambda: batch_indices(5, 2.0), 'batch_size must be an integer'),
    (lambda: pad_to_multiple(np.ones(3), 0), 'multiple must be >= 1'),
    (lambda: pad_to_multiple(np.ones(3), 2, axis=1), 'axis must be <= 0'),
    (lambda: pad_to_multiple(np.float32(1.0), 2), 'at least one axis'),
])
def test_bad_arguments(call, pattern):
  with pytest.raises(ConfigError, match=pattern):
    call()
