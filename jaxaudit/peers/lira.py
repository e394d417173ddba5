"""LiRA (Carlini et al. 2022) and U-LiRA (Hayes et al. 2024) as unlearning auditors.

LiRA. Reference: tensorflow/privacy, ``research/mi_lira_2021/plot.py``
(``generate_ours`` online, ``generate_ours_offline`` offline). S shadow models
train on random halves of the population P = D ∪ D_ref (every record IN for
exactly S // 2 of them, OUT for the rest). For each scored record x, view a
and shadow s the logit-scaled confidence φ = log p_y − log Σ_{y'≠y} p_{y'} is
computed; per record and view, Gaussians are fitted to the IN and the OUT
values. Defaults, as in the reference:

* ``truncate=True``: per side, every record keeps the φ of its first k shadows
  (in model order), k the smallest count of that side over the scored records
  (no effect on balanced halves);
* ``center='median'``: μ(a, x) is the median over those shadows;
* ``variance='global'`` (the reference's ``fix_variance=True``): one σ, the
  standard deviation (``ddof=0``) of every IN value of every record and view;
  the reference uses that IN σ for the OUT side too online, and the std of
  every OUT value offline. ``variance='per_record'`` (its
  ``fix_variance=False``): σ(a, x) = std of the record's values (``ddof=0``);
* σ + 1e-30 in the densities;

  online  score(x) = mean_a [log N(φ_t; μ_in, σ_in) − log N(φ_t; μ_out, σ_out)]
  offline score(x) = mean_a [−log N(φ_t; μ_out, σ_out)]          (two-sided)

with φ_t the audited model's φ; higher = more member-like. Offline here reuses
the OUT half of the same shadows.

Deviations, available as options (``LEGACY_OPTIONS`` reproduces jaxaudit's
LiRA before it followed the reference): ``center='mean'``; ``ddof=1``;
``variance='pooled'`` (one σ per view and side, pooled within records:
σ²(a) = Σ_x Σ_s (φ − μ(a, x))² / (#values − #records), floored at 1e-6);
``offline_test='one_sided'`` (−log Φ̄((φ_t − μ_out) / σ_out), members only
above the OUT mean); ``truncate=False`` (every shadow's value). On balanced
halves the rankings of the two conventions differ mostly offline (one-sided
vs two-sided); the tests compare both with loops written from the formulas.

U-LiRA. The two hypotheses for a record x of the audited model are
"trained on x, then x was unlearned" and "never trained on x". The S shadows
of LiRA are reused; in each shadow s the candidate records (Du ∪ D_ref) it
trained on are its forget set F_s, which ``unlearn_fn`` removes. The unlearned
shadow s is then a sample of the "unlearned" distribution for x ∈ F_s and of
the "never trained on x" (retrained) distribution for candidates it never saw;
both are models that went through unlearning, as the audited model did. The
score is the online LiRA ratio of these two Gaussians, with LiRA's options.
Hayes et al. train one original and one retrained model per split (64 splits ×
10 forget sets in DeepUnlearn's code); this design spends S trainings plus S
unlearning runs.

Unlearning question, for both: are the audited model's scores on Du higher
than on D_ref (records it never trained on)? Reported: AUC(Du vs D_ref), TPR
at FPR 1% and 0.1% (:func:`jaxaudit.peers.base.tpr_at_fpr`; with n_ref
reference records an FPR below 1/n_ref only allows thresholds above every
D_ref score), and the decision ``not_forgotten`` iff a one-sided Mann–Whitney
test of Du > D_ref gives p < alpha.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from scipy import stats as sps

from jaxaudit.peers.base import MIA_RULE, PeerResult, ShadowSet, check_choice, check_int, \
    check_level, check_request, gaussian_logpdf, member_keys_for, membership_report, \
    resolve_views, shadow_view_logits, target_logits, train_shadows
from jaxaudit.tasks.classification import logit_confidence
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, stack, unstack

# σ floor of the legacy pooled variance; the reference adds SIGMA_EPS instead.
MIN_SIGMA = 1e-6
SIGMA_EPS = 1e-30
# Fewest shadows LiRA accepts: 2 IN and 2 OUT per record.
MIN_SHADOWS = 4
CENTERS = ('median', 'mean')
VARIANCES = ('global', 'per_record', 'pooled')
OFFLINE_TESTS = ('two_sided', 'one_sided')
# The options that reproduce jaxaudit's LiRA before it followed the reference.
LEGACY_OPTIONS = dict(center='mean', ddof=1, variance='pooled', offline_test='one_sided',
                      truncate=False)


def _as_float64(x: Any, name: str, ndim: int) -> np.ndarray:
  arr = np.asarray(x)
  if arr.dtype.kind not in 'fiub':
    raise AuditError(f'{name} must be numeric, got dtype {arr.dtype}')
  arr = arr.astype(np.float64)
  if arr.ndim != ndim:
    raise AuditError(f'{name} must be {ndim}-D, got shape {arr.shape}')
  if not np.all(np.isfinite(arr)):
    raise AuditError(f'{name} holds {int(np.sum(~np.isfinite(arr)))} NaN or inf value(s)')
  return arr


def _first_k(mask: np.ndarray) -> np.ndarray:
  """(S, n) mask keeping, per record, its first k True entries (k = smallest count)."""
  k = int(mask.sum(0).min())
  rank = np.cumsum(mask, axis=0)
  return mask & (rank <= k)


def _fit(phi: np.ndarray, mask: np.ndarray, *, center: str, ddof: int, variance: str,
         side: str) -> tuple[np.ndarray, np.ndarray]:
  """Centers (A, n) and σ (A, n) of φ (A, S, n) over the shadows in ``mask`` (S, n)."""
  counts = mask.sum(0)                                                     # (n,)
  need = ddof + 1 if variance == 'per_record' else 1
  short = np.flatnonzero(counts < need)
  if short.size:
    raise AuditError(f'{short.size} record(s) have fewer than {need} {side} shadow model(s) '
                     f'(e.g. record position {int(short[0])}); train more shadows')
  vals = np.where(mask[None], phi, np.nan)                                 # (A, S, n)
  mu = np.nanmedian(vals, axis=1) if center == 'median' else np.nanmean(vals, axis=1)
  if variance == 'per_record':
    sd = np.nanstd(vals, axis=1, ddof=ddof)
  elif variance == 'global':
    flat = phi[:, mask]
    if flat.size <= ddof:
      raise AuditError(f'the global {side} variance needs more than {ddof} value(s)')
    sd = np.full(mu.shape, np.std(flat, ddof=ddof))
  else:   # pooled within records, per view
    dof = float(counts.sum() - counts.size)
    if dof <= 0:
      raise AuditError(f'the pooled {side} variance needs some record with at least 2 {side} '
                       'shadow models; train more shadows')
    sq = np.nansum((vals - mu[:, None]) ** 2, axis=1)                      # (A, n)
    sd = np.broadcast_to(np.sqrt(sq.sum(1) / dof)[:, None], mu.shape)
    return mu, np.maximum(sd, MIN_SIGMA)
  return mu, sd + SIGMA_EPS


def check_lira_options(center: str, ddof: int, variance: str, offline_test: str) -> None:
  """Validates LiRA's convention options; AuditError naming the bad one."""
  check_choice(center, 'center', CENTERS)
  check_choice(variance, 'variance', VARIANCES)
  check_choice(offline_test, 'offline_test', OFFLINE_TESTS)
  check_int(ddof, 'ddof', minimum=0)


