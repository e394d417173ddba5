"""Shared fixtures: small real data (scikit-learn digits) and paths to shared data."""

import os

import numpy as np
import pytest

# Tests never write into the user's home: no persistent XLA compilation cache
# (jaxaudit.compilation), neither here nor in the CLI subprocesses the tests start.
os.environ['JAXAUDIT_NO_COMPILATION_CACHE'] = '1'

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data'))


def shared_file(name: str) -> str:
  path = os.path.join(SHARED_DATA, name)
  if not os.path.exists(path):
    pytest.skip(f'{path} not available')
  return path


@pytest.fixture(scope='session')
def digits():
  from jaxaudit.data import load_dataset
  return load_dataset('digits')


@pytest.fixture(scope='session')
def digits_split(digits):
  from jaxaudit.data import make_split
  return make_split(digits, seed=0, ref_fraction=0.15, forget_fraction=0.1)
