"""Two processes joined by jax.distributed on 127.0.0.1 (4 simulated CPU devices each)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxaudit import checkpoint, distributed
from jaxaudit.errors import ConfigError
from jaxaudit.study.device_scaling import host_devices_env
from jaxaudit.train import train_ensemble

from tests.scaleout import worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(process_id: int, out: str, port: int) -> subprocess.Popen:
  env = host_devices_env(4)
  env['JAX_PLATFORMS'] = 'cpu'
  return subprocess.Popen(
      [sys.executable, '-m', 'tests.scaleout.worker', 'distributed', out, str(process_id),
       str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Messages of a platform that cannot join processes (no gloo, no loopback sockets).
PLATFORM_LIMITS = ('gloo', 'Address family not supported', 'Operation not permitted',
                   'UNAVAILABLE: Failed to connect')


def test_two_processes_train_one_sharded_ensemble(tmp_path):
  out, port = str(tmp_path / 'job'), free_port()
  procs = [start(i, out, port) for i in (0, 1)]
  errs = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the 2-process job did not finish in 300 s')
    errs.append(err)
  if any(p.returncode for p in procs):
    tail = '\n'.join(e[-1500:] for e in errs)
    if any(m in tail for m in PLATFORM_LIMITS):
      pytest.skip(f'this platform cannot run a 2-process JAX job: {tail.strip().splitlines()[-1]}')
    pytest.fail(f'a process of the job failed:\n{tail}')
  with open(f'{out}.json') as f:   # written once, by process 0
    report = json.load(f)
  assert report['processes'] == 2 and report['devices'] == 8 and report['local_devices'] == 4
  assert report['k8_devices'] == 8 and report['k6_devices'] == 8   # 6 padded to 8: all take part
  for pid in (0, 1):
    got = np.load(f'{out}.p{pid}.npz')
    for k in (8, 6):   # the same ensemble trained here, in one process on one device
      ds, model, subsets, keys, recipe = worker.problem(k)
      ref = train_ensemble(model, ds.x_train, ds.y_train, subsets, keys, recipe)
      for i, leaf in enumerate(jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(got[f'k{k}_{i}'], np.asarray(leaf), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got[f'k{k}_losses'], ref.losses, rtol=1e-5, atol=1e-6)
  # The checkpoint both processes wrote through Orbax loads here, verified, equal to the same.
  params, meta = checkpoint.load_checkpoint(f'{out}.ckpt')
  assert meta['integrity'] == 'verified' and meta['ensemble_size'] == 8
  got = np.load(f'{out}.p0.npz')
  for i, leaf in enumerate(jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(leaf), got[f'k8_{i}'])


def test_job_flags_are_checked_before_anything_starts():
  with pytest.raises(ConfigError, match='all of'):
    distributed.initialize('127.0.0.1:1234', None, None)
  with pytest.raises(ConfigError, match='HOST:PORT'):
    distributed.initialize('localhost', 2, 0)
  with pytest.raises(ConfigError, match='process_id'):
    distributed.initialize('127.0.0.1:1234', 2, 2)
  assert distributed.initialize(mode='off') is False
  assert distributed.initialize() is False      # auto, nothing in the environment
  assert not distributed.collective() and distributed.is_primary()


@pytest.mark.parametrize('env, expected', [
    ({}, False), ({'SLURM_NTASKS': '1'}, False), ({'SLURM_NTASKS': '4'}, True),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True), ({'TPU_WORKER_HOSTNAMES': 'a,b'}, True),
    ({'SLURM_NTASKS': 'x'}, False)])
def test_environment_detection(env, expected):
  assert distributed.environment_is_multiprocess(env) is expected


def _jaxaudit_job(args: list[str], port: int, devices_per_process: int = 2) -> list[str]:
  """Runs ``jaxaudit ARGS`` as a 2-process job on 127.0.0.1; the outputs of both processes."""
  env = host_devices_env(devices_per_process)
  env['JAX_PLATFORMS'] = 'cpu'
  exe = os.path.join(os.path.dirname(sys.executable), 'jaxaudit')
  procs = [subprocess.Popen([exe, *args, f'--coordinator_address=127.0.0.1:{port}',
                             '--num_processes=2', f'--process_id={i}'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in (0, 1)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


@pytest.mark.slow
def test_cli_job_of_two_processes_gives_the_single_process_audit(tmp_path):
  wd = str(tmp_path / 'wd')
  _jaxaudit_job(['train', f'--workdir={wd}', '--config.train.epochs=10'], free_port())
  outs = _jaxaudit_job(['audit', f'--workdir={wd}', '--target=original'], free_port())
  lines = [[l for l in out.splitlines() if l.startswith('[audit] original:')] for out in outs]
  assert lines[0] == lines[1] and len(lines[0]) == 1
  # The same workdir audited by one process on one device, with verifiers of its own.
  import shutil
  shutil.rmtree(os.path.join(wd, 'verifiers'))
  shutil.rmtree(os.path.join(wd, 'audits'))
  exe = os.path.join(os.path.dirname(sys.executable), 'jaxaudit')
  one = subprocess.run([exe, 'audit', f'--workdir={wd}', '--target=original'],
                       capture_output=True, text=True, timeout=400)
  assert one.returncode == 0, one.stderr[-3000:]
  assert [l for l in one.stdout.splitlines() if l.startswith('[audit] original:')] == lines[0]


SWEEP_OVERRIDES = ['--config=experiments/configs/sweep_local.py:tiny',
                   '--config.methods=original,gradient_ascent', '--config.seeds=0,1',
                   '--config.peers.lira_shadows=0', '--config.peers.rmia_refs=0',
                   '--config.entries.digits_mlp.config.train.epochs=1',
                   '--config.entries.digits_mlp.config.audit.verifier_epochs=1']


@pytest.mark.slow
def test_sweep_as_one_two_process_job_gives_the_inprocess_table(tmp_path):
  from tests.study.test_sweep_executors import small_config
  from jaxaudit.study import sweep
  ref_wd = str(tmp_path / 'inprocess')
  sweep.run_sweep(small_config(), ref_wd, log=lambda s: None)
  ref = sweep.read_results(os.path.join(ref_wd, 'results.jsonl'), small_config())
  wd, port = str(tmp_path / 'job'), free_port()
  env = host_devices_env(2)
  env['JAX_PLATFORMS'] = 'cpu'
  procs = [subprocess.Popen([sys.executable, 'experiments/sweep.py', *SWEEP_OVERRIDES,
                             f'--workdir={wd}', f'--coordinator_address=127.0.0.1:{port}',
                             '--num_processes=2', f'--process_id={i}'], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in (0, 1)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  got = sweep.read_results(os.path.join(wd, 'results.jsonl'), small_config())
  with open(os.path.join(wd, 'results.jsonl')) as f:
    assert len(f.readlines()) == 4                      # each row written once, by process 0
  assert [sweep.stable_row(r) for r in got] == [sweep.stable_row(r) for r in ref]
