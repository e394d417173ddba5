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

from jaxaudit.audit import bank as bank_lib
from jaxaudit.audit import decision as decision_lib
from jaxaudit.audit import reference as reference_lib
from jaxaudit.tasks import Signals, Task, for_dataset
from jaxaudit.audit.target import Target
from jaxaudit.audit.verifiers import VerifierSet, check_disjoint, get_verifiers
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.data.splits import split_hash, validate_split
from jaxaudit.errors import AuditError
from jaxaudit.train import Recipe, predict_logits


@dataclasses.dataclass(frozen=True)
class AuditSettings:
  """Settings of one audit.

  Attributes:
    num_verifiers: K verification models (≥ 2).
    subset_ratio: verifier subset size as a fraction of |Dr|, or a ladder of
      ratios (the rung whose verifiers' D_ref accuracy is closest to Mu's is used).
    views: ``auto`` (1-px shifts + noise for images, noise otherwise) or a tuple
      of view names from ``jaxaudit.tasks.classification.VIEWS``; ``('identity',)``
      queries the exact records only.
    flips: include horizontal flips in ``auto`` views (natural for CIFAR).
    ref_sample: maximum size of the class-matched D_ref sample.
    member_sample: records of Dr reserved as Mu's member reference.
    test_sample: test records used for accuracies.
    verifier_epochs: epochs of the verifiers (default: the original recipe's).
    seed: seed of verifier subsets/keys, samples and noise.
    utility_ratio: 0 (default): the utility test (:func:`jaxaudit.audit.decision.utility_test`)
      compares Mu with the verifiers; in (max ratio, 1): with ``utility_models``
      models trained on that fraction of Dr (an honest Mu, trained on all of Dr, is
      expected to be at least as useful), which sees a utility loss down to that
      level instead of the verifiers' (costs ``utility_models · utility_ratio`` of a
      retrain more).
    utility_models: how many models the utility reference averages (≥ 2).
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
  utility_ratio: float = 0.0
  utility_models: int = 2
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
    if self.utility_ratio and not max(ratios) < self.utility_ratio < 1:
      raise AuditError(f'utility_ratio must be 0 (off) or in ({max(ratios)}, 1) — above the '
                       f'verifiers\' subset ratio — got {self.utility_ratio}')
    if int(self.utility_models) < 2:
      raise AuditError(f'utility_models must be >= 2, got {self.utility_models}')

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


def _ensemble_logits(model, params, views_x: np.ndarray, cap: int = 0) -> np.ndarray:
  """(A, n, ...) inputs -> (A, K, n, *output_shape) outputs of a stacked ensemble ((A, K, n, C)
  logits of classifiers; n <= cap: one program)."""
  a, n = views_x.shape[:2]
  flat = views_x.reshape((a * n,) + views_x.shape[2:])
  lg = predict_logits(model, params, flat, ensemble=True, min_records=a * cap)   # (K, A*n, ...)
  return np.swapaxes(lg.reshape((lg.shape[0], a, n) + lg.shape[2:]), 0, 1)


def _verifier_logits(vs, verifier_model, views_x: np.ndarray, idx: np.ndarray, *,
                     pseudo: bool, views: tuple[str, ...], offset: int = 0,
                     cap: int = 0) -> np.ndarray:
  """(A, n, ...) inputs of records idx -> (A, K, n, C) outputs of the audit's verifiers.

  A VerifierSet runs all K models on every record; bank verifiers
  (:class:`jaxaudit.audit.bank.BankVerifiers`) run each record's own K members
  (``pseudo``: records outside D's groups; ``offset`` keeps test ids apart).
  """
  if isinstance(vs, bank_lib.BankVerifiers):
    return vs.logits(views_x, idx, pseudo=pseudo, views=views, offset=offset)
  return _ensemble_logits(verifier_model, vs.params, views_x, cap)


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


def self_check_statistics(groups: tuple[str, ...], sig: dict, verifier_outputs: dict[str, np.ndarray],
                          inputs: dict[str, np.ndarray], task: Task
                          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The statistics of the reference check (none involves the audited model).

  Args:
    groups: subset of ``decision.SELF_CHECK_GROUPS``.
    sig: set name -> Signals (must hold 'forget' and 'ref'; every set joins the
      leave-one-out pooled fits).
    verifier_outputs: 'forget'/'ref' -> (K, n, ...) verifier outputs on the exact records.
    inputs: 'forget'/'ref' -> (n, *input_shape) exact inputs.
    task: the task (its output and input summaries).
  Returns:
    name -> ((n_du,), (n_ref,)) per-record scores: ``verifiers_phi`` (mean φ),
    the task's output statistics (classification: ``verifiers_energy``, the
    mean log-sum-exp of the logits), ``verifiers_spread`` (std of φ across
    verifiers), ``loo{k}_{exact,neighbours,gap}``
    (:func:`jaxaudit.audit.decision.loo_statistics`) and the task's input
    statistics (``input_mean``, ``input_std``; for images ``input_roughness``).
  """
  out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  pair = lambda f: (f('forget'), f('ref'))
  if 'verifiers' in groups:
    out['verifiers_phi'] = pair(lambda k: sig[k].phi_verifiers[0].mean(0))
    per_set = {k: task.output_statistics(verifier_outputs[k]) for k in ('forget', 'ref')}
    for name in per_set['forget']:
      out[name] = (per_set['forget'][name], per_set['ref'][name])
    out['verifiers_spread'] = pair(lambda k: sig[k].phi_verifiers[0].std(0))
  if 'loo' in groups:
    out.update(decision_lib.loo_statistics({k: s.phi_verifiers for k, s in sig.items()}))
  if 'inputs' in groups:
    per_set = {k: task.input_statistics(inputs[k]) for k in ('forget', 'ref')}
    for name in per_set['forget']:
      out[name] = (per_set['forget'][name], per_set['ref'][name])
  return out


@dataclasses.dataclass
class Plan:
  """What one audit will query (step ``plan``).

  Attributes:
    dataset, split: the request (with a user reference appended, if any).
    recipe: the verifiers' training recipe.
    views: the A view names queried (``identity`` first).
    user_reference: whether D_ref is the user's own reference set.
    ref_idx: (n_ref,) pool indices of the (class-matched) D_ref sample.
    ref_matched: whether that sample matches Du's class proportions.
    test_idx: (n_test,) test indices used for accuracies.
    task: what the model predicts (:mod:`jaxaudit.tasks`).
  """
  dataset: Dataset
  split: AuditSplit
  recipe: Recipe
  views: tuple[str, ...]
  user_reference: bool
  ref_idx: np.ndarray
  ref_matched: bool
  test_idx: np.ndarray
  task: Task


@dataclasses.dataclass
class Verifiers:
  """The candidate verifier sets, one per rung of the ratio ladder (step ``verifiers``)."""
  candidates: list[VerifierSet]
  models_trained: int
  train_s: float
  utility: VerifierSet | None = None


@dataclasses.dataclass
class Queries:
  """Outputs of Mu and of the chosen verifiers (step ``query``).

  Attributes:
    vs: the chosen verifier set.
    sets: name ('ref', 'forget', 'members') -> (idx (n,), inputs (A, n, ...),
      Mu's logits (A, n, C), verifier logits (A, K, n, C)).
    mem_matched: whether the member sample matches Du's class proportions.
    nonfinite: name -> number of records whose Mu outputs are NaN/inf.
    utility_vs: the utility reference models (``AuditSettings.utility_ratio``), or None.
  """
  vs: VerifierSet
  sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
  mem_matched: bool
  nonfinite: dict[str, int]
  utility_vs: VerifierSet | None = None


class _Collapse(Exception):
  """Raised inside a step when Mu's outputs are non-finite: the verdict is collapse."""

  def __init__(self, nonfinite: dict[str, int]):
    super().__init__('non-finite outputs')
    self.nonfinite = nonfinite


def plan(target: Target, dataset: Dataset, split: AuditSplit, *, recipe: Recipe,
         settings: AuditSettings, reference=None, task: Task | None = None,
         log: Callable[[str], None] = lambda s: None) -> Plan:
  """Step 1: validates the request and fixes the task, the views and the D_ref / test samples."""
  task = for_dataset(dataset) if task is None else task
  if not isinstance(task, Task):
    raise AuditError(f'task must be a jaxaudit.tasks.Task, got {type(task).__name__}')
  user_reference = reference is not None
  if user_reference:
    dataset, split = reference_lib.with_reference(dataset, split, *_reference_pair(reference))
  _validate_request(dataset, split)
  if not isinstance(target, Target):
    raise AuditError(f'target must be a jaxaudit.audit.Target, got {type(target).__name__}')
  task = task.for_target(target)
  if settings.verifier_epochs:
    recipe = recipe.replace(epochs=int(settings.verifier_epochs))
  views = task.default_views(dataset.input_shape, settings.flips) if settings.views == 'auto' \
      else tuple(settings.views)
  if views[0] != 'identity':
    raise AuditError(f"the first view must be 'identity', got {views}")
  avail = target.available_views()
  if avail is not None and set(views) - set(avail):
    log(f'[audit] {target.name} answers views {avail} only; neighbour queries reduced')
    views = tuple(v for v in views if v in avail)
  strata = task.strata(dataset.y_train)
  ref_idx, ref_matched = _matched(strata, split.forget, split.ref, settings.ref_sample,
                                  settings.seed)
  rng = np.random.default_rng([settings.seed, 31])
  test_idx = np.sort(rng.choice(split.test, min(settings.test_sample, len(split.test)),
                                replace=False))
  return Plan(dataset, split, recipe, views, user_reference, ref_idx, ref_matched, test_idx, task)


def _matched(strata: np.ndarray | None, forget, pool, size: int, seed: int):
  """A sample of ``pool`` matching Du's strata (uniform without strata)."""
  pool = np.asarray(pool)
  if strata is None:
    return decision_lib.matched_sample(None, pool, None, size, seed)
  return decision_lib.matched_sample(strata[np.asarray(forget)], pool, strata[pool], size, seed)


def train_verifiers(p: Plan, verifier_model, settings: AuditSettings, *,
                    cache_dir: str | None = None, verifiers: VerifierSet | None = None,
                    memo: dict | None = None, bank: bank_lib.VerifierBank | None = None,
                    bank_cache: dict | None = None, member_reference: np.ndarray | None = None,
                    log: Callable[[str], None] = lambda s: None) -> Verifiers:
  """Step 2: trains or loads one verifier set per ratio (or checks a given one), or
  draws each record's verifiers from a bank (nothing trained).

  ``member_reference`` (pool indices in Dr) fixes Mu's member reference for fresh
  verifiers; with a bank that cannot serve the request, the bank's member
  records are used, so that a request keeps its member reference whichever
  verifiers audit it."""
  models_trained = 0
  candidates: list = []
  if bank is not None and p.task.needs_unseen_verifiers(p.dataset, p.split, settings):
    log('[audit] this request needs verifiers that never saw any of Du (whole classes): '
        'training fresh ones instead of using the bank')
    if member_reference is None:
      member_reference = bank.member_reference(p.split.forget)
    bank = None
  if bank is not None:
    if member_reference is not None:
      raise AuditError('member_reference applies to fresh verifiers; a bank audit uses the '
                       "bank's member groups")
    bank.check_training_set(p.split.train)
    members = bank.member_reference(p.split.forget)
    candidates.append(bank_lib.BankVerifiers(bank, verifier_model, settings.num_verifiers,
                                             settings.seed, members, bank_cache))
  elif verifiers is not None:
    check_disjoint(p.split, verifiers.subsets, verifiers.members)
    candidates.append(verifiers)
  else:
    for ratio in settings.ratios:
      if memo is not None and ('verifiers', ratio) in memo:
        candidates.append(memo[('verifiers', ratio)])
        continue
      vs = get_verifiers(verifier_model, p.dataset, p.split, p.recipe,
                         num_verifiers=settings.num_verifiers, ratio=ratio,
                         member_sample=settings.member_sample, seed=settings.seed,
                         cache_dir=cache_dir, loss=p.task.loss(),
                         init=p.task.initial_params(), members=member_reference, log=log)
      models_trained += 0 if vs.from_cache else vs.num_models
      candidates.append(vs)
      if memo is not None:
        memo[('verifiers', ratio)] = vs._replace(from_cache=True, wall_time_s=0.0)
  train_s = sum(v.wall_time_s for v in candidates)
  utility = None
  if settings.utility_ratio:
    utility = _utility_models(p, verifier_model, settings, candidates[0].members, cache_dir,
                              memo, log)
    models_trained += 0 if utility.from_cache else utility.num_models
    train_s += utility.wall_time_s
  return Verifiers(candidates, models_trained, train_s, utility)


def _utility_models(p: Plan, verifier_model, settings: AuditSettings, members: np.ndarray,
                    cache_dir: str | None, memo: dict | None,
                    log: Callable[[str], None]) -> VerifierSet:
  """The utility reference: ``settings.utility_models`` models trained like the verifiers
  on ``settings.utility_ratio`` of Dr (never on Du, D_ref or Mu's member reference)."""
  if memo is not None and ('utility', settings.utility_ratio) in memo:
    return memo[('utility', settings.utility_ratio)]
  vs = get_verifiers(verifier_model, p.dataset, p.split, p.recipe,
                     num_verifiers=settings.utility_models, ratio=settings.utility_ratio,
                     seed=settings.seed + 104_729, cache_dir=cache_dir, loss=p.task.loss(),
                     init=p.task.initial_params(), members=np.asarray(members), log=log)
  if memo is not None:
    memo[('utility', settings.utility_ratio)] = vs._replace(from_cache=True, wall_time_s=0.0)
  return vs


def query(p: Plan, v: Verifiers, target: Target, verifier_model, settings: AuditSettings, *,
          memo: dict | None = None) -> Queries:
  """Step 3: queries Mu and the verifiers on every view of D_ref, Du and the members.

  Mu's exact-view utility on D_ref chooses the ladder rung (the verifier set
  whose mean D_ref utility is closest); verifier outputs are memoised per request.
  """
  x, y, task = p.dataset.x_train, p.dataset.y_train, p.task
  verifier_model = task.query_model(verifier_model)
  cap = {'ref': min(settings.ref_sample, len(p.split.ref)), 'forget': 0}   # sample size caps
  xq_ref = task.query_views(x[p.ref_idx], p.ref_idx, p.views, seed=settings.seed,
                            min_records=cap['ref'])
  tl_ref = target.logits(xq_ref, p.ref_idx, p.views, task, allow_nonfinite=True,
                         min_records=cap['ref'])
  acc_target_ref = float(task.utility(np.nan_to_num(tl_ref[0]), y[p.ref_idx]))
  chosen, vl_ref = None, None
  for vs in v.candidates:
    lg = _memo_logits(memo, (vs.cache_key, 'ref', p.dataset.fingerprint, p.views, settings.seed),
                      lambda: _verifier_logits(vs, verifier_model, xq_ref, p.ref_idx,
                                               pseudo=True, views=p.views, cap=cap['ref']))
    gap = abs(float(np.mean(task.utility(lg[0], y[p.ref_idx]))) - acc_target_ref)
    if chosen is None or gap < chosen[0]:
      chosen, vl_ref = (gap, vs), lg
  vs = chosen[1]
  members = vs.members
  if len(members) >= 2:
    mem_idx, mem_matched = _matched(task.strata(y), p.split.forget, members,
                                    settings.member_sample, settings.seed)
  else:
    mem_idx, mem_matched = members, False
  cap['members'] = min(settings.member_sample, len(members))
  sets = {'ref': (p.ref_idx, xq_ref, tl_ref, vl_ref)}
  for name, idx in (('forget', np.asarray(p.split.forget)), ('members', mem_idx)):
    if len(idx) == 0:
      continue
    xq = task.query_views(x[idx], idx, p.views, seed=settings.seed, min_records=cap[name])
    sets[name] = (idx, xq, target.logits(xq, idx, p.views, task, allow_nonfinite=True,
                                         min_records=cap[name]),
                  _memo_logits(memo, (vs.cache_key, name, p.views, settings.seed),
                               lambda: _verifier_logits(vs, verifier_model, xq, idx,
                                                        pseudo=name != 'forget', views=p.views,
                                                        cap=cap[name])))
  nonfinite = {k: int(task.nonfinite(tl).sum()) for k, (_, _, tl, _) in sets.items()}
  return Queries(vs, sets, mem_matched, nonfinite, v.utility)


def signals(p: Plan, q: Queries) -> dict[str, Signals]:
  """Step 4: per-record signals of every queried set (needs finite outputs)."""
  if any(q.nonfinite.values()):
    raise _Collapse(q.nonfinite)
  y = p.dataset.y_train
  return {k: p.task.signals(tl, vl, y[idx]) for k, (idx, _, tl, vl) in q.sets.items()}


def accuracies(p: Plan, q: Queries, sig: dict[str, Signals], target: Target, verifier_model,
               settings: AuditSettings, *, memo: dict | None = None,
               log: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, Any]]:
  """Step 5: utility (top-1 accuracy for classifiers) of Mu and of each verifier on
  members, Du, D_ref and test.

  Returns:
    {'target': {set: utility}, 'verifiers': {set: [K utilities]}} and, where the task
    gives per-record utilities and Mu answered the test records, ``'test_records'``:
    ((n_test,) Mu's, (K, n_test) the verifiers', (n_test,) units or None) for the
    utility test (:func:`test`; not part of the report).
  """
  acc = {'target': {}, 'verifiers': {}}
  u_target_test = None
  verifier_model = p.task.query_model(verifier_model)
  for name, key in (('retain_members', 'members'), ('forget', 'forget'), ('ref', 'ref')):
    if key in sig:
      acc['target'][name] = float(np.mean(sig[key].correct_target))
      acc['verifiers'][name] = np.mean(sig[key].correct_verifiers, axis=1).tolist()
  ds, test_idx = p.dataset, p.test_idx
  try:
    tl_test = target.logits(ds.x_test[test_idx][None], test_idx, ('identity',), p.task,
                            test=True, allow_nonfinite=True)[0]
    bad_test = int(p.task.nonfinite(tl_test).sum())
    if bad_test:
      raise _Collapse(dict(q.nonfinite, test=bad_test))
    acc['target']['test'] = float(p.task.utility(tl_test, ds.y_test[test_idx]))
    u_target_test = p.task.record_utility(tl_test, ds.y_test[test_idx])
  except AuditError as e:
    if not target.is_table:
      raise
    log(f'[audit] no test accuracy for {target.name}: {e}')
  vl_test = _memo_logits(memo, (q.vs.cache_key, 'test', settings.seed), lambda: _verifier_logits(
      q.vs, verifier_model, ds.x_test[test_idx][None], test_idx, pseudo=True,
      views=('identity',), offset=len(ds.x_train))[0])
  acc['verifiers']['test'] = p.task.utility(vl_test, ds.y_test[test_idx]).tolist()
  u_verifiers_test = p.task.record_utility(vl_test, ds.y_test[test_idx])
  if u_target_test is not None and u_verifiers_test is not None:
    acc['test_records'] = (np.asarray(u_target_test, np.float64),
                           np.asarray(u_verifiers_test, np.float64),
                           p.task.test_units(test_idx))
  if q.utility_vs is not None and u_verifiers_test is not None:
    _utility_reference(p, q, acc, verifier_model, settings, memo)
  return acc


