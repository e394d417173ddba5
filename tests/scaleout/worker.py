"""A worker process for the scale-out tests (run as a script, never collected by pytest).

  python -m tests.scaleout.worker MODE OUT [PROCESS_ID PORT]

MODE ``ensemble``: sharded ensembles of 8, 13 and 3 members and a method's
seeds, against the same work on one device of this process, and one audit of
a digits MLP (decision, p-value; compared by the caller with a one-device run);
``distributed``: process PROCESS_ID of a 2-process job on 127.0.0.1:PORT.
The device count comes from XLA_FLAGS, set by the caller. The result is
written to OUT (npz or JSON).
"""

from __future__ import annotations

import json
import sys

import numpy as np

K_VALUES = (8, 13, 3)


def problem(k: int):
  """Digits, a small MLP, K ragged subsets and keys: the ensemble every mode trains."""
  from jaxaudit.data import load_dataset
  from jaxaudit.models import get_model
  from jaxaudit.train import Recipe
  ds = load_dataset('digits')
  model = get_model('mlp', ds.num_classes, hidden=(16,))
  rng = np.random.default_rng(k)
  subsets = [rng.choice(len(ds.y_train), 150 + 9 * i, replace=False) for i in range(k)]
  return ds, model, subsets, list(range(100, 100 + k)), Recipe(epochs=1, batch_size=32)


def leaves(params) -> list[np.ndarray]:
  import jax
  from jaxaudit.train.devices import to_host
  return [np.asarray(a) for a in jax.tree.leaves(to_host(params))]


def ensemble_mode(out: str) -> None:
  import jax
  from jaxaudit import unlearn
  from jaxaudit.train import train_ensemble, train_model
  from jaxaudit.unlearn.base import UnlearnData
  report = {'devices': jax.device_count()}
  for k in K_VALUES:
    ds, model, subsets, keys, recipe = problem(k)
    sharded = train_ensemble(model, ds.x_train, ds.y_train, subsets, keys, recipe)
    single = train_ensemble(model, ds.x_train, ds.y_train, subsets, keys, recipe, devices=1)
    leaf = jax.tree.leaves(sharded.params)[0]
    report[f'k{k}'] = dict(
        max_diff=max(float(np.max(np.abs(a - b)))
                     for a, b in zip(leaves(sharded.params), leaves(single.params))),
        loss_diff=float(np.max(np.abs(sharded.losses - single.losses))),
        devices=len(leaf.sharding.device_set),
        shard_rows=sorted({int(s.data.shape[0]) for s in leaf.addressable_shards}))
  # The seeds of an unlearning method, split over the devices, against one run per seed.
  ds, model, subsets, keys, recipe = problem(4)
  m = train_model(model, ds.x_train, ds.y_train, subsets[0], 0, recipe).params
  data = UnlearnData(x=jax.numpy.asarray(ds.x_train), y=jax.numpy.asarray(ds.y_train),
                     forget=jax.numpy.asarray(subsets[0][:20], jax.numpy.int32),
                     retain=jax.numpy.asarray(subsets[0][20:], jax.numpy.int32),
                     num_classes=ds.num_classes, input_shape=ds.input_shape, recipe=recipe)
  method = unlearn.get_method('gradient_ascent')
  together = unlearn.run_method(method, m, model, data, 7, seeds=[0, 1, 2, 3, 4])
  alone = [method.fn(m, model, data, jax.random.fold_in(jax.random.key(7), s)) for s in range(5)]
  report['seeds_max_diff'] = max(
      float(np.max(np.abs(a[i] - b))) for i, one in enumerate(alone)
      for a, b in zip(leaves(together), leaves(one)))
  report['audit'] = audit_result()
  with open(out, 'w') as f:
    json.dump(report, f)


def audit_result() -> dict:
  """One audit of a digits MLP (M itself, so the decision is not_forgotten): its numbers."""
  import jax
  from jaxaudit.audit import AuditSettings, Target, audit
  from jaxaudit.data import load_dataset, make_split
  from jaxaudit.models import get_model
  from jaxaudit.train import Recipe, train_model
  ds = load_dataset('digits')
  split = make_split(ds, seed=0, ref_fraction=0.3, forget_fraction=0.3)
  model, recipe = get_model('mlp', ds.num_classes, hidden=(256,)), Recipe(epochs=40)
  m = train_model(model, ds.x_train, ds.y_train, split.train, 0, recipe).params   # M itself
  # Two views (exact + noise) instead of the 14 default ones: the layouts' equality does not
  # need the full neighbourhood, and this test runs in CI (13.7 s -> 4.3 s on one device).
  result = audit(Target.from_params(model, m), ds, split, verifier_model=model, recipe=recipe,
                 settings=AuditSettings(num_verifiers=5, views=('identity', 'noise')))
  return dict(devices=jax.device_count(), decision=result.decision,
              p_value=float(result.p_value), effect_auc=float(result.effect_auc),
              forgetting_score=float(result.forgetting_score))


def distributed_mode(out: str, process_id: int, port: int) -> None:
  from jaxaudit import distributed
  distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
  import jax
  from jaxaudit import checkpoint, io_utils
  from jaxaudit.train import train_ensemble
  report = dict(process=jax.process_index(), processes=jax.process_count(),
                devices=jax.device_count(), local_devices=jax.local_device_count())
  arrays = {}
  for k in (8, 6):
    ds, model, subsets, keys, recipe = problem(k)
    res = train_ensemble(model, ds.x_train, ds.y_train, subsets, keys, recipe)
    leaf = jax.tree.leaves(res.params)[0]
    report[f'k{k}_devices'] = len(leaf.sharding.device_set)
    for i, a in enumerate(leaves(res.params)):
      arrays[f'k{k}_{i}'] = a
    arrays[f'k{k}_losses'] = res.losses
    if k == 8:   # Orbax from every process, meta.json once
      checkpoint.save_checkpoint(f'{out}.ckpt', res.params, dict(model='mlp', ensemble_size=k))
  io_utils.write_json(f'{out}.json', report)          # written once, by process 0
  np.savez(f'{out}.p{process_id}.npz', **arrays)


if __name__ == '__main__':
  mode, path = sys.argv[1], sys.argv[2]
  if mode == 'ensemble':
    ensemble_mode(path)
  elif mode == 'distributed':
    distributed_mode(path, int(sys.argv[3]), int(sys.argv[4]))
  else:
    raise SystemExit(f'unknown mode {mode!r}')
