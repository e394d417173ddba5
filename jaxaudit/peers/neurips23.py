"""The NeurIPS 2023 machine-unlearning challenge score as a peer auditor.

Given N_u unlearned and N_r retrained models (retrained from scratch on Dr
with fresh seeds), each forget record x gets an empirical ε: how well the
best single-threshold test on the logit-scaled confidence φ_θ(x) separates
the two groups of models (:func:`jaxaudit.audit.stats.neurips23_epsilon`,
δ = 1e-5). The ε are bucketed into a forgetting quality F ∈ [0, 1]
(:func:`jaxaudit.audit.stats.neurips23_forget_score`, with the bins set by
min(N_u, N_r)), and

  final = F × (RA_u / RA_r) × (TA_u / TA_r)

with RA / TA the mean retain / test accuracies of each group. The challenge
ranks methods by this number and has no pass/fail threshold, so the decision
is None. It needs many models per side to certify small ε: with N models the
largest finite ε is about log(N − 1).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from jaxaudit.audit import stats
from jaxaudit.peers.base import PeerResult, check_int, check_request, train_cached
from jaxaudit.audit.signals import check_logits, logit_confidence
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, accuracy, predict_logits

RULE = ('no decision rule: the NeurIPS 2023 challenge ranks methods by the score '
        'F x (RA_u/RA_r) x (TA_u/TA_r) (higher = closer to retraining); '
        'details.forget_score is F alone')
# Fewest models per side (the bucketing needs log(N - 1) > 0).
MIN_MODELS = 3


def _check_group(logits: Any, name: str) -> np.ndarray:
  arr = np.asarray(logits)
  if arr.ndim != 3:
    raise AuditError(f'{name} must have shape (N, n, C) (models, forget records, classes); '
                     f'got {arr.shape}')
  if arr.shape[0] < MIN_MODELS:
    raise AuditError(f'{name} needs at least {MIN_MODELS} models, got {arr.shape[0]}')
  if arr.shape[1] < 1:
    raise AuditError(f'{name} holds no forget records')
  return check_logits(arr, arr.shape[-1], name)


def neurips23_epsilon(unlearned_logits: Any, retrained_logits: Any, forget_labels: Any, *,
                      ra_u: float, ra_r: float, ta_u: float, ta_r: float,
                      delta: float = 1e-5) -> PeerResult:
  """The challenge score from the two groups' logits on the forget set.

  Args:
    unlearned_logits: (N_u, n, C) logits of N_u >= 3 unlearned models on the n
      forget records.
    retrained_logits: (N_r, n, C) logits of N_r >= 3 retrained models.
    forget_labels: (n,) int true labels.
    ra_u: mean retain accuracy of the unlearned models, in [0, 1].
    ra_r: mean retain accuracy of the retrained models, in (0, 1].
    ta_u: mean test accuracy of the unlearned models, in [0, 1].
    ta_r: mean test accuracy of the retrained models, in (0, 1].
    delta: δ of the ε estimate, in (0, 1).
  Returns:
    PeerResult with score = the final score, decision None, details
    ``forget_score`` (F), per-record ``epsilons`` (capped at 50), their
    summary and the accuracies. Cost: 0 models (they are supplied).
  """
  t0 = time.time()
  u = _check_group(unlearned_logits, 'unlearned_logits')
  r = _check_group(retrained_logits, 'retrained_logits')
  if u.shape[1:] != r.shape[1:]:
    raise AuditError(f'unlearned_logits {u.shape} and retrained_logits {r.shape} must agree '
                     'on (n, C)')
  labels = np.asarray(forget_labels)
  if labels.shape != (u.shape[1],) or labels.dtype.kind not in 'iu':
    raise AuditError(f'forget_labels must be an int array of shape ({u.shape[1]},), got '
                     f'{labels.shape} {labels.dtype}')
  if labels.min() < 0 or labels.max() >= u.shape[2]:
    raise AuditError(f'forget_labels must lie in [0, {u.shape[2]})')
  phi_u = np.asarray(logit_confidence(u, labels.astype(np.int32)), np.float64)   # (N_u, n)
  phi_r = np.asarray(logit_confidence(r, labels.astype(np.int32)), np.float64)
  eps = stats.neurips23_epsilons(phi_u, phi_r, delta)
  n_models = min(u.shape[0], r.shape[0])
  forget_score = stats.neurips23_forget_score(eps, num_models=n_models)
  final = stats.neurips23_final_score(forget_score, ra_u, ra_r, ta_u, ta_r)
  details = dict(
      forget_score=forget_score, epsilons=eps,
      epsilon_summary=dict(mean=float(eps.mean()), median=float(np.median(eps)),
                           max=float(eps.max()), frac_below_0_5=float(np.mean(eps < 0.5))),
      max_epsilon_bins=float(np.ceil(np.log(n_models - 1))), delta=float(delta),
      num_unlearned=int(u.shape[0]), num_retrained=int(r.shape[0]), num_records=int(u.shape[1]),
      accuracy=dict(ra_u=float(ra_u), ra_r=float(ra_r), ta_u=float(ta_u), ta_r=float(ta_r)),
      mean_phi=dict(unlearned=float(phi_u.mean()), retrained=float(phi_r.mean())))
  return PeerResult(name='neurips23', score=final, decision=None, rule=RULE, details=details,
                    cost=dict(models_trained=0, wall_time_s=time.time() - t0))


def _num_stacked(params: Any) -> int:
  leaves = jax.tree.leaves(params)
  if not leaves:
    raise AuditError('unlearned_params is empty')
  sizes = {int(np.shape(l)[0]) if np.ndim(l) else -1 for l in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise AuditError('unlearned_params must be stacked: every leaf with the same leading '
                     f'model axis; got leading sizes {sorted(sizes)}')
  return sizes.pop()


def neurips23_audit(unlearned_params: Any, dataset: Dataset, split: AuditSplit, model,
                    recipe: Recipe, *, seed: int = 0, cache_dir: str | None = None,
                    delta: float = 1e-5, eval_sample: int = 2000,
                    log: Callable[[str], None] = lambda s: None) -> PeerResult:
  """Trains N retrained models on Dr and scores N unlearned ones against them.

  Args:
    unlearned_params: stacked (N, ...) params of N >= 3 unlearned models (e.g.
      the method run N times with different seeds).
    dataset: the data the split indexes.
    split: the audit request (Du is the forget set, Dr the retain set).
    model: Linen module of both groups.
    recipe: the retraining recipe (the original's).
    seed: seed of the retrained models' keys and of the evaluation samples.
    cache_dir: where the retrained ensemble is cached (None: no cache).
    delta: δ of the ε estimate.
    eval_sample: at most this many Dr / test records for RA / TA.
    log: progress printer.
  Returns:
    The :func:`neurips23_epsilon` result; cost = N retrained models (one
    train_ensemble program; the unlearned models are supplied).
  """
  t0 = time.time()
  check_request(None, dataset, split, min_forget=1, min_ref=1)
  n = _num_stacked(unlearned_params)
  if n < MIN_MODELS:
    raise AuditError(f'neurips23 needs at least {MIN_MODELS} unlearned models, got {n}')
  eval_sample = check_int(eval_sample, 'eval_sample', minimum=1)
  retain = np.asarray(split.retain, np.int64)
  params_r, key, wall, cached = train_cached(model, dataset, recipe, [retain] * n, seed=seed,
                                             tag='neurips23-retrained', cache_dir=cache_dir,
                                             log=log)
  rng = np.random.default_rng([int(seed), 2023])
  ra_idx = np.sort(rng.choice(retain, min(eval_sample, len(retain)), replace=False))
  test = np.asarray(split.test, np.int64)
  if len(test) == 0:
    raise AuditError('the split has no test records (needed for TA)')
  ta_idx = np.sort(rng.choice(test, min(eval_sample, len(test)), replace=False))
  forget = np.asarray(split.forget, np.int64)
  groups = {}
  for name, params in (('unlearned', unlearned_params), ('retrained', params_r)):
    lf = predict_logits(model, params, dataset.x_train[forget], ensemble=True)
    ra = accuracy(predict_logits(model, params, dataset.x_train[ra_idx], ensemble=True),
                  dataset.y_train[ra_idx])
    ta = accuracy(predict_logits(model, params, dataset.x_test[ta_idx], ensemble=True),
                  dataset.y_test[ta_idx])
    groups[name] = (lf, float(np.mean(ra)), float(np.mean(ta)))
  res = neurips23_epsilon(groups['unlearned'][0], groups['retrained'][0],
                          dataset.y_train[forget], ra_u=groups['unlearned'][1],
                          ra_r=groups['retrained'][1], ta_u=groups['unlearned'][2],
                          ta_r=groups['retrained'][2], delta=delta)
  res.details.update(cache_key=key, from_cache=bool(cached), trained_now=0 if cached else n,
                     retrain_s=wall, eval_sizes=dict(retain=len(ra_idx), test=len(ta_idx)))
  res.cost = dict(models_trained=n, wall_time_s=time.time() - t0)
  return res