def _utility_reference(p: Plan, q: Queries, acc: dict, verifier_model, settings: AuditSettings,
                       memo: dict | None) -> None:
  """Adds the utility reference models' utilities: ``acc['utility_models']`` (reported:
  ratio, mean utility per model on D_ref and test) and ``acc['utility_reference']``
  ((U, n_ref), (U, n_test) per-record utilities on the exact D_ref sample and the test
  sample, for the utility test)."""
  uvs, task, ds = q.utility_vs, p.task, p.dataset
  ref_idx, xq_ref = q.sets['ref'][:2]
  cap = min(settings.ref_sample, len(p.split.ref))
  ul_ref = _memo_logits(memo, (uvs.cache_key, 'ref', p.dataset.fingerprint, settings.seed),
                        lambda: _ensemble_logits(verifier_model, uvs.params, xq_ref[:1], cap)[0])
  ul_test = _memo_logits(memo, (uvs.cache_key, 'test', settings.seed), lambda: _ensemble_logits(
      verifier_model, uvs.params, ds.x_test[p.test_idx][None])[0])
  y_ref, y_test = ds.y_train[ref_idx], ds.y_test[p.test_idx]
  acc['utility_models'] = dict(ratio=float(uvs.ratio), subset_size=int(uvs.subsets.shape[1]),
                               ref=task.utility(ul_ref, y_ref).tolist(),
                               test=task.utility(ul_test, y_test).tolist())
  acc['utility_reference'] = (np.asarray(task.record_utility(ul_ref, y_ref), np.float64),
                              np.asarray(task.record_utility(ul_test, y_test), np.float64))


