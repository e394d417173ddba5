"""Population membership inference, as in the DeepUnlearn benchmark (Cadet et al. 2024).

Reference: DeepUnlearn (xcadet/deepunlearn),
``munl/evaluation/membership_inference_attack.py``. The attack sees only the
audited model's per-record losses: on Du and on an equal number of records the
model never trained on (here D_ref by default, the protocol's
"validation/test" role, or the test split). Defaults, as in the reference:

* both sets are shuffled and cut to the size m of the smaller one (the
  reference shuffles with NumPy's unseeded global generator; here
  ``np.random.default_rng(seed)`` permutes Du, then the reference set);
* the 2m raw losses ``X = [Du; reference]`` with labels ``[0] * m + [1] * m``
  (the reference's assignment; accuracy does not depend on it) are split by
  ``StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=123)``;
* on each split ``LogisticRegression()`` (L2, C = 1, scikit-learn's defaults)
  is fitted on the raw training losses and scored on the held-out ones;
* the attack accuracy is the mean held-out accuracy over the splits, and
  DeepUnlearn's *indiscernibility* is ``1 - |acc - 0.5| / 0.5``.

Deviations, available as options (``LEGACY_OPTIONS`` reproduces jaxaudit's
attack before it followed the reference): ``cv='kfold'`` (stratified K-fold:
every record held out once; subsampling by a sorted ``rng.choice``),
``standardise=True`` (losses standardised with the training folds' mean and
std), ``C=None`` (an essentially unregularised fit: Newton's method with a
1e-6 L2 penalty on the slope).

The protocol has no decision rule of its own; this module adds one: Du counts
as ``not_forgotten`` if the accuracy differs from 0.5 at level alpha, by

* ``test='binomial'`` (default, cheap): an exact two-sided binomial test of
  the ``k`` correct held-out predictions out of all ``N`` held-out
  predictions of the cross-validation (``N = 2m`` for k-fold, ``n_splits *
  ceil(0.2 m)`` for the shuffle splits). Approximate: held-out predictions of
  one cross-validation are not independent trials (and shuffle splits reuse
  records).
* ``test='permutation'``: the labels (Du vs reference) are permuted among the
  pooled losses ``n_permutations`` times and the whole cross-validation is
  rerun; ``p = (1 + #{|acc_b - 0.5| >= |acc - 0.5|}) / (1 + B)``. Valid at
  level alpha whenever Du and the reference records are exchangeable under H0.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
from scipy import special
from scipy import stats as sps

from jaxaudit.audit import stats
from jaxaudit.peers.base import PeerResult, as_float_array, check_choice, check_int, \
    check_level, check_request, check_unit, target_logits
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.tasks.classification import true_label_log_probs

REFERENCES = ('ref', 'test')
TESTS = ('binomial', 'permutation')
CVS = ('shuffle', 'kfold')
# StratifiedShuffleSplit settings of the reference.
TEST_SIZE = 0.1
RANDOM_STATE = 123
# The options that reproduce jaxaudit's attack before it followed the reference.
LEGACY_OPTIONS = dict(cv='kfold', standardise=True, C=None)
# Slope penalty of the unregularised (C=None) fit.
_TINY_L2 = 1e-6


def losses_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-record cross-entropy in float64. logits (n, C), labels (n,) -> (n,)."""
  return -true_label_log_probs(logits, labels)


def indiscernibility(acc: float) -> float:
  """DeepUnlearn's indiscernibility ``1 - |acc - 0.5| / 0.5`` of an accuracy in [0, 1].

  Returns 1 for a chance-level attack, 0 for a perfect (or perfectly inverted) one.
  """
  a = check_unit(acc, 'acc')
  return 1.0 - abs(a - 0.5) / 0.5


