"""Audit throughput, measured in one process so that every figure is a ratio of one run.

:func:`bench_audit` measures, on one data set and model:

* a warm retrain-from-scratch on Dr (the yardstick);
* one |Du| request audited with K freshly trained verifiers and with a verifier
  bank (its D_ref outputs cached, as in a stream), each warm: seconds, audits per
  hour and the ratio to the retrain;
* the bank: B members trained in one program (models per minute), against a
  per-model Python loop training the same number of models one by one;
* a stream of requests (synthetic users of 1–20 records) against the bank:
  the per-model set-up, audits per hour with and without it, records per second;
* the scoring FLOP rate (the stream's forward passes × the model's FLOPs per
  forward, from XLA's cost analysis) against the machine's matmul peak,
  measured by a large jitted matmul in the same process;
* the batched statistics against the per-request NumPy path
  (:func:`jaxaudit.study.stats_bench.bench_statistics`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """The machine's measured float32 matmul rate (FLOP/s): best of ``repeats`` n×n products."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = fn()
  jax.block_until_ready(out)
  return out, time.perf_counter() - t0


def bench_audit(data: str = 'mnist', *, data_dir: str = '', model: str | None = None,
                train_size: int | None = None, bank_size: int = 64, loop_models: int = 8,
                stream_requests: int = 1000, max_records: int = 20, batch: int = 256,
                seed: int = 0, stats_counts: tuple[int, ...] = (1, 10, 100, 1000),
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Measures the figures of the module docstring; returns them as a dict."""
  from jaxaudit.audit import AuditSettings, Target, audit
  from jaxaudit.audit import bank as bank_lib
  from jaxaudit.audit.stream import StreamAuditor, StreamSettings, requests_from_groups
  from jaxaudit.data import make_split
  from jaxaudit.study import cost, stats_bench
  from jaxaudit.study.validation import setup
  from jaxaudit.train import train_ensemble, train_model
  ds, net, recipe, split_kw, _ = setup(data, model=model, train_size=train_size,
                                       data_dir=data_dir)
  split = make_split(ds, seed=seed, **split_kw)
  out: dict[str, Any] = dict(data=data, model=type(net).__name__, train=len(split.train),
                             forget=len(split.forget), bank_size=bank_size,
                             devices=[str(d) for d in jax.devices()])
  train = lambda sub, s: train_model(net, ds.x_train, ds.y_train, sub, s, recipe).params
  orig = _timed(lambda: train(split.train, 1))[0]
  _timed(lambda: train(split.retain, 2))                                # compile
  mu, retrain_s = _timed(lambda: train(split.retain, 3))
  out['retrain_s'] = retrain_s
  log(f'[bench] warm retrain on |Dr|={len(split.retain)}: {retrain_s:.2f}s')

  # The bank, and the same number of models one by one (the engine vs a Python loop).
  bank, bank_s = _timed(lambda: bank_lib.build_bank(net, ds, split.train, recipe, size=bank_size,
                                                     seed=seed))
  sub = [np.sort(np.random.default_rng(i).choice(split.train, round(0.15 * len(split.train)),
                                                 replace=False)) for i in range(loop_models)]
  keys = jax.vmap(jax.random.key)(np.arange(loop_models))
  _timed(lambda: train_ensemble(net, ds.x_train, ds.y_train, sub, keys, recipe).params)
  _, ens_s = _timed(lambda: train_ensemble(net, ds.x_train, ds.y_train, sub, keys,
                                           recipe).params)
  _timed(lambda: train(sub[0], keys[0]))
  _, loop_s = _timed(lambda: [train(s, keys[i]) for i, s in enumerate(sub)])
  out.update(bank_s=bank_s, models_per_minute_bank=60 * bank_size / bank_s,
             ensemble_s=ens_s, loop_s=loop_s, loop_models=loop_models,
             engine_vs_loop=loop_s / ens_s)
  log(f'[bench] bank of {bank_size}: {bank_s:.1f}s ({out["models_per_minute_bank"]:.0f} models/min);'
      f' {loop_models} models: ensemble {ens_s:.2f}s, per-model loop {loop_s:.2f}s '
      f'({loop_s / ens_s:.2f}×)')

  # One request, K fresh verifiers vs the bank (both warm).
  settings = AuditSettings()
  tgt = Target.from_params(net, mu, 'retrain')
  cache: dict = {}
  for mode in ('fresh', 'bank'):
    kw = dict(bank=bank, bank_cache=cache) if mode == 'bank' else {}
    audit(tgt, ds, split, verifier_model=net, recipe=recipe, settings=settings, **kw)  # warm-up
    res, t = _timed(lambda: audit(tgt, ds, split, verifier_model=net, recipe=recipe,
                                  settings=settings, **kw))
    out[f'audit_{mode}_s'] = t
    out[f'audit_{mode}_vs_retrain'] = t / retrain_s
    out[f'audits_per_hour_{mode}'] = 3600 / t
    out[f'audit_{mode}_decision'] = res.decision
    log(f'[bench] one audit (|Du|={len(split.forget)}), {mode} verifiers: {t:.2f}s = '
        f'{t / retrain_s:.2f}× a warm retrain ({res.decision})')

  # A stream of single-user requests against a bank over users.
  groups = bank_lib.synthetic_users(len(ds.x_train), split.train, max_records=max_records,
                                    seed=seed)
  ubank = bank_lib.build_bank(net, ds, split.train, recipe, size=bank_size, groups=groups,
                              seed=seed + 1)
  users = np.setdiff1d(np.unique(groups[split.train]), ubank.group_ids[ubank.member_groups])
  rng = np.random.default_rng(seed)
  picked = rng.choice(users, stream_requests, replace=stream_requests > len(users))
  reqs = requests_from_groups(ubank, groups, [(i, [int(u)]) for i, u in enumerate(picked)])
  auditor, setup_s = _timed(lambda: StreamAuditor(Target.from_params(net, orig, 'original'), ds,
                                                   split, ubank, net, StreamSettings()))
  auditor.audit(reqs[:batch])                                          # warm the buckets
  res, stream_s = _timed(lambda: [r for i in range(0, len(reqs), batch)
                                  for r in auditor.audit(reqs[i:i + batch])])
  n_rec = sum(len(r) for _, r in reqs)
  fwd = n_rec * len(auditor.views) * (bank_size + 1)
  flops = cost.model_flops(net, ds.input_shape, ds.num_classes, recipe)['forward_per_example']
  peak = matmul_peak()
  out.update(stream_requests=len(reqs), stream_records=n_rec, stream_setup_s=setup_s,
             stream_s=stream_s, stream_audits_per_hour=3600 * len(reqs) / stream_s,
             stream_audits_per_hour_with_setup=3600 * len(reqs) / (stream_s + setup_s),
             records_per_second=n_rec / stream_s, stream_forwards=fwd,
             forward_flops=flops, scoring_flop_rate=fwd * flops / stream_s,
             matmul_peak_flops=peak, scoring_fraction_of_peak=fwd * flops / stream_s / peak,
             stream_decisions={d: sum(r['decision'] == d for r in res)
                               for d in ('not_forgotten', 'forgotten', 'inconclusive')})
  log(f'[bench] stream: {len(reqs)} requests ({n_rec} records) in {stream_s:.2f}s = '
      f'{out["stream_audits_per_hour"]:.0f} audits/h ({out["stream_audits_per_hour_with_setup"]:.0f}'
      f'/h with the {setup_s:.1f}s set-up per model), {n_rec / stream_s:.0f} records/s; scoring '
      f'{out["scoring_flop_rate"] / 1e9:.1f} GFLOP/s = {100 * out["scoring_fraction_of_peak"]:.1f}% '
      f'of the measured matmul peak {peak / 1e9:.0f} GFLOP/s')
  out['statistics'] = stats_bench.bench_statistics(stats_counts)
  for row in out['statistics']:
    log(f'[bench] statistics of {row["requests"]} requests: NumPy {row["numpy_s"]:.4f}s, '
        f'batched JAX {row["jax_s"]:.4f}s ({row["ratio"]:.1f}×)')
  return out
