"""Shared pieces of the peer auditors: the result type, shadow ensembles, queries.

Every peer auditor returns a :class:`PeerResult` so that experiments can put
them side by side with jaxaudit's own audit. Auditors that need shadow or
reference models train them with :func:`train_shadows`: S models on random
halves of a population, in one compiled program
(:func:`jaxaudit.train.train_ensemble`), optionally cached on disk under a key
of everything that determines them (as :mod:`jaxaudit.audit.verifiers` does).

Axis conventions: ``A`` views (the exact record first, then augmented
neighbours), ``S`` shadow models, ``n`` records, ``C`` classes. Logits of a
shadow ensemble are ``(A, S, n, C)``; of the audited model ``(A, n, C)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from jaxaudit import checkpoint, io_utils
from jaxaudit.audit import stats
from jaxaudit.audit.stats import check_unit
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.data.splits import validate_split
from jaxaudit.errors import AuditError, JaxAuditError
from jaxaudit.tasks.classification import check_logits, query_views
from jaxaudit.train import Recipe, predict_logits, train_ensemble

DECISIONS = ('forgotten', 'not_forgotten')
# Views queried by default: the exact record and a 1-px shift (images only).
DEFAULT_IMAGE_VIEWS = ('identity', 'shift_right')
# False-positive rates at which membership attacks report their TPR.
LOW_FPRS = (0.01, 0.001)

Params = Any


# -----------------------------------------------------------------------------
# Result type.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class PeerResult:
  """Outcome of one peer auditor.

  Attributes:
    name: the auditor (a key of ``jaxaudit.peers.PEERS``).
    score: its headline number (e.g. an AUC or an accuracy).
    decision: ``'forgotten'``, ``'not_forgotten'``, or None when the auditor
      has no decision rule.
    rule: the decision rule, in words.
    details: JSON-serialisable extra results (p-values, TPRs, per-set stats).
    cost: ``models_trained`` (int: models the method needs for this audit,
      see each auditor) and ``wall_time_s`` (float: wall time of the call).
  """
  name: str
  score: float
  decision: str | None
  rule: str
  details: dict[str, Any]
  cost: dict[str, Any]

  def __post_init__(self):
    if self.decision is not None and self.decision not in DECISIONS:
      raise AuditError(f'decision must be one of {DECISIONS} or None, got {self.decision!r}')
    self.score = float(self.score)
    self.details = io_utils.jsonable(self.details)
    self.cost = dict(models_trained=int(self.cost.get('models_trained', 0)),
                     wall_time_s=float(self.cost.get('wall_time_s', 0.0)))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict of every field."""
    return io_utils.jsonable(dataclasses.asdict(self))

  def summary(self) -> str:
    d = self.decision if self.decision is not None else 'no decision'
    return (f'{self.name}: score={self.score:.4g} ({d}); '
            f'{self.cost["models_trained"]} model(s), {self.cost["wall_time_s"]:.1f}s')


# -----------------------------------------------------------------------------
# Validation helpers.
# -----------------------------------------------------------------------------


def check_int(value: Any, name: str, *, minimum: int, why: str = '') -> int:
  """An int >= minimum (bools rejected); AuditError otherwise."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise AuditError(f'{name} must be an integer, got {value!r}')
  if int(value) < minimum:
    raise AuditError(f'{name} must be >= {minimum}{why}, got {int(value)}')
  return int(value)


def check_level(value: Any, name: str) -> float:
  """A float in (0, 1); AuditError otherwise."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise AuditError(f'{name} must be a number in (0, 1), got {value!r}') from e
  if not 0.0 < v < 1.0:
    raise AuditError(f'{name} must be in (0, 1), got {value!r}')
  return v