def lira_scores(phi_target: Any, phi_shadows: Any, in_mask: Any, *, online: bool = True,
                variance: str = 'global', center: str = 'median', ddof: int = 0,
                offline_test: str = 'two_sided', truncate: bool = True) -> np.ndarray:
  """Per-record LiRA scores from a φ table (host-side, float64).

  Args:
    phi_target: (A, n) φ of the audited model on A views of n records.
    phi_shadows: (A, S, n) φ of the S shadow models.
    in_mask: (S, n) bool, True where shadow s trained on record i.
    online: the IN/OUT likelihood ratio; False: the OUT-only test.
    variance: ``'global'`` (reference, fixed variance), ``'per_record'``
      (reference, per-example variance) or ``'pooled'`` (legacy).
    center: ``'median'`` (reference) or ``'mean'``.
    ddof: delta degrees of freedom of the standard deviations (reference 0).
    offline_test: ``'two_sided'`` (reference: −log density under OUT) or
      ``'one_sided'`` (−log survival function).
    truncate: keep the first k shadows per side and record, k the smallest
      count over the records (reference).
  Returns:
    (n,) scores, higher = more member-like (see the module docstring).
  """
  check_lira_options(center, ddof, variance, offline_test)
  t = _as_float64(phi_target, 'phi_target', 2)
  sh = _as_float64(phi_shadows, 'phi_shadows', 3)
  mask = np.asarray(in_mask)
  if mask.dtype != bool:
    raise AuditError(f'in_mask must be boolean, got dtype {mask.dtype}')
  a, n = t.shape
  if sh.shape[0] != a or sh.shape[2] != n:
    raise AuditError(f'phi_shadows {sh.shape} does not match phi_target {t.shape} as (A, S, n)')
  if mask.shape != (sh.shape[1], n):
    raise AuditError(f'in_mask must have shape (S, n) = {(sh.shape[1], n)}, got {mask.shape}')
  out_mask, in_mask_ = ~mask, mask
  for m, side in ((out_mask, 'OUT'), (in_mask_, 'IN')):
    if not online and side == 'IN':
      continue
    if not m.sum(0).min() >= 1:
      bad = int(np.argmin(m.sum(0)))
      raise AuditError(f'record position {bad} has no {side} shadow model; train more shadows')
  if truncate:
    out_mask = _first_k(out_mask)
    in_mask_ = _first_k(in_mask_)
  kw = dict(center=center, ddof=int(ddof), variance=variance)
  mu_out, sd_out = _fit(sh, out_mask, side='OUT', **kw)
  if not online:
    if offline_test == 'one_sided':
      return np.mean(-sps.norm.logsf((t - mu_out) / sd_out), axis=0)
    return np.mean(-gaussian_logpdf(t, mu_out, sd_out), axis=0)
  mu_in, sd_in = _fit(sh, in_mask_, side='IN', **kw)
  if variance == 'global':
    sd_out = sd_in          # as the reference: the IN values' σ for both sides online
  return np.mean(gaussian_logpdf(t, mu_in, sd_in) - gaussian_logpdf(t, mu_out, sd_out), axis=0)


