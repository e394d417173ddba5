"""The verifier cache entry is locked: concurrent audits train it once, and a dead holder frees it."""

import os
import signal
import subprocess
import sys
import time

import filelock
import jax
import numpy as np
import pytest

from jaxaudit import locking
from jaxaudit.audit.verifiers import get_verifiers
from jaxaudit.errors import CheckpointError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One small verifier request, identical in every process (so one cache key).
REQUEST = '''
from jaxaudit.data import load_dataset, make_split
from jaxaudit.models import get_model
from jaxaudit.train import Recipe
ds = load_dataset('digits')
split = make_split(ds, seed=0, ref_fraction=0.15, forget_fraction=0.1)
MODEL = get_model('mlp', 10, hidden=(16,))
RECIPE = Recipe(epochs=1, batch_size=64, learning_rate=3e-3)
KW = dict(num_verifiers=2, ratio=0.15, member_sample=50, seed=0)
'''

WORKER = REQUEST + '''
import hashlib, json, os, sys, time
from jaxaudit import checkpoint
from jaxaudit.audit.verifiers import get_verifiers
cache, sync, i = sys.argv[1:]
open(os.path.join(sync, f'ready-{i}'), 'w').close()
while not os.path.exists(os.path.join(sync, 'go')):   # start the three calls together
  time.sleep(0.01)
vs = get_verifiers(MODEL, ds, split, RECIPE, cache_dir=cache, **KW,
                   log=lambda s: print(s, flush=True))
digest = hashlib.sha256(json.dumps(checkpoint.param_digests(vs.params)).encode()).hexdigest()
print('RESULT', vs.from_cache, digest, flush=True)
'''

HOLDER = '''
import os, sys, time
from jaxaudit import locking
with locking.file_lock(sys.argv[1], what='a test entry'):
  open(sys.argv[2], 'w').close()
  while True:
    time.sleep(1)
'''


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.setdefault('JAX_PLATFORMS', 'cpu')
  return env


def _wait_for(paths, procs):
  """Polls until every path exists; fails (with the stderr) if a process exits first."""
  while not all(os.path.exists(p) for p in paths):
    for p in procs:
      if p.poll() is not None:
        out, err = p.communicate()
        pytest.fail(f'worker exited early (rc={p.returncode}):\n{out}\n{err}')
    time.sleep(0.05)


def test_concurrent_processes_train_the_cache_entry_once(tmp_path):
  cache, sync = tmp_path / 'cache', tmp_path / 'sync'
  sync.mkdir()
  procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(cache), str(sync), str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
           for i in range(3)]
  try:
    _wait_for([sync / f'ready-{i}' for i in range(3)], procs)
    (sync / 'go').touch()
    outs = [p.communicate() for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err
  results = [line.split() for out, _ in outs for line in out.splitlines()
             if line.startswith('RESULT')]
  assert len(results) == 3
  trained = [r for r in results if r[1] == 'False']
  assert len(trained) == 1, [out for out, _ in outs]
  assert sum('[verifiers] training' in out for out, _ in outs) == 1
  assert len({r[2] for r in results}) == 1            # the waiters loaded the trainer's params
  entries = os.listdir(cache)
  dirs = [e for e in entries if not e.endswith('.lock')]
  assert len(dirs) == 1 and set(entries) <= {dirs[0], dirs[0] + '.lock'}, entries


def test_lock_of_a_killed_process_is_released(tmp_path):
  lock_path, held = str(tmp_path / 'entry.lock'), str(tmp_path / 'held')
  p = subprocess.Popen([sys.executable, '-c', HOLDER, lock_path, held],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
  try:
    _wait_for([held], [p])
    with pytest.raises(filelock.Timeout):               # a live holder keeps it
      filelock.FileLock(lock_path).acquire(timeout=0)
  finally:
    p.send_signal(signal.SIGKILL)
    p.communicate()
  with locking.file_lock(lock_path, what='a test entry'):   # free at once: would block otherwise
    pass
  lock = filelock.FileLock(lock_path)
  lock.acquire(timeout=0)                               # raises Timeout if still held
  lock.release()


def _request():
  ns = {}
  exec(REQUEST, ns)
  return ns


def test_lock_file_only_with_a_cache_dir_and_corrupt_entry_is_a_clear_error(tmp_path, monkeypatch):
  ns = _request()
  monkeypatch.chdir(tmp_path)
  vs = get_verifiers(ns['MODEL'], ns['ds'], ns['split'], ns['RECIPE'], **ns['KW'])
  assert not vs.from_cache and os.listdir(tmp_path) == []
  cache = tmp_path / 'cache'
  locks_seen = []   # the lock files present while the verifiers train

  def log(line):
    if '[verifiers] training' in line:
      locks_seen.extend(f for f in os.listdir(cache) if f.endswith('.lock'))

  a = get_verifiers(ns['MODEL'], ns['ds'], ns['split'], ns['RECIPE'], cache_dir=str(cache),
                    log=log, **ns['KW'])
  assert locks_seen == [f'{a.cache_key}.lock'] and (cache / a.cache_key).is_dir()
  b = get_verifiers(ns['MODEL'], ns['ds'], ns['split'], ns['RECIPE'], cache_dir=str(cache),
                    **ns['KW'])
  assert b.from_cache and not a.from_cache
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), y)
  # A flipped weight byte in the cache entry is caught by the checkpoint's checksums.
  data = cache / a.cache_key / 'params' / 'ocdbt.process_0' / 'd'
  big = max(data.iterdir(), key=lambda f: f.stat().st_size)
  raw = bytearray(big.read_bytes())
  raw[len(raw) // 2] ^= 1
  big.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError, match=f'{a.cache_key}.*corrupt.*delete'):
    get_verifiers(ns['MODEL'], ns['ds'], ns['split'], ns['RECIPE'], cache_dir=str(cache),
                  **ns['KW'])
