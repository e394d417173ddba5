"""Run-time benchmark of the audit's per-request statistics: NumPy loop vs one JAX call.

:func:`bench_statistics`: for R audit requests (1 to 20 record scores each)
against one reference of ``n_ref`` scores, the per-request NumPy/SciPy path
(:func:`jaxaudit.audit.stats.mann_whitney`, ``delong_variance``,
``empirical_p_values`` and ``benjamini_hochberg`` in a Python loop) against
one jitted, vmapped call of
:func:`jaxaudit.audit.batched.request_statistics_batched` on the requests
padded to a fixed width. The JAX program is compiled ahead of time (its
compile time is reported separately) and timed over a few calls; both paths
get the same scores, and the rows report how far their results differ.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from jaxaudit.audit import stats


def _numpy_request(x: np.ndarray, ref: np.ndarray, q: float):
  """(p, auc, DeLong variance, record p-values, flags) of one request, NumPy/SciPy."""
  mw = stats.mann_whitney(x, ref, method='asymptotic')
  var = stats.delong_variance(x, ref) if x.size >= 2 else math.nan
  rec_p = stats.empirical_p_values(x, ref, 'greater')
  return mw.p_value, mw.auc, var, rec_p, stats.benjamini_hochberg(rec_p, q)


def bench_statistics(request_counts: Sequence[int] = (1, 10, 100, 1000),
                     n_records: tuple[int, int] = (1, 20), n_ref: int = 5000, seed: int = 0,
                     *, pad: int = 32, q: float = 0.05, repeats: int = 3) -> list[dict]:
  """Times the per-request statistics of R requests, NumPy loop vs one batched JAX call.

  Scores are normal, rounded to two decimals (so there are ties); each
  request's records are shifted by a random effect in [0, 0.5].

  Args:
    request_counts: the numbers of requests R to time.
    n_records: (min, max) records per request (inclusive), at most ``pad``.
    n_ref: reference scores shared by the requests.
    seed: data seed.
    pad: the padded request width of the JAX call.
    q: FDR of the per-record flags.
    repeats: timed JAX calls per R (the median is reported); the NumPy loop
      runs once.
  Returns:
    One row per R: requests, records (total), n_ref, pad, numpy_s, jax_s
    (median wall seconds of a call, transfers included), compile_s (lowering
    and compiling the program for this R), ratio (numpy_s / jax_s),
    max_abs_diff (largest difference of the p-values, AUCs, DeLong variances
    and record p-values between the paths), flag_mismatches, backend.
  """
  import jax
  from jaxaudit.audit import batched
  lo, hi = int(n_records[0]), int(n_records[1])
  if not 1 <= lo <= hi <= pad:
    raise ValueError(f'n_records must satisfy 1 <= min <= max <= pad={pad}; got {n_records}')
  rng = np.random.default_rng(seed)
  ref = np.round(rng.normal(0.0, 1.0, int(n_ref)), 2)
  ref32 = ref.astype(np.float32)
  ref_mask = np.ones(ref.size, bool)
  _numpy_request(np.round(rng.normal(size=3), 2), ref, q)      # warm SciPy's imports
  rows = []
  for r in request_counts:
    sizes = rng.integers(lo, hi + 1, int(r))
    reqs = [np.round(rng.normal(rng.uniform(0, 0.5), 1.0, n), 2) for n in sizes]
    t0 = time.perf_counter()
    ref_out = [_numpy_request(x, ref, q) for x in reqs]
    numpy_s = time.perf_counter() - t0

    xp, xm = batched.pad_requests(reqs, pad)
    args = (xp, xm, ref32, ref_mask, q)
    t0 = time.perf_counter()
    compiled = batched.request_statistics_batched.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))                 # warm-up call
    walls = []
    for _ in range(max(1, repeats)):
      t0 = time.perf_counter()
      out = jax.block_until_ready(compiled(*args))
      walls.append(time.perf_counter() - t0)
    jax_s = float(np.median(walls))

    out = jax.tree.map(np.asarray, out)
    diff, mismatches = 0.0, 0
    for i, (p, auc, var, rec_p, flags) in enumerate(ref_out):
      m = xm[i]
      pairs = [(p, out.p_value[i]), (auc, out.auc[i])] + (
          [(var, out.delong_variance[i])] if np.isfinite(var) else [])
      diff = max([diff] + [abs(float(a) - float(b)) for a, b in pairs]
                 + [float(np.max(np.abs(rec_p - out.record_p[i][m])))])
      mismatches += int(np.sum(flags != out.flagged[i][m]))
    rows.append(dict(requests=int(r), records=int(sizes.sum()), n_ref=int(n_ref), pad=int(pad),
                     numpy_s=float(numpy_s), jax_s=jax_s, compile_s=float(compile_s),
                     ratio=float(numpy_s / jax_s), max_abs_diff=float(diff),
                     flag_mismatches=mismatches, backend=jax.default_backend()))
  return rows
