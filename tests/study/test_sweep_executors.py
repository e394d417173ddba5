"""Where the sweep's cells run (jaxaudit.study.executors): static partition, shards, Ray."""

import os
import shutil
import signal
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from jaxaudit import io_utils, locking
from jaxaudit.errors import ConfigError
from jaxaudit.study import cells as cells_lib
from jaxaudit.study import executors, sweep
from jaxaudit.study.cells import Cell
from experiments.configs import sweep_local


def small_config():
  """The tiny sweep with 2 groups (seeds 0, 1) x 2 cheap methods, 1-epoch models."""
  c = sweep_local.get_config('tiny')
  c.methods = 'original,gradient_ascent'
  c.seeds = '0,1'
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  t = c.entries.digits_mlp.config
  t.train.epochs = 1
  t.audit.verifier_epochs = 1
  return c


def stable(rows):
  return [sweep.stable_row(r) for r in rows]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The in-process sweep of small_config(): (workdir, rows of its results file)."""
  wd = str(tmp_path_factory.mktemp('inprocess'))
  sweep.run_sweep(small_config(), wd, log=lambda s: None)
  rows = sweep.read_results(os.path.join(wd, 'results.jsonl'), small_config())
  assert len(rows) == 4 and all(r['error'] is None for r in rows), [r['error'] for r in rows]
  return wd, rows


# ----------------------------------------------------------------------------- partition, shards


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.integers(1, 4), min_size=0, max_size=7), count=st.integers(1, 5))
def test_partition_covers_every_cell_once_and_never_splits_a_group(groups, count):
  cells = [Cell('e', f'random{10 + g}', 0, f'm{j}') for g, n in enumerate(groups)
           for j in range(n)]
  parts = [executors.partition_cells(cells, i, count) for i in range(count)]
  assert sorted(c for p in parts for c in p) == sorted(cells)        # each cell exactly once
  owner = {c.group: i for i, p in enumerate(parts) for c in p}
  assert all(owner[c.group] == i for i, p in enumerate(parts) for c in p)   # groups whole
  assert parts == [executors.partition_cells(cells, i, count) for i in range(count)]
  for p in parts:                                                    # plan order kept
    assert p == [c for c in cells if c in p]


def test_partition_round_robins_groups_of_the_plan():
  cells = cells_lib.plan_cells(small_config())
  assert [c.key for c in executors.partition_cells(cells, 1, 2)] == [
      'digits_mlp/random30/s1/original', 'digits_mlp/random30/s1/gradient_ascent']
  assert executors.partition_cells(cells, 0, 1) == cells
  with pytest.raises(ConfigError, match='process index 2 of 2'):
    executors.partition_cells(cells, 2, 2)


def test_shards_are_read_with_the_main_file_once_per_key(tmp_path):
  res = str(tmp_path / 'results.jsonl')
  assert executors.shard_path(res, 0, 1) == res
  assert executors.shard_path(res, 1, 3) == str(tmp_path / 'results.p1-of-3.jsonl')
  assert executors.shard_path('out/table', 0, 2) == 'out/table.p0-of-2'
  c = small_config()
  keys = [cell.key for cell in cells_lib.plan_cells(c)]
  io_utils.append_jsonl(executors.shard_path(res, 1, 2), dict(key=keys[3], v=1))
  io_utils.append_jsonl(executors.shard_path(res, 0, 2), dict(key=keys[1], v=2))
  io_utils.append_jsonl(res, dict(key=keys[1], v=3))              # the main file wins
  io_utils.append_jsonl(res, dict(key='gone/cell', v=4))
  (tmp_path / 'results.p2-of-2.jsonl').write_text('{"key": "not a shard"}\n')
  (tmp_path / 'other.p0-of-2.jsonl').write_text('{"key": "other table"}\n')
  with open(executors.shard_path(res, 0, 2), 'a') as f:
    f.write('{"key": "trunc')                                     # a writer killed mid-line
  assert executors.shard_paths(res) == [executors.shard_path(res, i, 2) for i in (0, 1)]
  assert [(r['key'], r['v']) for r in sweep.read_results(res)] == [
      (keys[1], 3), ('gone/cell', 4), (keys[3], 1)]
  assert [r['key'] for r in sweep.read_results(res, c)] == [keys[1], keys[3], 'gone/cell']
  assert open(executors.shard_path(res, 0, 2)).read().endswith('trunc')   # not repaired


def test_executor_names_and_options():
  assert executors.make_executor().name == 'inprocess'
  with pytest.raises(ConfigError, match="unknown executor 'dask'"):
    executors.make_executor('dask')
  with pytest.raises(ConfigError, match='takes no options'):
    executors.make_executor('inprocess', workers=2)


def test_ray_missing_is_one_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'ray', None)      # `import ray` raises ImportError
  with pytest.raises(ConfigError, match=r"pip install 'jaxaudit\[ray\]'"):
    executors.make_executor('ray')


# ----------------------------------------------------------------------------- end to end


def test_group_preparation_waits_for_the_group_lock(reference):
  """A second process preparing a group waits for the first (here: the test holds it)."""
  wd, _ = reference
  group = ('digits_mlp', 'random30', 0)
  lines, out = [], {}
  cache = executors.GroupCache(small_config(), wd, lines.append)
  with locking.file_lock(executors.group_lock_path(wd, group), what='test'):
    t = threading.Thread(target=lambda: out.setdefault('g', cache.get(group)))
    t.start()
    deadline = time.time() + 60
    while not any('[lock] waiting' in l for l in lines) and time.time() < deadline:
      time.sleep(0.05)
    assert 'g' not in out and any('[lock] waiting' in l for l in lines), lines
  t.join(120)
  assert not isinstance(out['g'], Exception) and out['g'].seed == 0
  assert io_utils.written_by_jaxaudit(cells_lib.group_dir(wd, group))   # the lock is outside


def test_static_partition_gives_the_inprocess_table(tmp_path, reference):
  c, wd = small_config(), str(tmp_path)
  res = os.path.join(wd, 'results.jsonl')
  for i in (0, 1):         # two hosts, one after the other, on one workdir
    sweep.run_sweep(c, wd, process_index=i, process_count=2, log=lambda s: None)
  assert not os.path.exists(res)
  shards = executors.shard_paths(res)
  assert [os.path.basename(p) for p in shards] == ['results.p0-of-2.jsonl',
                                                    'results.p1-of-2.jsonl']
  assert [{r['seed'] for r in io_utils.read_jsonl(p)} for p in shards] == [{0}, {1}]
  rows = sweep.read_results(res, c)
  assert stable(rows) == stable(reference[1])
  # A re-run (also with another process count) computes nothing and writes nothing.
  sizes = [os.path.getsize(p) for p in shards]
  for i, n in ((0, 2), (1, 2), (0, 1)):
    lines = []
    again = sweep.run_sweep(c, wd, process_index=i, process_count=n, log=lines.append)
    assert any(' 0 to run' in l for l in lines), lines
    assert stable(again) == stable(rows)
  assert [os.path.getsize(p) for p in shards] == sizes and not os.path.exists(res)


@pytest.mark.filterwarnings('ignore:os.fork')   # Ray starts its processes after JAX
def test_ray_sweep_survives_a_killed_worker(tmp_path, reference, monkeypatch):
  """2 Ray actors on a local cluster; one is SIGKILLed after the first row: its cell runs
  again on a new actor, every cell is written once, and the table is the in-process one."""
  try:
    import ray
  except ImportError:
    pytest.skip('ray is not installed (pip install "jaxaudit[ray]")')
  monkeypatch.setenv('RAY_USAGE_STATS_ENABLED', '0')
  monkeypatch.delenv('JAXAUDIT_NO_COMPILATION_CACHE', raising=False)   # the actors' cache only
  # The in-process sweep's workdir without its results: the groups (data, originals,
  # verifiers) are prepared, so the actors only run cells (what Ray adds is scheduling,
  # replacement of a dead actor and writing each row once).
  c, wd = small_config(), str(tmp_path / 'w')
  shutil.copytree(reference[0], wd)
  os.remove(os.path.join(wd, 'results.jsonl'))
  killed = []

  def kill_one(row):
    del row
    if not killed:
      pid = ex.busy_pids()[0]
      os.kill(pid, signal.SIGKILL)
      killed.append(pid)

  ex = executors.RayExecutor(workers=2, on_row=kill_one, log_to_driver=False,
                             compilation_cache=str(tmp_path / 'xla'))
  lines = []
  rows = sweep.run_sweep(c, wd, executor=ex, log=lines.append)
  assert killed and ex.replaced >= 1 and any('died running' in l for l in lines), lines
  assert not ray.is_initialized()                  # the cluster it started is shut down
  keys = [r['key'] for r in io_utils.read_jsonl(os.path.join(wd, 'results.jsonl'))]
  assert len(keys) == len(set(keys)) == 4
  assert stable(rows) == stable(reference[1])
  assert os.listdir(tmp_path / 'xla')              # the actors shared one compilation cache