def as_float_array(x: Any, name: str, *, ndim: int | None = None,
                   finite: bool = True) -> np.ndarray:
  """``x`` as a non-empty float64 array of ``ndim`` dims (any if None); AuditError otherwise.

  Args:
    x: array-like of real numbers (bool and int accepted).
    name: the argument's name, for the message.
    ndim: required number of dimensions, or None.
    finite: reject NaN and inf.
  Returns:
    float64 array of ``x``'s shape.
  """
  try:
    arr = np.asarray(x)
  except Exception as e:  # pylint: disable=broad-except
    raise AuditError(f'{name} must be array-like; got {type(x).__name__}') from e
  if arr.dtype.kind not in 'fiub':
    raise AuditError(f'{name} must be numeric; got dtype {arr.dtype}')
  arr = arr.astype(np.float64)
  if ndim is not None and arr.ndim != ndim:
    raise AuditError(f'{name} must be {ndim}-D; got shape {arr.shape}')
  if arr.size == 0:
    raise AuditError(f'{name} is empty')
  if finite and not np.all(np.isfinite(arr)):
    raise AuditError(f'{name} contains non-finite values ({int(np.sum(np.isnan(arr)))} NaN, '
                     f'{int(np.sum(np.isinf(arr)))} inf)')
  return arr


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
  """``value`` if it is one of ``choices``; AuditError naming them otherwise."""
  if value not in tuple(choices):
    raise AuditError(f'{name} must be one of {tuple(choices)}, got {value!r}')
  return value


def check_request(target: Target | None, dataset: Dataset, split: AuditSplit, *,
                  min_forget: int = 2, min_ref: int = 2) -> None:
  """Validates the audit request at a peer auditor's boundary.

  Raises:
    AuditError: ``target`` is not a Target, the split does not fit the data,
      or Du / D_ref are too small to compare.
  """
  if target is not None and not isinstance(target, Target):
    raise AuditError(f'target must be a jaxaudit.audit.Target, got {type(target).__name__}')
  if not isinstance(dataset, Dataset):
    raise AuditError(f'dataset must be a jaxaudit.data.Dataset, got {type(dataset).__name__}')
  try:
    validate_split(split, dataset)
  except JaxAuditError as e:
    if isinstance(e, AuditError):
      raise
    raise AuditError(f'invalid audit split: {e}') from e
  if len(split.forget) < min_forget:
    raise AuditError(f'Du needs at least {min_forget} records, got {len(split.forget)}')
  if len(split.ref) < min_ref:
    raise AuditError(f'D_ref needs at least {min_ref} records, got {len(split.ref)}')


def resolve_views(views: Sequence[str] | None, dataset: Dataset,
                  target: Target | None = None) -> tuple[str, ...]:
  """The views to query: the default, validated, restricted to what ``target`` answers.

  Args:
    views: view names (``jaxaudit.tasks.classification.VIEWS``) starting with
      ``'identity'``, or None for ``('identity', 'shift_right')`` on images and
      ``('identity',)`` otherwise.
    dataset: the data (decides image vs. not).
    target: if a logits table, views it cannot answer are dropped.
  Returns:
    A non-empty tuple starting with ``'identity'``.
  """
  if views is None:
    views = DEFAULT_IMAGE_VIEWS if dataset.is_image else ('identity',)
  if isinstance(views, str):
    views = (views,)
  views = tuple(str(v) for v in views)
  if not views or views[0] != 'identity':
    raise AuditError(f"views must start with 'identity', got {views}")
  if len(set(views)) != len(views):
    raise AuditError(f'views must be distinct, got {views}')
  if not dataset.is_image and any(v.startswith('shift') or v == 'flip' for v in views):
    raise AuditError(f'views {views} need image inputs; data set {dataset.name!r} has input '
                     f'shape {dataset.input_shape}')
  if target is not None:
    avail = target.available_views()
    if avail is not None:
      views = tuple(v for v in views if v in avail)
  return views


# -----------------------------------------------------------------------------
# Queries.
# -----------------------------------------------------------------------------


def target_logits(target: Target, dataset: Dataset, idx: np.ndarray, views: Sequence[str], *,
                  seed: int = 0, test: bool = False) -> np.ndarray:
  """Logits (A, n, C) of the audited model on A views of records ``idx``.

  Args:
    target: the audited model.
    dataset: the data.
    idx: (n,) pool indices (or test indices when ``test``).
    views: the A view names.
    seed: noise seed of the views.
    test: whether ``idx`` indexes the test split.
  """
  idx = np.asarray(idx, np.int64)
  x = dataset.x_test if test else dataset.x_train
  xq = query_views(x[idx], idx, tuple(views), seed=seed)
  return target.logits(xq, idx, tuple(views), dataset.num_classes, test=test)