def _phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return np.asarray(logit_confidence(logits, np.asarray(labels, np.int32)), np.float64)


def _check_shadows(shadows: ShadowSet, scored: np.ndarray) -> None:
  if not isinstance(shadows, ShadowSet):
    raise AuditError(f'shadows must be a ShadowSet, got {type(shadows).__name__}')
  if shadows.num_models < MIN_SHADOWS:
    raise AuditError(f'LiRA needs at least {MIN_SHADOWS} shadow models, got '
                     f'{shadows.num_models}')
  shadows.in_mask(scored)   # raises if some scored record is not in the population


def _get_shadows(shadows, model, dataset, split, recipe, num_shadows, seed, cache_dir, log):
  scored = np.concatenate([split.forget, split.ref]).astype(np.int64)
  if shadows is None:
    population = np.union1d(split.train, split.ref)
    shadows = train_shadows(model, dataset, recipe, population, num_shadows=num_shadows,
                            seed=seed, cache_dir=cache_dir, tag='lira-shadows', log=log)
  _check_shadows(shadows, scored)
  return shadows, scored


def lira(target: Target, dataset: Dataset, split: AuditSplit, model, recipe: Recipe, *,
         num_shadows: int = 16, online: bool = True, variance: str = 'global',
         center: str = 'median', ddof: int = 0, offline_test: str = 'two_sided',
         truncate: bool = True,
         views: Sequence[str] | None = None, seed: int = 0, cache_dir: str | None = None,
         alpha: float = 0.05, shadows: ShadowSet | None = None,
         log: Callable[[str], None] = lambda s: None) -> PeerResult:
  """LiRA membership inference of Du vs D_ref against the audited model.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request (D, Du, D_ref).
    model: Linen module of the shadow models (the audited architecture).
    recipe: their training recipe (the original's).
    num_shadows: S >= 4 shadow models on random halves of D ∪ D_ref.
    online: IN/OUT likelihood ratio (True) or the OUT-only test.
    variance, center, ddof, offline_test, truncate: the conventions of
      :func:`lira_scores` (defaults: the reference's).
    views: views to average over (default ``('identity', 'shift_right')`` for
      images, ``('identity',)`` otherwise); a logits-table target answers
      only the views it holds.
    seed: seed of the halves, the shadows' keys and noise views.
    cache_dir: where shadow ensembles are cached (None: no cache).
    alpha: level of the decision rule.
    shadows: a ready ShadowSet (e.g. shared with :func:`ulira`); skips training.
    log: progress printer.
  Returns:
    PeerResult with score = AUC of Du vs D_ref LiRA scores (0.5 = no
    membership signal), details as in :func:`membership_report` plus per-record
    scores. Cost: num_shadows models (the method's cost, even when loaded from
    the cache; ``details['trained_now']`` says what this call trained).
  """
  t0 = time.time()
  check_request(target, dataset, split)
  if shadows is None:
    num_shadows = check_int(num_shadows, 'num_shadows', minimum=MIN_SHADOWS,
                            why=' (LiRA fits IN and OUT Gaussians: 2 of each per record)')
  alpha = check_level(alpha, 'alpha')
  check_lira_options(center, ddof, variance, offline_test)
  views = resolve_views(views, dataset, target)
  shadows, scored = _get_shadows(shadows, model, dataset, split, recipe, num_shadows, seed,
                                 cache_dir, log)
  labels = dataset.y_train[scored]
  phi_t = _phi(target_logits(target, dataset, scored, views, seed=seed), labels)
  phi_s = _phi(shadow_view_logits(model, shadows.params, dataset, scored, views, seed=seed),
               labels)
  mask = shadows.in_mask(scored)
  options = dict(variance=variance, center=center, ddof=ddof, offline_test=offline_test,
                 truncate=bool(truncate))
  scores = lira_scores(phi_t, phi_s, mask, online=online, **options)
  nf = len(split.forget)
  auc, decision, details = membership_report(scores[:nf], scores[nf:], alpha=alpha)
  details.update(
      target=target.name, online=bool(online), options=options,
      views=list(views), num_shadows=shadows.num_models,
      shadow_phi=dict(mean_in=float(phi_s[0][mask].mean()),
                      mean_out=float(phi_s[0][~mask].mean())),
      scores=dict(forget=scores[:nf], ref=scores[nf:]),
      cache_key=shadows.cache_key, from_cache=bool(shadows.from_cache),
      trained_now=0 if shadows.from_cache else shadows.num_models,
      shadow_train_s=shadows.wall_time_s)
  return PeerResult(name='lira', score=auc, decision=decision, rule=MIA_RULE, details=details,
                    cost=dict(models_trained=shadows.num_models,
                              wall_time_s=time.time() - t0))


