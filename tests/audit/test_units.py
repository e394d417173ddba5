"""Group units: per-record arrays averaged over each group (the test's units)."""

import numpy as np

from jaxaudit.audit.runner import unit_means


def test_unit_means_equal_a_loop():
  rng = np.random.default_rng(0)
  units = rng.integers(0, 5, 40) * 7          # ids need not be contiguous
  a = rng.normal(size=(3, 2, 40))
  out = unit_means(units)(a)
  uniq = np.unique(units)
  assert out.shape == (3, 2, len(uniq))
  for j, u in enumerate(uniq):
    np.testing.assert_allclose(out[..., j], a[..., units == u].mean(-1))
  np.testing.assert_allclose(unit_means(units)(units == units[0]),
                             (uniq == units[0]).astype(float))
