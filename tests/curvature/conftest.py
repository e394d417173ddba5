"""Fixtures of the curvature tests."""

from __future__ import annotations

import jax
import pytest

from . import _helpers


@pytest.fixture(scope='session')
def problem() -> _helpers.Problem:
  """The tiny MLP (51 parameters) with 7 examples of 4 features, 3 classes."""
  return _helpers.make_problem()


@pytest.fixture
def x64():
  """Enables float64 inside one test and restores the previous setting."""
  with jax.enable_x64(True):
    yield
