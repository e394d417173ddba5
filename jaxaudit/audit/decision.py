"""The proof-of-ignorance test on difficulty-calibrated scores (host-side, NumPy).

H0: the audited model Mu is ignorant of Du — its calibrated scores on Du are
exchangeable with its scores on D_ref, records that no model trained on.

Why the test is exact under H0. Du and D_ref are random subsets of the same
pool (class-matched when Du is not), and neither Mu (honestly retrained on Dr)
nor the verifiers (trained on subsets of Dr) depend on which of the records of
Du ∪ D_ref were labelled "forget" and which "reference". The calibrated score
of a record is a fixed function of the record and of those models, so under H0
the labels are exchangeable and every rank test below is valid at level α.

Calibration. c_a(x) = φ_Mu,a(x) − β_a · mean_k φ_Mv_k,a(x), with β_a the
least-squares slope of φ_Mu on the verifiers' mean φ over the pooled records
(Du ∪ D_ref ∪ members) of view a. β is a symmetric function of the pool, so
exchangeability under H0 is untouched; fitting it makes the score invariant to
a global rescaling of Mu's outputs (a temperature fake), where the plain
difference (β = 1) loses its power (measured in BUILD_NOTES.md).

Statistics (per record, A views: the exact record and augmented neighbours):
  exact    c_0(x)
  neighbours  c̄(x) = mean over augmented views of c_a(x)
  gap      how much more familiar Mu finds the exact input than its own
           neighbours and the verifiers predict: the residual of φ_Mu,0(x)
           after a pooled least-squares fit on the verifiers' φ on every view,
           the verifiers' exact φ squared and Mu's mean φ over the neighbours
           (:func:`neighbour_residual`). Large where the exact inputs were
           memorised beyond what generalises to their neighbours (an adaptive
           fake that suppressed only part of it), negative where they are
           masked. Without the fit (``gap`` not given) it is c_0(x) − c̄(x).
These three are the φ statistics; the test's family (``TestSettings.statistics``)
adds more from the registry :mod:`jaxaudit.audit.evidence` — by default
correctness beyond the verifiers', the spreads of the φ statistics and the
divergence from the verifiers' mixture (chosen on development data, see
BUILD_NOTES.md "Fake robustness"). Each is compared between Du and D_ref by a
two-sided Mann–Whitney test; the p-values are adjusted for the family by
single-step max-T on the joint normal law of the rank sums (``combine='maxt'``; correlated statistics cost less than
Bonferroni's factor, see :func:`jaxaudit.audit.stats.maxt_adjusted_mwu`) or by
Bonferroni (``combine='bonferroni'``, valid under any dependence). The pooled
fits (β, the gap regression) are symmetric functions of Du ∪ D_ref ∪ members,
so they leave the exchangeability argument intact.

Reference check (:func:`reference_check`). The test above is exact only if
D_ref is exchangeable with Du; a user-supplied or shifted reference breaks
that, and a mildly shifted one (MNIST brightened by +0.05) made honest
retrains look like they ``remember``. The check runs, on Du vs D_ref, every
statistic that does not involve Mu — so each is exact under H0 for the same
reason as the test, and none can confuse a remembering Mu with a bad
reference:
  * leave-one-out audits (``loo``): each verifier k in the role of the audited
    model, calibrated by the other K − 1 with the *same* statistics (exact,
    neighbours, gap) and the same pooled fits. Verifier k never saw Du nor
    D_ref, so a difference there is the reference's, not a model's;
  * the verifier ensemble's outputs (``verifiers``): mean φ (the original
    check), mean log-sum-exp of the logits (energy) and the spread of φ
    across verifiers;
  * the inputs themselves (``inputs``): each record's mean and standard
    deviation over its features and, for images, its roughness (mean absolute
    difference of adjacent pixels: pixel noise).
The groups were chosen by measured power on MNIST draws 1000–1003 (not the
validation draws): the leave-one-out statistics alone miss brightness +0.02 …
+0.10 and noise σ 0.03 … 0.1 that already fool the test (a verifier and its
calibrators react alike to a shift, while Mu, trained on all of Dr, reacts
differently), the inputs and the ensemble's energy catch them.
The family is adjusted by a stratified (class) permutation max-T
(:func:`jaxaudit.audit.stats.permutation_maxt_mwu`, ``combine='maxt'``) or by
Bonferroni, and the reference is refused when the family p-value is
≤ ``self_check_alpha`` — so on an exchangeable reference it fires with
probability ≤ ``self_check_alpha`` (validated in BUILD_NOTES.md).

Forgetting score. FS = (AUC_mem − AUC_du) / (AUC_mem − ½) places Du between
Mu's members (0: as remembered as retained data) and D_ref (1: as unseen as
unseen data), AUCs of the exact calibrated score against D_ref. It is clipped
to [0, 1]: Du more familiar than the members is "0", Du *less* familiar than
unseen data (damage) is "1" — damage is reported by the two-sided test's
direction, not by the score. Its 95% interval is the percentile bootstrap
(Du, D_ref and members resampled independently) of the clipped score — the
percentile method commutes with the monotone clip, so the interval is the
clipped interval of the unclipped score and stays in [0, 1]; replicates where
the members are not separated from D_ref (AUC_mem ≤ ½ + 0.01, where the
ratio is undefined or explodes) are dropped, and the interval is (nan, nan)
when more than half are.

Decision:
  * reference check (above): family p ≤ ``self_check_alpha`` →
    ``invalid_reference``.
  * reject H0 → ``not_forgotten``, direction ``remembers`` (Du more familiar
    than unseen data) or ``damaged`` (less familiar, e.g. gradient ascent).
  * not rejected but the estimated power to detect a Du that behaves like
    Mu's members is < ``power_target`` → ``inconclusive``.
  * otherwise ``forgotten``.
  * utility collapse turns a pass into ``not_forgotten`` with direction
    ``collapse`` (:func:`utility_test`): Mu's per-record utility on the
    records neither it nor the verifiers saw (the D_ref sample and the test
    sample) is significantly *below* the verifiers'. The verifiers are trained on 15% of
    Dr with the recipe Mu is audited under, so an honest Mu (trained on all of
    Dr) is at least as useful on unseen records as they are; a Mu below them
    has lost, with Du, what the retained data taught it (gradient ascent that
    degrades every record alike: Du then looks as unseen as D_ref, and only
    its utility shows the damage). One-sided paired test at
    ``utility_alpha`` (0.01: it adds at most that to the false-alarm rate, and
    only where an honest Mu would be no better than a model trained on 15% of
    its data).

A task-specific test (``extra_test``, e.g. the classification task's
whole-class test, :mod:`jaxaudit.tasks.classification`) joins the record test
by Bonferroni; a rejection carries the direction the task names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxaudit.audit import evidence
from jaxaudit.audit import records as records_lib
from jaxaudit.audit import stats
from jaxaudit.errors import AuditError
from jaxaudit.tasks.base import Signals

DECISIONS = ('forgotten', 'not_forgotten', 'inconclusive', 'invalid_reference')
SELF_CHECK_GROUPS = ('loo', 'verifiers', 'inputs')
# The record statistics of the ignorance test (see :mod:`jaxaudit.audit.evidence`), chosen
# on development data only (MNIST seeds 0-9, digits seeds 0-9; the rule and the candidates are
# in jaxaudit.study.robustness, the numbers in BUILD_NOTES.md, "Fake robustness").
DEFAULT_STATISTICS = ('exact', 'neighbours', 'gap', 'correct', 'exact_spread',
                      'neighbours_spread', 'gap_spread', 'kl_ensemble', 'kl_ensemble_spread')


@dataclasses.dataclass(frozen=True)
class TestSettings:
  """Settings of the decision rule.

  Attributes:
    alpha: significance level of the ignorance test.
    fdr: false-discovery rate of the per-record evidence (Benjamini–Hochberg).
    power_target: minimum estimated power for a pass to count as evidence.
    self_check_alpha: level of the reference-exchangeability check.
    collapse_margin: tolerance of the utility test (:func:`utility_test`): Mu's
      mean per-record utility on unseen records may fall this far below the verifiers'
      before it counts against Mu.
    utility_alpha: level of the one-sided utility test.
    class_margin: slack over the verifiers' utility allowed under H0 by a
      task's extra test (the classification task's whole-class test).
    combine: family adjustment of the statistics' p-values, ``maxt`` or
      ``bonferroni`` (for the reference check, ``maxt`` is a permutation max-T).
    self_check: groups of statistics of the reference check, from
      ``('loo', 'verifiers', 'inputs')`` (see :func:`reference_check`).
    statistics: the record statistics of the ignorance test, names from
      :data:`jaxaudit.audit.evidence.STATISTICS` (``exact`` first); those
      not defined for an audit (neighbour statistics without neighbour views,
      signal statistics without the task's signals) are left out.
    self_check_perms: permutations of the reference check's max-T.
    n_boot: bootstrap resamples for the forgetting-score interval.
    seed: bootstrap seed.
  """
  __test__ = False   # not a pytest test class
  alpha: float = 0.05
  fdr: float = 0.05
  power_target: float = 0.8
  self_check_alpha: float = 0.01
  collapse_margin: float = 0.0
  utility_alpha: float = 0.01
  class_margin: float = 0.05
  combine: str = 'maxt'
  self_check: tuple[str, ...] = ('loo', 'verifiers', 'inputs')
  statistics: tuple[str, ...] = DEFAULT_STATISTICS
  self_check_perms: int = 2000
  n_boot: int = 500
  seed: int = 0

  def __post_init__(self):
    bad = [g for g in self.self_check if g not in SELF_CHECK_GROUPS]
    object.__setattr__(self, 'statistics', evidence.check_names(self.statistics))
    if bad or not self.self_check:
      raise AuditError(f'self_check must be a non-empty subset of {SELF_CHECK_GROUPS}, '
                       f'got {self.self_check!r}')
    if int(self.self_check_perms) < 99:
      raise AuditError(f'self_check_perms must be >= 99, got {self.self_check_perms}')
    if self.combine not in ('maxt', 'bonferroni'):
      raise AuditError(f"combine must be 'maxt' or 'bonferroni', got {self.combine!r}")
    if not 0 <= self.class_margin < 1:
      raise AuditError(f'class_margin must be in [0, 1), got {self.class_margin}')
    if not 0 <= self.collapse_margin < 1:
      raise AuditError(f'collapse_margin must be in [0, 1), got {self.collapse_margin}')
    for name in ('alpha', 'fdr', 'power_target', 'self_check_alpha', 'utility_alpha'):
      v = getattr(self, name)
      if not 0 < v < 1:
        raise AuditError(f'{name} must be in (0, 1), got {v}')


def regression_calibrate(phi_target: dict[str, np.ndarray], phi_verifiers: dict[str, np.ndarray]
                         ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Difficulty-calibrated scores by a pooled least-squares slope per view.

  Args:
    phi_target: set name -> (A, n_set) φ of Mu.
    phi_verifiers: set name -> (A, n_set) mean φ of the verifiers.
  Returns:
    (set name -> (A, n_set) calibrated scores, betas (A,)).
  """
  names = list(phi_target)
  u = np.concatenate([np.asarray(phi_target[k], np.float64) for k in names], axis=1)
  v = np.concatenate([np.asarray(phi_verifiers[k], np.float64) for k in names], axis=1)
  vc = v - v.mean(1, keepdims=True)
  uc = u - u.mean(1, keepdims=True)
  var = np.sum(vc * vc, axis=1)
  betas = np.where(var > 1e-12, np.sum(uc * vc, axis=1) / np.maximum(var, 1e-12), 1.0)
  return ({k: np.asarray(phi_target[k], np.float64) - betas[:, None] * np.asarray(phi_verifiers[k])
           for k in names}, betas)


def neighbour_residual(phi_target: dict[str, np.ndarray], phi_verifiers: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray] | None:
  """The ``gap`` statistic: Mu's exact φ beyond what its neighbours and the verifiers predict.

  One ridge-stabilised least-squares fit over the pooled records of every set:
  φ_Mu,0(x) ~ 1 + φ_V,a(x) for every view a + φ_V,0(x)² + mean_{a≥1} φ_Mu,a(x),
  regressors standardised. A symmetric function of the pool, so it keeps
  Du and D_ref exchangeable under H0.

  Args:
    phi_target: set name -> (A, n_set) φ of Mu (view 0 = exact record).
    phi_verifiers: set name -> (A, n_set) mean φ of the verifiers.
  Returns:
    set name -> (n_set,) residuals, or None when A == 1 (no neighbours).
  """
  names = list(phi_target)
  if np.shape(phi_target[names[0]])[0] < 2:
    return None

  def design(k):
    u = np.asarray(phi_target[k], np.float64)
    v = np.asarray(phi_verifiers[k], np.float64)
    return np.concatenate([v.T, (v[0] ** 2)[:, None], u[1:].mean(0)[:, None]], axis=1)

  xs = {k: design(k) for k in names}
  x = np.concatenate([xs[k] for k in names])
  y = np.concatenate([np.asarray(phi_target[k], np.float64)[0] for k in names])
  mu, sd = x.mean(0), x.std(0)
  sd = np.where(sd > 1e-12, sd, 1.0)
  z = lambda a: np.concatenate([np.ones((len(a), 1)), (a - mu) / sd], axis=1)
  zz = z(x)
  ridge = 1e-6 * len(y) * np.eye(zz.shape[1])
  ridge[0, 0] = 0.0
  coef = np.linalg.solve(zz.T @ zz + ridge, zz.T @ y)
  return {k: np.asarray(phi_target[k], np.float64)[0] - z(xs[k]) @ coef for k in names}


FORGETTING_SCORE_METHOD = (
    'FS = (AUC_mem - AUC_du) / (AUC_mem - 1/2) on the exact calibrated score (AUCs against '
    'D_ref), clipped to [0, 1] (0 = as remembered as Mu\'s members, 1 = as unseen as D_ref; '
    'damage shows in the test\'s direction, not in FS); 95% CI: percentile bootstrap of the '
    'clipped score, Du/D_ref/members resampled independently, replicates with AUC_mem <= 0.51 '
    'dropped')

# Members must beat D_ref by this much AUC for the forgetting score to be defined.
MIN_MEMBER_SEPARATION = 0.01


def forgetting_score(du: np.ndarray, ref: np.ndarray, members: np.ndarray, *,
                     clip: bool = True) -> float:
  """(AUC_mem − AUC_du) / (AUC_mem − 1/2) clipped to [0, 1]: 0 remembered, 1 unseen.

  Args:
    du: (n_du,) calibrated scores of Du (exact view).
    ref: (n_ref,) the same for D_ref.
    members: (n_mem,) the same for Mu's members.
    clip: clip to [0, 1] (see the module docstring); False gives the raw ratio.
  Returns:
    The score; NaN when members are not separated from D_ref
    (AUC_mem ≤ 1/2 + MIN_MEMBER_SEPARATION), where it is undefined.
  """
  a_mem = stats.auc(members, ref)
  if a_mem <= 0.5 + MIN_MEMBER_SEPARATION:
    return float('nan')
  v = (a_mem - stats.auc(du, ref)) / (a_mem - 0.5)
  return float(np.clip(v, 0.0, 1.0) if clip else v)


def _direction(tests: dict[str, dict[str, float]], level: float) -> tuple[str, bool]:
  """Direction of a rejection: ('remembers' | 'damaged' | 'altered', exact_inputs_masked).

  The φ statistics decide when one of them is significant. Neighbours that
  look familiar mean Du is remembered even when the exact inputs look
  unfamiliar (then the exact inputs are masked). Otherwise the exact view
  decides; if only the exact-vs-neighbour gap is significant, a positive gap
  (exact inputs more familiar than their neighbours) is memorisation, a
  negative one masking of the exact inputs. When only other statistics are
  significant, the most significant one names the direction
  (:func:`jaxaudit.audit.evidence.direction`).
  """
  sig = {k: t['p_adjusted'] <= level for k, t in tests.items()}
  up = {k: t['auc'] > 0.5 for k, t in tests.items()}
  if not any(sig.get(k) for k in evidence.PHI_STATISTICS):
    best = min(tests, key=lambda k: tests[k]['p_adjusted'])
    if best not in evidence.PHI_STATISTICS:
      return evidence.direction(best, up[best]), False
  gap_masks = sig.get('gap', False) and not up['gap']
  if sig.get('neighbours') and up['neighbours']:
    return 'remembers', bool(gap_masks or (sig['exact'] and not up['exact']))
  if sig['exact']:
    if up['exact']:
      return 'remembers', False
    if gap_masks and up.get('neighbours', False):
      return 'remembers', True   # exact inputs suppressed, neighbours familiar
    return 'damaged', False
  if sig.get('neighbours'):
    return 'damaged', False
  # Only the gap (or only the combination) is significant.
  best = min((k for k in tests if k in evidence.PHI_STATISTICS),
             key=lambda k: tests[k]['p_adjusted'])
  if best == 'gap':
    return 'remembers', not up['gap']
  return ('remembers' if up[best] else 'damaged'), False


def _bootstrap_indices(sizes: tuple[int, ...], n_boot: int, seed: int) -> list[np.ndarray]:
  """(n_boot, n) resampling indices of each set, drawn replicate by replicate."""
  rng = np.random.default_rng([int(seed), 15485863])
  draws: list[list[np.ndarray]] = [[] for _ in sizes]
  for _ in range(n_boot):
    for k, n in enumerate(sizes):
      draws[k].append(rng.integers(0, n, n))
  return [np.asarray(d, np.int32).reshape(n_boot, n) for d, n in zip(draws, sizes)]


def forgetting_score_ci(du, ref, members, *, level: float = 0.95, n_boot: int = 500,
                        seed: int = 0, min_sizes: tuple[int, int, int] = (0, 0, 0)
                        ) -> tuple[float, float]:
  """Percentile-bootstrap interval of the (clipped) :func:`forgetting_score`, within [0, 1].

  Each set is resampled independently; replicates where the score is
  undefined (members not separated from D_ref) are dropped, and if more than
  half are, the interval is (nan, nan). The replicates run as one batched
  XLA program (:func:`jaxaudit.audit.batched.forgetting_score_ci_from_indices`)
  over sets padded to shape buckets; the resampling indices are those of
  :func:`forgetting_score_ci_reference`, which it equals.

  Args:
    du, ref, members: (n,) exact-view calibrated scores of each set.
    level: coverage.
    n_boot: resamples.
    seed: resampling seed.
    min_sizes: pad each set as if it had at least this many records (caps on
      the sizes known to the caller: one compiled program for every request).
  Returns:
    (low, high) with 0 ≤ low ≤ high ≤ 1, or (nan, nan).
  """
  from jaxaudit.audit import batched
  from jaxaudit.compilation import bucket_size
  sets = [np.asarray(a, np.float32).reshape(-1) for a in (du, ref, members)]
  idx = _bootstrap_indices(tuple(len(a) for a in sets), n_boot, seed)
  args, idx_p = [], []
  for a, i, cap in zip(sets, idx, min_sizes):
    m = bucket_size(max(len(a), int(cap)), bits=1)      # powers of two: few programs
    args += [np.concatenate([a, np.zeros(m - len(a), np.float32)]), np.arange(m) < len(a)]
    idx_p.append(np.concatenate([i, np.zeros((n_boot, m - len(a)), np.int32)], axis=1))
  lo, hi = batched.forgetting_score_ci_from_indices(*args, *idx_p, level)
  return float(lo), float(hi)


def forgetting_score_ci_reference(du, ref, members, *, level: float = 0.95, n_boot: int = 500,
                        seed: int = 0) -> tuple[float, float]:
  """NumPy reference of :func:`forgetting_score_ci` (one replicate at a time; the tests
  compare the batched version with it).

  Each set is resampled independently; replicates where the score is
  undefined (members not separated from D_ref) are dropped, and if more than
  half are, the interval is (nan, nan).

  Args:
    du, ref, members: (n,) exact-view calibrated scores of each set.
    level: coverage.
    n_boot: resamples.
    seed: resampling seed.
  Returns:
    (low, high) with 0 ≤ low ≤ high ≤ 1, or (nan, nan).
  """
  rng = np.random.default_rng([int(seed), 15485863])
  vals = []
  for _ in range(n_boot):
    b = [a[rng.integers(0, len(a), len(a))] for a in (du, ref, members)]
    vals.append(forgetting_score(*b))
  vals = np.asarray(vals)
  vals = vals[np.isfinite(vals)]
  if len(vals) < n_boot / 2:
    return float('nan'), float('nan')
  lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def _stat_dict(scores: dict[str, np.ndarray], prefix: str, du: str, ref: str
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  return {f'{prefix}{k}': (v_du, scores[ref][k]) for k, v_du in scores[du].items()}


def loo_statistics(phi_verifiers: dict[str, np.ndarray], du: str = 'forget', ref: str = 'ref'
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The audit's statistics with each verifier in the role of the audited model.

  For verifier k: target φ = φ_k, calibrator = the mean φ of the other K − 1;
  :func:`regression_calibrate` and :func:`neighbour_residual` over the pooled
  sets (all keys of ``phi_verifiers``, e.g. Du, D_ref and the members), then
  the exact / neighbours / gap statistics.

  Args:
    phi_verifiers: set name -> (A, K, n_set) φ of each verifier (K ≥ 2).
    du, ref: the keys of the two compared sets.
  Returns:
    'loo{k}_{statistic}' -> ((n_du,), (n_ref,)) scores.
  """
  k_all = {np.shape(v)[1] for v in phi_verifiers.values()}
  if len(k_all) != 1 or min(k_all) < 2:
    raise AuditError(f'leave-one-out statistics need (A, K, n) verifier φ with K >= 2; got '
                     f'{[np.shape(v) for v in phi_verifiers.values()]}')
  k_n = k_all.pop()
  out = {}
  for k in range(k_n):
    others = [j for j in range(k_n) if j != k]
    tgt = {s: np.asarray(v, np.float64)[:, k] for s, v in phi_verifiers.items()}
    cal_v = {s: np.asarray(v, np.float64)[:, others].mean(1) for s, v in phi_verifiers.items()}
    cal, _ = regression_calibrate(tgt, cal_v)
    gap = neighbour_residual(tgt, cal_v)
    phi = evidence.family(evidence.PHI_STATISTICS, cal[du].shape[0], None)
    sc = {s: evidence.compute(phi, evidence.RecordSet(cal[s], None if gap is None else gap[s],
                                                      None)) for s in (du, ref)}
    out.update(_stat_dict(sc, f'loo{k}_', du, ref))
  return out


def reference_check(statistics: dict[str, tuple[np.ndarray, np.ndarray]], *, alpha: float,
                    combine: str = 'maxt', strata: tuple[np.ndarray, np.ndarray] | None = None,
                    n_perm: int = 2000, seed: int = 0) -> dict[str, Any]:
  """Is D_ref exchangeable with Du? A family of two-sample tests that do not involve Mu.

  Args:
    statistics: name -> ((n_du,), (n_ref,)) per-record scores that are fixed
      functions of each record and of models that never saw Du nor D_ref (see
      the module docstring: :func:`loo_statistics`, verifier outputs, inputs).
    alpha: ``self_check_alpha``; the reference is refused when the family
      p-value is ≤ alpha.
    combine: ``maxt`` (stratified permutation max-T,
      :func:`jaxaudit.audit.stats.permutation_maxt_mwu`) or ``bonferroni``
      (of the asymptotic Mann–Whitney p-values).
    strata: ((n_du,), (n_ref,)) strata of the permutation (the task's), or None.
    n_perm: permutations.
    seed: permutation seed.
  Returns:
    dict(ok, p_value (family), alpha, combine, n_statistics, statistics:
    name -> dict(auc, p_value (raw MWU), p_adjusted), worst (name of the
    smallest adjusted p)).
  """
  if not statistics:
    raise AuditError('the reference check needs at least one statistic')
  names = list(statistics)
  xs = np.stack([np.asarray(statistics[k][0], np.float64) for k in names])
  ys = np.stack([np.asarray(statistics[k][1], np.float64) for k in names])
  if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
    bad = [k for k, a, b in zip(names, xs, ys) if not (np.all(np.isfinite(a))
                                                      and np.all(np.isfinite(b)))]
    raise AuditError(f'reference-check statistics {bad} hold NaN or inf values')
  tests = {}
  for k, a, b in zip(names, xs, ys):
    r = stats.mann_whitney(a, b)
    tests[k] = dict(auc=float(r.auc), p_value=float(r.p_value))
  raw = [tests[k]['p_value'] for k in names]
  if combine == 'maxt' and len(names) > 1:
    adj = stats.permutation_maxt_mwu(xs, ys, strata_x=None if strata is None else strata[0],
                                     strata_y=None if strata is None else strata[1],
                                     n_perm=n_perm, seed=seed)
    method = f'permutation max-T ({n_perm} stratified permutations)' if strata is not None \
        else f'permutation max-T ({n_perm} permutations)'
  elif combine in ('maxt', 'bonferroni'):
    adj = stats.bonferroni_adjusted(raw)
    method = 'Bonferroni' if len(names) > 1 else 'none (one statistic)'
  else:
    raise AuditError(f"combine must be 'maxt' or 'bonferroni', got {combine!r}")
  for k, pa in zip(names, adj):
    tests[k]['p_adjusted'] = float(pa)
  p = float(np.min(adj))
  worst = names[int(np.lexsort((np.asarray(raw), np.asarray(adj)))[0])]   # ties: smaller raw p
  return dict(ok=bool(p > alpha), p_value=p, alpha=float(alpha), combine=method,
              n_statistics=len(names), statistics=tests, worst=worst,
              auc=tests[worst]['auc'])


def utility_level_test(correct_target: np.ndarray, correct_verifiers: np.ndarray, *,
                     alpha: float, margin: float, alt_accuracy: float | None = None
                     ) -> dict[str, Any]:
  """Is Mu more useful on some held-out records than models that never saw their kind?

  The exact one-sided binomial test of a task's extra test (classification:
  does Mu still recognise classes that only Du held? see
  :mod:`jaxaudit.tasks.classification`).

  Args:
    correct_target: (n,) bool, Mu is right on each held-out record (e.g. top-1
      on records of the forgotten classes).
    correct_verifiers: (K, n) bool, the same for the verifiers (which never
      saw records of that kind).
    alpha: level used for the power estimate.
    margin: slack added to the verifiers' best accuracy: H0 is
      ``accuracy <= max_k acc_k + margin``.
    alt_accuracy: Mu's accuracy under the alternative "remembers the classes
      like its training classes" (default 1), for the power estimate.
  Returns:
    dict(p_value, accuracy, verifier_accuracy (K,), threshold, n, power).
  """
  ct = np.asarray(correct_target, bool).reshape(-1)
  cv = np.asarray(correct_verifiers, bool)
  if cv.ndim != 2 or cv.shape[1] != ct.shape[0] or ct.shape[0] < 1:
    raise AuditError(f'the utility-level test needs (n,) and (K, n) correctness arrays with n >= 1; '
                     f'got {ct.shape} and {cv.shape}')
  n = int(ct.shape[0])
  acc_v = cv.mean(axis=1)
  p0 = float(min(1.0, float(acc_v.max()) + margin))
  p_value = stats.binomial_test_greater(int(ct.sum()), n, p0)
  alt = 1.0 if alt_accuracy is None or not np.isfinite(alt_accuracy) else float(alt_accuracy)
  power = stats.binomial_power(n, p0, max(alt, p0), alpha) if p0 < 1 else 0.0
  return dict(p_value=float(p_value), accuracy=float(ct.mean()),
              verifier_accuracy=acc_v.tolist(), threshold=p0, n=n, power=float(power))


def record_family_test(s_du: dict[str, np.ndarray], s_ref: dict[str, np.ndarray], *,
                       combine: str, alpha: float) -> dict[str, Any]:
  """Two-sided Mann–Whitney tests of Du vs D_ref under each statistic, adjusted as a family.

  Args:
    s_du: statistic name -> (n_du,) per-record values on Du
      (:func:`jaxaudit.audit.evidence.compute`).
    s_ref: the same names -> (n_ref,) on D_ref.
    combine: ``maxt`` (:func:`jaxaudit.audit.stats.maxt_adjusted_mwu`) or ``bonferroni``.
    alpha: the family's level (for ``test_level``).
  Returns:
    dict(tests: name -> dict(p_value, auc, p_adjusted), p_value (the family's,
    min adjusted), combine (the adjustment used), test_level (the raw level
    at which one test rejects, :func:`jaxaudit.audit.stats.maxt_critical_level`;
    ``alpha / T`` for Bonferroni)).
  """
  for name in s_du:
    if not (np.all(np.isfinite(s_du[name])) and np.all(np.isfinite(s_ref[name]))):
      raise AuditError(f'the {name} statistic holds NaN or inf values')
  tests = {}
  for name in s_du:
    r = stats.mann_whitney(s_du[name], s_ref[name])
    tests[name] = dict(p_value=float(r.p_value), auc=float(r.auc))
  raw = [tests[k]['p_value'] for k in tests]
  n_du, n_ref = len(next(iter(s_du.values()))), len(next(iter(s_ref.values())))
  combine_used = combine
  live = [k for k in tests if np.ptp(np.concatenate([s_du[k], s_ref[k]])) > 0]
  if combine == 'maxt' and (len(live) <= 1 or min(n_du, n_ref) < 20):
    combine_used = 'bonferroni'   # where maxt_adjusted_mwu falls back to Bonferroni
  x_stack = np.stack([s_du[k] for k in tests])
  y_stack = np.stack([s_ref[k] for k in tests])
  if combine == 'maxt':
    adjusted = stats.maxt_adjusted_mwu(x_stack, y_stack, raw)
    test_level = stats.maxt_critical_level(x_stack, y_stack, alpha)
  else:
    adjusted = stats.bonferroni_adjusted(raw)
    test_level = alpha / len(tests)
  for k, pa in zip(tests, adjusted):
    tests[k]['p_adjusted'] = float(pa)
  return dict(tests=tests, p_value=float(np.min(adjusted)), combine=combine_used,
              test_level=float(test_level))


def verdict(*, reference_ok: bool, rejected: bool, collapse: bool, power: float,
            power_target: float, extra_evidence: bool = False) -> str:
  """The decision ladder (module docstring, "Decision").

  Args:
    reference_ok: the reference check passed.
    rejected: the test rejected H0 at α.
    collapse: Mu's utility collapsed.
    power: estimated power of the record test (NaN: unknown).
    power_target: the power a pass needs to count as evidence.
    extra_evidence: a task's extra test covers every record of Du and has the power.
  Returns:
    one of :data:`DECISIONS`.
  """
  if not reference_ok:
    return 'invalid_reference'
  if rejected or collapse:
    return 'not_forgotten'
  if (np.isfinite(power) and power >= power_target) or extra_evidence:
    return 'forgotten'
  return 'inconclusive'


def utility_test(u_target: np.ndarray, u_verifiers: np.ndarray, *, margin: float = 0.0,
                 alpha: float = 0.01) -> dict[str, Any]:
  """Is Mu's utility on D_ref below the verifiers'? One-sided paired t-test.

  H0: E[u_Mu(x) − mean_k u_k(x)] ≥ −margin over records x of D_ref (an honest
  Mu, trained on all of Dr, is at least as useful on unseen records as models
  trained on a part of it: the verifiers (15%), or the utility reference models
  of ``AuditSettings.utility_ratio``). Paired by record, so the records'
  difficulty cancels.

  Args:
    u_target: (n,) Mu's per-record utility (top-1 correctness; token accuracy).
    u_verifiers: (K, n) the same for each reference model (verifier or utility model).
    margin: tolerance in utility units.
    alpha: level.
  Returns:
    dict: p_value, collapse (p ≤ alpha), mean_target, mean_verifiers,
    difference (mean of u_Mu − mean_k u_k) and its 95% interval, n, margin, alpha.
  """
  from scipy import stats as sps
  u_t = np.asarray(u_target, np.float64).reshape(-1)
  u_v = np.asarray(u_verifiers, np.float64)
  u_v = u_v.reshape(-1, u_t.shape[0]) if u_v.size else u_v.reshape(0, u_t.shape[0])
  if u_v.shape[0] == 0 or u_t.shape[0] == 0:
    raise AuditError('the utility test needs Mu and at least one verifier on D_ref records')
  if not (np.all(np.isfinite(u_t)) and np.all(np.isfinite(u_v))):
    raise AuditError('the utility test got non-finite per-record utilities')
  d = u_t - u_v.mean(0)
  n = d.shape[0]
  mean = float(d.mean())
  sd = float(d.std(ddof=1)) if n > 1 else 0.0
  if sd > 0:
    se = sd / np.sqrt(n)
    p = float(sps.t.cdf((mean + margin) / se, df=n - 1))
    half = float(sps.t.ppf(0.975, df=n - 1) * se)
  else:   # every record differs by the same amount: the sign decides
    p = 0.0 if mean + margin < 0 else 1.0
    half = 0.0
  return dict(p_value=p, collapse=bool(p <= alpha), mean_target=float(u_t.mean()),
              mean_verifiers=float(u_v.mean()), difference=mean,
              difference_ci=[mean - half, mean + half], n=int(n), margin=float(margin),
              alpha=float(alpha))


def ignorance_test(cal_du: np.ndarray, cal_ref: np.ndarray, cal_members: np.ndarray | None,
                   ver_du: np.ndarray, ver_ref: np.ndarray, settings: TestSettings,
                   *, utility_ref: tuple[np.ndarray, np.ndarray] | None = None,
                   extra_test: dict[str, Any] | None = None,
                   extra_only: bool = False, gap_du: np.ndarray | None = None,
                   gap_ref: np.ndarray | None = None,
                   reference: dict[str, Any] | None = None,
                   signals_du: Signals | None = None,
                   signals_ref: Signals | None = None,
                   size_caps: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
  """Runs the test on calibrated scores.

  Args:
    cal_du: (A, n_du) calibrated scores of Du (view 0 = exact record).
    cal_ref: (A, n_ref) calibrated scores of the (strata-matched) D_ref sample.
    cal_members: (A, n_mem) calibrated scores of Mu's member sample, or None.
    ver_du: (n_du,) the verifiers' mean φ on the exact Du records.
    ver_ref: (n_ref,) the same on D_ref (reference-exchangeability check).
    settings: the decision settings.
    utility_ref: ((n,), (K, n)) per-record (per-unit) utility of Mu and of each
      verifier on unseen records (the runner passes the D_ref sample and the test
      sample), for the collapse check (:func:`utility_test`); None: no check.
    extra_test: the result of the task's extra test (dict with p_value, power
      and direction; its p-value joins the record test by Bonferroni), or None.
      Reported under ``class_level``.
    extra_only: the extra test covers every record of Du; its pass with
      enough power then counts as evidence
      even where the record test has none.
    gap_du: (n_du,) the fitted ``gap`` statistic of Du (:func:`neighbour_residual`),
      or None for the plain exact-minus-neighbours difference.
    gap_ref: (n_ref,) the same for D_ref (given together with ``gap_du``).
    reference: the result of :func:`reference_check` (the audit runner's
      full check); None: the single-statistic check of ``ver_du`` vs
      ``ver_ref`` (two-sided MWU at ``self_check_alpha``).
    signals_du: the task's Signals of Du (A views, n_du records), for the
      statistics beyond φ (``settings.statistics``); None: φ statistics only.
    signals_ref: the same for D_ref (given together with ``signals_du``).
    size_caps: caps on (n_du, n_ref, n_members) known to the caller, for the
      shape buckets of the batched programs (see :func:`forgetting_score_ci`).
  Returns:
    A JSON-serialisable dict: decision, direction, p_value, tests (per
    statistic: raw and family-adjusted p, AUC), test_level, record_statistics
    (per set and statistic, the per-record values tested), effect_auc (+ CI),
    forgetting_score (+ CI), power, per-record p-values.
  """
  cal_du, cal_ref = np.asarray(cal_du, np.float64), np.asarray(cal_ref, np.float64)
  if cal_du.ndim != 2 or cal_ref.ndim != 2 or cal_du.shape[0] != cal_ref.shape[0]:
    raise AuditError(f'calibrated scores must be (A, n) with the same A; got {cal_du.shape}, '
                     f'{cal_ref.shape}')
  if cal_du.shape[1] < 2 or cal_ref.shape[1] < 2:
    raise AuditError(f'the test needs at least 2 records in Du and in D_ref; got '
                     f'{cal_du.shape[1]} and {cal_ref.shape[1]}')
  for name, arr in (('Du scores', cal_du), ('D_ref scores', cal_ref)):
    if not np.all(np.isfinite(arr)):
      raise AuditError(f'{name} hold NaN or inf values')
  if (gap_du is None) != (gap_ref is None):
    raise AuditError('gap_du and gap_ref must be given together')
  if gap_du is not None and (np.shape(gap_du) != (cal_du.shape[1],)
                             or np.shape(gap_ref) != (cal_ref.shape[1],)):
    raise AuditError(f'gap statistics must have shapes ({cal_du.shape[1]},) and '
                     f'({cal_ref.shape[1]},); got {np.shape(gap_du)}, {np.shape(gap_ref)}')
  if (signals_du is None) != (signals_ref is None):
    raise AuditError('signals_du and signals_ref must be given together')
  s = settings
  # Every statistic the audit can compute is kept as evidence (record_statistics); the
  # test uses the family of the settings.
  every = evidence.family(tuple(evidence.STATISTICS), cal_du.shape[0], signals_du)
  all_du = evidence.compute(every, evidence.RecordSet(cal_du, gap_du, signals_du))
  all_ref = evidence.compute(every, evidence.RecordSet(cal_ref, gap_ref, signals_ref))
  names = evidence.family(s.statistics, cal_du.shape[0], signals_du)
  s_du, s_ref = evidence.with_spreads(names, all_du, all_ref)
  fam = record_family_test(s_du, s_ref, combine=s.combine, alpha=s.alpha)
  tests, combine_used, test_level = fam['tests'], fam['combine'], fam['test_level']
  adjusted = [tests[k]['p_adjusted'] for k in tests]
  p_record = float(np.min(adjusted))
  n_tests = len(tests)
  p_value = p_record
  if extra_test is not None:
    p_value = stats.combine_bonferroni([p_record, extra_test['p_value']])

  if reference is None:
    reference = reference_check(
        {'verifiers_phi': (np.asarray(ver_du, np.float64).reshape(-1),
                           np.asarray(ver_ref, np.float64).reshape(-1))},
        alpha=s.self_check_alpha, combine=s.combine)
  reference_ok = bool(reference['ok'])

  effect = tests['exact']['auc']
  effect_ci = stats.auc_confidence_interval(s_du['exact'], s_ref['exact'])

  power = float('nan')
  power_ci = [float('nan'), float('nan')]
  member_auc = float('nan')
  fs, fs_ci = float('nan'), (float('nan'), float('nan'))
  if cal_members is not None and np.shape(cal_members)[1] >= 2:
    cal_members = np.asarray(cal_members, np.float64)
    member_auc = stats.auc(cal_members[0], cal_ref[0])
    power = float(stats.mwu_power(max(member_auc, 1 - member_auc), cal_du.shape[1],
                                  cal_ref.shape[1], test_level))
    # The power estimate's own uncertainty, from the DeLong interval of the member AUC
    # (reported only: the pass rule uses the point estimate).
    lo, hi = stats.auc_confidence_interval(cal_members[0], cal_ref[0])
    d_lo = 0.0 if lo <= 0.5 <= hi else min(abs(lo - 0.5), abs(hi - 0.5))
    d_hi = max(abs(lo - 0.5), abs(hi - 0.5))
    power_ci = [float(stats.mwu_power(0.5 + d, cal_du.shape[1], cal_ref.shape[1], test_level))
                for d in (d_lo, d_hi)]
    fs = forgetting_score(cal_du[0], cal_ref[0], cal_members[0])
    if np.isfinite(fs):
      fs_ci = forgetting_score_ci(cal_du[0], cal_ref[0], cal_members[0], n_boot=s.n_boot,
                                  seed=s.seed, min_sizes=size_caps)

  # Per-record evidence: is each Du record more familiar than unseen data? Empirical
  # p-values against D_ref, continued by a normal tail beyond its 10th largest value, so
  # that they are not floored at 1 / (n_ref + 1) (jaxaudit.audit.records.p_values).
  per_record_score = cal_du.mean(0)
  per_record_p = records_lib.tail_p_values(per_record_score, cal_ref.mean(0))
  flagged = stats.benjamini_hochberg(per_record_p, s.fdr)

  utility = None
  if utility_ref is not None:
    utility = utility_test(*utility_ref, margin=s.collapse_margin, alpha=s.utility_alpha)
  collapse = bool(utility is not None and utility['collapse'])

  rejected = p_value <= s.alpha
  direction = None
  masked = False
  decision = verdict(reference_ok=reference_ok, rejected=rejected, collapse=collapse,
                     power=power, power_target=s.power_target,
                     extra_evidence=bool(extra_only and extra_test is not None
                                         and extra_test['power'] >= s.power_target))
  if decision == 'not_forgotten' and rejected:
    if extra_test is not None and extra_test['p_value'] <= s.alpha / 2 and (
        p_record > s.alpha / 2 or extra_test['p_value'] <= p_record):
      direction = extra_test.get('direction', 'remembers_class')
    else:
      level = s.alpha / (2 if extra_test is not None else 1)
      direction, masked = _direction(tests, level)
  elif decision == 'not_forgotten':
    direction = 'collapse'
  return dict(decision=decision, direction=direction, p_value=float(p_value), rejected=bool(rejected),
              p_record=float(p_record), class_level=extra_test,
              alpha=s.alpha, tests=tests, n_tests=n_tests, combine=combine_used,
              test_level=float(test_level),
              record_statistics=dict(forget={k: v.tolist() for k, v in all_du.items()},
                                     ref={k: v.tolist() for k, v in all_ref.items()}),
              exact_inputs_masked=bool(masked),
              effect_auc=float(effect), effect_auc_ci=[float(v) for v in effect_ci],
              member_auc=float(member_auc), power=power, power_ci=power_ci,
              power_target=s.power_target,
              forgetting_score=float(fs), forgetting_score_ci=list(fs_ci),
              reference_check=reference,
              forgetting_score_method=FORGETTING_SCORE_METHOD,
              utility_collapse=collapse, utility_test=utility,
              per_record=dict(score=per_record_score.tolist(), p_value=per_record_p.tolist(),
                              flagged=flagged.tolist(), fdr=s.fdr),
              n_forget=int(cal_du.shape[1]), n_ref=int(cal_ref.shape[1]),
              n_members=int(0 if cal_members is None else np.shape(cal_members)[1]))


def matched_sample(strata_du: np.ndarray | None, idx_pool: np.ndarray,
                   strata_pool: np.ndarray | None, max_size: int, seed: int
                   ) -> tuple[np.ndarray, bool]:
  """A sample of ``idx_pool`` whose strata proportions match Du's.

  Per stratum c with n_c records in Du, draws round(r · n_c) records of
  stratum c, with r the largest ratio every stratum can supply (capped by
  max_size). Strata come from the task (classes, for classifiers).

  Args:
    strata_du: (n_du,) strata of Du, or None (no strata: a uniform sample).
    idx_pool: (m,) indices to sample from.
    strata_pool: (m,) their strata, or None.
  Returns:
    (sorted sample of idx_pool, matched) — matched is False without strata
    or when some stratum of Du is absent from the pool; then the sample is
    uniform instead.
  """
  rng = np.random.default_rng([int(seed), 104729])
  if strata_du is None or strata_pool is None:
    n = min(max_size, len(idx_pool))
    return np.sort(rng.choice(idx_pool, n, replace=False)), False
  classes, counts = np.unique(strata_du, return_counts=True)
  avail = np.array([np.sum(strata_pool == c) for c in classes])
  if np.any(avail == 0):
    n = min(max_size, len(idx_pool))
    return np.sort(rng.choice(idx_pool, n, replace=False)), False
  r = min(np.min(avail / counts), max_size / counts.sum())
  out = []
  for c, n_c in zip(classes, counts):
    take = max(1, int(np.floor(r * n_c)))
    out.append(rng.choice(idx_pool[strata_pool == c], min(take, int(np.sum(strata_pool == c))),
                          replace=False))
  return np.sort(np.concatenate(out)), True
