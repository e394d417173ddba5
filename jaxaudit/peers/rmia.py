"""RMIA (Zarifzadeh et al. 2024) as an unlearning auditor.

Reference: privacytrustlab/ml_privacy_meter (``modules/mia/attacks/rmia.py``,
``run_rmia``), which this module reproduces exactly on the same probabilities,
ties included, by default.

For a record x and the audited model θ, P(x|θ) is the softmax probability of
x's true label. P(x) is its average over reference models:

  online   P(x) = mean over all reference models (IN and OUT for x);
  offline  P(x) = ½ ((1 + a) · P_OUT(x) + (1 − a)),  P_OUT(x) = mean over
           reference models that never trained on x; ``a`` (≈ 0.3) corrects
           for the missing IN models and is tuned in the paper on a paired model.

The pairwise likelihood ratio against a population record z is

  LR(x, z) = [P(x|θ) / P(x)] / [P(z|θ) / P(z)]

and score(x) = fraction of the population sample with LR(x, z) > γ
(``tie='strict'``, the reference's rule with γ = 1: a pair with LR exactly γ
does not count). Deviation, as an option: ``tie='inclusive'`` counts LR ≥ γ,
the paper's wording and jaxaudit's rule before it followed the reference
(``LEGACY_OPTIONS``); the two differ only on exact ties, e.g. every pair of
records whose probabilities are equal, and a record scored against itself.

Which records play which role here:
  * scored: Du and D_ref (with ``population='ref'``, a random half of D_ref);
  * population z: up to ``n_population`` test records (``population='test'``,
    default; never trained on by anyone), or the other half of D_ref
    (``population='ref'``);
  * offline reference models: each trained on an independent random half of
    Dr. Dr is disjoint from Du, D_ref and the test split, so every reference
    model is OUT for every scored record and every z, as the offline formula
    assumes (they are members of the audited model's own training set, which
    leaves the comparison of Du with D_ref unaffected);
  * online reference models: the LiRA shadows (balanced random halves of
    D ∪ D_ref, shared with :func:`jaxaudit.peers.lira` through the cache
    or ``shadows=``), so each scored record is IN for half of them; with
    ``population='ref'`` the z records are too, as in the paper.

Only the exact record is queried (no augmentations). Decision and reporting
as for LiRA: AUC(Du vs D_ref), TPR at FPR 1% and 0.1%, ``not_forgotten`` iff
a one-sided Mann–Whitney test of Du > D_ref gives p < alpha.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from jaxaudit.peers.base import MIA_RULE, PeerResult, ShadowSet, check_choice, check_int, \
    check_level, \
    check_request, membership_report, shadow_view_logits, target_logits, train_cached, \
    train_shadows
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.tasks.classification import true_label_log_probs
from jaxaudit.train import Recipe

POPULATIONS = ('test', 'ref')
TIES = ('strict', 'inclusive')
# The option that reproduces jaxaudit's RMIA before it followed the reference.
LEGACY_OPTIONS = dict(tie='inclusive')
# Pairs (x, z) compared per chunk.
_CHUNK = 1 << 22


def _probs(x: Any, name: str, ndim: int) -> np.ndarray:
  arr = np.asarray(x)
  if arr.dtype.kind not in 'fiu':
    raise AuditError(f'{name} must be numeric, got dtype {arr.dtype}')
  arr = arr.astype(np.float64)
  if arr.ndim != ndim:
    raise AuditError(f'{name} must be {ndim}-D, got shape {arr.shape}')
  if arr.size == 0:
    raise AuditError(f'{name} is empty')
  if not np.all(np.isfinite(arr)):
    raise AuditError(f'{name} holds {int(np.sum(~np.isfinite(arr)))} NaN or inf value(s)')
  if arr.min() < 0.0 or arr.max() > 1.0:
    raise AuditError(f'{name} must hold probabilities in [0, 1]; got range '
                     f'[{arr.min():.3g}, {arr.max():.3g}]')
  return arr


def _marginal(p_refs: np.ndarray, a: float, offline: bool) -> np.ndarray:
  m = p_refs.mean(0)
  return 0.5 * ((1.0 + a) * m + (1.0 - a)) if offline else m


def rmia_scores(p_target_x: Any, p_refs_x: Any, p_target_z: Any, p_refs_z: Any, *,
                a: float = 0.3, gamma: float = 1.0, offline: bool = True,
                tie: str = 'strict') -> np.ndarray:
  """Per-record RMIA scores from probability tables (host-side, float64).

  Args:
    p_target_x: (n,) P(x|θ) of the audited model on the scored records.
    p_refs_x: (R, n) the reference models' probabilities on them.
    p_target_z: (m,) P(z|θ) on the population sample.
    p_refs_z: (R, m) the reference models' probabilities on it.
    a: offline correction in [0, 1] (ignored online).
    gamma: likelihood-ratio threshold (> 0).
    offline: reference models are all OUT (use the ``a`` formula).
    tie: ``'strict'`` counts LR > gamma (reference), ``'inclusive'`` LR >= gamma.
  Returns:
    (n,) scores in [0, 1]: the fraction of z with LR(x, z) > gamma (or >=).
    A pair whose ratio is undefined (0 / 0) does not count.
  """
  tx = _probs(p_target_x, 'p_target_x', 1)
  rx = _probs(p_refs_x, 'p_refs_x', 2)
  tz = _probs(p_target_z, 'p_target_z', 1)
  rz = _probs(p_refs_z, 'p_refs_z', 2)
  if rx.shape[1] != tx.shape[0]:
    raise AuditError(f'p_refs_x {rx.shape} does not match p_target_x {tx.shape} as (R, n)')
  if rz.shape[1] != tz.shape[0]:
    raise AuditError(f'p_refs_z {rz.shape} does not match p_target_z {tz.shape} as (R, m)')
  if rx.shape[0] != rz.shape[0]:
    raise AuditError(f'p_refs_x has {rx.shape[0]} reference models but p_refs_z has '
                     f'{rz.shape[0]}')
  if not 0.0 <= float(a) <= 1.0:
    raise AuditError(f'a must be in [0, 1], got {a!r}')
  if not float(gamma) > 0.0 or not np.isfinite(float(gamma)):
    raise AuditError(f'gamma must be a positive number, got {gamma!r}')
  check_choice(tie, 'tie', TIES)
  beats = np.greater if tie == 'strict' else np.greater_equal
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio_x = tx / _marginal(rx, float(a), offline)
    ratio_z = tz / _marginal(rz, float(a), offline)
    out = np.empty(tx.shape[0])
    step = max(1, _CHUNK // max(1, tz.shape[0]))
    for i in range(0, tx.shape[0], step):
      lr = ratio_x[i:i + step, None] / ratio_z[None, :]
      out[i:i + step] = np.mean(beats(lr, float(gamma)), axis=1)   # NaN compares False
  return out


def _true_label_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(..., n, C) logits -> (..., n) softmax probability of the true label, float64."""
  return np.exp(true_label_log_probs(logits, labels))