def _fit_logistic_1d(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, float]:
  """Newton's method for ``min Σ log(1 + exp(-s_i (w x_i + b))) + l2/2 w²``, s_i = 2 y_i − 1.

  x: (n,) features (roughly standardised), y: (n,) in {0, 1}. The bias is not
  penalised; a backtracking line search keeps it convergent on separable
  data, where ``l2`` keeps the optimum finite. Returns (w, b).
  """
  s = 2.0 * y - 1.0
  design = np.stack([x, np.ones_like(x)], axis=1)  # (n, 2)
  reg = np.array([l2, 0.0])

  def loss(theta):
    margins = s * (design @ theta)
    return float(np.sum(np.logaddexp(0.0, -margins)) + 0.5 * l2 * theta[0]**2)

  theta = np.zeros(2)
  current = loss(theta)
  for _ in range(100):
    prob = special.expit(design @ theta)
    grad = design.T @ (prob - y) + reg * theta
    hess = (design * (prob * (1.0 - prob))[:, None]).T @ design + np.diag(reg)
    step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
    t = 1.0
    while True:
      candidate = theta - t * step
      new = loss(candidate)
      if new <= current - 1e-4 * t * float(grad @ step) or t < 1e-10:
        break
      t *= 0.5
    theta = candidate
    decrease = current - new
    current = new
    if abs(decrease) <= 1e-12 * max(1.0, abs(current)):
      break
  return float(theta[0]), float(theta[1])


def _stratified_folds(labels: np.ndarray, n_splits: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
  """Test-index sets of ``n_splits`` stratified folds (each class shuffled, cut in chunks)."""
  folds = [[] for _ in range(n_splits)]
  for c in (0, 1):
    idx = rng.permutation(np.nonzero(labels == c)[0])
    for f, chunk in enumerate(np.array_split(idx, n_splits)):
      folds[f].append(chunk)
  return [np.sort(np.concatenate(f)) for f in folds]


class AttackAccuracy(NamedTuple):
  """Cross-validated attack result: mean accuracy over splits, correct / all held-out predictions."""
  accuracy: float
  correct: int
  trials: int


def _fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, *, C: float | None,
                 standardise: bool) -> np.ndarray:
  """Fits the 1-D logistic attack on (x_tr, y_tr); returns the bool predictions on x_te."""
  if standardise:
    mean, std = float(np.mean(x_tr)), float(np.std(x_tr))
    std = std if std > 0.0 else 1.0
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
  if C is None:
    w, b = _fit_logistic_1d(x_tr, y_tr, _TINY_L2)
    return (w * x_te + b) > 0.0
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  clf = LogisticRegression(C=float(C)).fit(x_tr[:, None], y_tr.astype(np.int64))
  return clf.predict(x_te[:, None]) == 1


