"""The reference-check validation: shifted references and the summary of a workdir."""

import numpy as np
import pytest

from jaxaudit.audit import reference as reference_lib
from jaxaudit.errors import AuditError
from jaxaudit.study import reference_validation as rv


def test_shifted_reference_in_raw_units(digits):
  moments = reference_lib.dataset_standardisation(digits)
  idx = np.arange(40)
  same, y = rv.shifted_reference(digits, idx, 'none', 0.0, moments=moments, seed=0)
  np.testing.assert_allclose(same, digits.x_train[idx], atol=1e-5)
  np.testing.assert_array_equal(y, digits.y_train[idx])
  mean, std = moments
  raw = lambda x: x * std + mean
  bright, _ = rv.shifted_reference(digits, idx, 'brightness', 0.1, moments=moments, seed=0)
  expect = np.clip(raw(digits.x_train[idx]) + 0.1, 0, 1)
  np.testing.assert_allclose(raw(bright), expect, atol=1e-5)
  n1, _ = rv.shifted_reference(digits, idx, 'noise', 0.2, moments=moments, seed=3)
  n2, _ = rv.shifted_reference(digits, idx, 'noise', 0.2, moments=moments, seed=3)
  np.testing.assert_array_equal(n1, n2)                         # deterministic in the seed
  assert raw(n1).min() >= -1e-5 and raw(n1).max() <= 1 + 1e-5    # clipped to [0, 1]
  with pytest.raises(AuditError, match='unknown shift'):
    rv.shifted_reference(digits, idx, 'blur', 0.1, moments=moments, seed=0)


def test_ranges():
  assert rv._ranges([0, 1, 2, 5, 7, 8]) == '0..2, 5, 7..8'
  assert rv._ranges([]) == ''
