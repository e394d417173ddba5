"""A verifier bank: B verification models trained once, shared by many deletion requests.

A deletion request removes *units of deletion* — groups of records (a data
subject, an author); by default every record is its own group. Each of the B
bank members trains on a random fraction ``ratio`` (~15%) of the *groups* of
D, all B in one compiled program. A member is OUT for a group it did not
train on, with probability ``1 − ratio`` for every group; a request of g
groups finds ``B (1 − ratio)^g`` usable members on average. Sampling
records instead of groups would leave ``B 0.85^m`` for a request of m records
(about 3 of 64 for m = 20): the bank samples groups.

Uses of the bank:

* the population test of any request (:func:`jaxaudit.audit.audit` with
  ``bank=``): each record gets its own K verifiers, K members OUT for its
  group (:func:`assign`); records of D_ref take the OUT set of a random
  group, so that under H0 a record of the request and a record of D_ref are
  exchangeable exactly as with K fresh verifiers trained on Dr — and no
  request, however large, trains anything. Each member runs only on the
  records assigned to it (:func:`assigned_logits`): the cost is that of K
  models, not B.
* :mod:`jaxaudit.audit.records` — the per-record test: for each record, all
  the members OUT for its group (about 85% of B).

Storage: a bank directory holds ``bank.json`` (its identity: data
fingerprint, D, the groups, the model, the recipe, ratio, member groups) and
one checkpoint per chunk of members (``chunk-0000``, ``chunk-0001``, ...:
stacked parameters plus ``layout.npz`` with each member's groups), written
atomically; a bank grows by appending chunks. Loading checks the identity
against the request's data and split like every checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxaudit import checkpoint, io_utils, locking
from jaxaudit.data import Dataset
from jaxaudit.errors import AuditError, CheckpointError
from jaxaudit.train import Recipe, train_ensemble


BANK_FILE = 'bank.json'
LAYOUT = 'layout'
CHUNK_FMT = 'chunk-{:04d}'


def singleton_groups(n_pool: int, train: np.ndarray) -> np.ndarray:
  """Every record of D its own group.

  Args:
    n_pool: size of the pool (``len(dataset.x_train)``).
    train: (n,) pool indices of D.
  Returns:
    (n_pool,) int64 group id per pool record: the record's index on D, -1 elsewhere.
  """
  g = np.full(int(n_pool), -1, np.int64)
  train = np.asarray(train, np.int64)
  g[train] = train
  return g


def synthetic_users(n_pool: int, train: np.ndarray, *, min_records: int = 1,
                    max_records: int = 20, seed: int = 0) -> np.ndarray:
  """Assigns the records of D to synthetic users of ``min_records``..``max_records`` records.

  Sizes are uniform on that range; records are assigned in a random order
  (deterministic in ``seed``), so a user's records are a random subset of D.

  Returns:
    (n_pool,) int64 user id per pool record (0, 1, ...), -1 outside D.
  """
  if not 1 <= min_records <= max_records:
    raise AuditError(f'user sizes need 1 <= min_records <= max_records, got '
                     f'{min_records}, {max_records}')
  train = np.asarray(train, np.int64)
  rng = np.random.default_rng([int(seed), 4201])
  order = rng.permutation(train)
  sizes = []
  while sum(sizes) < len(order):
    sizes.append(int(rng.integers(min_records, max_records + 1)))
  g = np.full(int(n_pool), -1, np.int64)
  start = 0
  for uid, s in enumerate(sizes):
    g[order[start:start + s]] = uid
    start += s
  return g


def check_groups(groups: Any, n_pool: int, train: np.ndarray) -> np.ndarray:
  """Validates per-record group ids: (n_pool,) ints, ≥ 0 on D; returns them as int64."""
  g = np.asarray(groups)
  if g.shape != (int(n_pool),) or not np.issubdtype(g.dtype, np.integer):
    raise AuditError(f'group ids must be ({n_pool},) integers (one per pool record); got '
                     f'{g.dtype} {g.shape}')
  if np.any(g[np.asarray(train)] < 0):
    raise AuditError('every record of D needs a group id >= 0')
  return g.astype(np.int64)


class VerifierBank(NamedTuple):
  """B verification models over the groups of D.

  Attributes:
    params: stacked (B, ...) parameters.
    group_ids: (G,) sorted group ids of D.
    record_group: (n_pool,) position in ``group_ids`` of each pool record's
      group, -1 outside D.
    in_groups: (B, G) bool, member b trained on group g.
    member_groups: (Gm,) positions of the groups reserved as Mu's member
      reference (no member trains on them).
    ratio: fraction of the groups each member trains on.
    key: the bank's identity (hex), fixed by what determines it.
    trained: members trained by this process (0: all loaded).
    wall_time_s: training time spent by this process.
  """
  params: Any
  group_ids: np.ndarray
  record_group: np.ndarray
  in_groups: np.ndarray
  member_groups: np.ndarray
  ratio: float
  key: str
  trained: int = 0
  wall_time_s: float = 0.0

  @property
  def size(self) -> int:
    return int(self.in_groups.shape[0])

  def groups_of(self, records: np.ndarray) -> np.ndarray:
    """(n,) pool indices -> (n,) group positions (AuditError for records outside D)."""
    g = self.record_group[np.asarray(records, np.int64)]
    if np.any(g < 0):
      raise AuditError(f'{int(np.sum(g < 0))} record(s) of the request are not in D')
    return g

  def out_mask(self, records: np.ndarray) -> np.ndarray:
    """(n,) pool indices of D -> (B, n) bool: member b trained on none of the record's group."""
    return ~self.in_groups[:, self.groups_of(records)]

  def usable(self, records: np.ndarray) -> np.ndarray:
    """(B,) bool: members OUT for every group of ``records``."""
    g = np.unique(self.groups_of(records))
    return ~np.any(self.in_groups[:, g], axis=1)

  def check_training_set(self, train: np.ndarray) -> None:
    """AuditError unless the bank was built over exactly this D ((n,) pool indices)."""
    train = np.asarray(train, np.int64)
    if (len(self.record_group) <= int(train.max()) or np.any(self.record_group[train] < 0)
        or int(np.sum(self.record_group >= 0)) != len(train)):
      raise AuditError('the verifier bank was built over another training set D than this '
                       "request's; build one for this split")

  def member_records(self) -> np.ndarray:
    """Sorted pool indices of the member reference (records of the member groups)."""
    return np.flatnonzero(np.isin(self.record_group, self.member_groups))

  def member_reference(self, forget: np.ndarray) -> np.ndarray:
    """Sorted pool indices of Mu's member reference for a request removing ``forget``:
    the member records outside Du (the bank's for its own audits, lent to fresh verifiers)."""
    return np.setdiff1d(self.member_records(), forget)

  def subsets(self, which: np.ndarray) -> np.ndarray:
    """(k,) member indices -> (k, M) pool indices each trained on (ragged rows padded by
    repeating their first record)."""
    rows = [np.flatnonzero(np.isin(self.record_group, np.flatnonzero(self.in_groups[b])))
            for b in np.asarray(which)]
    m = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.full(m - len(r), r[0])]) for r in rows])