def attack_cv(scores_forget: Any, scores_ref: Any, *, cv: str = 'shuffle', n_splits: int = 10,
              seed: int = 0, C: float | None = 1.0, standardise: bool = False) -> AttackAccuracy:
  """The population attack's cross-validated accuracy (see the module docstring).

  Args:
    scores_forget: (n1,) losses on Du.
    scores_ref: (n2,) losses on the reference records.
    cv: ``'shuffle'`` (reference: StratifiedShuffleSplit, test size 0.1,
      random_state 123) or ``'kfold'`` (stratified K-fold, legacy).
    n_splits: splits or folds (>= 2; 10 in the reference). With ``'kfold'``
      each set needs at least n_splits records.
    seed: seed of the subsampling to equal sizes (and of the k folds).
    C: inverse L2 strength of scikit-learn's LogisticRegression (reference 1),
      or None for the unregularised Newton fit.
    standardise: standardise the losses with the training part's mean and std.
  Returns:
    AttackAccuracy(accuracy in [0, 1] (0.5 = chance), correct, trials).
  """
  pos = as_float_array(scores_forget, 'scores_forget', ndim=1)
  neg = as_float_array(scores_ref, 'scores_ref', ndim=1)
  check_choice(cv, 'cv', CVS)
  n_splits = check_int(n_splits, 'n_splits', minimum=2)
  if C is not None and not float(C) > 0.0:
    raise AuditError(f'C must be > 0 or None; got {C!r}')
  m = min(pos.size, neg.size)
  rng = np.random.default_rng(seed)
  if cv == 'kfold':
    if m < n_splits:
      raise AuditError(f'each class needs at least n_splits={n_splits} scores; got '
                       f'{pos.size} forget and {neg.size} reference')
    if pos.size > m:
      pos = pos[np.sort(rng.choice(pos.size, size=m, replace=False))]
    if neg.size > m:
      neg = neg[np.sort(rng.choice(neg.size, size=m, replace=False))]
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(m), np.zeros(m)])
    splits = []
    for test_idx in _stratified_folds(y, n_splits, rng):
      train = np.ones(x.size, dtype=bool)
      train[test_idx] = False
      splits.append((np.flatnonzero(train), test_idx))
  else:
    if m < 2:
      raise AuditError(f'each class needs at least 2 scores; got {pos.size} forget and '
                       f'{neg.size} reference')
    pos = pos[rng.permutation(pos.size)][:m]
    neg = neg[rng.permutation(neg.size)][:m]
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.zeros(m), np.ones(m)])
    from sklearn.model_selection import StratifiedShuffleSplit  # pylint: disable=g-import-not-at-top
    sss = StratifiedShuffleSplit(n_splits=n_splits, test_size=TEST_SIZE,
                                 random_state=RANDOM_STATE)
    try:
      splits = list(sss.split(x[:, None], y.astype(np.int64)))
    except ValueError as e:
      raise AuditError(f'{m} scores per class are too few for shuffle splits with test size '
                       f'{TEST_SIZE}: {e}') from e
  accs, correct, trials = [], 0, 0
  for tr, te in splits:
    pred = _fit_predict(x[tr], y[tr], x[te], C=C, standardise=standardise)
    hits = int(np.sum(pred == (y[te] == 1.0)))
    accs.append(hits / te.size)
    correct += hits
    trials += te.size
  return AttackAccuracy(float(np.mean(accs)), correct, trials)


def attack_accuracy(scores_forget: Any, scores_ref: Any, **options: Any) -> float:
  """Mean cross-validated accuracy of the population attack: :func:`attack_cv`'s ``accuracy``.

  Args:
    scores_forget: (n1,) losses on Du.
    scores_ref: (n2,) losses on the reference records.
    **options: ``cv``, ``n_splits``, ``seed``, ``C``, ``standardise``.
  Returns:
    The accuracy in [0, 1].
  """
  return attack_cv(scores_forget, scores_ref, **options).accuracy


def _p_value(loss_du: np.ndarray, loss_ref: np.ndarray, res: AttackAccuracy, *, test: str,
             seed: int, n_permutations: int, options: dict[str, Any]) -> tuple[float, dict]:
  k, n = res.correct, res.trials
  info = dict(correct=k, trials=n, accuracy_ci=list(stats.clopper_pearson(k, n)))
  if test == 'binomial':
    return float(sps.binomtest(k, n, 0.5, alternative='two-sided').pvalue), info
  pooled = np.concatenate([loss_du, loss_ref])
  rng = np.random.default_rng([int(seed), 2718])
  dev = abs(res.accuracy - 0.5)
  hits = 0
  for _ in range(n_permutations):
    perm = rng.permutation(pooled.size)
    a = attack_accuracy(pooled[perm[:len(loss_du)]], pooled[perm[len(loss_du):]], seed=seed,
                        **options)
    hits += abs(a - 0.5) >= dev - 1e-12
  info['n_permutations'] = n_permutations
  return (1.0 + hits) / (1.0 + n_permutations), info


