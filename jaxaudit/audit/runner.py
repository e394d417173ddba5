"""`audit(...)`: the proof-of-ignorance audit, end to end.

1. Validate the request (split vs data, K ≥ 2, settings).
2. Train or load K verification models on subsets of Dr (one program, cached).
3. Query Mu and the verifiers on Du, a class-matched sample of D_ref and a
   sample of Mu's members (records of Dr no verifier saw), each on the exact
   record and its augmented neighbours — one batched program per model set.
4. Difficulty-calibrated scores → the reference check and the two-sided
   ignorance test (:mod:`jaxaudit.audit.decision`), per-record evidence,
   accuracies, cost.

A user reference set (``reference=(x_ref, y_ref)``, records no model trained
on, in dataset units) replaces the split's D_ref
(:func:`jaxaudit.audit.reference.with_reference`); the reference check refuses
it when it is not exchangeable with Du.

A model whose outputs hold NaN or inf (e.g. diverged gradient ascent) gets a
verdict, not an error: ``not_forgotten``, direction ``collapse``, with the
sets and record counts of the non-finite logits in ``details['nonfinite_outputs']``
and the reason in ``details['reason']``; p-value, effect and score are NaN.
Malformed outputs (wrong shape, class count, dtype) stay AuditErrors.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from jaxaudit.audit import decision as decision_lib
from jaxaudit.audit import reference as reference_lib
from jaxaudit.audit.signals import compute_signals, default_views, nonfinite_records, query_views
from jaxaudit.audit.target import Target
from jaxaudit.audit.verifiers import VerifierSet, check_disjoint, get_verifiers
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.data.splits import split_hash, validate_split
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, accuracy, predict_logits


@dataclasses.dataclass(frozen=True)
class AuditSettings:
  """Settings of one audit.

  Attributes:
    num_verifiers: K verification models (≥ 2).
    subset_ratio: verifier subset size as a fraction of |Dr|, or a ladder of
      ratios (the rung whose verifiers' D_ref accuracy is closest to Mu's is used).
    views: ``auto`` (1-px shifts + noise for images, noise otherwise) or a tuple
      of view names from ``jaxaudit.audit.signals.VIEWS``; ``('identity',)``
      queries the exact records only.
    flips: include horizontal flips in ``auto`` views (natural for CIFAR).
    ref_sample: maximum size of the class-matched D_ref sample.
    member_sample: records of Dr reserved as Mu's member reference.
    test_sample: test records used for accuracies.
    verifier_epochs: epochs of the verifiers (default: the original recipe's).
    seed: seed of verifier subsets/keys, samples and noise.
    class_test: run the class-level test when Du holds every training record
      of some classes (see :mod:`jaxaudit.audit.decision`).
    test: the decision settings (α, FDR, power target, ...).
  """
  num_verifiers: int = 4
  subset_ratio: float | tuple[float, ...] = 0.15
  views: str | tuple[str, ...] = 'auto'
  flips: bool = False
  ref_sample: int = 5000
  member_sample: int = 1000
  test_sample: int = 2000
  verifier_epochs: int | None = None
  seed: int = 0
  class_test: bool = True
  test: decision_lib.TestSettings = decision_lib.TestSettings()

  def __post_init__(self):
    if int(self.num_verifiers) < 2:
      raise AuditError(f'the audit needs K >= 2 verification models, got {self.num_verifiers}')
    ratios = self.ratios
    if not ratios or any(not 0 < r < 1 for r in ratios):
      raise AuditError(f'subset_ratio must be in (0, 1), got {self.subset_ratio}')
    if self.ref_sample < 2 or self.member_sample < 0 or self.test_sample < 1:
      raise AuditError('ref_sample must be >= 2, member_sample >= 0, test_sample >= 1')

  @property
  def ratios(self) -> tuple[float, ...]:
    r = self.subset_ratio
    return tuple(float(v) for v in r) if isinstance(r, (tuple, list)) else (float(r),)


@dataclasses.dataclass
class AuditResult:
  """Outcome of an audit; ``to_dict()`` is what report.json holds."""
  decision: str
  direction: str | None
  p_value: float
  effect_auc: float
  effect_auc_ci: list[float]
  forgetting_score: float
  forgetting_score_ci: list[float]
  power: float
  flagged_records: list[int]
  details: dict[str, Any]

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    details = d.pop('details')
    d.update(details)
    return d

  def summary(self) -> str:
    d = self.decision + (f' ({self.direction})' if self.direction else '')
    if self.details.get('nonfinite_outputs'):
      return f'{d}: {self.details.get("reason")}'
    fs = self.forgetting_score
    return (f'{d}: p={self.p_value:.3g}, AUC(Du vs D_ref)={self.effect_auc:.3f} '
            f'[{self.effect_auc_ci[0]:.3f}, {self.effect_auc_ci[1]:.3f}], '
            f'forgetting score={fs:.2f}, power={self.power:.2f}, '
            f'{len(self.flagged_records)} record(s) flagged')


def _validate_request(dataset: Dataset, split: AuditSplit) -> None:
  validate_split(split, dataset)
  if len(split.forget) < 2:
    raise AuditError(f'the audit needs at least 2 records in Du, got {len(split.forget)}')


def _ensemble_logits(model, params, views_x: np.ndarray) -> np.ndarray:
  """(A, n, ...) inputs -> (A, K, n, C) logits of a stacked ensemble."""
  a, n = views_x.shape[:2]
  flat = views_x.reshape((a * n,) + views_x.shape[2:])
  lg = predict_logits(model, params, flat, ensemble=True)           # (K, A*n, C)
  return np.transpose(lg.reshape(lg.shape[0], a, n, -1), (1, 0, 2, 3))


def _memo_logits(memo: dict | None, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """Verifier logits do not depend on the audited model: compute once per request."""
  if memo is None:
    return compute()
  if key not in memo:
    memo[key] = compute()
  return memo[key]


def audit_many(targets: Sequence[Target], dataset: Dataset, split: AuditSplit, **kwargs
               ) -> list[AuditResult]:
  """Audits several models of one request; verifiers and their signals are shared.

  Takes the keyword arguments of :func:`audit`. The verifiers are trained (or
  loaded) once and their logits on Du, D_ref, the members and the test
  sample are computed once for all targets.
  """
  memo = kwargs.pop('memo', None)
  memo = {} if memo is None else memo
  ref = kwargs.pop('reference', None)
  if ref is not None:   # append the reference records once for all targets
    dataset, split = reference_lib.with_reference(dataset, split, *_reference_pair(ref))
  return [audit(t, dataset, split, memo=memo, **kwargs) for t in targets]


def _reference_pair(reference) -> tuple[Any, Any]:
  if not isinstance(reference, (tuple, list)) or len(reference) != 2:
    raise AuditError('reference must be a pair (x_ref (n, *input_shape), y_ref (n,)), got '
                     f'{type(reference).__name__}')
  return reference[0], reference[1]


def _logsumexp(lg: np.ndarray) -> np.ndarray:
  m = lg.max(-1, keepdims=True)
  return (m + np.log(np.sum(np.exp(lg - m), -1, keepdims=True)))[..., 0]


def self_check_statistics(groups: tuple[str, ...], sig: dict, vlogits: dict[str, np.ndarray],
                          inputs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The statistics of the reference check (none involves the audited model).

  Args:
    groups: subset of ``decision.SELF_CHECK_GROUPS``.
    sig: set name -> Signals (must hold 'forget' and 'ref'; every set joins the
      leave-one-out pooled fits).
    vlogits: 'forget'/'ref' -> (K, n, C) verifier logits on the exact records.
    inputs: 'forget'/'ref' -> (n, *input_shape) exact inputs.
  Returns:
    name -> ((n_du,), (n_ref,)) per-record scores: ``verifiers_phi`` (mean φ),
    ``verifiers_energy`` (mean log-sum-exp of the logits), ``verifiers_spread``
    (std of φ across verifiers), ``loo{k}_{exact,neighbours,gap}``
    (:func:`jaxaudit.audit.decision.loo_statistics`), ``input_mean``,
    ``input_std`` and, for images, ``input_roughness`` (mean absolute
    difference of adjacent pixels) of each record.
  """
  out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  pair = lambda f: (f('forget'), f('ref'))
  if 'verifiers' in groups:
    out['verifiers_phi'] = pair(lambda k: sig[k].phi_verifiers[0].mean(0))
    out['verifiers_energy'] = pair(lambda k: _logsumexp(np.asarray(vlogits[k], np.float64)).mean(0))
    out['verifiers_spread'] = pair(lambda k: sig[k].phi_verifiers[0].std(0))
  if 'loo' in groups:
    out.update(decision_lib.loo_statistics({k: s.phi_verifiers for k, s in sig.items()}))
  if 'inputs' in groups:
    flat = {k: np.asarray(v, np.float64).reshape(len(v), -1) for k, v in inputs.items()}
    out['input_mean'] = pair(lambda k: flat[k].mean(1))
    out['input_std'] = pair(lambda k: flat[k].std(1))
    if all(np.ndim(v) == 4 for v in inputs.values()):   # images (n, H, W, C): pixel noise
      out['input_roughness'] = pair(lambda k: _roughness(inputs[k]))
  return out


def _roughness(x: np.ndarray) -> np.ndarray:
  """(n, H, W, C) images -> (n,) mean absolute difference of adjacent pixels."""
  x = np.asarray(x, np.float64)
  if x.shape[1] < 2 or x.shape[2] < 2:
    return np.zeros(len(x))
  return 0.5 * (np.abs(np.diff(x, axis=1)).mean((1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean((1, 2, 3)))


def _nonfinite_result(target: Target, dataset: Dataset, split: AuditSplit,
                      settings: AuditSettings, vs: VerifierSet, views: tuple[str, ...],
                      sets: dict, nonfinite: dict[str, int], models_trained: int,
                      verifier_train_s: float, t0: float, user_reference: bool) -> AuditResult:
  """The verdict on a model with NaN/inf outputs: not_forgotten (collapse)."""
  names = {'forget': 'Du', 'ref': 'D_ref', 'members': 'members', 'test': 'test',
           'held_classes': 'held-out records of the forgotten classes'}
  sizes = {k: len(v[0]) for k, v in sets.items()}
  parts = [f'{names.get(k, k)}: {n} of {sizes.get(k, "?")} records' if k in sizes
           else f'{names.get(k, k)}: {n} records' for k, n in nonfinite.items() if n]
  reason = ('the audited model returns NaN or inf logits (' + '; '.join(parts) + '): a diverged '
            'model has no usable outputs, so it has not forgotten Du in any useful sense '
            '(utility collapse); no test was run')
  nan = float('nan')
  details = dict(
      target=target.name, reason=reason,
      nonfinite_outputs={k: dict(records=int(n), of=sizes.get(k)) for k, n in nonfinite.items()},
      tests={}, alpha=settings.test.alpha, combine=settings.test.combine, n_tests=0,
      rejected=False, exact_inputs_masked=False, p_record=nan, class_level=None,
      member_auc=nan, power_target=settings.test.power_target, reference_check=None,
      utility_collapse=True, per_record=dict(score=[], p_value=[], flagged=[],
                                             fdr=settings.test.fdr, indices=[]),
      accuracy={}, sizes=dict(forget=len(split.forget), **{k: v for k, v in sizes.items()
                                                           if k != 'forget'}),
      settings=dict(num_verifiers=settings.num_verifiers, subset_ratio=vs.ratio,
                    ratio_ladder=list(settings.ratios), views=list(views),
                    ref_sample=settings.ref_sample, member_sample=settings.member_sample,
                    seed=settings.seed, test=dataclasses.asdict(settings.test)),
      request=dict(dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
                   split_hash=split_hash(split), reference='user' if user_reference else 'pool'),
      verifiers=dict(cache_key=vs.cache_key, from_cache=vs.from_cache,
                     subset_size=int(vs.subsets.shape[1])),
      forgetting_score_method=decision_lib.FORGETTING_SCORE_METHOD,
      cost=dict(models_trained=models_trained, verifier_train_s=verifier_train_s,
                wall_time_s=time.time() - t0,
                queries=int(sum(len(v[0]) for v in sets.values()) * len(views))))
  return AuditResult(decision='not_forgotten', direction='collapse', p_value=nan,
                     effect_auc=nan, effect_auc_ci=[nan, nan], forgetting_score=nan,
                     forgetting_score_ci=[nan, nan], power=nan, flagged_records=[],
                     details=details)


def audit(target: Target, dataset: Dataset, split: AuditSplit, *, verifier_model,
          recipe: Recipe, settings: AuditSettings = AuditSettings(),
          cache_dir: str | None = None, verifiers: VerifierSet | None = None,
          log: Callable[[str], None] = lambda s: None, memo: dict | None = None,
          reference: tuple[Any, Any] | None = None) -> AuditResult:
  """Decides whether ``target`` is ignorant of Du.

  Args:
    target: Mu (see :class:`Target`).
    dataset: the data the split indexes.
    split: the audit request (D, Du, Dr, D_ref, test).
    verifier_model: Linen module for the verification models.
    recipe: their training recipe (``settings.verifier_epochs`` overrides epochs).
    settings: audit settings.
    cache_dir: where verifier sets are cached (None: no cache).
    verifiers: a ready VerifierSet (skips training; checked for disjointness).
    log: progress printer.
    memo: optional dict owned by the caller, in which verifier logits are kept
      between audits of the same request (see :func:`audit_many`).
    reference: optional user reference set (x_ref (n, *input_shape) in dataset
      units, y_ref (n,) int labels in [0, C)): records that no model trained
      on, replacing the split's D_ref (see :mod:`jaxaudit.audit.reference`;
      :func:`jaxaudit.audit.reference.load_reference_file` reads one from an
      ``.npz``). None: D_ref from the pool, as the split says.
  Returns:
    AuditResult.
  """
  t0 = time.time()
  user_reference = reference is not None
  if user_reference:
    dataset, split = reference_lib.with_reference(dataset, split, *_reference_pair(reference))
  _validate_request(dataset, split)
  if not isinstance(target, Target):
    raise AuditError(f'target must be a jaxaudit.audit.Target, got {type(target).__name__}')
  if settings.verifier_epochs:
    recipe = recipe.replace(epochs=int(settings.verifier_epochs))
  x, y = dataset.x_train, dataset.y_train
  views = default_views(dataset.input_shape, settings.flips) if settings.views == 'auto' \
      else tuple(settings.views)
  if views[0] != 'identity':
    raise AuditError(f"the first view must be 'identity', got {views}")
  avail = target.available_views()
  if avail is not None and set(views) - set(avail):
    log(f'[audit] {target.name} answers views {avail} only; neighbour queries reduced')
    views = tuple(v for v in views if v in avail)

  # Verification models (one ensemble per rung of the ratio ladder).
  models_trained = 0
  candidates: list[VerifierSet] = []
  if verifiers is not None:
    check_disjoint(split, verifiers.subsets, verifiers.members)
    candidates.append(verifiers)
  else:
    for ratio in settings.ratios:
      if memo is not None and ('verifiers', ratio) in memo:
        candidates.append(memo[('verifiers', ratio)])
        continue
      vs = get_verifiers(verifier_model, dataset, split, recipe,
                         num_verifiers=settings.num_verifiers, ratio=ratio,
                         member_sample=settings.member_sample, seed=settings.seed,
                         cache_dir=cache_dir, log=log)
      models_trained += 0 if vs.from_cache else vs.num_models
      candidates.append(vs)
      if memo is not None:
        memo[('verifiers', ratio)] = vs._replace(from_cache=True, wall_time_s=0.0)
  verifier_train_s = sum(v.wall_time_s for v in candidates)

  # Samples: class-matched D_ref, member reference, test.
  ref_idx, ref_matched = decision_lib.class_matched_sample(
      y[split.forget], split.ref, y[split.ref], settings.ref_sample, settings.seed)
  rng = np.random.default_rng([settings.seed, 31])
  test_idx = np.sort(rng.choice(split.test, min(settings.test_sample, len(split.test)),
                                replace=False))

  # Mu's logits on D_ref (exact view) choose the ladder rung.
  xq_ref = query_views(x[ref_idx], ref_idx, views, seed=settings.seed)
  tl_ref = target.logits(xq_ref, ref_idx, views, dataset.num_classes, allow_nonfinite=True)
  acc_target_ref = float(accuracy(np.nan_to_num(tl_ref[0]), y[ref_idx]))
  chosen, vl_ref = None, None
  for vs in candidates:
    lg = _memo_logits(memo, (vs.cache_key, 'ref', dataset.fingerprint, views, settings.seed),
                      lambda: _ensemble_logits(verifier_model, vs.params, xq_ref))
    gap = abs(float(np.mean(accuracy(lg[0], y[ref_idx]))) - acc_target_ref)
    if chosen is None or gap < chosen[0]:
      chosen, vl_ref = (gap, vs), lg
  vs = chosen[1]
  members = vs.members
  if len(members) >= 2:
    mem_idx, mem_matched = decision_lib.class_matched_sample(
        y[split.forget], members, y[members], settings.member_sample, settings.seed)
  else:
    mem_idx, mem_matched = members, False

  # Query Du and members (all views), compute signals.
  sets = {'ref': (ref_idx, xq_ref, tl_ref, vl_ref)}
  for name, idx in (('forget', np.asarray(split.forget)), ('members', mem_idx)):
    if len(idx) == 0:
      continue
    xq = query_views(x[idx], idx, views, seed=settings.seed)
    sets[name] = (idx, xq, target.logits(xq, idx, views, dataset.num_classes,
                                         allow_nonfinite=True),
                  _memo_logits(memo, (vs.cache_key, name, views, settings.seed),
                               lambda: _ensemble_logits(verifier_model, vs.params, xq)))

  # A diverged model: non-finite outputs are a verdict (collapse), not an error.
  nonfinite = {k: int(nonfinite_records(tl).sum()) for k, (_, _, tl, _) in sets.items()}
  if any(nonfinite.values()):
    return _nonfinite_result(target, dataset, split, settings, vs, views, sets, nonfinite,
                             models_trained, verifier_train_s, t0, user_reference)
  sig = {k: compute_signals(tl, vl, y[idx]) for k, (idx, _, tl, vl) in sets.items()}

  # Accuracies of Mu and of the verifiers.
  acc = {'target': {}, 'verifiers': {}}
  for name, key in (('retain_members', 'members'), ('forget', 'forget'), ('ref', 'ref')):
    if key in sig:
      acc['target'][name] = float(np.mean(sig[key].correct_target))
      acc['verifiers'][name] = np.mean(sig[key].correct_verifiers, axis=1).tolist()
  xt = dataset.x_test[test_idx][None]
  try:
    tl_test = target.logits(xt, test_idx, ('identity',), dataset.num_classes, test=True,
                            allow_nonfinite=True)[0]
    bad_test = int(nonfinite_records(tl_test).sum())
    if bad_test:
      return _nonfinite_result(target, dataset, split, settings, vs, views, sets,
                               dict(nonfinite, test=bad_test), models_trained, verifier_train_s,
                               t0, user_reference)
    acc['target']['test'] = float(accuracy(tl_test, dataset.y_test[test_idx]))
  except AuditError as e:
    if not target.is_table:
      raise
    log(f'[audit] no test accuracy for {target.name}: {e}')
  vl_test = _memo_logits(memo, (vs.cache_key, 'test', settings.seed), lambda: predict_logits(
      verifier_model, vs.params, dataset.x_test[test_idx], ensemble=True))
  acc['verifiers']['test'] = accuracy(vl_test, dataset.y_test[test_idx]).tolist()

  # Whole-class forgetting: classes of Du with no record left in Dr.
  class_level, class_only, forgotten_classes = None, False, np.zeros(0, np.int64)
  if settings.class_test:
    forgotten_classes = np.setdiff1d(np.unique(y[split.forget]), np.unique(y[split.retain]))
  if len(forgotten_classes):
    class_only = bool(np.all(np.isin(y[split.forget], forgotten_classes)))
    held = np.asarray(split.ref)[np.isin(y[split.ref], forgotten_classes)]
    if len(held) > settings.ref_sample:
      held = np.sort(np.random.default_rng([settings.seed, 37]).choice(
          held, settings.ref_sample, replace=False))
    if len(held):
      xh = x[held][None]
      tl_h = target.logits(xh, held, ('identity',), dataset.num_classes, allow_nonfinite=True)[0]
      if nonfinite_records(tl_h).any():
        return _nonfinite_result(target, dataset, split, settings, vs, views, sets,
                                 dict(nonfinite, held_classes=int(nonfinite_records(tl_h).sum())),
                                 models_trained, verifier_train_s, t0, user_reference)
      vl_h = _memo_logits(memo, (vs.cache_key, 'held_classes', dataset.fingerprint,
                                 tuple(forgotten_classes.tolist())),
                          lambda: predict_logits(verifier_model, vs.params, x[held], ensemble=True))
      class_level = decision_lib.class_level_test(
          np.argmax(tl_h, -1) == y[held], np.argmax(vl_h, -1) == y[held][None],
          alpha=settings.test.alpha, margin=settings.test.class_margin,
          alt_accuracy=acc['target'].get('retain_members'))
      class_level['classes'] = forgotten_classes.tolist()
      class_level['held_out_records'] = int(len(held))

  phi_target = {k: s.phi_target for k, s in sig.items()}
  phi_verifiers = {k: s.phi_verifiers.mean(1) for k, s in sig.items()}
  cal, betas = decision_lib.regression_calibrate(phi_target, phi_verifiers)
  gap = decision_lib.neighbour_residual(phi_target, phi_verifiers)
  check_stats = self_check_statistics(
      settings.test.self_check, sig, {k: sets[k][3][0] for k in ('forget', 'ref')},
      {'forget': x[np.asarray(split.forget)], 'ref': x[ref_idx]})
  ref_check = decision_lib.reference_check(
      check_stats, alpha=settings.test.self_check_alpha, combine=settings.test.combine,
      strata=(y[np.asarray(split.forget)], y[ref_idx]), n_perm=settings.test.self_check_perms,
      seed=settings.seed)
  ref_check['groups'] = list(settings.test.self_check)
  ref_check['source'] = 'user' if user_reference else 'pool'
  res = decision_lib.ignorance_test(
      cal['forget'], cal['ref'], cal.get('members'),
      sig['forget'].phi_verifiers[0].mean(0), sig['ref'].phi_verifiers[0].mean(0),
      settings.test, acc_target_ref=acc['target']['ref'],
      acc_verifiers_ref=np.asarray(acc['verifiers']['ref']),
      class_level=class_level, class_only=class_only,
      gap_du=None if gap is None else gap['forget'], gap_ref=None if gap is None else gap['ref'],
      reference=ref_check)
  flagged = np.asarray(split.forget)[np.asarray(res['per_record']['flagged'], bool)].tolist()
  res['per_record']['indices'] = np.asarray(split.forget).tolist()

  def _summ(s):   # per-set means of the raw signals, for the report
    return dict(phi_target=float(s.phi_target[0].mean()),
                phi_verifiers=float(s.phi_verifiers[0].mean()),
                calibrated=float(s.calibrated[0].mean()),
                loss_target=float(s.loss_target[0].mean()),
                agreement=float(s.agreement[0].mean()), kl=float(s.kl[0].mean()))

  wall = time.time() - t0
  details = dict(
      target=target.name, tests=res['tests'], alpha=settings.test.alpha,
      combine=res['combine'], n_tests=res['n_tests'],
      forgetting_score_method=res['forgetting_score_method'],
      rejected=res['rejected'], exact_inputs_masked=res['exact_inputs_masked'],
      p_record=res['p_record'], class_level=res['class_level'],
      member_auc=res['member_auc'], power_target=res['power_target'],
      reference_check=res['reference_check'], utility_collapse=res['utility_collapse'],
      per_record=res['per_record'], accuracy=acc,
      signals={k: _summ(s) for k, s in sig.items()},
      scores={k: c.tolist() for k, c in cal.items()},
      calibration_betas=betas.tolist(),
      raw_phi={k: s.phi_target[0].tolist() for k, s in sig.items()},
      sizes=dict(forget=len(split.forget), ref=len(ref_idx), members=len(mem_idx),
                 test=len(test_idx)),
      class_matched=dict(ref=ref_matched, members=mem_matched),
      settings=dict(num_verifiers=settings.num_verifiers, subset_ratio=vs.ratio,
                    ratio_ladder=list(settings.ratios), views=list(views),
                    ref_sample=settings.ref_sample, member_sample=settings.member_sample,
                    seed=settings.seed, verifier_recipe=recipe.to_dict(),
                    test=dataclasses.asdict(settings.test)),
      request=dict(dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
                   split_hash=split_hash(split), reference='user' if user_reference else 'pool'),
      verifiers=dict(cache_key=vs.cache_key, from_cache=vs.from_cache,
                     subset_size=int(vs.subsets.shape[1])),
      cost=dict(models_trained=models_trained, verifier_train_s=verifier_train_s,
                wall_time_s=wall, queries=int(sum(len(i) for i, *_ in sets.values()) * len(views))))
  return AuditResult(decision=res['decision'], direction=res['direction'], p_value=res['p_value'],
                     effect_auc=res['effect_auc'], effect_auc_ci=res['effect_auc_ci'],
                     forgetting_score=res['forgetting_score'],
                     forgetting_score_ci=res['forgetting_score_ci'], power=res['power'],
                     flagged_records=flagged, details=details)
