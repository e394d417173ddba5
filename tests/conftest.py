"""Shared fixtures: small real data (scikit-learn digits) and paths to shared data."""

import os
import shutil
import sys
import tempfile

import pytest

# Tests never write into the user's home. Every JAX process of a test run (the test workers,
# the CLI calls, the README blocks and the scale-out workers they start) shares one persistent
# XLA compilation cache in a temporary directory of this run: made by the first process
# (xdist's controller; its workers and their subprocesses inherit the variables) and removed
# when that process ends. A program compiled by one process is loaded by the next, as a
# user's repeated CLI calls load theirs (jaxaudit.compilation). Results are the same: the
# cache holds the compiled executable of the same program.
_OWN_CACHE = None
if not os.environ.get('JAXAUDIT_TESTS_XLA_CACHE'):
  try:
    _OWN_CACHE = tempfile.mkdtemp(prefix='jaxaudit-tests-xla-')
    os.environ['JAXAUDIT_TESTS_XLA_CACHE'] = _OWN_CACHE
  except OSError:   # no writable temporary directory: every process compiles its own programs
    os.environ['JAXAUDIT_NO_COMPILATION_CACHE'] = '1'
if os.environ.get('JAXAUDIT_TESTS_XLA_CACHE'):
  os.environ['JAXAUDIT_CACHE_DIR'] = os.environ['JAXAUDIT_TESTS_XLA_CACHE']       # CLI commands
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['JAXAUDIT_TESTS_XLA_CACHE']  # any process
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
  if 'jax' in sys.modules:   # imported before this file: set the same options in this process
    import jax
    jax.config.update('jax_compilation_cache_dir', os.environ['JAXAUDIT_TESTS_XLA_CACHE'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, 'workerinput'):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


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


# The files with the longest run time first (measured with `--durations=0`, thirteenth
# session), so that `-n 2 --dist loadfile` hands out the long files while the short ones
# fill the gaps, instead of ending on one long file while the other worker idles.
# Only the order changes; every file still runs on one worker.
LONGEST_FIRST = (
    'tests/test_demo.py', 'tests/study/test_sweep_executors.py', 'tests/scaleout/test_devices.py',
    'tests/test_pipeline.py', 'tests/test_cli.py', 'tests/test_readme.py', 'tests/test_cli_text.py',
    'tests/tune/test_tune.py', 'tests/models/test_conv_patches.py', 'tests/audit/test_decision.py',
    'tests/train/test_ensemble.py', 'tests/train/test_loop.py', 'tests/audit/test_bank.py',
    'tests/study/test_fakes.py', 'tests/study/test_robustness.py', 'tests/peers/test_peers.py',
    'tests/unlearn/test_curvature_methods.py', 'tests/models/test_models.py',
    'tests/study/test_fakes_targeted.py', 'tests/test_bad_inputs.py')


def pytest_collection_modifyitems(session, config, items):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rank = {p: i for i, p in enumerate(LONGEST_FIRST)}
  key = lambda item: rank.get(os.path.relpath(str(item.path), root), len(rank))
  items[:] = sorted(items, key=key)    # stable: the rest keep their collection order