def population_mia(target: Target, dataset: Dataset, split: AuditSplit, *, seed: int = 0,
                   n_splits: int = 10, cv: str = 'shuffle', C: float | None = 1.0,
                   standardise: bool = False, reference: str = 'ref', test: str = 'binomial',
                   n_permutations: int = 200, alpha: float = 0.05) -> PeerResult:
  """DeepUnlearn's population MIA: logistic regression on losses, Du vs unseen data.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request; uses Du and D_ref (or the test split).
    seed: seed of the subsampling to equal sizes, of the k folds and of the
      permutations.
    n_splits: cross-validation splits (10 in the reference).
    cv: ``'shuffle'`` (reference) or ``'kfold'`` (legacy); see :func:`attack_cv`.
    C: inverse L2 strength of the logistic regression (reference 1.0), or
      None for an unregularised fit (legacy).
    standardise: standardise the losses before fitting (legacy: True).
    reference: ``'ref'`` (D_ref, default) or ``'test'`` (the test split; a
      logits-table target must then hold ``test_logits``).
    test: ``'binomial'`` or ``'permutation'`` (see the module docstring).
    n_permutations: permutations of the permutation test (>= 1).
    alpha: level of the decision rule.
  Returns:
    PeerResult with score = attack accuracy in [0, 1] (0.5 = chance) and
    details ``indiscernibility``, ``p_value``, the options, mean losses and
    sizes. Cost: 0 models.
  """
  t0 = time.time()
  n_splits = check_int(n_splits, 'n_splits', minimum=2)
  check_choice(cv, 'cv', CVS)
  if C is not None and not float(C) > 0.0:
    raise AuditError(f'C must be > 0 or None, got {C!r}')
  min_size = n_splits if cv == 'kfold' else 2
  check_request(target, dataset, split, min_forget=min_size, min_ref=1)
  if reference not in REFERENCES:
    raise AuditError(f'reference must be one of {REFERENCES}, got {reference!r}')
  if test not in TESTS:
    raise AuditError(f'test must be one of {TESTS}, got {test!r}')
  n_permutations = check_int(n_permutations, 'n_permutations', minimum=1)
  alpha = check_level(alpha, 'alpha')
  use_test = reference == 'test'
  ref_idx = np.asarray(split.test if use_test else split.ref, np.int64)
  if len(ref_idx) < min_size:
    raise AuditError(f'the reference set ({reference}) needs at least {min_size} records '
                     f'(cv={cv!r}, n_splits={n_splits}), got {len(ref_idx)}')
  forget = np.asarray(split.forget, np.int64)
  lg_du = target_logits(target, dataset, forget, ('identity',), seed=seed)[0]
  lg_ref = target_logits(target, dataset, ref_idx, ('identity',), seed=seed, test=use_test)[0]
  y_ref = dataset.y_test[ref_idx] if use_test else dataset.y_train[ref_idx]
  loss_du = losses_from_logits(lg_du, dataset.y_train[forget])
  loss_ref = losses_from_logits(lg_ref, y_ref)
  options = dict(cv=cv, n_splits=n_splits, C=None if C is None else float(C),
                 standardise=bool(standardise))
  res = attack_cv(loss_du, loss_ref, seed=seed, **options)
  acc = res.accuracy
  p, info = _p_value(loss_du, loss_ref, res, test=test, seed=seed,
                     n_permutations=n_permutations, options=options)
  decision = 'not_forgotten' if p < alpha else 'forgotten'
  rule = (f'not_forgotten if the cross-validated attack accuracy differs from 0.5 '
          f'({test} test, two-sided, p < {alpha:g}); forgotten otherwise')
  details = dict(accuracy=acc, indiscernibility=indiscernibility(acc), p_value=p,
                 test=test, alpha=alpha, n_splits=n_splits, reference=reference,
                 options=options,
                 mean_loss=dict(forget=float(loss_du.mean()), reference=float(loss_ref.mean())),
                 sizes=dict(forget=len(forget), reference=len(ref_idx),
                            used_per_class=min(len(forget), len(ref_idx))),
                 target=target.name, **info)
  return PeerResult(name='population_mia', score=acc, decision=decision, rule=rule,
                    details=details,
                    cost=dict(models_trained=0, wall_time_s=time.time() - t0))