def _accepts_retain(fn: Callable) -> bool:
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return 'retain_indices' in params or any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def ulira(target: Target, dataset: Dataset, split: AuditSplit, model, recipe: Recipe,
          unlearn_fn: Callable[..., Any], *, num_shadows: int = 8, seed: int = 0,
          cache_dir: str | None = None, views: Sequence[str] | None = None,
          variance: str = 'global', center: str = 'median', ddof: int = 0,
          truncate: bool = True, alpha: float = 0.05, shadows: ShadowSet | None = None,
          log: Callable[[str], None] = lambda s: None) -> PeerResult:
  """U-LiRA: unlearned-vs-retrained likelihood ratio per record of Du and D_ref.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request.
    model: Linen module of the shadow models.
    recipe: their training recipe.
    unlearn_fn: ``unlearn_fn(params, key, forget_indices) -> params``: the
      unlearning method under audit, applied to one shadow's (unstacked)
      params; ``forget_indices`` are sorted pool indices. If it accepts a
      keyword ``retain_indices`` (or ``**kwargs``) it also receives the
      shadow's retain set (its training half minus the forget set).
    num_shadows: S >= 4 shadows on random halves of D ∪ D_ref (shared with
      :func:`lira` for the same S, seed and cache).
    seed: seed of the halves, of the shadows' and of the unlearning keys.
    cache_dir: where shadow ensembles are cached (unlearned shadows are not).
    views: as for :func:`lira`.
    variance, center, ddof, truncate: as for :func:`lira_scores` (online).
    alpha: level of the decision rule.
    shadows: a ready ShadowSet; skips training.
    log: progress printer.
  Returns:
    PeerResult with score = AUC of Du vs D_ref U-LiRA scores. Cost:
    models_trained = 2 S (S shadow trainings + S unlearning runs, each counted
    as one model; ``details`` splits them).
  """
  t0 = time.time()
  check_request(target, dataset, split)
  if not callable(unlearn_fn):
    raise AuditError('unlearn_fn must be callable: (params, key, forget_indices) -> params')
  if shadows is None:
    num_shadows = check_int(num_shadows, 'num_shadows', minimum=MIN_SHADOWS,
                            why=' (U-LiRA fits two Gaussians: 2 shadows of each per record)')
  alpha = check_level(alpha, 'alpha')
  check_lira_options(center, ddof, variance, 'two_sided')
  views = resolve_views(views, dataset, target)
  shadows, scored = _get_shadows(shadows, model, dataset, split, recipe, num_shadows, seed,
                                 cache_dir, log)
  mask = shadows.in_mask(scored)                                           # (S, n)
  pass_retain = _accepts_retain(unlearn_fn)
  keys = member_keys_for(seed, 'ulira-unlearn', shadows.num_models)
  t_unlearn = time.time()
  reference = jax.tree.structure(unstack(shadows.params, 0))
  ref_shapes = [np.shape(l) for l in jax.tree.leaves(unstack(shadows.params, 0))]
  unlearned = []
  for s in range(shadows.num_models):
    params_s = unstack(shadows.params, s)
    forget_s = np.sort(scored[mask[s]])
    kwargs = {}
    if pass_retain:
      half = shadows.population[shadows.in_matrix[s]]
      kwargs['retain_indices'] = np.setdiff1d(half, forget_s)
    new = unlearn_fn(params_s, keys[s], forget_s, **kwargs)
    if (jax.tree.structure(new) != reference or
        [np.shape(l) for l in jax.tree.leaves(new)] != ref_shapes):
      raise AuditError('unlearn_fn must return params with the structure and shapes of its '
                       f'input (shadow {s} differs)')
    unlearned.append(new)
  unlearn_s = time.time() - t_unlearn
  log(f'[ulira] unlearned {shadows.num_models} shadows in {unlearn_s:.1f}s')
  params_u = stack(unlearned)
  labels = dataset.y_train[scored]
  phi_t = _phi(target_logits(target, dataset, scored, views, seed=seed), labels)
  phi_s = _phi(shadow_view_logits(model, params_u, dataset, scored, views, seed=seed,
                                  name='unlearned shadow models'), labels)
  options = dict(variance=variance, center=center, ddof=ddof, truncate=bool(truncate))
  scores = lira_scores(phi_t, phi_s, mask, online=True, **options)
  nf = len(split.forget)
  auc, decision, details = membership_report(scores[:nf], scores[nf:], alpha=alpha)
  s_count = shadows.num_models
  details.update(
      target=target.name, options=options, views=list(views),
      num_shadows=s_count, forget_set_sizes=mask.sum(1),
      shadow_phi=dict(mean_unlearned=float(phi_s[0][mask].mean()),
                      mean_never_seen=float(phi_s[0][~mask].mean())),
      scores=dict(forget=scores[:nf], ref=scores[nf:]),
      shadow_trainings=s_count, unlearning_runs=s_count,
      cache_key=shadows.cache_key, from_cache=bool(shadows.from_cache),
      trained_now=0 if shadows.from_cache else s_count,
      shadow_train_s=shadows.wall_time_s, unlearn_s=unlearn_s,
      retain_indices_passed=bool(pass_retain))
  return PeerResult(name='ulira', score=auc, decision=decision, rule=MIA_RULE, details=details,
                    cost=dict(models_trained=2 * s_count, wall_time_s=time.time() - t0))
