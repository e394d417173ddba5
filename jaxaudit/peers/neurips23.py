"""The NeurIPS 2023 machine-unlearning challenge score as a peer auditor.

Reference: google-deepmind/unlearning_evaluation, ``metric.py`` (the
challenge's evaluation code). Given N_u unlearned and N_r retrained models
(retrained from scratch on Dr with fresh seeds), each forget record x gets an
empirical ε from the logit-scaled confidences φ_θ(x) of the two groups
((N_u,) and (N_r,) values): the best decision rule's

  ε_t = max(log(1 − δ − FPR) − log FNR,  log(1 − δ − FNR) − log FPR),  δ = 1e-5,

clipped at 0; ε = max_t ε_t, capped at 50. The defaults follow the reference:

* ``direction='median'``: "positive" is, per record, the group with the larger
  median φ (the retrained group iff its median is strictly larger); the
  single-threshold rules predict positive iff φ ≥ t.
* ``thresholds='grid'``: the single thresholds are ``ceil(100 · range)``
  evenly spaced values from the smallest to the largest pooled φ.
* ``interval_attacks=True``: the two-threshold rules "positive iff
  l ≤ φ ≤ r", positive = the group with the smaller range ("peakier"; the
  median-negative group on equal ranges), r on a grid of 100 per unit from
  max(peaky) − 2 to max(peaky) + 2 and, for each r, 400 values of l from
  r − w − 2 to r − w + 2 (w the smaller range).
* ``peaky_cap=True``: if the smaller range is below 1% of the larger, ε = 50.
* rates with FPR = FNR = 0 give ε = inf (then the cap); a rule with exactly
  one of them 0 is skipped; if no rule survives, ε = 0 (the reference stops
  with an assertion there: it happens only when every φ of the record is the
  same value under both groups).

The ε are bucketed into a forgetting quality F ∈ [0, 1] (:func:`forget_score`,
bins of width 0.5 up to ``ceil(log(N_u − 1))``; a record earns 2^-k in bin k,
0 beyond), and

  final = F × (RA_u / RA_r) × (TA_u / TA_r)

with RA / TA the mean retain / test accuracies of each group
(:func:`final_score`). The challenge ranks methods by this number and has no
pass/fail threshold, so the decision is None. It needs many models per side
to certify small ε: with N models the largest finite ε is about log(N − 1).

Deviations, available as options (the pre-reference jaxaudit behaviour is
``LEGACY_OPTIONS``): ``direction='both'`` tests "≥ t" and "< t" whatever the
medians; ``thresholds='exact'`` uses every distinct rule (cuts between
consecutive distinct pooled values, and every interval of them) instead of the
grid, so ε is the exact maximum; ``interval_attacks=False`` and
``peaky_cap=False`` drop those parts; ``num_models`` sets the bins from
another model count. Arithmetic is float64 throughout (the reference forms its
rates in float32, which moves ε by ~1e-7); φ is computed from logits exactly
(:func:`jaxaudit.tasks.classification.logit_confidence`) where the reference adds
1e-45 inside its logs.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxaudit.peers.base import PeerResult, as_float_array, check_choice, check_int, \
    check_level, check_request, check_unit, train_cached
from jaxaudit.tasks.classification import check_logits, logit_confidence
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, accuracy, predict_logits

RULE = ('no decision rule: the NeurIPS 2023 challenge ranks methods by the score '
        'F x (RA_u/RA_r) x (TA_u/TA_r) (higher = closer to retraining); '
        'details.forget_score is F alone')
# Fewest models per side (the bucketing needs log(N - 1) > 0).
MIN_MODELS = 3
DELTA = 1e-5
EPSILON_CAP = 50.0
# Grid density of the reference's thresholds (per unit of φ), the half-width
# of its interval search window, and its "peaky" range ratio.
THRESHOLDS_PER_UNIT = 100
INTERVAL_BUFFER = 2.0
PEAKY_RATIO = 0.01
DIRECTIONS = ('median', 'both')
THRESHOLD_FAMILIES = ('grid', 'exact')
# The options that reproduce jaxaudit's ε before it followed the reference.
LEGACY_OPTIONS = dict(direction='both', thresholds='exact', interval_attacks=False,
                      peaky_cap=False)


# -----------------------------------------------------------------------------
# Per-record ε, the forget score and the final score.
# -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _epsilon_table(n_pos: int, n_neg: int, delta: float) -> np.ndarray:
  """(n_pos + 1, n_neg + 1) ε of a rule with tp positives and fp negatives predicted positive.

  inf for perfect separation (FPR = FNR = 0), NaN for a skipped rule (exactly
  one rate 0, or both log arguments <= 0), else max of the two terms clipped
  at 0.
  """
  tp = np.arange(n_pos + 1, dtype=np.float64)[:, None]
  fp = np.arange(n_neg + 1, dtype=np.float64)[None, :]
  fnr = (n_pos - tp) / n_pos
  fpr = fp / n_neg
  with np.errstate(divide='ignore', invalid='ignore'):
    a1 = 1.0 - delta - fpr
    a2 = 1.0 - delta - fnr
    t1 = np.where(a1 > 0, np.log(np.where(a1 > 0, a1, 1.0)), np.nan) - np.log(fnr)
    t2 = np.where(a2 > 0, np.log(np.where(a2 > 0, a2, 1.0)), np.nan) - np.log(fpr)
    eps = np.fmax(t1, t2)                       # NaN only where both are NaN
  eps = np.where(np.isnan(eps), np.nan, np.maximum(eps, 0.0))
  eps = np.where((fpr * fnr) == 0.0, np.nan, eps)
  eps[n_pos, 0] = np.inf
  eps.setflags(write=False)
  return eps


def _grid(lo: float, hi: float) -> np.ndarray:
  return np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))


def _single_counts(pos: np.ndarray, neg: np.ndarray, thresholds: str,
                   direction: str) -> tuple[np.ndarray, np.ndarray]:
  """(tp, fp) of the single-threshold rules "positive iff φ >= t" (and "< t" for 'both')."""
  if thresholds == 'grid':
    pooled = np.concatenate([pos, neg])
    cuts = _grid(pooled.min(), pooled.max())
  else:
    cuts = np.concatenate([np.unique(np.concatenate([pos, neg])), [np.inf]])
  tp = pos.size - np.searchsorted(pos, cuts, side='left')
  fp = neg.size - np.searchsorted(neg, cuts, side='left')
  if direction == 'both':
    tp, fp = np.concatenate([tp, pos.size - tp]), np.concatenate([fp, neg.size - fp])
  return tp, fp


def _interval_counts(peaky: np.ndarray, other: np.ndarray,
                     thresholds: str) -> tuple[np.ndarray, np.ndarray]:
  """(tp, fp) of the interval rules "positive iff l <= φ <= r", positive = ``peaky``."""
  if thresholds == 'exact':
    values = np.unique(np.concatenate([peaky, other]))
    cp = np.searchsorted(peaky, values, side='right')       # #peaky <= v_j
    co = np.searchsorted(other, values, side='right')
    lo_p = np.searchsorted(peaky, values, side='left')      # #peaky < v_i
    lo_o = np.searchsorted(other, values, side='left')
    i, j = np.triu_indices(values.size)
    return (np.concatenate([cp[j] - lo_p[i], [0]]), np.concatenate([co[j] - lo_o[i], [0]]))
  width = min(peaky[-1] - peaky[0], other[-1] - other[0])
  right = _grid(peaky[0] + width - INTERVAL_BUFFER, peaky[-1] + INTERVAL_BUFFER)
  n_left = int(np.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT))
  left = np.linspace(right - width - INTERVAL_BUFFER, right - width + INTERVAL_BUFFER,
                     n_left, axis=1)                                   # (R, n_left)
  r = np.broadcast_to(right[:, None], left.shape)
  tp = np.maximum(np.searchsorted(peaky, r, side='right')
                  - np.searchsorted(peaky, left, side='left'), 0)
  fp = np.maximum(np.searchsorted(other, r, side='right')
                  - np.searchsorted(other, left, side='left'), 0)
  return tp.ravel(), fp.ravel()


def _best(table: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> float:
  seen = np.zeros(table.shape, bool)
  seen[tp, fp] = True
  vals = table[seen]
  vals = vals[~np.isnan(vals)]
  return float(vals.max()) if vals.size else math.nan


def example_epsilon(unlearned_scores: Any, retrained_scores: Any, delta: float = DELTA, *,
                    epsilon_cap: float | None = EPSILON_CAP, direction: str = 'median',
                    thresholds: str = 'grid', interval_attacks: bool = True,
                    peaky_cap: bool = True) -> float:
  """Empirical ε of one forget record (see the module docstring for the rules).

  Args:
    unlearned_scores: (N_u,) scores (φ) of the record under the unlearned models.
    retrained_scores: (N_r,) scores under the retrained models.
    delta: δ of (ε, δ)-unlearning, in (0, 1).
    epsilon_cap: upper bound of the result (> 0; 50 in the reference), or None
      to keep inf.
    direction: ``'median'`` (reference) or ``'both'``.
    thresholds: ``'grid'`` (reference) or ``'exact'``.
    interval_attacks: include the two-threshold rules (reference: True).
    peaky_cap: ε = cap when the smaller range is < 1% of the larger (reference).
  Returns:
    ε in [0, epsilon_cap] (inf possible when epsilon_cap is None).
  """
  u = np.sort(as_float_array(unlearned_scores, 'unlearned_scores', ndim=1))
  r = np.sort(as_float_array(retrained_scores, 'retrained_scores', ndim=1))
  delta = check_level(delta, 'delta')
  if epsilon_cap is not None and not float(epsilon_cap) > 0.0:
    raise AuditError(f'epsilon_cap must be > 0 or None; got {epsilon_cap!r}')
  check_choice(direction, 'direction', DIRECTIONS)
  check_choice(thresholds, 'thresholds', THRESHOLD_FAMILIES)
  cap = math.inf if epsilon_cap is None else float(epsilon_cap)
  if direction == 'median' and np.median(r) > np.median(u):
    pos, neg = r, u
  else:
    pos, neg = u, r
  d_pos, d_neg = pos[-1] - pos[0], neg[-1] - neg[0]
  if peaky_cap and max(d_pos, d_neg) > 0 and min(d_pos, d_neg) / max(d_pos, d_neg) < PEAKY_RATIO:
    return cap
  tp, fp = _single_counts(pos, neg, thresholds, direction)
  eps = _best(_epsilon_table(pos.size, neg.size, delta), tp, fp)
  if interval_attacks:
    peaky, other = (neg, pos) if d_pos >= d_neg else (pos, neg)
    tp, fp = _interval_counts(peaky, other, thresholds)
    eps = np.fmax(eps, _best(_epsilon_table(peaky.size, other.size, delta), tp, fp))
  eps = 0.0 if math.isnan(eps) else eps
  return float(min(max(eps, 0.0), cap))


def per_example_epsilons(unlearned_scores: Any, retrained_scores: Any, delta: float = DELTA,
                         **options: Any) -> np.ndarray:
  """:func:`example_epsilon` for every forget record.

  Args:
    unlearned_scores: (N_u, n) scores; axis 0 is the model axis.
    retrained_scores: (N_r, n) scores.
    delta: see :func:`example_epsilon`.
    **options: ``epsilon_cap``, ``direction``, ``thresholds``,
      ``interval_attacks``, ``peaky_cap`` of :func:`example_epsilon`.
  Returns:
    (n,) float64 ε.
  """
  u = as_float_array(unlearned_scores, 'unlearned_scores', ndim=2, finite=False)
  r = as_float_array(retrained_scores, 'retrained_scores', ndim=2, finite=False)
  if u.shape[1] != r.shape[1]:
    raise AuditError(f'unlearned_scores has {u.shape[1]} examples but retrained_scores has '
                     f'{r.shape[1]}')
  return np.array([example_epsilon(u[:, i], r[:, i], delta, **options)
                   for i in range(u.shape[1])])


def forget_score(epsilons: Any, *, num_models: int = 512, max_epsilon: float | None = None,
                 bin_width: float = 0.5) -> float:
  """Forgetting quality F of the challenge from per-record ε (as the reference buckets them).

  ``[0, max_epsilon)`` is cut into ``K = floor(max_epsilon / bin_width)`` bins;
  a record in bin ``k = floor(ε / bin_width) < K`` earns ``2**-k``, one with
  ``ε >= K * bin_width`` (inf included) earns 0; F is the mean. The default
  ``max_epsilon = ceil(log(num_models - 1))`` is 7 for the challenge's 512.

  Args:
    epsilons: (n,) per-record ε, each >= 0 (inf allowed).
    num_models: models per side (>= 3; the reference uses N_u); sets the
      default ``max_epsilon``.
    max_epsilon: overrides the upper end of the binned range (> 0).
    bin_width: bin width (> 0).
  Returns:
    F in [0, 1].
  """
  eps = as_float_array(epsilons, 'epsilons', ndim=1, finite=False)
  if np.any(np.isnan(eps)):
    raise AuditError('epsilons contains NaN')
  if np.any(eps < 0.0):
    raise AuditError('epsilons must be >= 0')
  num_models = check_int(num_models, 'num_models', minimum=MIN_MODELS)
  if not float(bin_width) > 0.0 or not math.isfinite(float(bin_width)):
    raise AuditError(f'bin_width must be a positive number; got {bin_width!r}')
  if max_epsilon is None:
    max_epsilon = float(math.ceil(math.log(num_models - 1)))
  elif not float(max_epsilon) > 0.0 or not math.isfinite(float(max_epsilon)):
    raise AuditError(f'max_epsilon must be a positive number; got {max_epsilon!r}')
  n_bins = int(math.floor(float(max_epsilon) / float(bin_width) + 1e-9))
  with np.errstate(invalid='ignore'):
    k = np.floor(eps / float(bin_width))
  return float(np.mean(np.where(k < n_bins, np.exp2(-np.minimum(k, n_bins)), 0.0)))


def final_score(forget: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
  """The challenge's final score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

  Args:
    forget: F in [0, 1] (:func:`forget_score`).
    ra_u: retain accuracy of the unlearned models, in [0, 1].
    ra_r: retain accuracy of the retrained models, in (0, 1].
    ta_u: test accuracy of the unlearned models, in [0, 1].
    ta_r: test accuracy of the retrained models, in (0, 1].
  Returns:
    The score (>= 0; may exceed F when the unlearned models are more accurate).
  """
  f = check_unit(forget, 'forget_score')
  ra_u, ra_r = check_unit(ra_u, 'ra_u'), check_unit(ra_r, 'ra_r')
  ta_u, ta_r = check_unit(ta_u, 'ta_u'), check_unit(ta_r, 'ta_r')
  if ra_r == 0.0:
    raise AuditError('ra_r must be > 0 (it is a denominator)')
  if ta_r == 0.0:
    raise AuditError('ta_r must be > 0 (it is a denominator)')
  return f * (ra_u / ra_r) * (ta_u / ta_r)


# -----------------------------------------------------------------------------
# The auditor.
# -----------------------------------------------------------------------------


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
                      delta: float = DELTA, direction: str = 'median',
                      thresholds: str = 'grid', interval_attacks: bool = True,
                      peaky_cap: bool = True, num_models: int | None = None) -> PeerResult:
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
    direction: ``'median'`` (reference) or ``'both'``; see :func:`example_epsilon`.
    thresholds: ``'grid'`` (reference) or ``'exact'``.
    interval_attacks: include the two-threshold rules (reference: True).
    peaky_cap: the reference's "range ratio < 1% -> ε = 50" rule.
    num_models: models per side for the bins (None: N_u, as the reference;
      jaxaudit used min(N_u, N_r) before, the same when N_u = N_r).
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
  options = dict(direction=direction, thresholds=thresholds,
                 interval_attacks=bool(interval_attacks), peaky_cap=bool(peaky_cap))
  eps = per_example_epsilons(phi_u, phi_r, delta, **options)
  n_models = u.shape[0] if num_models is None else check_int(num_models, 'num_models',
                                                              minimum=MIN_MODELS)
  f_score = forget_score(eps, num_models=n_models)
  final = final_score(f_score, ra_u, ra_r, ta_u, ta_r)
  details = dict(
      forget_score=f_score, epsilons=eps, options=options,
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
                    delta: float = DELTA, eval_sample: int = 2000,
                    direction: str = 'median', thresholds: str = 'grid',
                    interval_attacks: bool = True, peaky_cap: bool = True,
                    num_models: int | None = None,
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
    direction, thresholds, interval_attacks, peaky_cap, num_models: the ε
      options of :func:`neurips23_epsilon` (defaults: the reference's).
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
                          ta_r=groups['retrained'][2], delta=delta,
                          direction=direction, thresholds=thresholds,
                          interval_attacks=interval_attacks, peaky_cap=peaky_cap,
                          num_models=num_models)
  res.details.update(cache_key=key, from_cache=bool(cached), trained_now=0 if cached else n,
                     retrain_s=wall, eval_sizes=dict(retain=len(ra_idx), test=len(ta_idx)))
  res.cost = dict(models_trained=n, wall_time_s=time.time() - t0)
  return res