def extra_test(p: Plan, q: Queries, acc: dict, target: Target, verifier_model,
               settings: AuditSettings, *, memo: dict | None = None
               ) -> tuple[dict[str, Any] | None, bool]:
  """Step 6: the task's own test, if it has one (classification: whole-class forgetting).

  Returns:
    (its result, or None; whether it covers every record of Du).
  """
  x = p.dataset.x_train
  verifier_model = p.task.query_model(verifier_model)

  def query_exact(idx: np.ndarray, name: str, inputs: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    xs = x[idx] if inputs is None else np.asarray(inputs)
    if inputs is None:
      tl = target.logits(xs[None], idx, ('identity',), p.task, allow_nonfinite=True)[0]
    else:   # inputs the task made (not pool records): a table target cannot answer them
      if target.is_table:
        raise AuditError(f"{target.name} is a table of outputs and cannot answer the task's "
                         f'{name!r} queries; audit with class_test=False to skip that test')
      tl = target.logits(xs[None], idx, ('identity',), p.task, allow_nonfinite=True,
                         test=False)[0]
    bad = p.task.nonfinite(tl)
    if bad.any():
      raise _Collapse(dict(q.nonfinite, extra_test=int(bad.sum())))
    vl = _memo_logits(memo, (q.vs.cache_key, name, p.dataset.fingerprint), lambda: _verifier_logits(
        q.vs, verifier_model, xs[None], idx, pseudo=True, views=('identity',))[0])
    return tl, vl

  query_exact.answers_inputs = not target.is_table
  extra, covers_all = p.task.extra_test(p.dataset, p.split, settings, query_exact,
                                       acc['target'].get('retain_members'))
  if extra is None:
    return None, covers_all
  meta = {k: v for k, v in extra.items() if k not in ('correct_target', 'correct_verifiers')}
  result = decision_lib.utility_level_test(
      extra['correct_target'], extra['correct_verifiers'], alpha=settings.test.alpha,
      margin=settings.test.class_margin, alt_accuracy=acc['target'].get('retain_members'))
  return dict(result, **meta), covers_all


def test(p: Plan, q: Queries, sig: dict[str, Signals], acc: dict, cls: tuple,
         settings: AuditSettings) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
  """Step 7: calibration, the reference check and the ignorance test.

  Returns:
    (the :func:`jaxaudit.audit.decision.ignorance_test` result, set name ->
    (A, n) calibrated scores, the calibration slopes (A,)).
  """
  x, y, split, task = p.dataset.x_train, p.dataset.y_train, p.split, p.task
  phi_target = {k: s.phi_target for k, s in sig.items()}
  phi_verifiers = {k: s.phi_verifiers.mean(1) for k, s in sig.items()}
  cal, betas = decision_lib.regression_calibrate(phi_target, phi_verifiers)
  gap = decision_lib.neighbour_residual(phi_target, phi_verifiers)
  check_stats = self_check_statistics(
      settings.test.self_check, sig, {k: q.sets[k][3][0] for k in ('forget', 'ref')},
      {'forget': x[np.asarray(split.forget)], 'ref': x[p.ref_idx]}, task)
  units = {k: task.units(q.sets[k][0]) for k in q.sets}
  utility_ref = acc.get('utility_reference')
  if units['forget'] is not None:   # whole groups were drawn: groups are the test's units
    means = {k: unit_means(u) for k, u in units.items()}
    if utility_ref is not None:
      utility_ref = (means['ref'](utility_ref[0]), utility_ref[1])
    sig = {k: Signals(*(None if f is None else means[k](f) for f in s)) for k, s in sig.items()}
    cal = {k: means[k](c) for k, c in cal.items()}
    gap = None if gap is None else {k: means[k](g) for k, g in gap.items()}
    check_stats = {n: (means['forget'](a), means['ref'](b)) for n, (a, b) in check_stats.items()}
  strata = task.strata(y)
  ref_check = decision_lib.reference_check(
      check_stats, alpha=settings.test.self_check_alpha, combine=settings.test.combine,
      strata=None if strata is None else (strata[np.asarray(split.forget)], strata[p.ref_idx]),
      n_perm=settings.test.self_check_perms,
      seed=settings.seed)
  ref_check['groups'] = list(settings.test.self_check)
  ref_check['source'] = 'user' if p.user_reference else 'pool'
  extra, extra_only = cls
  res = decision_lib.ignorance_test(
      cal['forget'], cal['ref'], cal.get('members'),
      sig['forget'].phi_verifiers[0].mean(0), sig['ref'].phi_verifiers[0].mean(0),
      settings.test, utility_ref=_unseen_utility(sig['ref'], acc.get('test_records'),
                                                 utility_ref),
      extra_test=extra, extra_only=extra_only,
      gap_du=None if gap is None else gap['forget'], gap_ref=None if gap is None else gap['ref'],
      reference=ref_check, signals_du=sig['forget'], signals_ref=sig['ref'],
      size_caps=(0, min(settings.ref_sample, len(split.ref)), settings.member_sample))
  if res.get('utility_test') is not None:
    res['utility_test']['reference'] = ('verifiers' if utility_ref is None else
                                        f'{q.utility_vs.num_models} models on '
                                        f'{q.utility_vs.ratio:g} of Dr')
  if units['forget'] is not None:
    res['units'] = dict(kind='group', forget=np.unique(units['forget']).tolist(),
                        ref=int(len(np.unique(units['ref']))),
                        members=int(len(np.unique(units['members']))) if 'members' in units
                        else 0, record_groups=units['forget'].tolist())
  return res, cal, betas


def _unseen_utility(ref: Signals, test_records: tuple | None,
                    utility_ref: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Per-unit utility of Mu (n,) and of its reference (K, n) on the records neither saw:
  the D_ref sample (already per unit) followed by the test sample (averaged per unit
  where the task gives test units). The reference is the verifiers, or the utility
  reference models where ``utility_ref`` ((U, n_ref) per unit, (U, n_test) per record)
  is given."""
  u_t, u_v = np.asarray(ref.correct_target, np.float64), np.asarray(ref.correct_verifiers,
                                                                    np.float64)
  if utility_ref is not None:
    u_v = utility_ref[0]
  if test_records is None:
    return u_t, u_v
  t_t, t_v, t_units = test_records
  if utility_ref is not None:
    t_v = utility_ref[1]
  if t_units is not None:
    means = unit_means(t_units)
    t_t, t_v = means(t_t), means(t_v)
  return np.concatenate([u_t, t_t]), np.concatenate([u_v, t_v], axis=1)


def unit_means(units: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
  """``f(a (..., n)) -> (..., g)``: the mean of a per-record array over each of the g
  units (sorted unique ids of ``units`` (n,))."""
  uniq, inv = np.unique(np.asarray(units), return_inverse=True)
  m = np.zeros((len(inv), len(uniq)))
  m[np.arange(len(inv)), inv] = 1.0
  m /= m.sum(0, keepdims=True)
  return lambda a: np.asarray(a, np.float64) @ m


def _signal_means(s: Signals) -> dict[str, float]:
  """Per-set means of the raw signals on the exact view, for the report."""
  mean = lambda a: None if a is None else float(np.mean(a[0]))
  return dict(phi_target=mean(s.phi_target), phi_verifiers=mean(s.phi_verifiers),
              calibrated=mean(s.calibrated), loss_target=mean(s.loss_target),
              agreement=mean(s.agreement), kl=mean(s.kl))


def _common_details(p: Plan, v: Verifiers, q: Queries, target: Target,
                    settings: AuditSettings, t0: float) -> dict[str, Any]:
  """The fields of ``details`` every result has (verdict or collapse)."""
  vs = q.vs
  return dict(
      target=target.name, alpha=settings.test.alpha,
      settings=dict(num_verifiers=settings.num_verifiers, subset_ratio=vs.ratio,
                    ratio_ladder=list(settings.ratios), views=list(p.views),
                    ref_sample=settings.ref_sample, member_sample=settings.member_sample,
                    seed=settings.seed, verifier_recipe=p.recipe.to_dict(),
                    utility_ratio=settings.utility_ratio,
                    utility_models=settings.utility_models,
                    test=dataclasses.asdict(settings.test)),
      request=dict(dataset=p.dataset.name, dataset_fingerprint=p.dataset.fingerprint,
                   split_hash=split_hash(p.split),
                   reference='user' if p.user_reference else 'pool'),
      verifiers=_verifier_details(vs),
      cost=dict(models_trained=v.models_trained, verifier_train_s=v.train_s,
                wall_time_s=time.time() - t0,
                queries=int(sum(len(i) for i, *_ in q.sets.values()) * len(p.views))))


def _verifier_details(vs) -> dict[str, Any]:
  """What the report says about the verifiers (a VerifierSet or bank verifiers)."""
  if isinstance(vs, bank_lib.BankVerifiers):
    return dict(cache_key=vs.cache_key, from_cache=True, source='bank', bank_key=vs.bank.key,
                bank_size=vs.bank.size, per_record=vs.k,
                subset_size=int(round(vs.bank.ratio * int(np.sum(vs.bank.record_group >= 0)))))
  return dict(cache_key=vs.cache_key, from_cache=vs.from_cache, source='trained',
              subset_size=int(vs.subsets.shape[1]))


def evidence(p: Plan, v: Verifiers, q: Queries, sig: dict[str, Signals], acc: dict,
             res: dict[str, Any], cal: dict[str, np.ndarray], betas: np.ndarray,
             target: Target, settings: AuditSettings, t0: float) -> AuditResult:
  """Step 8: the AuditResult: decision, per-record evidence, accuracies, cost."""
  forget = np.asarray(p.split.forget)
  if 'units' in res:    # per-group evidence: a flagged group flags each of its records
    groups = np.asarray(res['units']['forget'])
    hit = groups[np.asarray(res['per_record']['flagged'], bool)]
    flagged = forget[np.isin(res['units']['record_groups'], hit)].tolist()
    res['per_record']['indices'] = groups.tolist()
    res['per_record']['unit'] = 'group'
  else:
    flagged = forget[np.asarray(res['per_record']['flagged'], bool)].tolist()
    res['per_record']['indices'] = forget.tolist()
  keys = ('tests', 'combine', 'n_tests', 'test_level', 'record_statistics',
          'forgetting_score_method', 'rejected',
          'exact_inputs_masked', 'p_record', 'class_level', 'member_auc', 'power_ci',
          'power_target',
          'reference_check', 'utility_collapse', 'utility_test', 'per_record')
  units = res.get('units')
  n_mem = len(q.sets['members'][0]) if 'members' in q.sets else 0
  details = dict(
      **{k: res[k] for k in keys},
      accuracy={k: a for k, a in acc.items() if k not in ('test_records', 'utility_reference')},
      signals={k: _signal_means(s) for k, s in sig.items()},
      scores={k: c.tolist() for k, c in cal.items()}, calibration_betas=betas.tolist(),
      raw_phi={k: s.phi_target[0].tolist() for k, s in sig.items()},
      sizes=dict(forget=len(forget), ref=len(p.ref_idx), members=n_mem, test=len(p.test_idx),
                 **({} if units is None else dict(forget_groups=len(units['forget']),
                                                  ref_groups=units['ref'],
                                                  member_groups=units['members']))),
      class_matched=dict(ref=p.ref_matched, members=q.mem_matched),
      **_common_details(p, v, q, target, settings, t0))
  return AuditResult(decision=res['decision'], direction=res['direction'], p_value=res['p_value'],
                     effect_auc=res['effect_auc'], effect_auc_ci=res['effect_auc_ci'],
                     forgetting_score=res['forgetting_score'],
                     forgetting_score_ci=res['forgetting_score_ci'], power=res['power'],
                     flagged_records=flagged, details=details)


def collapse(p: Plan, v: Verifiers, q: Queries, nonfinite: dict[str, int], target: Target,
             settings: AuditSettings, t0: float) -> AuditResult:
  """The verdict on a model with NaN/inf outputs: not_forgotten (collapse), no test run."""
  names = {'forget': 'Du', 'ref': 'D_ref', 'members': 'members', 'test': 'test',
           'extra_test': "records of the task's extra test"}
  sizes = {k: len(s[0]) for k, s in q.sets.items()}
  parts = [f'{names.get(k, k)}: {n} of {sizes.get(k, "?")} records' if k in sizes
           else f'{names.get(k, k)}: {n} records' for k, n in nonfinite.items() if n]
  reason = ('the audited model returns NaN or inf logits (' + '; '.join(parts) + '): a diverged '
            'model has no usable outputs, so it has not forgotten Du in any useful sense '
            '(utility collapse); no test was run')
  nan = float('nan')
  details = dict(
      reason=reason,
      nonfinite_outputs={k: dict(records=int(n), of=sizes.get(k)) for k, n in nonfinite.items()},
      tests={}, combine=settings.test.combine, n_tests=0, rejected=False,
      exact_inputs_masked=False, p_record=nan, class_level=None, member_auc=nan,
      power_ci=[nan, nan],
      power_target=settings.test.power_target, reference_check=None, utility_collapse=True,
      utility_test=None,
      per_record=dict(score=[], p_value=[], flagged=[], fdr=settings.test.fdr, indices=[]),
      accuracy={}, sizes=dict(forget=len(p.split.forget),
                              **{k: n for k, n in sizes.items() if k != 'forget'}),
      forgetting_score_method=decision_lib.FORGETTING_SCORE_METHOD,
      **_common_details(p, v, q, target, settings, t0))
  return AuditResult(decision='not_forgotten', direction='collapse', p_value=nan,
                     effect_auc=nan, effect_auc_ci=[nan, nan], forgetting_score=nan,
                     forgetting_score_ci=[nan, nan], power=nan, flagged_records=[],
                     details=details)


def audit(target: Target, dataset: Dataset, split: AuditSplit, *, verifier_model,
          recipe: Recipe, settings: AuditSettings = AuditSettings(),
          cache_dir: str | None = None, verifiers: VerifierSet | None = None,
          log: Callable[[str], None] = lambda s: None, memo: dict | None = None,
          reference: tuple[Any, Any] | None = None, task: Task | None = None,
          bank: bank_lib.VerifierBank | None = None, bank_cache: dict | None = None,
          member_reference: np.ndarray | None = None) -> AuditResult:
  """Decides whether ``target`` is ignorant of Du.

  The named steps, in order: :func:`plan` → :func:`train_verifiers` →
  :func:`query` → :func:`signals` → :func:`accuracies` → :func:`extra_test` →
  :func:`test` → :func:`evidence` (or :func:`collapse` for non-finite outputs).

  Threat model. The owner who hands over Mu (or answers its queries) knows
  the protocol and its defaults (K, the 15% subsets, the views, the family of
  record statistics), trains verifiers of its own (other seeds, other subsets
  of Dr), may fine-tune or distil M anywhere except on Du, may rewrite Mu's
  outputs on Du's exact records and on their augmented neighbours so that any
  one per-record statistic it can compute matches a target (its verifiers'
  level, or M's level on unseen records of the same difficulty: φ, the whole
  output distribution, correctness), and wants to keep M's accuracy. It does
  not know the auditor's seed: which records the verifiers train on, which
  records of the pool form the D_ref sample, which noise the views draw.

  What the audit guarantees: (1) an honest Mu — any model whose training did
  not depend on which records of Du ∪ D_ref were labelled "forget" — is
  refused with probability ≤ α, whatever the owner's procedure, because every
  statistic of the family is exchangeable between Du and D_ref under H0 and
  the family is adjusted by max-T (:mod:`jaxaudit.audit.evidence`); (2) a
  rewrite confined to Du is caught when it leaves Du unlike D_ref on *any* of
  the family's statistics (Mu's confidence beyond the verifiers', on the exact
  record and its neighbours, its correctness beyond theirs, the divergence of
  its whole output distribution from theirs), with power growing with |Du|.
  What it cannot guarantee: a model that is indistinguishable from a model that
  never saw Du on every signal the auditor can query *is*, for a black-box
  audit, ignorant of Du — an owner who can produce such outputs on Du (e.g.
  by answering Du from a retrain) passes, and should; weights that still
  encode Du without showing it in any queried output (recoverable by
  relearning, or by inputs the auditor never queries) are outside a
  black-box audit. Measured robustness, and the fakes tried, are in
  BUILD_NOTES.md ("Fake robustness").

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
    task: what the model predicts (:mod:`jaxaudit.tasks`); default: classification
      with the data set's class count.
    bank: a verifier bank over the split's D (:func:`jaxaudit.audit.bank.build_bank`):
      each record's K verifiers are bank members OUT for its group, and nothing
      is trained (a request that removes whole classes still trains fresh
      verifiers).
    bank_cache: optional dict owned by the caller, in which the bank's outputs
      on records outside D (D_ref, test, members) are kept for later requests
      on the same bank (whatever the audited model).
    member_reference: optional (m,) pool indices of Dr that are Mu's member
      reference (records Mu trained on and no verifier sees); fresh verifiers
      are trained around them. None: ``settings.member_sample`` records of Dr
      drawn with the seed (with a bank: the bank's member groups).
  Returns:
    AuditResult.
  """
  t0 = time.time()
  p = plan(target, dataset, split, recipe=recipe, settings=settings, reference=reference,
           task=task, log=log)
  v = train_verifiers(p, verifier_model, settings, cache_dir=cache_dir, verifiers=verifiers,
                      memo=memo, bank=bank, bank_cache=bank_cache,
                      member_reference=member_reference, log=log)
  q = query(p, v, target, verifier_model, settings, memo=memo)
  try:
    sig = signals(p, q)
    acc = accuracies(p, q, sig, target, verifier_model, settings, memo=memo, log=log)
    cls = extra_test(p, q, acc, target, verifier_model, settings, memo=memo)
  except _Collapse as c:   # a diverged model: non-finite outputs are a verdict, not an error
    return collapse(p, v, q, c.nonfinite, target, settings, t0)
  res, cal, betas = test(p, q, sig, acc, cls, settings)
  return evidence(p, v, q, sig, acc, res, cal, betas, target, settings, t0)
