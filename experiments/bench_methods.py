"""Run time of every unlearning method against retraining, one run.

For each registered method on one data set: wall time (after a warm-up of
the same method, so compile time is excluded and reported separately),
run-time efficiency RTE = t_retrain / t_method, and accuracy on Dr, Du,
D_ref and test. All figures come from the same run. The wall time is the median
of ``--repeats`` timed runs (keys 1..R); the accuracies are those of the last.

Every registered method runs: the warm-start methods get the "pretrained"
checkpoint of ``experiments/cli_methods.py`` (the same model trained on
records outside D, so it never saw Du), and ``sisa`` unlearns a SISA original
trained with ``--sisa_shards`` shards (its accuracies are the shard
ensemble's, mean softmax; its RTE is against retraining the single model).

  python experiments/bench_methods.py                          # digits, MLP
  python experiments/bench_methods.py --config=experiments/configs/mnist_cnn.py:local
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import cli_methods  # noqa: E402  (repo root on the path)
from jaxaudit import cli
from jaxaudit import checkpoint, pipeline
from jaxaudit.commands import default_config
from jaxaudit.configs import recipe_from_config
from jaxaudit.unlearn import get_method, list_methods, make_unlearn_data

config_flags.DEFINE_config_file('config', default_config.__file__, 'Experiment config.',
                                lock_config=False)
flags.DEFINE_string('workdir', 'runs/bench_methods', 'Work directory.')
flags.DEFINE_list('methods', [], 'Methods (default: all registered).')
flags.DEFINE_integer('sisa_shards', 4, 'Shards of the SISA original (0: skip sisa).')
flags.DEFINE_integer('sisa_slices', 2, 'Slices per shard of the SISA original.')
flags.DEFINE_integer('pretrain_epochs', 2, 'Epochs of the warm-start checkpoint (records '
                     'outside D).')
flags.DEFINE_integer('repeats', 3, 'Timed runs per method (keys 1..R); the median is reported.')
flags.DEFINE_bool('warmup', True, 'Run each method once first to exclude compile time.')
flags.DEFINE_string('json_out', None, 'Where to write the rows (default WORKDIR/bench_methods.json).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = FLAGS.config
  cfg.train_retrain = False
  cfg.sisa.shards = int(FLAGS.sisa_shards)
  cfg.sisa.slices = int(FLAGS.sisa_slices)
  pipeline.train_and_evaluate(cfg, FLAGS.workdir, log=lambda s: None)
  ds, split = pipeline.prepare(cfg, FLAGS.workdir, log=lambda s: None)
  model, params, _ = checkpoint.restore_model(os.path.join(FLAGS.workdir, 'models', 'original'))
  pre = cli_methods.ensure_pretrained(cfg, FLAGS.workdir, epochs=FLAGS.pretrain_epochs,
                                      source='auto', size=None, log=lambda s: None)
  _, init_params, _ = checkpoint.restore_model(pre)
  recipe = recipe_from_config(cfg)
  data = make_unlearn_data(ds, split, recipe, init_checkpoint_params=init_params)
  sisa_state = None
  if cfg.sisa.shards:
    _, sisa_state, _ = pipeline.load_sisa_state(
        os.path.join(FLAGS.workdir, 'models', pipeline.SISA_DIR), train_indices=split.train)
  names = FLAGS.methods or [m.name for m in list_methods()]
  if not cfg.sisa.shards:
    names = [n for n in names if n != 'sisa']
  if 'retrain' in names:
    names = ['retrain'] + [n for n in names if n != 'retrain']
  print(f'{ds.name} {cfg.model}: |Dr|={len(split.retain)} |Du|={len(split.forget)}, '
        f'{jax.default_backend()}', flush=True)
  rows, t_retrain = [], None
  for name in names:
    try:
      meth = get_method(name, **pipeline.config_hparams(cfg, name))
      key = jax.random.key(0)
      is_sisa = name == 'sisa'
      p0 = sisa_state.final_params if is_sisa else params
      d = make_unlearn_data(ds, split, recipe, sisa=sisa_state) if is_sisa else data
      t0 = time.perf_counter()
      if FLAGS.warmup:
        jax.block_until_ready(meth.fn(p0, model, d, key))
      first = time.perf_counter() - t0
      walls = []
      for r in range(max(1, FLAGS.repeats)):
        t0 = time.perf_counter()
        new = jax.block_until_ready(meth.fn(p0, model, d, jax.random.key(1 + r)))
        walls.append(time.perf_counter() - t0)
      wall = float(np.median(walls))
    except Exception as e:   # a method that cannot run here (e.g. needs conv layers)
      print(f'{name:20s} skipped: {type(e).__name__}: {str(e)[:100]}', flush=True)
      rows.append(dict(method=name, error=f'{type(e).__name__}: {e}'))
      continue
    if name == 'retrain':
      t_retrain = wall
    accs = pipeline.evaluate_sets(model, new, ds, split,
                                  aggregate=pipeline.MEAN_SOFTMAX if is_sisa else None)
    row = dict(method=name, family=meth.family, wall_s=wall, walls_s=walls,
               compile_and_first_s=first - wall,
               rte=(t_retrain / wall) if t_retrain else None, accuracy=accs)
    rows.append(row)
    print(f'{name:20s} {meth.family:16s} {wall:7.2f}s  RTE {row["rte"] or float("nan"):7.1f}  '
          f'{pipeline.format_accs(accs)}', flush=True)
  out = FLAGS.json_out or os.path.join(FLAGS.workdir, 'bench_methods.json')
  with open(out, 'w') as f:
    json.dump(rows, f, indent=1)
  print(f'wrote {out}')


if __name__ == '__main__':
  cli.run_script(main)
