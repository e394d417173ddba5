"""Population membership inference, as in the DeepUnlearn benchmark (Cadet et al. 2024).

The attack sees only the audited model's per-record losses: on Du (label 1)
and on an equal number of records the model never trained on (label 0; here
D_ref by default, the protocol's "validation/test" role, or the test split).
A 1-D logistic regression on the loss is cross-validated over 10 stratified
splits; the attack accuracy is the mean held-out accuracy, and DeepUnlearn's
*indiscernibility* is ``1 - |acc - 0.5| / 0.5``.

The protocol has no decision rule of its own; this module adds one: Du counts
as ``not_forgotten`` if the accuracy differs from 0.5 at level alpha, by

* ``test='binomial'`` (default, cheap): an exact two-sided binomial test of
  ``k = round(acc * 2m)`` correct held-out predictions out of ``2m`` (every
  record is held out exactly once; the rounding is exact when the folds have
  equal size). Approximate: the held-out predictions of one cross-validation
  are not independent trials.
* ``test='permutation'``: the labels (Du vs reference) are permuted among the
  pooled losses ``n_permutations`` times and the whole cross-validation is
  rerun; ``p = (1 + #{|acc_b - 0.5| >= |acc - 0.5|}) / (1 + B)``. Valid at
  level alpha whenever Du and the reference records are exchangeable under H0.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import special
from scipy import stats as sps

from jaxaudit.audit import stats
from jaxaudit.peers.base import PeerResult, check_int, check_level, check_request, \
    target_logits
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError

REFERENCES = ('ref', 'test')
TESTS = ('binomial', 'permutation')


def losses_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-record cross-entropy in float64. logits (n, C), labels (n,) -> (n,)."""
  logp = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  return -logp[np.arange(len(labels)), np.asarray(labels, np.int64)]


def _p_value(loss_du: np.ndarray, loss_ref: np.ndarray, acc: float, *, test: str,
             n_splits: int, seed: int, n_permutations: int) -> tuple[float, dict]:
  m = min(len(loss_du), len(loss_ref))
  n = 2 * m
  k = int(round(acc * n))
  info = dict(correct=k, trials=n, accuracy_ci=list(stats.clopper_pearson(k, n)))
  if test == 'binomial':
    return float(sps.binomtest(k, n, 0.5, alternative='two-sided').pvalue), info
  pooled = np.concatenate([loss_du, loss_ref])
  rng = np.random.default_rng([int(seed), 2718])
  dev = abs(acc - 0.5)
  hits = 0
  for _ in range(n_permutations):
    perm = rng.permutation(pooled.size)
    a = stats.logistic_cv_accuracy(pooled[perm[:len(loss_du)]], pooled[perm[len(loss_du):]],
                                   n_splits=n_splits, seed=seed)
    hits += abs(a - 0.5) >= dev - 1e-12
  info['n_permutations'] = n_permutations
  return (1.0 + hits) / (1.0 + n_permutations), info


def population_mia(target: Target, dataset: Dataset, split: AuditSplit, *, seed: int = 0,
                   n_splits: int = 10, reference: str = 'ref', test: str = 'binomial',
                   n_permutations: int = 200, alpha: float = 0.05) -> PeerResult:
  """DeepUnlearn's population MIA: logistic regression on losses, Du vs unseen data.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request; uses Du and D_ref (or the test split).
    seed: seed of the subsampling to equal sizes, of the folds and of the
      permutations.
    n_splits: stratified folds (10 in the protocol); both sets need at least
      this many records.
    reference: ``'ref'`` (D_ref, default) or ``'test'`` (the test split; a
      logits-table target must then hold ``test_logits``).
    test: ``'binomial'`` or ``'permutation'`` (see the module docstring).
    n_permutations: permutations of the permutation test (>= 1).
    alpha: level of the decision rule.
  Returns:
    PeerResult with score = attack accuracy in [0, 1] (0.5 = chance) and
    details ``indiscernibility``, ``p_value``, mean losses and sizes. Cost: 0
    models.
  """
  t0 = time.time()
  n_splits = check_int(n_splits, 'n_splits', minimum=2)
  check_request(target, dataset, split, min_forget=n_splits, min_ref=1)
  if reference not in REFERENCES:
    raise AuditError(f'reference must be one of {REFERENCES}, got {reference!r}')
  if test not in TESTS:
    raise AuditError(f'test must be one of {TESTS}, got {test!r}')
  n_permutations = check_int(n_permutations, 'n_permutations', minimum=1)
  alpha = check_level(alpha, 'alpha')
  use_test = reference == 'test'
  ref_idx = np.asarray(split.test if use_test else split.ref, np.int64)
  if len(ref_idx) < n_splits:
    raise AuditError(f'the reference set ({reference}) needs at least n_splits={n_splits} '
                     f'records, got {len(ref_idx)}')
  forget = np.asarray(split.forget, np.int64)
  lg_du = target_logits(target, dataset, forget, ('identity',), seed=seed)[0]
  lg_ref = target_logits(target, dataset, ref_idx, ('identity',), seed=seed, test=use_test)[0]
  y_ref = dataset.y_test[ref_idx] if use_test else dataset.y_train[ref_idx]
  loss_du = losses_from_logits(lg_du, dataset.y_train[forget])
  loss_ref = losses_from_logits(lg_ref, y_ref)
  acc = stats.logistic_cv_accuracy(loss_du, loss_ref, n_splits=n_splits, seed=seed)
  p, info = _p_value(loss_du, loss_ref, acc, test=test, n_splits=n_splits, seed=seed,
                     n_permutations=n_permutations)
  decision = 'not_forgotten' if p < alpha else 'forgotten'
  rule = (f'not_forgotten if the cross-validated attack accuracy differs from 0.5 '
          f'({test} test, two-sided, p < {alpha:g}); forgotten otherwise')
  details = dict(accuracy=acc, indiscernibility=stats.indiscernibility(acc), p_value=p,
                 test=test, alpha=alpha, n_splits=n_splits, reference=reference,
                 mean_loss=dict(forget=float(loss_du.mean()), reference=float(loss_ref.mean())),
                 sizes=dict(forget=len(forget), reference=len(ref_idx),
                            used_per_class=min(len(forget), len(ref_idx))),
                 target=target.name, **info)
  return PeerResult(name='population_mia', score=acc, decision=decision, rule=rule,
                    details=details,
                    cost=dict(models_trained=0, wall_time_s=time.time() - t0))