def ensemble_logits(model, params: Params, views_x: np.ndarray, num_classes: int,
                    name: str = 'shadow models') -> np.ndarray:
  """(A, n, ...) inputs -> (A, S, n, C) logits of a stacked ensemble, checked finite."""
  a, n = views_x.shape[:2]
  flat = views_x.reshape((a * n,) + views_x.shape[2:])
  lg = predict_logits(model, params, flat, ensemble=True)            # (S, A*n, C)
  lg = check_logits(lg, num_classes, f'logits of the {name}')
  return np.transpose(lg.reshape(lg.shape[0], a, n, -1), (1, 0, 2, 3))


def shadow_view_logits(model, params: Params, dataset: Dataset, idx: np.ndarray,
                       views: Sequence[str], *, seed: int = 0, test: bool = False,
                       name: str = 'shadow models') -> np.ndarray:
  """Logits (A, S, n, C) of a stacked ensemble on A views of records ``idx``."""
  idx = np.asarray(idx, np.int64)
  x = dataset.x_test if test else dataset.x_train
  xq = query_views(x[idx], idx, tuple(views), seed=seed)
  return ensemble_logits(model, params, xq, dataset.num_classes, name)


# -----------------------------------------------------------------------------
# Membership-attack reporting shared by LiRA, U-LiRA and RMIA.
# -----------------------------------------------------------------------------

MIA_RULE = ('not_forgotten if the attack scores of Du exceed those of D_ref (one-sided '
            'Mann-Whitney U test, p < alpha); forgotten otherwise. This is a '
            'population-level membership test on per-record attack scores, not an ignorance '
            'test: it has no power check and does not flag damaged (too unfamiliar) Du.')


