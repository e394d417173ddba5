"""Verification models: K small models trained on random subsets of Dr.

They are provably ignorant of Du (and of D_ref): their training subsets are
drawn from Dr after reserving a *member sample* — records of Dr that no
verifier sees, which serve as the "remembered" reference of the audited model.
All K members train in one compiled program (:func:`jaxaudit.train.train_ensemble`)
and are cached on disk keyed by everything that determines them, so auditing
many targets for the same request trains them once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxaudit import checkpoint, locking
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.data.splits import split_hash
from jaxaudit.errors import AuditError, CheckpointError
from jaxaudit.train import Recipe, train_ensemble


class VerifierSet(NamedTuple):
  """K verification models.

  Attributes:
    params: stacked (K, ...) parameters.
    subsets: (K, M) pool indices each verifier trained on (all in Dr).
    members: (m,) pool indices of Dr that no verifier trained on.
    ratio: subset size as a fraction of |Dr|.
    cache_key: hex digest identifying this set.
    wall_time_s: training time (0 when loaded from the cache).
    from_cache: whether it was loaded from disk.
  """
  params: Any
  subsets: np.ndarray
  members: np.ndarray
  ratio: float
  cache_key: str
  wall_time_s: float
  from_cache: bool

  @property
  def num_models(self) -> int:
    return int(self.subsets.shape[0])


def plan_subsets(split: AuditSplit, *, num_verifiers: int, ratio: float, member_sample: int,
                 seed: int, members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Draws the member sample and the K verifier subsets (pure in its arguments).

  Args:
    members: a given member reference (pool indices inside Dr, e.g. a verifier
      bank's member groups, so that fresh verifiers and the bank share Mu's
      member reference); None: ``member_sample`` records of Dr drawn with ``seed``.
  Returns:
    (subsets (K, M) sorted pool indices, members (m,) sorted pool indices),
    with every subset ⊂ Dr \\ members.
  """
  if num_verifiers < 2:
    raise AuditError(f'the audit needs at least 2 verification models, got K={num_verifiers}')
  if not 0 < ratio < 1:
    raise AuditError(f'verifier subset ratio must be in (0, 1), got {ratio}')
  retain = np.asarray(split.retain)
  rng = np.random.default_rng([int(seed), 7919])
  if members is not None:
    members = np.unique(np.asarray(members, np.int64))
    outside = np.setdiff1d(members, retain)
    if outside.size:
      raise AuditError(f'{outside.size} member-reference record(s) lie outside Dr, e.g. '
                       f'{outside[:5].tolist()}')
  else:
    n_mem = int(min(member_sample, len(retain) // 4))
    members = (np.sort(rng.choice(retain, n_mem, replace=False)) if n_mem
               else np.zeros(0, np.int64))
  pool = np.setdiff1d(retain, members)
  m = int(round(ratio * len(retain)))
  if m < 1 or m > len(pool):
    raise AuditError(f'verifier subsets of {m} records cannot be drawn from the {len(pool)} '
                     f'retained records left after the member sample; adjust ratio={ratio}')
  subsets = np.stack([np.sort(rng.choice(pool, m, replace=False)) for _ in range(num_verifiers)])
  return subsets.astype(np.int64), members.astype(np.int64)


def check_disjoint(split: AuditSplit, subsets: np.ndarray, members: np.ndarray | None = None) -> None:
  """Raises AuditError if verifier data touch Du or D_ref, or include members."""
  used = np.unique(np.asarray(subsets).ravel())
  for name, idx in (('Du (the forget set)', split.forget), ('D_ref (the reference set)', split.ref)):
    both = np.intersect1d(used, idx)
    if both.size:
      raise AuditError(f'verification data overlap {name} in {both.size} record(s), e.g. '
                       f'{both[:5].tolist()}; verifiers must never see them')
  outside = np.setdiff1d(used, split.retain)
  if outside.size:
    raise AuditError(f'{outside.size} verifier record(s) lie outside Dr, e.g. {outside[:5].tolist()}')
  if members is not None:
    both = np.intersect1d(used, members)
    if both.size:
      raise AuditError(f'{both.size} member-reference record(s) were used to train verifiers')


def cache_key(dataset: Dataset, split: AuditSplit, model, recipe: Recipe, *, num_verifiers: int,
              ratio: float, member_sample: int, seed: int, loss: Callable | None = None,
              init_id: str = '', members: np.ndarray | None = None) -> str:
  """sha256 of everything that determines a verifier set (the loss when not the default,
  the fingerprint of the parameters the verifiers start from when given)."""
  fields = dict(data=dataset.fingerprint, split=split_hash(split),
                du=hashlib.sha256(np.asarray(split.forget, np.int64).tobytes()).hexdigest(),
                model=type(model).__name__, model_cfg=repr(model), recipe=recipe.to_dict(),
                k=num_verifiers, ratio=float(ratio), members=int(member_sample), seed=int(seed))
  if loss is not None:
    fields['loss'] = repr(loss)
  if init_id:
    fields['init'] = str(init_id)
  if members is not None:
    fields['member_records'] = hashlib.sha256(
        np.unique(np.asarray(members, np.int64)).tobytes()).hexdigest()
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def get_verifiers(model, dataset: Dataset, split: AuditSplit, recipe: Recipe, *,
                  num_verifiers: int = 4, ratio: float = 0.15, member_sample: int = 1000,
                  seed: int = 0, cache_dir: str | None = None, model_meta: dict | None = None,
                  loss: Callable | None = None, init: tuple[Any, str] = (None, ''),
                  members: np.ndarray | None = None,
                  log: Callable[[str], None] = lambda s: None) -> VerifierSet:
  """Trains (or loads from ``cache_dir``) K verification models.

  Args:
    model: Linen module of the verifiers (any architecture works: they are a
      difficulty reference; the audited model's own architecture is best).
    dataset, split: the audit request.
    recipe: training recipe (the original's, possibly with fewer epochs).
    num_verifiers: K ≥ 2.
    ratio: subset size as a fraction of |Dr| (about 0.15).
    member_sample: size of the member reference reserved from Dr.
    seed: seed of the subsets and of the verifiers' keys.
    cache_dir: directory of the cache (one checkpoint ``cache_dir/KEY`` per
      key, its parameter checksums verified on load); None: no cache. Calls
      for the same entry from concurrent processes are serialised by the file
      lock ``cache_dir/KEY.lock``: one trains and saves, the others wait and
      load; the OS releases the lock of a process that dies.
    model_meta: extra metadata for the checkpoint (e.g. model name/kwargs).
    loss: the task's per-example training loss (``None``: softmax cross-entropy;
      see :func:`jaxaudit.train.train_ensemble`).
    init: (params every verifier starts from — e.g. the base LM that M was
      fine-tuned from — or None for a fresh initialisation; their fingerprint,
      which keys the cache) (:meth:`jaxaudit.tasks.Task.initial_params`).
    members: a given member reference (see :func:`plan_subsets`); None: drawn.
  Returns:
    A VerifierSet: params stacked (K, ...), subsets (K, M), members (m,).
  Raises:
    CheckpointError: the cache entry is corrupt or does not match the request.
  """
  given = members
  subsets, members = plan_subsets(split, num_verifiers=num_verifiers, ratio=ratio,
                                  member_sample=member_sample, seed=seed, members=given)
  check_disjoint(split, subsets, members)
  key = cache_key(dataset, split, model, recipe, num_verifiers=num_verifiers, ratio=ratio,
                  member_sample=member_sample, seed=seed, loss=loss, init_id=init[1],
                  members=given)
  if not cache_dir:
    return _train(model, dataset, split, recipe, subsets, members, ratio, key, seed, None,
                  model_meta, log, loss, init[0])
  path = os.path.join(cache_dir, key)
  # One process trains a cache entry; concurrent requests for it wait, then load it.
  with locking.file_lock(f'{path}.lock', what=f'verifier cache entry {key}', log=log):
    if checkpoint.exists(path):
      try:
        params, _ = checkpoint.load_checkpoint(path, expect=dict(verifier_key=key,
                                                                 ensemble_size=num_verifiers))
      except CheckpointError as e:
        raise CheckpointError(f'{e} (a verifier cache entry: delete {path} to retrain it)') from e
      log(f'[verifiers] loaded {num_verifiers} from cache {path}')
      return VerifierSet(params, subsets, members, ratio, key, 0.0, True)
    return _train(model, dataset, split, recipe, subsets, members, ratio, key, seed, path,
                  model_meta, log, loss, init[0])


def _train(model, dataset: Dataset, split: AuditSplit, recipe: Recipe, subsets: np.ndarray,
           members: np.ndarray, ratio: float, key: str, seed: int, path: str | None,
           model_meta: dict | None, log: Callable[[str], None],
           loss: Callable | None = None, init_params: Any = None) -> VerifierSet:
  """Trains the K verifiers on subsets (K, M) and saves them to ``path`` (None: no cache)."""
  num_verifiers = int(subsets.shape[0])
  log(f'[verifiers] training K={num_verifiers} on {subsets.shape[1]} records each '
      f'({100 * ratio:.0f}% of Dr), {recipe.epochs} epochs, one program')
  t0 = time.time()
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(int(seed)), i))(
      np.arange(num_verifiers))
  stacked = None if init_params is None else jax.tree.map(
      lambda a: np.broadcast_to(np.asarray(a), (num_verifiers,) + np.shape(a)), init_params)
  res = train_ensemble(model, dataset.x_train, dataset.y_train, subsets, keys, recipe, loss=loss,
                       init_params=stacked)
  params = jax.block_until_ready(res.params)
  wall = time.time() - t0
  log(f'[verifiers] trained in {wall:.1f}s')
  if path:
    meta = dict(model_meta or {})
    meta.update(verifier_key=key, ensemble_size=num_verifiers, kind='verifiers', ratio=ratio,
                dataset_fingerprint=dataset.fingerprint, split_hash=split_hash(split),
                recipe=recipe.to_dict(), seed=int(seed), wall_time_s=wall)
    checkpoint.save_checkpoint(path, params, meta)
  return VerifierSet(params, subsets, members, ratio, key, wall, False)