def bank_key(dataset: Dataset, train: np.ndarray, groups: np.ndarray, model, recipe: Recipe, *,
             ratio: float, member_sample: int, seed: int, loss: Callable | None = None) -> str:
  """sha256 of everything that determines a bank's members (hex, 24 characters)."""
  fields = dict(data=dataset.fingerprint,
                train=hashlib.sha256(np.asarray(train, np.int64).tobytes()).hexdigest(),
                groups=hashlib.sha256(np.asarray(groups, np.int64).tobytes()).hexdigest(),
                model=type(model).__name__, model_cfg=repr(model), recipe=recipe.to_dict(),
                ratio=float(ratio), members=int(member_sample), seed=int(seed))
  if loss is not None:
    fields['loss'] = repr(loss)
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def _layout(groups: np.ndarray, train: np.ndarray, member_sample: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(group_ids (G,), record_group (n_pool,), member group positions (Gm,))."""
  train = np.asarray(train, np.int64)
  group_ids = np.unique(groups[train])
  record_group = np.full(len(groups), -1, np.int64)
  record_group[train] = np.searchsorted(group_ids, groups[train])
  sizes = np.bincount(record_group[train], minlength=len(group_ids))
  rng = np.random.default_rng([int(seed), 6151])
  order = rng.permutation(len(group_ids))
  cap = min(int(member_sample), len(train) // 4)
  take = int(np.searchsorted(np.cumsum(sizes[order]), cap, side='left')) + 1 if cap > 0 else 0
  members = np.sort(order[:min(take, len(order) - 1)]) if cap > 0 else np.zeros(0, np.int64)
  return group_ids, record_group, members.astype(np.int64)


def _draw_members(num: int, num_groups: int, candidates: np.ndarray, ratio: float,
                  rng: np.random.Generator) -> np.ndarray:
  """(num, G) bool: each member takes round(ratio · G) groups from ``candidates``."""
  m = int(round(ratio * num_groups))
  if m < 1 or m > len(candidates):
    raise AuditError(f'bank members of {m} groups ({ratio:.0%} of {num_groups}) cannot be drawn '
                     f'from {len(candidates)} available groups')
  out = np.zeros((num, num_groups), bool)
  for b in range(num):
    out[b, rng.choice(candidates, m, replace=False)] = True
  return out


def _train_members(model, dataset: Dataset, recipe: Recipe, record_group: np.ndarray,
                   in_groups: np.ndarray, seeds: np.ndarray, loss: Callable | None,
                   log: Callable[[str], None]) -> tuple[Any, float]:
  """Trains one member per row of ``in_groups`` (one program); returns (params, seconds)."""
  subsets = [np.flatnonzero(np.isin(record_group, np.flatnonzero(row))) for row in in_groups]
  log(f'[bank] training {len(subsets)} members on ~{int(np.mean([len(s) for s in subsets]))} '
      f'records each, {recipe.epochs} epochs, one program')
  t0 = time.time()
  keys = jax.vmap(lambda s: jax.random.key(s))(np.asarray(seeds, np.uint32))
  res = train_ensemble(model, dataset.x_train, dataset.y_train, subsets, keys, recipe, loss=loss)
  params = jax.block_until_ready(res.params)
  if res.diverged():
    raise AuditError(f'bank members {res.diverged()} diverged in training; lower the learning rate')
  return params, time.time() - t0


def _member_seeds(seed: int, start: int, num: int) -> np.ndarray:
  return (np.uint32(int(seed) * 1_000_003 % (2**31)) + np.arange(start, start + num,
                                                                  dtype=np.uint32))


def build_bank(model, dataset: Dataset, train: np.ndarray, recipe: Recipe, *, size: int = 64,
               groups: np.ndarray | None = None, ratio: float = 0.15, member_sample: int = 1000,
               seed: int = 0, path: str | None = None, loss: Callable | None = None,
               log: Callable[[str], None] = lambda s: None) -> VerifierBank:
  """Trains (or loads from ``path``) a bank of ``size`` members over the groups of D.

  Args:
    model: Linen module of the members.
    dataset: the data.
    train: (n,) pool indices of D (the original model's training set).
    recipe: the members' training recipe.
    size: B, the number of members (an existing bank with fewer is extended).
    groups: (n_pool,) group ids (None: every record its own group).
    ratio: fraction of D's groups each member trains on (about 0.15).
    member_sample: records (whole groups) of D reserved as Mu's member reference.
    seed: seed of the member groups, the subsets and the members' keys.
    path: bank directory (None: in memory only). Concurrent builders are
      serialised by ``path/.lock``.
    loss: the task's per-example loss (None: cross-entropy).
  Returns:
    The VerifierBank (at least ``size`` members).
  """
  if int(size) < 2:
    raise AuditError(f'a verifier bank needs at least 2 members, got {size}')
  if not 0 < ratio < 1:
    raise AuditError(f'bank ratio must be in (0, 1), got {ratio}')
  train = np.asarray(train, np.int64)
  n_pool = len(dataset.x_train)
  groups = singleton_groups(n_pool, train) if groups is None else check_groups(groups, n_pool,
                                                                                train)
  key = bank_key(dataset, train, groups, model, recipe, ratio=ratio,
                 member_sample=member_sample, seed=seed, loss=loss)
  group_ids, record_group, member_groups = _layout(groups, train, member_sample, seed)
  ident = dict(bank_key=key, dataset_fingerprint=dataset.fingerprint, ratio=float(ratio),
               num_groups=int(len(group_ids)), member_groups=member_groups.tolist(),
               model=type(model).__name__, recipe=recipe.to_dict(), seed=int(seed))
  empty = VerifierBank(None, group_ids, record_group, np.zeros((0, len(group_ids)), bool),
                       member_groups, float(ratio), key)
  if path is None:
    return _grow(empty, model, dataset, recipe, int(size), None, seed, loss, log)
  if os.path.isdir(path) and os.listdir(path) and not os.path.exists(
      os.path.join(path, BANK_FILE)) and set(os.listdir(path)) != {'.lock'}:
    raise AuditError(f'{path} exists and is not a verifier bank; choose another bank directory')
  with locking.file_lock(os.path.join(path, '.lock'), what=f'verifier bank {path}', log=log):
    if os.path.exists(os.path.join(path, BANK_FILE)):
      bank = _load(path, empty, ident)
      log(f'[bank] loaded {bank.size} members from {path}')
    else:
      io_utils.write_json(os.path.join(path, BANK_FILE), ident)
      io_utils.mark(path, 'verifier_bank')
      bank = empty
    if bank.size < size:
      bank = _grow(bank, model, dataset, recipe, int(size) - bank.size, path, seed, loss, log)
  return bank


def _grow(bank: VerifierBank, model, dataset: Dataset, recipe: Recipe, num: int,
          path: str | None, seed: int, loss, log) -> VerifierBank:
  """Appends ``num`` members (each on a random ``ratio`` of the non-reserved groups) as a
  new chunk (saved under ``path`` when given)."""
  g = len(bank.group_ids)
  start = bank.size
  rng = np.random.default_rng([int(seed), 9173, start])
  banned = np.zeros(g, bool)
  banned[bank.member_groups] = True
  in_groups = _draw_members(num, g, np.flatnonzero(~banned), bank.ratio, rng)
  seeds = _member_seeds(seed, start, num)
  params, wall = _train_members(model, dataset, recipe, bank.record_group, in_groups, seeds, loss,
                                log)
  if path is not None:
    chunk = CHUNK_FMT.format(_num_chunks(path))
    checkpoint.save_checkpoint(
        os.path.join(path, chunk), params,
        dict(kind='verifier_bank_chunk', bank_key=bank.key, ensemble_size=num, start=start,
             dataset_fingerprint=dataset.fingerprint, model=type(model).__name__,
             wall_time_s=wall),
        extra_arrays={LAYOUT: dict(in_groups=in_groups, seeds=seeds)})
  params_all = params if bank.params is None else jax.tree.map(
      lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]), bank.params, params)
  return bank._replace(params=params_all, in_groups=np.concatenate([bank.in_groups, in_groups]),
                       trained=bank.trained + num, wall_time_s=bank.wall_time_s + wall)


def _num_chunks(path: str) -> int:
  n = 0
  while os.path.exists(os.path.join(path, CHUNK_FMT.format(n))):
    n += 1
  return n


def _load(path: str, empty: VerifierBank, ident: dict) -> VerifierBank:
  """Loads every chunk of the bank at ``path``, checked against the expected identity."""
  with open(os.path.join(path, BANK_FILE)) as f:
    saved = json.load(f)
  for k in ('bank_key', 'dataset_fingerprint', 'num_groups', 'member_groups'):
    if saved.get(k) != ident[k]:
      raise CheckpointError(f'verifier bank {path} was built for other data, split, groups, '
                            f'model or settings ({k} differs); use another --bank directory')
  params, rows = [], []
  for c in range(_num_chunks(path)):
    cpath = os.path.join(path, CHUNK_FMT.format(c))
    p, meta = checkpoint.load_checkpoint(cpath, expect=dict(bank_key=empty.key))
    lay = checkpoint.load_arrays(cpath, LAYOUT, meta)
    if lay['in_groups'].shape != (meta['ensemble_size'], len(empty.group_ids)):
      raise CheckpointError(f'bank chunk {cpath} has a layout of the wrong shape')
    if np.any(lay['in_groups'][:, empty.member_groups]):
      raise CheckpointError(f'bank chunk {cpath} trained on member-reference groups')
    params.append(p)
    rows.append(lay['in_groups'].astype(bool))
  if not params:
    return empty
  stacked = jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *params)
  return empty._replace(params=stacked, in_groups=np.concatenate(rows))


def assign(bank: VerifierBank, records: np.ndarray, k: int, *, seed: int = 0,
           pseudo: bool = False) -> np.ndarray:
  """K bank members per record, each OUT for the record's group (the record's verifiers).

  A record's members are K distinct members drawn at random from those OUT
  for its group, by a generator seeded with (bank seed, ``seed``, record id):
  a record gets the same members in every request. Records outside D (D_ref,
  test) and the member reference — ``pseudo=True`` — take the OUT set of a
  random non-reserved group of D, drawn from the same seed, so that their
  members follow the law of a record of D's.

  Args:
    bank: the bank.
    records: (n,) pool indices (records of D unless ``pseudo``).
    k: members per record (K ≥ 2).
    seed: the audit's seed.
    pseudo: draw the OUT set of a random group instead of the record's own.
  Returns:
    (K, n) int member indices.
  Raises:
    AuditError: some record has fewer than K OUT members (grow the bank).
  """
  records = np.asarray(records, np.int64)
  k = int(k)
  pool_groups = np.setdiff1d(np.arange(len(bank.group_ids)), bank.member_groups)
  out = np.empty((k, len(records)), np.int64)
  base = int.from_bytes(bytes.fromhex(bank.key[:8]), 'little')
  for j, r in enumerate(records):
    rng = np.random.default_rng([base, int(seed), int(r), 1 if pseudo else 0])
    g = rng.choice(pool_groups) if pseudo else bank.record_group[r]
    if g < 0:
      raise AuditError(f'record {int(r)} is not in D; query it with pseudo=True')
    cand = np.flatnonzero(~bank.in_groups[:, g])
    if len(cand) < k:
      raise AuditError(f'only {len(cand)} bank member(s) are OUT for record {int(r)}; the audit '
                       f'needs {k}: grow the bank (config.audit.bank_size)')
    out[:, j] = rng.choice(cand, k, replace=False)
  return out


def assigned_logits(model, bank: VerifierBank, views_x: np.ndarray, chosen: np.ndarray
                    ) -> np.ndarray:
  """Outputs of each record's own K members on its A views.

  Each member runs only on the records it is assigned to (padded to one
  length over the members, one vmapped program), so the cost is that of K
  models on the records, not B.

  Args:
    model: the members' Linen module.
    bank: the bank.
    views_x: (A, n, *input_shape) inputs.
    chosen: (K, n) member indices (:func:`assign`).
  Returns:
    (A, K, n, C) float32 outputs: ``[a, k, i]`` is member ``chosen[k, i]`` on view a of record i.
  """
  from jaxaudit.train.evaluate import predict_logits_gathered
  a, n = views_x.shape[:2]
  k = chosen.shape[0]
  flat_m = chosen.reshape(-1)                                 # (K n,) slot-major
  flat_r = np.tile(np.arange(n), k)
  order = np.argsort(flat_m, kind='stable')
  counts = np.bincount(flat_m, minlength=bank.size)
  used = np.flatnonzero(counts)
  width = int(counts.max())
  starts = np.concatenate([[0], np.cumsum(counts)])[used]
  # rows[u, j]: the j-th record member used[u] runs on (padded with its first).
  rows = np.stack([flat_r[order[s:s + c]][np.minimum(np.arange(width), c - 1)]
                   for s, c in zip(starts, counts[used])])
  # Member used[u] reads flat rows a n + rows[u, w] of the (A n, ...) views, view-major.
  flat_idx = (np.arange(a)[None, :, None] * n + rows[:, None, :]).reshape(len(used), a * width)
  params = jax.tree.map(lambda p: np.asarray(p)[used], bank.params)
  lg = predict_logits_gathered(model, params, views_x.reshape((a * n,) + views_x.shape[2:]),
                               flat_idx)                      # (U, A W, C)
  lg = lg.reshape(len(used), a, width, -1)
  out = np.empty((a, k, n, lg.shape[-1]), np.float32)
  slot = np.repeat(np.arange(k), n)
  for u, (s, c) in enumerate(zip(starts, counts[used])):
    idx = order[s:s + c]
    out[:, slot[idx], flat_r[idx]] = lg[u, :, :c]
  return out


class BankVerifiers(NamedTuple):
  """The verifiers of one audit drawn from a bank: K members per record (:func:`assign`).

  Stands where a :class:`jaxaudit.audit.verifiers.VerifierSet` stands in the
  audit runner; :meth:`logits` replaces the ensemble's forward pass.

  Attributes:
    bank: the bank.
    model: the members' Linen module.
    k: members per record.
    seed: the audit's seed (the assignment's).
    members: (m,) pool indices of Mu's member reference (the bank's, minus Du).
    cache: optional dict owned by the caller: outputs of records queried with
      ``pseudo=True`` (D_ref, test, members) are kept there, so that a stream
      of requests computes the bank's side of D_ref once.
  """
  bank: VerifierBank
  model: Any
  k: int
  seed: int
  members: np.ndarray
  cache: dict | None = None

  @property
  def num_models(self) -> int:
    return int(self.k)

  @property
  def ratio(self) -> float:
    return self.bank.ratio

  @property
  def cache_key(self) -> str:
    return f'{self.bank.key}-b{self.bank.size}-k{self.k}-s{self.seed}'

  @property
  def from_cache(self) -> bool:
    return True

  @property
  def wall_time_s(self) -> float:
    return 0.0

  def logits(self, views_x: np.ndarray, records: np.ndarray, *, pseudo: bool,
             views: tuple[str, ...] = ('identity',), offset: int = 0) -> np.ndarray:
    """(A, n, ...) inputs of records (n,) -> (A, K, n, C) outputs of their members.

    Args:
      views_x: the records' views.
      records: their ids (pool indices; for ``pseudo`` records any ids, shifted
        by ``offset`` to keep test and pool ids apart).
      pseudo: records outside D's groups (D_ref, test, members): a random group's OUT set.
      views: the view names (they key the cache).
      offset: added to ``records`` for the assignment's seeds and the cache keys.
    """
    ids = np.asarray(records, np.int64) + int(offset)
    if not pseudo or self.cache is None:
      return assigned_logits(self.model, self.bank, views_x,
                             assign(self.bank, ids, self.k, seed=self.seed, pseudo=pseudo))
    key = (self.cache_key, tuple(views))
    have_ids, have = self.cache.get(key, (np.zeros(0, np.int64), None))
    missing = ~np.isin(ids, have_ids)
    if missing.any():
      new_ids, first = np.unique(ids[missing], return_index=True)
      new = assigned_logits(self.model, self.bank, views_x[:, np.flatnonzero(missing)[first]],
                            assign(self.bank, new_ids, self.k, seed=self.seed, pseudo=True))
      all_ids = np.concatenate([have_ids, new_ids])
      order = np.argsort(all_ids)
      merged = new if have is None else np.concatenate([have, new], axis=2)
      have_ids, have = all_ids[order], merged[:, :, order]
      self.cache[key] = (have_ids, have)
    return have[:, :, np.searchsorted(have_ids, ids)]
