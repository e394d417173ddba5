"""Cost of an audit request: models trained, FLOPs and wall time per auditor.

For every auditor: the models it needs for this audit request, the FLOPs of
training them (XLA ``cost_analysis`` of one compiled training step of the
recipe — forward, backward and optimiser update at the recipe's batch size —
times the number of steps) plus the FLOPs of its queries (``cost_analysis`` of
the forward pass per example times the records × views × models queried), and
its wall time (training of its models, measured when they were trained and
stored in their checkpoint metadata, plus this cell's scoring). Ratios are to
the retrain reference of the same workdir, trained in the same run. Unlearning
runs inside U-LiRA and the NeurIPS-23 score are counted as models and wall time
but not as FLOPs (methods differ too much for one formula).
"""

from __future__ import annotations

import glob
import math
import os
from typing import Any, Sequence

import numpy as np


def _flops_of(compiled) -> float:
  """The ``flops`` of a compiled program's cost analysis (NaN if unknown)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get('flops', float('nan')))


def model_flops(model, input_shape: Sequence[int], num_classes: int, recipe) -> dict[str, float]:
  """XLA cost analysis of ``model`` under ``recipe``.

  Returns:
    ``step`` (FLOPs of one training step on a batch of ``recipe.batch_size``),
    ``forward_per_example`` (FLOPs of a forward pass per example) and
    ``batch_size``.
  """
  import jax
  import jax.numpy as jnp
  from jaxaudit.models import init_params, make_apply_fn
  from jaxaudit.train import loop
  from jaxaudit.train.recipe import make_optimizer
  del num_classes   # the model's output size; kept for the callers' signature
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), tuple(input_shape)))
  tx = make_optimizer(recipe, 1000)
  opt_state = jax.eval_shape(tx.init, params)
  b = int(recipe.batch_size)
  xb = jax.ShapeDtypeStruct((b,) + tuple(input_shape), jnp.float32)
  yb = jax.ShapeDtypeStruct((b,), jnp.int32)
  objective = loop.MeanLoss(loop.SoftmaxCE(recipe.label_smoothing))
  apply_fn = make_apply_fn(model)

  def step(p, s, x, y):   # the one training step of jaxaudit (jaxaudit.train.loop)
    batch = loop.Batch(x, y, jnp.ones((b,), jnp.float32), jnp.zeros((b,), jnp.int32))
    return loop.train_step(apply_fn, tx, objective, p, s, (batch,))

  step_f = _flops_of(jax.jit(step).lower(params, opt_state, xb, yb).compile())
  fwd_f = _flops_of(jax.jit(lambda p, x: model.apply({'params': p}, x)).lower(params, xb).compile())
  return dict(step=step_f, forward_per_example=fwd_f / b, batch_size=b)


def train_flops(flops: dict[str, float], n_records: float, epochs: int) -> float:
  """FLOPs of training for ``epochs`` on ``n_records`` (steps × FLOPs of a step)."""
  return flops['step'] * epochs * math.ceil(max(n_records, 1) / flops['batch_size'])


def meta_wall(path: str) -> float | None:
  """The ``wall_time_s`` stored in a checkpoint's metadata (None if unreadable)."""
  from jaxaudit import checkpoint
  try:
    return checkpoint.load_meta(path).get('wall_time_s')
  except Exception:   # noqa: BLE001 — a missing value only loses a timing
    return None


def rmia_wall(peer_dir: str) -> float | None:
  """Training wall time of the cached RMIA reference models of a group."""
  paths = sorted(glob.glob(os.path.join(peer_dir, 'rmia-refs-*')))
  walls = [meta_wall(p) for p in paths]
  walls = [w for w in walls if w]
  return walls[0] if len(walls) == 1 else (max(walls) if walls else None)


