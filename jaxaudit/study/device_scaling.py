"""The device axis of the throughput benchmark: ensembles and scoring against device count.

The device count of a JAX process is fixed when JAX starts, so
:func:`bench_devices` runs :func:`measure` once per count in a fresh Python
process (``python -m jaxaudit.study.device_scaling``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` on CPU (on an
accelerator host, ``D`` is instead the number of real devices made visible).
Each process measures, warm (the second of two identical calls):

* models trained per minute: one :func:`jaxaudit.train.train_ensemble` of K
  models laid out over the D devices (:mod:`jaxaudit.train.devices`);
* records scored per second: K models' outputs on N records, the rows of
  every batch split over the devices.

Simulated CPU devices share the same cores, so on CPU the figure shows the
cost of the layout (partitioning, padding, per-device dispatch), not a
speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from jaxaudit.errors import ConfigError


def measure(data: str = 'digits', *, data_dir: str = '', model: str | None = None, k: int = 8,
            train_size: int | None = None, epochs: int = 2, score_records: int = 4096,
            seed: int = 0) -> dict[str, Any]:
  """Ensemble training and scoring rates of this process, on all its devices.

  Args:
    data: ``digits``, ``mnist`` or ``cifar10``, with the model and recipe of
      :func:`jaxaudit.study.validation.setup` (the audit benchmark's).
    k: models of the ensemble.
    train_size: records each model trains on (default: the whole pool).
    epochs: epochs of the timed training.
    score_records: records scored by the K models.
  Returns:
    {'devices', 'backend', 'layout', 'models_per_minute', 'train_s',
    'records_per_second', 'score_s', ...}.
  """
  import jax
  import numpy as np
  from jaxaudit.study.validation import setup
  from jaxaudit.train import predict_logits, train_ensemble
  from jaxaudit.train import devices as devices_lib
  ds, net, recipe, _, _ = setup(data, model=model, data_dir=data_dir)   # the audit bench's model
  rng = np.random.default_rng(seed)
  n = len(ds.y_train) if train_size is None else min(int(train_size), len(ds.y_train))
  subsets = np.stack([rng.choice(len(ds.y_train), n, replace=False) for _ in range(k)])
  recipe = recipe.replace(epochs=epochs)
  x_score = ds.x_train[rng.integers(0, len(ds.y_train), score_records)]

  def train():
    res = train_ensemble(net, ds.x_train, ds.y_train, subsets, list(range(k)), recipe)
    return jax.block_until_ready(res.params)

  def score(params):
    return predict_logits(net, params, x_score, ensemble=True)

  params = train()                      # compiles
  t0 = time.perf_counter()
  params = train()
  train_s = time.perf_counter() - t0
  score(params)
  t0 = time.perf_counter()
  score(params)
  score_s = time.perf_counter() - t0
  layout = devices_lib.model_layout(k, 'auto', net)
  return dict(devices=jax.device_count(), backend=jax.default_backend(),
              layout=devices_lib.describe(layout, k), data=data, model=type(net).__name__, k=k,
              train_records=n, epochs=epochs, train_s=train_s,
              models_per_minute=60.0 * k / train_s, score_records=int(score_records),
              score_s=score_s, records_per_second=k * score_records / score_s)


def host_devices_env(count: int, env: dict | None = None) -> dict:
  """A copy of ``env`` (default ``os.environ``) whose XLA_FLAGS give a new JAX process
  ``count`` CPU devices (``--xla_force_host_platform_device_count``), other flags kept."""
  env = dict(os.environ if env is None else env)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={int(count)}'])
  return env


def bench_devices(counts: Sequence[int] = (1, 2, 4, 8), *, timeout_s: int = 900,
                  log: Callable[[str], None] = print, **kwargs) -> list[dict[str, Any]]:
  """:func:`measure` in a fresh process per device count; rows with ratios to the first.

  Args:
    counts: simulated CPU device counts (on CPU), each >= 1.
    kwargs: passed to :func:`measure`.
  Returns:
    One row per count, with ``train_vs_first`` and ``score_vs_first``: the
    rate relative to the first count's (1.0 = no change).
  """
  counts = [int(c) for c in counts]
  if not counts or min(counts) < 1:
    raise ConfigError(f'device counts must be positive integers, got {counts}')
  rows = []
  for count in counts:
    proc = subprocess.run([sys.executable, '-m', __name__, json.dumps(kwargs)],
                          env=host_devices_env(count),
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode:
      raise RuntimeError(f'device count {count}: {proc.stderr.strip().splitlines()[-1:]}')
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    rows.append(row)
    log(f'[devices] {count}: {row["layout"]}: {row["models_per_minute"]:.1f} models/min, '
        f'{row["records_per_second"]:,.0f} records/s')
  for row in rows:
    row['train_vs_first'] = row['models_per_minute'] / rows[0]['models_per_minute']
    row['score_vs_first'] = row['records_per_second'] / rows[0]['records_per_second']
  return rows


if __name__ == '__main__':
  print(json.dumps(measure(**json.loads(sys.argv[1]))), flush=True)