def rmia(target: Target, dataset: Dataset, split: AuditSplit, model, recipe: Recipe, *,
         num_refs: int = 4, a: float = 0.3, gamma: float = 1.0, n_population: int = 1000,
         offline: bool = True, population: str = 'test', tie: str = 'strict', seed: int = 0,
         cache_dir: str | None = None, alpha: float = 0.05, shadows: ShadowSet | None = None,
         log: Callable[[str], None] = lambda s: None) -> PeerResult:
  """RMIA membership inference of Du vs D_ref against the audited model.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request.
    model: Linen module of the reference models.
    recipe: their training recipe.
    num_refs: reference models (>= 1 offline, >= 2 online).
    a: offline correction in [0, 1].
    gamma: likelihood-ratio threshold (> 0).
    n_population: maximum size of the population sample z (>= 1).
    offline: OUT-only reference models on halves of Dr (True) or online
      reference models on halves of D ∪ D_ref.
    population: ``'test'`` (z from the test split; a logits-table target must
      hold ``test_logits``) or ``'ref'`` (z = a random half of D_ref, the
      other half is scored).
    tie: ``'strict'`` (LR > gamma, reference) or ``'inclusive'`` (LR >= gamma).
    seed: seed of the samples, halves and keys.
    cache_dir: where reference ensembles are cached (None: no cache).
    alpha: level of the decision rule.
    shadows: online only: a ready ShadowSet on D ∪ D_ref (e.g. LiRA's).
    log: progress printer.
  Returns:
    PeerResult with score = AUC of Du vs D_ref RMIA scores. Cost: num_refs
    models (the method's cost, even when cached).
  """
  t0 = time.time()
  check_request(target, dataset, split, min_ref=4 if population == 'ref' else 2)
  if population not in POPULATIONS:
    raise AuditError(f'population must be one of {POPULATIONS}, got {population!r}')
  if shadows is None:
    num_refs = check_int(num_refs, 'num_refs', minimum=1 if offline else 2,
                         why='' if offline else ' online (IN and OUT reference models)')
  n_population = check_int(n_population, 'n_population', minimum=1)
  alpha = check_level(alpha, 'alpha')
  if not 0.0 <= float(a) <= 1.0:
    raise AuditError(f'a must be in [0, 1], got {a!r}')
  if not float(gamma) > 0.0:
    raise AuditError(f'gamma must be > 0, got {gamma!r}')
  check_choice(tie, 'tie', TIES)
  rng = np.random.default_rng([int(seed), 4241])
  forget = np.asarray(split.forget, np.int64)
  if population == 'ref':
    perm = rng.permutation(np.asarray(split.ref, np.int64))
    ref_scored = np.sort(perm[:len(perm) // 2])
    z_idx = np.sort(perm[len(perm) // 2:][:n_population])
  else:
    ref_scored = np.asarray(split.ref, np.int64)
    test = np.asarray(split.test, np.int64)
    if len(test) == 0:
      raise AuditError("the split has no test records for population='test'; use 'ref'")
    z_idx = np.sort(rng.choice(test, min(n_population, len(test)), replace=False))
  z_test = population == 'test'
  scored = np.concatenate([forget, ref_scored])

  if offline:
    if shadows is not None:
      raise AuditError('shadows= applies to online RMIA only; offline reference models are '
                       'trained on halves of Dr')
    retain = np.asarray(split.retain, np.int64)
    if len(retain) < 2:
      raise AuditError(f'offline RMIA trains reference models on halves of Dr, which has '
                       f'{len(retain)} record(s)')
    subsets = [np.sort(rng.choice(retain, len(retain) // 2, replace=False))
               for _ in range(num_refs)]
    params, key, wall, cached = train_cached(model, dataset, recipe, subsets, seed=seed,
                                             tag='rmia-refs', cache_dir=cache_dir, log=log)
    n_refs = num_refs
  else:
    if shadows is None:
      shadows = train_shadows(model, dataset, recipe, np.union1d(split.train, split.ref),
                              num_shadows=num_refs, seed=seed, cache_dir=cache_dir,
                              tag='lira-shadows', log=log)
    if not isinstance(shadows, ShadowSet):
      raise AuditError(f'shadows must be a ShadowSet, got {type(shadows).__name__}')
    shadows.in_mask(scored)
    params, key, wall, cached = (shadows.params, shadows.cache_key, shadows.wall_time_s,
                                 shadows.from_cache)
    n_refs = shadows.num_models

  y_x = dataset.y_train[scored]
  y_z = dataset.y_test[z_idx] if z_test else dataset.y_train[z_idx]
  ident = ('identity',)
  p_tx = _true_label_probs(target_logits(target, dataset, scored, ident, seed=seed)[0], y_x)
  p_tz = _true_label_probs(
      target_logits(target, dataset, z_idx, ident, seed=seed, test=z_test)[0], y_z)
  p_rx = _true_label_probs(
      shadow_view_logits(model, params, dataset, scored, ident, name='reference models')[0], y_x)
  p_rz = _true_label_probs(shadow_view_logits(model, params, dataset, z_idx, ident, test=z_test,
                                              name='reference models')[0], y_z)
  scores = rmia_scores(p_tx, p_rx, p_tz, p_rz, a=a, gamma=gamma, offline=offline, tie=tie)
  nf = len(forget)
  auc, decision, details = membership_report(scores[:nf], scores[nf:], alpha=alpha)
  details.update(
      target=target.name, offline=bool(offline), a=float(a), gamma=float(gamma), tie=tie,
      num_refs=n_refs, population=population, population_size=len(z_idx),
      reference_data='halves of Dr (OUT for all scored records)' if offline
      else 'halves of D ∪ D_ref (LiRA shadows)',
      scores=dict(forget=scores[:nf], ref=scores[nf:]),
      cache_key=key, from_cache=bool(cached), trained_now=0 if cached else n_refs,
      ref_train_s=wall)
  return PeerResult(name='rmia', score=auc, decision=decision, rule=MIA_RULE, details=details,
                    cost=dict(models_trained=n_refs, wall_time_s=time.time() - t0))
