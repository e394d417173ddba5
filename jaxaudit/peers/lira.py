"""LiRA (Carlini et al. 2022) and U-LiRA (Hayes et al. 2024) as unlearning auditors.

LiRA. S shadow models train on random halves of the population
P = D ∪ D_ref (every record IN for exactly S // 2 of them, OUT for the rest).
For each scored record x, view a and shadow s the logit-scaled confidence
φ = log p_y − log Σ_{y'≠y} p_{y'} is computed; per record and view, Gaussians
are fitted to the IN and the OUT values:

  μ_in(a, x) = mean of φ over IN shadows,  μ_out likewise over OUT shadows;
  σ: per record (sample std, ddof = 1) or, with ``fixed_variance`` (the
     default, better with few shadows), one σ per view and side pooled over
     records: σ²_in(a) = Σ_x Σ_{s IN} (φ − μ_in(a, x))² / (#IN values − #records).

  online  score(x) = mean_a [log N(φ_t; μ_in, σ_in) − log N(φ_t; μ_out, σ_out)]
  offline score(x) = mean_a [−log Φ̄((φ_t − μ_out) / σ_out)]   (one-sided, OUT only)

with φ_t the audited model's φ and Φ̄ the standard normal survival function;
σ is floored at 1e-6. Differences from Carlini et al.'s code: it takes the
median rather than the mean, and its "fixed variance" is the std of all values
(including the spread between records) rather than the pooled within-record
std. Offline here reuses the OUT half of the same shadows.

U-LiRA. The two hypotheses for a record x of the audited model are
"trained on x, then x was unlearned" and "never trained on x". The S shadows
of LiRA are reused; in each shadow s the candidate records (Du ∪ D_ref) it
trained on are its forget set F_s, which ``unlearn_fn`` removes. The unlearned
shadow s is then a sample of the "unlearned" distribution for x ∈ F_s and of
the "never trained on x" (retrained) distribution for candidates it never saw;
both are models that went through unlearning, as the audited model did. The
score is the online LiRA ratio of these two Gaussians. Hayes et al. train one
original and one retrained model per split (64 splits × 10 forget sets in
DeepUnlearn's code); this design spends S trainings plus S unlearning runs.

Unlearning question, for both: are the audited model's scores on Du higher
than on D_ref (records it never trained on)? Reported: AUC(Du vs D_ref), TPR
at FPR 1% and 0.1% (:func:`jaxaudit.audit.stats.tpr_at_fpr`; with n_ref
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

from jaxaudit.peers.base import MIA_RULE, PeerResult, ShadowSet, check_int, check_level, \
    check_request, gaussian_logpdf, member_keys_for, membership_report, resolve_views, \
    shadow_view_logits, target_logits, train_shadows
from jaxaudit.audit.signals import logit_confidence
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, stack, unstack

MIN_SIGMA = 1e-6
# Fewest shadows LiRA accepts: 2 IN and 2 OUT per record.
MIN_SHADOWS = 4


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


def _fit(phi: np.ndarray, mask: np.ndarray, fixed_variance: bool,
         side: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-record means (A, n) and std devs (A, n) of φ over the shadows in ``mask``."""
  counts = mask.sum(0).astype(np.float64)                                  # (n,)
  need = 1 if fixed_variance else 2
  short = np.flatnonzero(counts < need)
  if short.size:
    raise AuditError(f'{short.size} record(s) have fewer than {need} {side} shadow model(s) '
                     f'(e.g. record position {int(short[0])}); train more shadows')
  w = mask[None].astype(np.float64)                                        # (1, S, n)
  mu = np.sum(phi * w, axis=1) / counts                                    # (A, n)
  sq = np.sum(((phi - mu[:, None]) ** 2) * w, axis=1)                      # (A, n)
  if fixed_variance:
    dof = float(counts.sum() - counts.size)
    if dof <= 0:
      raise AuditError(f'the pooled {side} variance needs some record with at least 2 {side} '
                       'shadow models; train more shadows')
    var = np.broadcast_to((sq.sum(1) / dof)[:, None], mu.shape)
  else:
    var = sq / (counts - 1.0)
  return mu, np.maximum(np.sqrt(var), MIN_SIGMA)


def lira_scores(phi_target: Any, phi_shadows: Any, in_mask: Any, *, online: bool = True,
                fixed_variance: bool = True) -> np.ndarray:
  """Per-record LiRA scores from a φ table (host-side, float64).

  Args:
    phi_target: (A, n) φ of the audited model on A views of n records.
    phi_shadows: (A, S, n) φ of the S shadow models.
    in_mask: (S, n) bool, True where shadow s trained on record i.
    online: the IN/OUT likelihood ratio; False: the one-sided OUT-only test.
    fixed_variance: one pooled σ per view and side instead of per record.
  Returns:
    (n,) scores, higher = more member-like (see the module docstring).
  """
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
  mu_out, sd_out = _fit(sh, ~mask, fixed_variance, 'OUT')
  if not online:
    return np.mean(-sps.norm.logsf((t - mu_out) / sd_out), axis=0)
  mu_in, sd_in = _fit(sh, mask, fixed_variance, 'IN')
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
         num_shadows: int = 16, online: bool = True, fixed_variance: bool = True,
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
    online: IN/OUT likelihood ratio (True) or the OUT-only one-sided test.
    fixed_variance: pooled σ per view (True) or per-record σ.
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
  views = resolve_views(views, dataset, target)
  shadows, scored = _get_shadows(shadows, model, dataset, split, recipe, num_shadows, seed,
                                 cache_dir, log)
  labels = dataset.y_train[scored]
  phi_t = _phi(target_logits(target, dataset, scored, views, seed=seed), labels)
  phi_s = _phi(shadow_view_logits(model, shadows.params, dataset, scored, views, seed=seed),
               labels)
  mask = shadows.in_mask(scored)
  scores = lira_scores(phi_t, phi_s, mask, online=online, fixed_variance=fixed_variance)
  nf = len(split.forget)
  auc, decision, details = membership_report(scores[:nf], scores[nf:], alpha=alpha)
  details.update(
      target=target.name, online=bool(online), fixed_variance=bool(fixed_variance),
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
          fixed_variance: bool = True, alpha: float = 0.05, shadows: ShadowSet | None = None,
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
    fixed_variance: pooled σ per view (True) or per-record σ.
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
  scores = lira_scores(phi_t, phi_s, mask, online=True, fixed_variance=fixed_variance)
  nf = len(split.forget)
  auc, decision, details = membership_report(scores[:nf], scores[nf:], alpha=alpha)
  s_count = shadows.num_models
  details.update(
      target=target.name, fixed_variance=bool(fixed_variance), views=list(views),
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
