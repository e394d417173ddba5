"""Sharded ensembles on 8 simulated CPU devices against one device.

Each test starts ``tests/scaleout/worker.py`` in a subprocess whose XLA_FLAGS
give it 8 (or 1) host devices: the device count is fixed when JAX starts, and
the rest of the suite runs on one device.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.study.device_scaling import host_devices_env
from jaxaudit.train import devices

from tests.scaleout import worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_worker(mode: str, out: str, num_devices: int, *args, timeout: int = 300) -> dict | None:
  """Runs the worker with ``num_devices`` host devices; its JSON result (None if it wrote none)."""
  env = host_devices_env(num_devices)
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, '-m', 'tests.scaleout.worker', mode, out, *map(str, args)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


def test_sharded_ensembles_and_audit_equal_one_device(tmp_path):
  r = run_worker('ensemble', str(tmp_path / 'e.json'), 8)
  assert r['devices'] == 8
  for k in (8, 13, 3):
    assert r[f'k{k}']['max_diff'] <= 1e-6, (k, r[f'k{k}'])
    assert r[f'k{k}']['loss_diff'] <= 1e-6, (k, r[f'k{k}'])
  assert r['k8']['devices'] == 8 and r['k8']['shard_rows'] == [1]   # one member per device
  assert r['k3']['devices'] == 3 and r['k3']['shard_rows'] == [1]   # K < D: K devices
  assert r['k13']['devices'] == 8     # padded to 16 over 8 devices, the 13 members returned
  assert r['seeds_max_diff'] <= 1e-6   # a method's seeds split over devices = one run per seed


  # The audit on 8 devices (verifiers and scoring laid out over them) and here, on one.
  one = worker.audit_result()
  assert (r['audit']['devices'], one['devices']) == (8, 1)
  assert r['audit']['decision'] == one['decision'] == 'not_forgotten'
  np.testing.assert_allclose(r['audit']['p_value'], one['p_value'], rtol=1e-9)
  np.testing.assert_allclose(r['audit']['effect_auc'], one['effect_auc'], rtol=1e-9)


# In this (one-device) process: the layout rules themselves.

def test_layout_rules_on_one_device():
  layout = devices.model_layout(5, 'map')
  assert layout.mesh is None and layout.num_devices == 1 and layout.padded(5) == 5
  with pytest.raises(ConfigError, match='device'):
    devices.model_layout(5, devices=len(jax.devices()) + 1)
  assert devices.record_mesh(512) is None


def test_layout_padding_arithmetic():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices() * 1), (devices.MODEL_AXIS,))
  layout = devices.Layout('vmap', mesh)
  assert layout.padded(13) == 13 * 1
  fake = devices.Layout('map', None)
  assert fake.per_device(7) == 7
  padded = devices.pad_members({'a': np.arange(6).reshape(3, 2)}, 5)['a']
  np.testing.assert_array_equal(padded[3:], [[0, 1], [0, 1]])