def roc_curve(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Empirical ROC curve of the rule "predict positive iff score >= t".

  Args:
    pos: (n1,) scores of the positives.
    neg: (n2,) scores of the negatives.
  Returns:
    ``(fpr, tpr, thresholds)``, each of shape (m + 1,) with m the number of
    distinct pooled scores: ``thresholds[0] = +inf`` (nothing predicted
    positive), then the distinct scores in decreasing order. ``fpr`` and
    ``tpr`` are non-decreasing.
  """
  pos = as_float_array(pos, 'pos', ndim=1)
  neg = as_float_array(neg, 'neg', ndim=1)
  thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
  tp = pos.size - np.searchsorted(np.sort(pos), thresholds, side='left')
  fp = neg.size - np.searchsorted(np.sort(neg), thresholds, side='left')
  return (np.concatenate([[0.0], fp / neg.size]), np.concatenate([[0.0], tp / pos.size]),
          np.concatenate([[np.inf], thresholds]))


def tpr_at_fpr(scores_pos: Any, scores_neg: Any, fpr: float) -> float:
  """Largest TPR of a rule "positive iff score >= t" whose FPR is at most ``fpr``.

  No randomisation between thresholds, so the result is conservative and
  exact for the empirical samples; with n2 negatives an ``fpr`` below 1/n2
  only allows thresholds above every negative score.

  Args:
    scores_pos: (n1,) scores of the positives.
    scores_neg: (n2,) scores of the negatives.
    fpr: the false-positive budget, in [0, 1].
  Returns:
    The TPR in [0, 1].
  """
  target = check_unit(fpr, 'fpr')
  fprs, tprs, _ = roc_curve(scores_pos, scores_neg)
  return float(np.max(tprs[fprs <= target]))   # fprs[0] == 0 is always admissible


def membership_report(scores_du: np.ndarray, scores_ref: np.ndarray, *,
                      alpha: float) -> tuple[float, str, dict[str, Any]]:
  """AUC, low-FPR TPRs and the one-sided MWU decision of Du vs D_ref scores.

  Args:
    scores_du: (n_u,) attack scores of Du (higher = more member-like).
    scores_ref: (n_r,) attack scores of D_ref.
    alpha: level of the one-sided Mann-Whitney test.
  Returns:
    (AUC, decision, details dict).
  """
  test = stats.mann_whitney(scores_du, scores_ref, alternative='greater')
  decision = 'not_forgotten' if test.p_value < alpha else 'forgotten'
  details = dict(
      auc=test.auc,
      tpr_at_fpr={f'{f:g}': tpr_at_fpr(scores_du, scores_ref, f) for f in LOW_FPRS},
      p_value=test.p_value, alpha=alpha, mwu_statistic=test.statistic,
      mean_score=dict(forget=float(np.mean(scores_du)), ref=float(np.mean(scores_ref))),
      sizes=dict(forget=int(len(scores_du)), ref=int(len(scores_ref))))
  return test.auc, decision, details


# -----------------------------------------------------------------------------
# Shadow ensembles.
# -----------------------------------------------------------------------------


class ShadowSet(NamedTuple):
  """S shadow models trained on random halves of a population.

  Attributes:
    params: stacked (S, ...) parameters.
    population: (N_pop,) sorted pool indices of the population.
    in_matrix: (S, N_pop) bool; ``in_matrix[s, j]`` iff shadow s trained on
      ``population[j]``.
    cache_key: hex digest identifying this set.
    wall_time_s: training time (0 when loaded from the cache).
    from_cache: whether it was loaded from disk.
  """
  params: Params
  population: np.ndarray
  in_matrix: np.ndarray
  cache_key: str
  wall_time_s: float
  from_cache: bool

  @property
  def num_models(self) -> int:
    return int(self.in_matrix.shape[0])

  def in_mask(self, indices: np.ndarray) -> np.ndarray:
    """(S, n) bool membership of pool ``indices`` (all must be in the population)."""
    indices = np.asarray(indices, np.int64)
    pos = np.searchsorted(self.population, indices)
    pos = np.minimum(pos, len(self.population) - 1)
    bad = self.population[pos] != indices
    if bad.any():
      raise AuditError(f'{int(bad.sum())} record(s) are not in the shadow population, e.g. '
                       f'{indices[bad][:5].tolist()}')
    return self.in_matrix[:, pos]


def plan_halves(num_records: int, num_shadows: int, seed: int) -> np.ndarray:
  """Balanced random halves: each record is IN for exactly ``num_shadows // 2`` shadows.

  As in Carlini et al.'s LiRA code: per record, an independent random
  permutation of the shadows; the first half of it holds the record. Each
  shadow then trains on about half of the population.

  Args:
    num_records: N_pop.
    num_shadows: S >= 2.
    seed: NumPy seed.
  Returns:
    (S, N_pop) bool IN matrix.
  """
  check_int(num_shadows, 'num_shadows', minimum=2)
  rng = np.random.default_rng([int(seed), 6151])
  u = rng.random((num_shadows, num_records))
  ranks = np.argsort(np.argsort(u, axis=0), axis=0)
  return ranks < num_shadows // 2


def _tag_salt(tag: str) -> int:
  return int(hashlib.sha256(tag.encode()).hexdigest()[:7], 16)


def member_keys_for(seed: int, tag: str, k: int) -> jax.Array:
  """(k,) PRNG keys ``fold_in(fold_in(key(seed), salt(tag)), i)``."""
  base = jax.random.fold_in(jax.random.key(int(seed)), _tag_salt(tag))
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(k))


def ensemble_cache_key(dataset: Dataset, model, recipe: Recipe, subsets: Sequence[np.ndarray], *,
                       seed: int, tag: str) -> str:
  """sha256 of everything that determines an ensemble trained on ``subsets``."""
  h = hashlib.sha256()
  for s in subsets:
    h.update(np.ascontiguousarray(np.asarray(s, '<i8')).tobytes() + b'|')
  fields = dict(data=dataset.fingerprint, subsets=h.hexdigest(), k=len(subsets),
                model=type(model).__name__, model_cfg=repr(model), recipe=recipe.to_dict(),
                seed=int(seed), tag=tag)
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def train_cached(model, dataset: Dataset, recipe: Recipe, subsets: Sequence[np.ndarray], *,
                 seed: int, tag: str, cache_dir: str | None = None,
                 log: Callable[[str], None] = lambda s: None) -> tuple[Params, str, float, bool]:
  """Trains K models on ``subsets`` of the pool in one program, or loads them.

  Args:
    model: Linen module.
    dataset: the data (``x_train`` is the pool the subsets index).
    recipe: training recipe.
    subsets: K index arrays (ragged allowed).
    seed: seed of the members' keys (see :func:`member_keys_for`).
    tag: what the ensemble is for (``lira-shadows``, ``rmia-refs``...); part of
      the key and of the PRNG salt.
    cache_dir: checkpoint directory root; None: no cache.
    log: progress printer.
  Returns:
    (stacked params, cache key, wall time s, from_cache).
  """
  k = len(subsets)
  if k < 1:
    raise AuditError('no training subsets given')
  empty = [i for i, s in enumerate(subsets) if len(s) == 0]
  if empty:
    raise AuditError(f'training subset(s) {empty} of the {tag} are empty')
  key = ensemble_cache_key(dataset, model, recipe, subsets, seed=seed, tag=tag)
  path = os.path.join(cache_dir, f'{tag}-{key}') if cache_dir else None
  if path and checkpoint.exists(path):
    params, _ = checkpoint.load_checkpoint(path, expect=dict(peer_key=key, ensemble_size=k))
    log(f'[{tag}] loaded {k} model(s) from cache {path}')
    return params, key, 0.0, True
  log(f'[{tag}] training {k} model(s) on ~{int(np.mean([len(s) for s in subsets]))} records '
      f'each, {recipe.epochs} epochs, one program')
  t0 = time.time()
  res = train_ensemble(model, dataset.x_train, dataset.y_train,
                       [np.asarray(s, np.int64) for s in subsets],
                       member_keys_for(seed, tag, k), recipe)
  params = jax.block_until_ready(res.params)
  wall = time.time() - t0
  if path:
    checkpoint.save_checkpoint(path, params, dict(
        peer_key=key, ensemble_size=k, kind=tag, model=type(model).__name__,
        dataset_fingerprint=dataset.fingerprint, recipe=recipe.to_dict(), seed=int(seed),
        wall_time_s=wall))
  return params, key, wall, False


def train_shadows(model, dataset: Dataset, recipe: Recipe, population: np.ndarray, *,
                  num_shadows: int, seed: int = 0, cache_dir: str | None = None,
                  tag: str = 'shadows',
                  log: Callable[[str], None] = lambda s: None) -> ShadowSet:
  """Trains S shadow models on random halves of ``population`` (one program, cached).

  Args:
    model: Linen module of the shadows (ideally the audited model's).
    dataset: the data; ``population`` indexes ``dataset.x_train``.
    recipe: training recipe (ideally the audited model's).
    population: (N_pop,) pool indices.
    num_shadows: S >= 2.
    seed: seed of the halves and of the shadows' keys.
    cache_dir: checkpoint directory root (None: no cache). The key covers the
      data fingerprint, the halves, the model, the recipe, the seed and ``tag``.
    tag: name of the ensemble (key and PRNG salt).
    log: progress printer.
  Returns:
    A ShadowSet whose IN matrix has each record IN for exactly S // 2 shadows.
  """
  num_shadows = check_int(num_shadows, 'num_shadows', minimum=2,
                          why=' (shadow models come in IN/OUT halves)')
  population = np.unique(np.asarray(population, np.int64))
  if population.size < 2:
    raise AuditError(f'the shadow population needs at least 2 records, got {population.size}')
  if population[0] < 0 or population[-1] >= len(dataset.y_train):
    raise AuditError(f'population indices must lie in [0, {len(dataset.y_train)})')
  in_matrix = plan_halves(population.size, num_shadows, seed)
  subsets = [population[row] for row in in_matrix]
  params, key, wall, cached = train_cached(model, dataset, recipe, subsets, seed=seed, tag=tag,
                                           cache_dir=cache_dir, log=log)
  return ShadowSet(params, population, in_matrix, key, wall, cached)


def gaussian_logpdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
  """log N(x; mu, sigma^2), elementwise, float64."""
  z = (x - mu) / sigma
  return -0.5 * z * z - np.log(sigma) - 0.5 * math.log(2.0 * math.pi)