def cell_cost(g, row: dict[str, Any]) -> dict[str, dict]:
  """Models, FLOPs and wall time per auditor for one audit request (see module doc).

  Args:
    g: the cell's :class:`jaxaudit.study.groups.Group`.
    row: the cell's row so far (``timing``, ``peers``).
  Returns:
    auditor → dict(models, flops, wall_s, wall_ratio, flops_ratio[, flops_note]).
  """
  s, f = g.split, g.flops
  fwd = f['forward_per_example']
  n_du, n_ref, n_r = len(s.forget), len(s.ref), len(s.retain)
  views = len(g.settings.views) if isinstance(g.settings.views, tuple) else (
      6 if g.dataset.is_image else 2)
  vs, vs_wall = g.verifier_sets[0]
  k = vs.num_models
  sub = vs.subsets.shape[1]
  out = dict(retrain=dict(models=1, flops=g.retrain_flops, wall_s=g.retrain_s))
  q_ours = (n_du + min(n_ref, g.settings.ref_sample) + len(vs.members)) * views
  out['ours'] = dict(models=k * len(g.verifier_sets),
                     flops=len(g.verifier_sets) * k * train_flops(f, sub, g.vrecipe.epochs)
                     + q_ours * (k + 1) * fwd,
                     wall_s=sum(w for _, w in g.verifier_sets) + row['timing'].get('audit_s', 0.0))
  peers = row.get('peers', {})
  if 'population_mia' in peers:
    out['population_mia'] = dict(models=0, flops=(n_du + n_ref) * fwd,
                                 wall_s=peers['population_mia'].get('wall_s', 0.0))
  if 'heuristics' in peers:
    q = sum(min(2000, n) for n in (n_du, n_r, len(s.test), n_ref))
    out['heuristics'] = dict(models=k, flops=k * train_flops(f, sub, g.vrecipe.epochs)
                             + q * (k + 1) * fwd,
                             wall_s=vs_wall + peers['heuristics'].get('wall_s', 0.0))
  if g.shadows is not None:
    sh = g.shadows
    half = len(sh.population) / 2.0
    sh_flops = sh.num_models * train_flops(f, half, g.recipe.epochs)
    q = (n_du + n_ref) * (2 if g.dataset.is_image else 1) * (sh.num_models + 1)
    if 'lira' in peers:
      out['lira'] = dict(models=sh.num_models, flops=sh_flops + q * fwd,
                         wall_s=g.shadow_wall + peers['lira'].get('wall_s', 0.0))
    if 'ulira' in peers and 'error' not in peers['ulira']:
      out['ulira'] = dict(models=2 * sh.num_models, flops=sh_flops + q * fwd,
                          wall_s=g.shadow_wall + peers['ulira'].get('wall_s', 0.0),
                          flops_note='excludes the S unlearning runs')
  if 'rmia' in peers and 'error' not in peers['rmia']:
    r = peers['rmia']
    nr = int(g.peers.get('rmia_refs', 0))
    trained_now = r.get('trained_now', 0)
    ref_wall = 0.0
    if not trained_now:
      ref_wall = rmia_wall(g.peer_dir) or 0.0
    out['rmia'] = dict(models=nr, flops=nr * train_flops(f, n_r // 2, g.recipe.epochs)
                       + (n_du + n_ref + 1000) * (nr + 1) * fwd,
                       wall_s=ref_wall + r.get('wall_s', 0.0))
  if 'neurips23' in peers and 'error' not in peers['neurips23']:
    r = peers['neurips23']
    n = int(g.peers.get('neurips23_models', 0))
    retrain_wall = r.get('retrain_group_s') or 0.0
    if not retrain_wall and r.get('retrain_cache_key'):   # cached: its stored training time
      retrain_wall = meta_wall(os.path.join(
          g.peer_dir, f'neurips23-retrained-{r["retrain_cache_key"]}')) or 0.0
    call = r.get('wall_s', 0.0) - (r.get('retrain_group_s') or 0.0)
    out['neurips23'] = dict(models=2 * n, flops=n * train_flops(f, n_r, g.recipe.epochs)
                            + 2 * n * (n_du + 4000) * fwd,
                            wall_s=(retrain_wall + (r.get('unlearn_group_s') or 0.0)
                                    + max(call, 0.0)),
                            flops_note='excludes the N unlearning runs')
  for name, c in out.items():
    c['wall_ratio'] = c['wall_s'] / g.retrain_s if g.retrain_s > 0 else None
    c['flops_ratio'] = c['flops'] / g.retrain_flops if g.retrain_flops > 0 else None
  return out


def cost_table(rows: Sequence[dict]) -> list[dict]:
  """Per (entry, auditor): mean models, FLOPs ratio and wall ratio to one retrain."""
  acc: dict = {}
  for r in rows:
    for name, c in (r.get('cost') or {}).items():
      a = acc.setdefault((r.get('entry'), name), dict(models=[], flops_ratio=[], wall_ratio=[],
                                                      wall_s=[]))
      for k in a:
        if c.get(k) is not None:
          a[k].append(c[k])
  out = []
  for (entry, name), a in sorted(acc.items()):
    out.append(dict(entry=entry, auditor=name, cells=len(a['wall_s']),
                    **{k: float(np.mean(v)) if v else None for k, v in a.items()}))
  return out
