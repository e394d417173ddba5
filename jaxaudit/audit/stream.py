"""Audits of a stream of deletion requests: one verdict per request, against a verifier bank.

:class:`StreamAuditor` does the per-model work once — Mu's and the bank's
outputs on every view of a D_ref sample and of the member reference, the
per-record calibration and null (:mod:`jaxaudit.audit.records`), the power
table — and then each batch of requests adds only its own records' queries
(Mu and the B members on A views) and one batched test (per-record
p-values, BH, Simes) over padded requests.

A request is a set of records of D (or the records of some groups); the
result per request is a dict: ``id``, ``n_records``, ``decision``
(``not_forgotten`` / ``forgotten`` / ``inconclusive``), ``p_value`` (Simes),
``power`` (at its size), ``flagged`` (pool indices BH flags at ``fdr``),
``records`` and ``record_p`` (per-record p-values), ``min_out`` (fewest OUT
members behind any of its records).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.audit import batched
from jaxaudit.audit import records as records_lib
from jaxaudit.audit.bank import VerifierBank
from jaxaudit.audit.target import Target
from jaxaudit.compilation import bucket_size
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.tasks import Task, for_dataset
from jaxaudit.train import predict_logits

MIN_OUT = 4


@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """Settings of stream audits.

  Attributes:
    views: view names of the per-record statistic (default the exact record,
      :data:`jaxaudit.audit.records.RECORD_VIEWS`), or ``auto`` (the task's
      default neighbourhood).
    standardize: standardise the statistic (LiRA-offline-like; see
      :mod:`jaxaudit.audit.records`).
    flips: horizontal flips in ``auto`` views.
    ref_sample: size of the D_ref sample (the null).
    member_sample: largest member reference used for the power table.
    alpha: level of each request's test.
    fdr: BH level of the flagged records.
    power_target: power a pass needs to count as ``forgotten``.
    bucket: records and requests are padded to powers of two, at least this many.
    seed: seed of the D_ref sample, its OUT masks and the views' noise.
  """
  views: str | tuple[str, ...] = records_lib.RECORD_VIEWS
  standardize: bool = records_lib.STANDARDIZE
  flips: bool = False
  ref_sample: int = 5000
  member_sample: int = 2000
  alpha: float = 0.05
  fdr: float = 0.05
  power_target: float = 0.8
  bucket: int = 32
  seed: int = 0

  def __post_init__(self):
    if not 0 < self.alpha < 1 or not 0 < self.fdr < 1:
      raise AuditError(f'alpha and fdr must be in (0, 1), got {self.alpha}, {self.fdr}')
    if self.ref_sample < 2 * records_lib.TAIL_COUNT or self.bucket < 1:
      raise AuditError(f'ref_sample must be >= {2 * records_lib.TAIL_COUNT} and bucket >= 1')


def _bucket(n: int, size: int) -> int:
  """Padded length: the next power of two, at least ``size`` (one program per bucket)."""
  return max(int(size), bucket_size(n, bits=1))


@jax.jit
def _request_tests(p, mask, alpha, fdr):
  """Per request (vmapped over the leading axis): Simes p and BH flags; p, mask (R, m)."""
  sim = jax.vmap(batched.simes)(p, mask)
  flags = jax.vmap(lambda a, b: batched.benjamini_hochberg_masked(a, b, fdr))(p, mask)
  return sim, flags & mask


class StreamAuditor:
  """Per-request verdicts for one audited model against one verifier bank.

  Args:
    target: Mu.
    dataset: the data.
    split: the base split: D (``train``), D_ref (``ref``); its ``forget`` is ignored.
    bank: the verifier bank over D's groups (:func:`jaxaudit.audit.bank.build_bank`).
    bank_model: the members' Linen module.
    settings: :class:`StreamSettings`.
    task: the task (default: classification).
    cache: optional dict owned by the caller, where the bank's scores on the
      D_ref sample and the member reference are kept: auditors of other models
      over the same bank and settings reuse them.
  """

  def __init__(self, target: Target, dataset: Dataset, split: AuditSplit, bank: VerifierBank,
               bank_model, settings: StreamSettings = StreamSettings(), task: Task | None = None,
               cache: dict | None = None, log: Callable[[str], None] = lambda s: None):
    t0 = time.time()
    self.target, self.dataset, self.bank, self.model = target, dataset, bank, bank_model
    self.settings = s = settings
    self.task = task = for_dataset(dataset) if task is None else task
    if bank.size < 2 * MIN_OUT:
      raise AuditError(f'the per-record test needs a bank of at least {2 * MIN_OUT} members, '
                       f'got {bank.size}')
    bank.check_training_set(split.train)
    self.views = task.default_views(dataset.input_shape, s.flips) if s.views == 'auto' \
        else tuple(s.views)
    rng = np.random.default_rng([int(s.seed), 8087])
    ref = np.sort(rng.choice(split.ref, min(s.ref_sample, len(split.ref)), replace=False))
    mem = bank.member_records()
    mem = np.sort(rng.choice(mem, min(s.member_sample, len(mem)), replace=False))
    pool_groups = np.setdiff1d(np.arange(len(bank.group_ids)), bank.member_groups)
    pseudo = lambda n: ~bank.in_groups[:, rng.choice(pool_groups, n)]      # (B, n)
    self.ref_idx, self.member_idx = ref, mem
    key = (bank.key, bank.size, self.views, int(s.seed), s.ref_sample, s.member_sample)
    bank_phi = None if cache is None else cache.get(key)
    phi_t_ref, phi_b_ref = self._phi(ref, None if bank_phi is None else bank_phi[0])
    phi_t_mem, phi_b_mem = self._phi(mem, None if bank_phi is None else bank_phi[1])
    if cache is not None:
      cache[key] = (phi_b_ref, phi_b_mem)
    pseudo_ref = pseudo(len(ref))
    self.ref_out = pseudo_ref                   # (B, n_ref) the D_ref sample's OUT masks
    self.ref_phi = (phi_t_ref, phi_b_ref)      # Mu's (A, n_ref) and the members' (A, B, n_ref)
    self.null = records_lib.fit_null(phi_t_ref, phi_b_ref, pseudo_ref,
                                     phi_t_mem, phi_b_mem, pseudo(len(mem)),
                                     standardize=s.standardize)
    self._power_sizes = np.arange(1, s.bucket + 1)
    self.power_table = records_lib.power_by_size(self.null.member_p, self._power_sizes, s.alpha,
                                                 seed=s.seed)
    self._null_sorted = jnp.asarray(self.null.null_sorted, jnp.float32)
    self.setup_s = time.time() - t0
    log(f'[stream] fitted the per-record null on {len(ref)} D_ref records and '
        f'{len(mem)} members ({len(self.views)} views, B={bank.size}) in {self.setup_s:.1f}s')

  def _phi(self, idx: np.ndarray, phi_b: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Mu's (A, n) and the members' (A, B, n) membership scores on the views of records idx
    (the members' given as ``phi_b`` are not recomputed)."""
    x, y = self.dataset.x_train, self.dataset.y_train
    xq = self.task.query_views(x[idx], idx, self.views, seed=self.settings.seed)   # (A, n, ...)
    a, n = xq.shape[:2]
    tl = self.target.logits(xq, idx, self.views, self.task)                     # (A, n, C)
    if phi_b is not None:
      return np.asarray(self.task.membership_score(tl, y[idx])), phi_b
    flat = xq.reshape((a * n,) + xq.shape[2:])
    bl = predict_logits(self.model, self.bank.params, flat, ensemble=True)      # (B, A n, C)
    bl = np.transpose(bl.reshape(bl.shape[0], a, n, -1), (1, 0, 2, 3))          # (A, B, n, C)
    return (np.asarray(self.task.membership_score(tl, y[idx])),
            np.asarray(self.task.membership_score(bl, y[idx])))

  def scores(self, records: np.ndarray) -> dict[str, np.ndarray]:
    """The per-record evidence of records of D (for comparisons with peers).

    Returns:
      dict(phi_target (A, n), phi_members (A, B, n), out (B, n), statistic (n,), p (n,)).
    """
    records = np.asarray(records, np.int64)
    phi_t, phi_b = self._phi(records)
    out = self.bank.out_mask(records)
    t, p = self._test(phi_t, phi_b, out)
    return dict(phi_target=phi_t, phi_members=phi_b, out=out, statistic=t, p=p)

  def _test(self, phi_t, phi_b, out) -> tuple[np.ndarray, np.ndarray]:
    """(n,) statistics T and (n,) p-values of records from their scores and OUT masks."""
    nl = self.null
    t = records_lib.record_statistic(
        phi_t, phi_b, out, *(np.asarray(v, np.float32) for v in (nl.alpha, nl.beta, nl.tau)),
        standardize=nl.standardize)
    p = records_lib.p_values(t, self._null_sorted, nl.null_mean, nl.null_std)
    return np.asarray(t), np.asarray(p, np.float64)

  def power(self, m: int) -> float:
    """Power of a request of m records (members' resampling; beyond the table: its last entry)."""
    return float(self.power_table[min(max(int(m), 1), len(self.power_table)) - 1])

  def audit(self, requests: Sequence[tuple[Any, Sequence[int]]]) -> list[dict[str, Any]]:
    """Verdicts of a batch of requests.

    Args:
      requests: (id, pool indices of the request's records in D) pairs.
    Returns:
      One result dict per request (module docstring), in order.
    """
    s, bank = self.settings, self.bank
    reqs = []
    for rid, recs in requests:
      recs = np.unique(np.asarray(recs, np.int64))
      if recs.size == 0:
        raise AuditError(f'request {rid!r} has no records')
      if np.any((recs < 0) | (recs >= len(bank.record_group))) or np.any(
          bank.record_group[recs] < 0):
        raise AuditError(f'request {rid!r} names records outside D')
      reqs.append((rid, recs))
    if not reqs:
      return []
    # Records are queried once however many requests name them.
    uniq, inv = np.unique(np.concatenate([r for _, r in reqs]), return_inverse=True)
    # Padded to a bucket (repeating a record) so that every batch size reuses one program.
    n = len(uniq)
    padded = np.concatenate([uniq, np.full(_bucket(n, s.bucket) - n, uniq[0])])
    phi_t, phi_b = self._phi(padded)
    out = bank.out_mask(padded)
    p_rec = self._test(phi_t, phi_b, out)[1][:n]
    out = out[:, :n]
    n_out = out.sum(0)
    # Requests padded to one (R, m) array: one batched program for Simes and BH.
    m = _bucket(max(len(r) for _, r in reqs), s.bucket)
    r_pad = _bucket(len(reqs), 8)
    pm = np.ones((r_pad, m), np.float32)
    mask = np.zeros((r_pad, m), bool)
    pos, start = [], 0
    for i, (_, recs) in enumerate(reqs):
      j = inv[start:start + len(recs)]
      pos.append(j)
      pm[i, :len(recs)] = p_rec[j]
      mask[i, :len(recs)] = True
      start += len(recs)
    sim, flags = _request_tests(jnp.asarray(pm), jnp.asarray(mask), s.alpha, s.fdr)
    sim, flags = np.asarray(sim), np.asarray(flags)
    results = []
    for i, (rid, recs) in enumerate(reqs):
      j = pos[i]
      power = self.power(len(recs))
      p = float(sim[i])
      decision = ('not_forgotten' if p <= s.alpha else
                  'forgotten' if power >= s.power_target else 'inconclusive')
      results.append(dict(
          id=rid, n_records=int(len(recs)), decision=decision, p_value=p, power=power,
          flagged=recs[flags[i, :len(recs)]].tolist(), records=recs.tolist(),
          record_p=[float(v) for v in p_rec[j]], min_out=int(n_out[j].min())))
      if n_out[j].min() < MIN_OUT:
        results[-1]['warning'] = (f'only {int(n_out[j].min())} bank member(s) are OUT for some '
                                  'record: grow the bank')
    return results


def requests_from_groups(bank: VerifierBank, groups: np.ndarray,
                         requests: Iterable[tuple[Any, Sequence[int]]]
                         ) -> list[tuple[Any, np.ndarray]]:
  """(id, group ids) requests -> (id, pool indices of those groups' records in D).

  Args:
    bank: the bank (its D).
    groups: (n_pool,) the group id of each pool record (as the bank was built with).
    requests: (id, group ids).
  """
  groups = np.asarray(groups)
  out = []
  for rid, gids in requests:
    gids = np.asarray(gids, np.int64)
    recs = np.flatnonzero(np.isin(groups, gids) & (bank.record_group >= 0))
    missing = np.setdiff1d(gids, groups[recs])
    if missing.size:
      raise AuditError(f'request {rid!r} names group(s) with no record in D, e.g. '
                       f'{missing[:5].tolist()}')
    out.append((rid, recs))
  return out


__all__ = ['StreamAuditor', 'StreamSettings', 'requests_from_groups']
