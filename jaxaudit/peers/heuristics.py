"""The behavioural heuristics of the seed audit code (Mu vs an ensemble of verifiers).

Per record set (e.g. Du, Dr, test, D_ref), with p_Mu the audited model's
softmax and p̄ = mean_k p_Mv_k the verifier ensemble's averaged probabilities:

  kl           mean over records of KL(p_Mu ‖ p̄)
  agreement    fraction of records where argmax p_Mu == argmax p̄
  consistency  fraction where Mu and the ensemble are both right or both wrong
  gap          |agreement(Mu, Mv) − agreement(B1, B2)|, with B1, B2 two
               independently trained models giving the natural level of
               agreement (by default the first two verifiers)

and, between Du and D_ref, a two-sample Kolmogorov–Smirnov test of the
"truth ratio" p_Mu(y|x) / p̄(y|x) (computed on the log scale; KS is invariant
to that monotone map). The seed code has no threshold and no p-value, so the
decision is None; ``ks_rule=True`` adopts the optional rule "not_forgotten iff
KS p < alpha". argmax ties go to the lowest class index.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

from jaxaudit.audit import stats
from jaxaudit.peers.base import PeerResult, check_level, check_request, \
    shadow_view_logits, target_logits as query_target
from jaxaudit.tasks.classification import check_logits
from jaxaudit.audit.target import Target
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError

RULE_NONE = ('no decision rule (the seed audit code reports the heuristics without a '
             'threshold); optional rule: not_forgotten iff the KS test of truth ratios '
             '(Du vs D_ref) gives p < alpha')
RULE_KS = 'not_forgotten iff the two-sided KS test of truth ratios, Du vs D_ref, gives p < alpha'


def _as_mapping(obj: Any, name: str) -> Mapping[str, Any]:
  if not isinstance(obj, Mapping) or not obj:
    raise AuditError(f'{name} must be a non-empty mapping set name -> array, got '
                     f'{type(obj).__name__}')
  return obj


def _labels(y: Any, n: int, c: int, name: str) -> np.ndarray:
  y = np.asarray(y)
  if y.shape != (n,) or (y.size and y.dtype.kind not in 'iu'):
    raise AuditError(f'{name} must be an int array of shape ({n},), got {y.shape} {y.dtype}')
  if y.size and (y.min() < 0 or y.max() >= c):
    raise AuditError(f'{name} must lie in [0, {c})')
  return y.astype(np.int64)


def _set_stats(lt: np.ndarray, lv: np.ndarray, y: np.ndarray,
               pair: tuple[np.ndarray, np.ndarray] | None) -> tuple[dict, np.ndarray]:
  """Statistics of one set; returns (stats dict, per-record log truth ratios)."""
  logp_t = special.log_softmax(lt.astype(np.float64), axis=-1)               # (n, C)
  logp_v = special.log_softmax(lv.astype(np.float64), axis=-1)               # (K, n, C)
  logp_bar = special.logsumexp(logp_v, axis=0) - np.log(lv.shape[0])         # (n, C)
  kl = np.sum(np.exp(logp_t) * (logp_t - logp_bar), axis=-1)
  top_t = np.argmax(logp_t, -1)
  top_v = np.argmax(logp_bar, -1)
  agree = float(np.mean(top_t == top_v))
  out = dict(n=int(len(y)), kl=float(np.mean(kl)), agreement=agree,
             consistency=float(np.mean((top_t == y) == (top_v == y))),
             accuracy_target=float(np.mean(top_t == y)),
             accuracy_verifiers=float(np.mean(top_v == y)))
  if pair is not None:
    base = float(np.mean(np.argmax(pair[0], -1) == np.argmax(pair[1], -1)))
    out.update(baseline_agreement=base, gap=abs(agree - base))
  rows = np.arange(len(y))
  return out, logp_t[rows, y] - logp_bar[rows, y]


def heuristics(target_logits: Mapping[str, Any], verifier_logits: Mapping[str, Any],
               labels: Mapping[str, Any], *,
               baseline_logits_pair: Mapping[str, Any] | None = None,
               ks_sets: tuple[str, str] = ('forget', 'ref'), ks_rule: bool = False,
               alpha: float = 0.05) -> PeerResult:
  """KL, agreement, consistency, agreement gap and the truth-ratio KS test.

  Args:
    target_logits: set name -> (n, C) logits of Mu. Must include ``'forget'``
      (Du); ``'ref'`` (D_ref) enables the KS test.
    verifier_logits: set name -> (K, n, C) logits of K >= 1 verifiers (same
      set names).
    labels: set name -> (n,) int true labels.
    baseline_logits_pair: set name -> a pair (B1, B2) of (n, C) logits (or a
      (2, n, C) array) of two independently trained models. Default: the
      first two verifiers when K >= 2; no gap otherwise.
    ks_sets: the two sets compared by the KS test.
    ks_rule: adopt "not_forgotten iff KS p < alpha" as the decision.
    alpha: level of the KS rule.
  Returns:
    PeerResult with score = mean KL(Mu ‖ verifier ensemble) on Du, decision
    None (or the KS rule), details ``sets`` (per-set statistics) and ``ks``.
    Cost: 0 models.
  """
  t0 = time.time()
  tl = _as_mapping(target_logits, 'target_logits')
  vl = _as_mapping(verifier_logits, 'verifier_logits')
  ys = _as_mapping(labels, 'labels')
  if set(tl) != set(vl) or set(tl) != set(ys):
    raise AuditError(f'target_logits, verifier_logits and labels must name the same sets; got '
                     f'{sorted(tl)}, {sorted(vl)}, {sorted(ys)}')
  if 'forget' not in tl:
    raise AuditError(f"the sets must include 'forget' (Du); got {sorted(tl)}")
  alpha = check_level(alpha, 'alpha')
  if baseline_logits_pair is not None:
    baseline_logits_pair = _as_mapping(baseline_logits_pair, 'baseline_logits_pair')
  c = np.shape(tl['forget'])[-1] if np.ndim(tl['forget']) else 0
  if c < 2:
    raise AuditError(f"target_logits['forget'] must be (n, C) with C >= 2, got "
                     f'{np.shape(tl["forget"])}')
  sets, ratios = {}, {}
  for name in tl:
    t = np.asarray(tl[name])
    v = np.asarray(vl[name])
    if t.ndim != 2:
      raise AuditError(f"target_logits['{name}'] must be (n, C), got {t.shape}")
    if v.ndim != 3 or v.shape[1:] != t.shape or v.shape[0] < 1:
      raise AuditError(f"verifier_logits['{name}'] must be (K, n, C) = (K, {t.shape[0]}, "
                       f'{t.shape[1]}), got {v.shape}')
    if t.shape[0] < 1:
      raise AuditError(f"set '{name}' holds no records")
    check_logits(t, c, f"target_logits['{name}']")   # validation; keep the precision
    check_logits(v, c, f"verifier_logits['{name}']")
    t, v = t.astype(np.float64), v.astype(np.float64)
    y = _labels(ys[name], t.shape[0], c, f"labels['{name}']")
    pair = None
    if baseline_logits_pair is not None:
      if name not in baseline_logits_pair:
        raise AuditError(f"baseline_logits_pair lacks set '{name}'")
      b = baseline_logits_pair[name]
      if len(b) != 2:
        raise AuditError(f"baseline_logits_pair['{name}'] must hold two (n, C) arrays")
      pair = tuple(np.asarray(bi) for bi in b)
      for i, bi in enumerate(pair):
        check_logits(bi, c, f"baseline_logits_pair['{name}'][{i}]")
      if any(p.shape != t.shape for p in pair):
        raise AuditError(f"baseline_logits_pair['{name}'] must be two arrays of shape "
                         f'{t.shape}')
    elif v.shape[0] >= 2:
      pair = (v[0], v[1])
    sets[name], ratios[name] = _set_stats(t, v, y, pair)

  ks = None
  a, b = ks_sets
  if a in ratios and b in ratios and len(ratios[a]) and len(ratios[b]):
    res = stats.ks_2samp(ratios[a], ratios[b])
    ks = dict(sets=[a, b], statistic=res.statistic, p_value=res.p_value, auc=res.auc,
              mean_log_truth_ratio={a: float(ratios[a].mean()), b: float(ratios[b].mean())})
  if ks_rule and ks is None:
    raise AuditError(f'ks_rule needs both sets {ks_sets} in the inputs')
  decision = None
  if ks_rule:
    decision = 'not_forgotten' if ks['p_value'] < alpha else 'forgotten'
  details = dict(sets=sets, ks=ks, alpha=alpha, ks_rule=bool(ks_rule),
                 baseline=('given' if baseline_logits_pair is not None else
                           'first two verifiers' if np.shape(vl['forget'])[0] >= 2 else 'none'),
                 num_verifiers=int(np.shape(vl['forget'])[0]))
  return PeerResult(name='heuristics', score=sets['forget']['kl'], decision=decision,
                    rule=RULE_KS if ks_rule else RULE_NONE, details=details,
                    cost=dict(models_trained=0, wall_time_s=time.time() - t0))


def heuristics_audit(target: Target, dataset: Dataset, split: AuditSplit, verifier_model,
                     verifier_params: Any, *, baseline: tuple[Any, Any] | None = None,
                     sets: Sequence[str] = ('forget', 'retain', 'test', 'ref'),
                     sample: int = 2000, seed: int = 0, ks_rule: bool = False,
                     alpha: float = 0.05) -> PeerResult:
  """Queries Mu and stacked verifiers on the split's sets, then :func:`heuristics`.

  Args:
    target: the audited model Mu.
    dataset: the data the split indexes.
    split: the audit request.
    verifier_model: Linen module of the verifiers.
    verifier_params: stacked (K, ...) verifier params (e.g. ``VerifierSet.params``).
    baseline: optional (model, stacked params of 2 models) for B1, B2.
    sets: which of ``forget``, ``retain``, ``test``, ``ref`` to evaluate.
    sample: at most this many records per set (random, seeded).
    seed: sampling seed.
    ks_rule: see :func:`heuristics`.
    alpha: see :func:`heuristics`.
  Returns:
    The :func:`heuristics` result (cost 0: the verifiers are supplied).
  """
  check_request(target, dataset, split, min_forget=1, min_ref=1)
  unknown = [s for s in sets if s not in ('forget', 'retain', 'test', 'ref')]
  if unknown or 'forget' not in sets:
    raise AuditError(f"sets must include 'forget' and be among forget/retain/test/ref; got "
                     f'{list(sets)}')
  rng = np.random.default_rng([int(seed), 99])
  tl, vl, ys, bl = {}, {}, {}, {}
  for name in sets:
    idx = np.asarray(getattr(split, name), np.int64)
    if len(idx) > sample:
      idx = np.sort(rng.choice(idx, sample, replace=False))
    is_test = name == 'test'
    tl[name] = query_target(target, dataset, idx, ('identity',), seed=seed, test=is_test)[0]
    vl[name] = shadow_view_logits(verifier_model, verifier_params, dataset, idx, ('identity',),
                                  test=is_test, name='verifiers')[0]
    ys[name] = (dataset.y_test if is_test else dataset.y_train)[idx]
    if baseline is not None:
      lg = shadow_view_logits(baseline[0], baseline[1], dataset, idx, ('identity',),
                              test=is_test, name='baseline models')[0]
      if lg.shape[0] != 2:
        raise AuditError(f'baseline params must stack exactly 2 models, got {lg.shape[0]}')
      bl[name] = (lg[0], lg[1])
  return heuristics(tl, vl, ys, baseline_logits_pair=bl if baseline is not None else None,
                    ks_rule=ks_rule, alpha=alpha)
