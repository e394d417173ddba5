"""The CLI tests' fork server serves every test of a process, not only the first."""

import os
import time

import pytest

from tests import cli_runner

FORKING = os.environ.get('JAXAUDIT_CLI_TESTS_FORK', '1') != '0'


@pytest.mark.parametrize('n', [0, 1])
def test_each_test_runs_its_calls_on_the_fork_server(n, tmp_path):
  """pytest changes PYTEST_CURRENT_TEST for every test and phase, and a Ray test of the same
  process sets RAY_* variables; neither may send later calls to a subprocess (each then pays
  ~2 s of imports)."""
  if not FORKING:
    pytest.skip('JAXAUDIT_CLI_TESTS_FORK=0')
  before = dict(cli_runner.calls)
  r = cli_runner.run_cli(['train', '--nosuchflag'], str(tmp_path))
  assert r.returncode != 0 and 'nosuchflag' in r.stderr, r.stderr
  srv = cli_runner._server
  now = cli_runner._stable(cli_runner._env())
  why = 'no server' if srv is None else (
      f'alive={srv.alive()} unavailable={cli_runner._unavailable} differing='
      f'{sorted(set(now.items()) ^ set(cli_runner._stable(srv.env).items()))}')
  assert cli_runner.calls['fork'] == before['fork'] + 1, (before, cli_runner.calls, why)


def test_a_call_with_its_own_environment_is_a_subprocess(tmp_path):
  before = dict(cli_runner.calls)
  r = cli_runner.run_cli(['train', '--nosuchflag'], str(tmp_path), env={'JAXAUDIT_X': '1'})
  assert r.returncode != 0 and 'nosuchflag' in r.stderr, r.stderr
  assert cli_runner.calls['subprocess'] == before['subprocess'] + 1


def test_ray_and_pytest_variables_keep_the_server(monkeypatch, tmp_path):
  if not FORKING:
    pytest.skip('JAXAUDIT_CLI_TESTS_FORK=0')
  cli_runner.run_cli(['train', '--nosuchflag'], str(tmp_path))    # the server exists
  monkeypatch.setenv('RAY_CLIENT_MODE', '0')
  monkeypatch.setenv('PYTHONBREAKPOINT', 'ray.util.rpdb._driver_set_trace')
  before = dict(cli_runner.calls)
  cli_runner.run_cli(['train', '--nosuchflag'], str(tmp_path))
  assert cli_runner.calls['fork'] == before['fork'] + 1


def test_line_reader_returns_lines_that_arrived_together_at_once():
  """Both the server's lines of one write are read without waiting for the timeout (a
  buffered reader hid the second from ``select``: `jaxaudit --help` waited 300 s)."""
  r, w = os.pipe()
  try:
    reader = cli_runner._LineReader(r)
    os.write(w, b'warning printed by an import\n{"ready": true}\npartial')
    t0 = time.monotonic()
    assert reader.read(30) == 'warning printed by an import\n'
    assert reader.read(30) == '{"ready": true}\n'
    assert time.monotonic() - t0 < 5
    assert reader.read(0.05) is None                 # no newline yet: the timeout
    os.write(w, b' line\n')
    assert reader.read(30) == 'partial line\n'
    os.close(w)
    w = None
    assert reader.read(30) is None                   # end of file
  finally:
    os.close(r)
    if w is not None:
      os.close(w)
