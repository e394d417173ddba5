"""Run-time benchmarks: every unlearning method against retraining, and ensemble training.

:func:`bench_methods`: for each registered method on one data set, its wall
time (after a warm-up of the same method, so compile time is excluded and
reported separately), run-time efficiency RTE = t_retrain / t_method, and
accuracy on Dr, Du, D_ref and test, all from the same run.

:func:`bench_train`: ensemble-training throughput, vmap over models vs a
sequential lax.map, for several ensemble sizes K.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np


def _timed_method(meth, p0, model, data, repeats: int, warmup: bool):
  """(params of the last run, median wall seconds, all walls, first-call seconds)."""
  import jax
  key = jax.random.key(0)
  t0 = time.perf_counter()
  if warmup:
    jax.block_until_ready(meth.fn(p0, model, data, key))
  first = time.perf_counter() - t0
  walls, new = [], None
  for r in range(max(1, repeats)):
    t0 = time.perf_counter()
    new = jax.block_until_ready(meth.fn(p0, model, data, jax.random.key(1 + r)))
    walls.append(time.perf_counter() - t0)
  return new, float(np.median(walls)), walls, first


def bench_methods(cfg, workdir: str, *, methods: Sequence[str] = (), sisa_shards: int = 4,
                  sisa_slices: int = 2, pretrain_epochs: int = 2, repeats: int = 3,
                  warmup: bool = True, log: Callable[[str], None] = print) -> list[dict]:
  """Times every method (``methods``: default all registered) on the config's data.

  The warm-start methods get the pretrained checkpoint of
  :func:`jaxaudit.pipeline.pretrained_checkpoint` (records outside Du),
  and ``sisa`` unlearns a SISA original of ``sisa_shards`` × ``sisa_slices``
  (0 shards: sisa is skipped). The wall time is the median of ``repeats``
  timed runs (keys 1..R); the accuracies are those of the last.

  Returns:
    One row per method: method, family, wall_s, walls_s, compile_and_first_s,
    rte (None before retrain ran), accuracy; or method and error.
  """
  import jax
  from jaxaudit import checkpoint, configs, pipeline
  from jaxaudit import workdir as workdir_lib
  from jaxaudit.configs import recipe_from_config
  from jaxaudit.train import evaluate
  from jaxaudit.unlearn import get_method, list_methods, make_unlearn_data
  cfg.train_retrain = False
  cfg.sisa.shards = int(sisa_shards)
  cfg.sisa.slices = int(sisa_slices)
  pipeline.train_and_evaluate(cfg, workdir, log=lambda s: None)
  ds, split = workdir_lib.prepare(cfg, workdir, log=lambda s: None)
  model, params, _ = checkpoint.restore_model(os.path.join(workdir, 'models', 'original'))
  pre = pipeline.pretrained_checkpoint(cfg, workdir, epochs=pretrain_epochs,
                                      log=lambda s: None)
  init_params = pipeline.load_init_params(cfg, ds, split, pre)
  recipe = recipe_from_config(cfg)
  data = make_unlearn_data(ds, split, recipe, init_checkpoint_params=init_params)
  sisa_state = None
  if cfg.sisa.shards:
    _, sisa_state, _ = workdir_lib.load_sisa_state(
        os.path.join(workdir, 'models', workdir_lib.SISA_DIR), train_indices=split.train)
  from jaxaudit.unlearn.language import FAMILY as LM_FAMILY
  names = list(methods) or [m.name for m in list_methods() if m.family != LM_FAMILY]
  if not cfg.sisa.shards:
    names = [n for n in names if n != 'sisa']
  if 'retrain' in names:
    names = ['retrain'] + [n for n in names if n != 'retrain']
  log(f'{ds.name} {cfg.model}: |Dr|={len(split.retain)} |Du|={len(split.forget)}, '
      f'{jax.default_backend()}')
  rows, t_retrain = [], None
  for name in names:
    is_sisa = name == 'sisa'
    try:
      meth = get_method(name, **configs.config_hparams(cfg, name))
      d = make_unlearn_data(ds, split, recipe, sisa=sisa_state) if is_sisa else data
      new, wall, walls, first = _timed_method(
          meth, sisa_state.final_params if is_sisa else params, model, d, repeats, warmup)
    except Exception as e:   # noqa: BLE001 — a method that cannot run here (needs conv layers)
      log(f'{name:20s} skipped: {type(e).__name__}: {str(e)[:100]}')
      rows.append(dict(method=name, error=f'{type(e).__name__}: {e}'))
      continue
    if name == 'retrain':
      t_retrain = wall
    accs = evaluate.evaluate_sets(model, new, ds, split,
                                  aggregate=evaluate.MEAN_SOFTMAX if is_sisa else None)
    row = dict(method=name, family=meth.family, wall_s=wall, walls_s=walls,
               compile_and_first_s=first - wall,
               rte=(t_retrain / wall) if t_retrain else None, accuracy=accs)
    rows.append(row)
    log(f'{name:20s} {meth.family:16s} {wall:7.2f}s  RTE {row["rte"] or float("nan"):7.1f}  '
        f'{evaluate.format_accs(accs)}')
  return rows


def time_training(model, ds, k: int, strategy: str, recipe, *, n: int, repeats: int) -> dict:
  """Throughput of training K models on ``n`` records each with ``strategy`` (vmap / map).

  A warm-up call of one epoch compiles first; the fastest of ``repeats`` timed
  runs is reported (noise from other processes only ever slows a run down).

  Returns:
    dict(k, strategy, wall_s, compile_and_first_epoch_s, throughput (model·samples/s)).
  """
  import jax
  from jaxaudit.train import train_ensemble
  rng = np.random.default_rng(0)
  n = min(n, len(ds.y_train))
  subsets = np.stack([rng.choice(len(ds.y_train), n, replace=False) for _ in range(k)])
  t0 = time.perf_counter()   # warm-up: compiles (programs are shared across epoch counts)
  jax.block_until_ready(train_ensemble(model, ds.x_train, ds.y_train, subsets, list(range(k)),
                                       recipe.replace(epochs=1), strategy=strategy).params)
  first = time.perf_counter() - t0
  wall = float('inf')
  for rep in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(train_ensemble(model, ds.x_train, ds.y_train, subsets,
                                         list(range(k * (rep + 1), k * (rep + 2))), recipe,
                                         strategy=strategy).params)
    wall = min(wall, time.perf_counter() - t0)
  return dict(k=k, strategy=strategy, wall_s=wall, compile_and_first_epoch_s=first,
              throughput=k * n * recipe.epochs / wall)


def bench_train(data: str, models: Sequence[str], ks: Sequence[int], *, n: int, epochs: int,
                batch_size: int, repeats: int, npz: str | None = None,
                log: Callable[[str], None] = print) -> list[dict]:
  """vmap vs map training throughput for each model in ``models`` and K in ``ks``.

  Returns:
    One row per (model, K, strategy): :func:`time_training`'s dict plus model
    and scale_vs_k1 (throughput over the K = 1 throughput of the strategy).
  """
  import jax
  from jaxaudit.data import load_dataset
  from jaxaudit.models import get_model
  from jaxaudit.train import Recipe
  ds = load_dataset(data, npz=npz)
  recipe = Recipe(epochs=epochs, batch_size=batch_size)
  log(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), data {ds.name} '
      f'{ds.input_shape}, {n} records/model, {epochs} epochs, batch {batch_size}')
  rows = []
  for name in models:
    model = get_model(name, ds.num_classes, ds.input_shape)
    base = {}
    for k in ks:
      res = {s: time_training(model, ds, k, s, recipe, n=n, repeats=repeats)
             for s in ('vmap', 'map')}
      for s in ('vmap', 'map'):
        base.setdefault(s, res[s]['throughput'] if k == 1 else base.get(s))
      ratio = res['vmap']['throughput'] / res['map']['throughput']
      for s, r in res.items():
        r.update(model=name, scale_vs_k1=r['throughput'] / base[s])
        rows.append(r)
      log(f'{name:6s} K={k}:  vmap {res["vmap"]["throughput"]:9.0f}  '
          f'map {res["map"]["throughput"]:9.0f} model·samples/s   vmap/map = {ratio:4.2f}   '
          f'K/K1 speed-up vmap {res["vmap"]["scale_vs_k1"]:4.2f} '
          f'map {res["map"]["scale_vs_k1"]:4.2f}   '
          f'(compile+1st epoch {res["vmap"]["compile_and_first_epoch_s"]:.1f}s / '
          f'{res["map"]["compile_and_first_epoch_s"]:.1f}s)')
  return rows
