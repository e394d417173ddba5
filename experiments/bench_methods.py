"""Run time of every unlearning method against retraining, one run.

For each registered method on one data set: wall time (after a warm-up of
the same method, so compile time is excluded and reported separately),
run-time efficiency RTE = t_retrain / t_method, and accuracy on Dr, Du,
D_ref and test. All figures come from the same run.

  python experiments/bench_methods.py                          # digits, MLP
  python experiments/bench_methods.py --config=experiments/configs/mnist_cnn.py:local
"""

from __future__ import annotations

import json
import os
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxaudit import checkpoint, pipeline
from jaxaudit.commands import default_config
from jaxaudit.configs import recipe_from_config
from jaxaudit.unlearn import get_method, list_methods, make_unlearn_data

config_flags.DEFINE_config_file('config', default_config.__file__, 'Experiment config.',
                                lock_config=False)
flags.DEFINE_string('workdir', 'runs/bench_methods', 'Work directory.')
flags.DEFINE_list('methods', [], 'Methods (default: all registered, except sisa).')
flags.DEFINE_bool('warmup', True, 'Run each method once first to exclude compile time.')
flags.DEFINE_string('json_out', None, 'Where to write the rows (default WORKDIR/bench_methods.json).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = FLAGS.config
  cfg.train_retrain = False
  pipeline.train_and_evaluate(cfg, FLAGS.workdir, log=lambda s: None)
  ds, split = pipeline.prepare(cfg, FLAGS.workdir, log=lambda s: None)
  model, params, _ = checkpoint.restore_model(os.path.join(FLAGS.workdir, 'models', 'original'))
  data = make_unlearn_data(ds, split, recipe_from_config(cfg))
  names = FLAGS.methods or [m.name for m in list_methods() if m.name != 'sisa']
  if 'retrain' in names:
    names = ['retrain'] + [n for n in names if n != 'retrain']
  print(f'{ds.name} {cfg.model}: |Dr|={len(split.retain)} |Du|={len(split.forget)}, '
        f'{jax.default_backend()}', flush=True)
  rows, t_retrain = [], None
  for name in names:
    try:
      hp = cfg.unlearn.hparams.get(name)
      meth = get_method(name, **(hp.to_dict() if hp else {}))
      key = jax.random.key(0)
      t0 = time.perf_counter()
      if FLAGS.warmup:
        jax.block_until_ready(meth.fn(params, model, data, key))
      first = time.perf_counter() - t0
      t0 = time.perf_counter()
      new = jax.block_until_ready(meth.fn(params, model, data, jax.random.key(1)))
      wall = time.perf_counter() - t0
    except Exception as e:   # a method that cannot run here (e.g. needs conv layers)
      print(f'{name:20s} skipped: {type(e).__name__}: {str(e)[:100]}', flush=True)
      rows.append(dict(method=name, error=f'{type(e).__name__}: {e}'))
      continue
    if name == 'retrain':
      t_retrain = wall
    accs = pipeline.evaluate_sets(model, new, ds, split)
    row = dict(method=name, family=meth.family, wall_s=wall, compile_and_first_s=first - wall,
               rte=(t_retrain / wall) if t_retrain else None, accuracy=accs)
    rows.append(row)
    print(f'{name:20s} {meth.family:16s} {wall:7.2f}s  RTE {row["rte"] or float("nan"):7.1f}  '
          f'{pipeline.format_accs(accs)}', flush=True)
  out = FLAGS.json_out or os.path.join(FLAGS.workdir, 'bench_methods.json')
  with open(out, 'w') as f:
    json.dump(rows, f, indent=1)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main)
