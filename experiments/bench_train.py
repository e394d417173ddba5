"""Ensemble-training throughput: vmap over models vs a sequential lax.map, one run.

Prints model·samples/s for K ∈ {1, 4, 8} and both strategies, and the ratios
vmap/map and K-model/1-model, all measured in this run after a warm-up call
(compile time is reported separately). Results go to BUILD_NOTES.md.

  python experiments/bench_train.py                       # digits MLP + CNN
  python experiments/bench_train.py --data=mnist --models=cnn --n=4000
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

from jaxaudit import cli
from jaxaudit.data import load_dataset
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_ensemble

flags.DEFINE_string('data', 'digits', 'digits, or mnist (reads ../shared/data/mnist.npz).')
flags.DEFINE_list('models', ['mlp', 'cnn'], 'Models to benchmark.')
flags.DEFINE_list('ks', ['1', '4', '8'], 'Ensemble sizes.')
flags.DEFINE_integer('n', 1000, 'Training records per model.')
flags.DEFINE_integer('epochs', 3, 'Epochs per timed run.')
flags.DEFINE_integer('batch_size', 64, 'Batch size.')
flags.DEFINE_integer('repeats', 3, 'Timed runs per setting; the fastest is reported (noise from\n'
                     'other processes only ever slows a run down).')
flags.DEFINE_string('json_out', None, 'Optional path for the raw numbers.')
FLAGS = flags.FLAGS


def _time(model, ds, k, strategy, recipe):
  rng = np.random.default_rng(0)
  n = min(FLAGS.n, len(ds.y_train))
  subsets = np.stack([rng.choice(len(ds.y_train), n, replace=False) for _ in range(k)])
  t0 = time.perf_counter()   # warm-up: compiles (programs are shared across epoch counts)
  jax.block_until_ready(train_ensemble(model, ds.x_train, ds.y_train, subsets, list(range(k)),
                                       recipe.replace(epochs=1), strategy=strategy).params)
  first = time.perf_counter() - t0
  wall = float('inf')
  for rep in range(FLAGS.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(train_ensemble(model, ds.x_train, ds.y_train, subsets,
                                         list(range(k * (rep + 1), k * (rep + 2))), recipe,
                                         strategy=strategy).params)
    wall = min(wall, time.perf_counter() - t0)
  return dict(k=k, strategy=strategy, wall_s=wall, compile_and_first_epoch_s=first,
              throughput=k * n * recipe.epochs / wall)


def main(argv):
  del argv
  ds = load_dataset(FLAGS.data, npz='../shared/data/mnist.npz' if FLAGS.data == 'mnist' else None)
  recipe = Recipe(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size)
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), data {ds.name} '
        f'{ds.input_shape}, {FLAGS.n} records/model, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}')
  rows = []
  for name in FLAGS.models:
    model = get_model(name, ds.num_classes, ds.input_shape)
    base = {}
    for k in map(int, FLAGS.ks):
      res = {s: _time(model, ds, k, s, recipe) for s in ('vmap', 'map')}
      for s in ('vmap', 'map'):
        base.setdefault(s, res[s]['throughput'] if k == 1 else base.get(s))
      ratio = res['vmap']['throughput'] / res['map']['throughput']
      for s, r in res.items():
        r.update(model=name, scale_vs_k1=r['throughput'] / base[s])
        rows.append(r)
      print(f'{name:6s} K={k}:  vmap {res["vmap"]["throughput"]:9.0f}  map {res["map"]["throughput"]:9.0f} '
            f'model·samples/s   vmap/map = {ratio:4.2f}   '
            f'K/K1 speed-up vmap {res["vmap"]["scale_vs_k1"]:4.2f} map {res["map"]["scale_vs_k1"]:4.2f}   '
            f'(compile+1st epoch {res["vmap"]["compile_and_first_epoch_s"]:.1f}s / '
            f'{res["map"]["compile_and_first_epoch_s"]:.1f}s)')
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  cli.run_script(main)
