"""Peer audits of language-model unlearning: MUSE's PrivLeak and TOFU's forget quality.

Both compare the unlearned model Mu with a model *retrained* without Du (the
cost jaxaudit's audit avoids), and neither has a calibrated decision rule
(TOFU reads its KS p-value as "forget quality"):

* **Min-K%++ MIA** (Zhang et al. 2024), used as MUSE's privacy-leak attack:
  each record scores :func:`jaxaudit.text.signals.min_k_plus_plus`; the attack's
  AUC separates Du (positives) from held-out records (negatives), with no
  reference model. :func:`minkpp_mia`.
* **PrivLeak** (MUSE, Shi et al. 2024): ``(AUC(Mu) - AUC(retrain)) / AUC(retrain)
  x 100``; ~0 is the retrained model's behaviour, > 0 under-unlearning
  (Du still looks like members), < 0 over-unlearning. :func:`privleak`.
* **Truth ratio** (TOFU, Maini et al. 2024) of a question with true answer a
  and false answers a'_1..a'_F: ``R = mean_j P(a'_j)^(1/|a'_j|) / P(a)^(1/|a|)``
  (computed in logs; single-token answers have length 1).
  :func:`answer_logprobs` reads the log-probs of the candidate answers from a
  jaxaudit LM at the probes' answer positions. :func:`truth_ratios`.
* **Forget quality** (TOFU): the p-value of the two-sample Kolmogorov-Smirnov
  test between the truth ratios of Mu and of the retrained model on the
  forget set's questions (high = indistinguishable). :func:`forget_quality`.

:func:`lm_peer_report` runs the three on Mu and the retrained model.
Arrays are NumPy on the host except :func:`answer_logprobs`, one compiled
program per shape bucket. Axis conventions: ``n`` records, ``T`` positions,
5 features (:data:`jaxaudit.models.transformer.FEATURES`), ``Q`` questions,
``F`` false answers.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from jaxaudit import io_utils
from jaxaudit.audit import stats
from jaxaudit.errors import AuditError
from jaxaudit.peers.base import as_float_array, check_level
from jaxaudit.text import signals

FORGET_QUALITY_RULE = ('forgotten if the KS test does not separate the truth ratios of Mu and '
                       'of the retrained model (p >= alpha; TOFU reads the p-value as forget '
                       'quality); not_forgotten otherwise')


# -----------------------------------------------------------------------------
# Min-K%++ MIA and PrivLeak (MUSE).
# -----------------------------------------------------------------------------


def _check_features(f: Any, name: str, *, need_moments: bool) -> np.ndarray:
  f = np.asarray(f)
  if f.ndim != 3 or f.shape[-1] != 5 or f.shape[0] < 1:
    raise AuditError(f'{name} must have shape (n, T, 5) with n >= 1; got {f.shape}')
  if not np.issubdtype(f.dtype, np.floating):
    raise AuditError(f'{name} must be floating point; got dtype {f.dtype}')
  f = f.astype(np.float64)
  valid = f[..., 4] > 0.5
  empty = ~valid.any(-1)
  if empty.any():
    raise AuditError(f'{name}: record {int(np.argmax(empty))} has no valid token '
                     f'({int(empty.sum())} such record(s))')
  cols = (0, 1, 2) if need_moments else (0,)
  bad = valid[..., None] & ~np.isfinite(f[..., cols])
  if bad.any():
    i = int(np.argwhere(bad)[0][0])
    hint = (' (mu/sigma are NaN when a token-logprobs file has no top-k: Min-K%++ then is '
            'unavailable)' if need_moments and np.isfinite(f[..., 0][valid]).all() else '')
    raise AuditError(f'{name}: non-finite features at valid positions of record {i}{hint}')
  return f


def minkpp_mia(features_forget: Any, features_holdout: Any, k: float = 0.2) -> dict[str, Any]:
  """Min-K%++ as a reference-free membership attack: AUC of Du vs held-out records.

  Args:
    features_forget: (n_f, T, 5) features of the model on Du (positives).
    features_holdout: (n_h, T, 5) features on held-out records (negatives).
    k: fraction of each record's tokens averaged by Min-K%++, in (0, 1].
  Returns:
    dict ``auc`` (float in [0, 1], 0.5 = chance; higher = Du looks more like
    members), ``scores_forget`` (n_f,), ``scores_holdout`` (n_h,) float64,
    ``k``, ``n_forget``, ``n_holdout``.
  Raises:
    AuditError: wrong shapes, a record without a valid token, or NaN mu/sigma
      (features from a token-logprobs file without top-k).
  """
  ff = _check_features(features_forget, 'features_forget', need_moments=True)
  fh = _check_features(features_holdout, 'features_holdout', need_moments=True)
  if not 0.0 < float(k) <= 1.0:
    raise AuditError(f'k must lie in (0, 1], got {k!r}')
  sf = signals.min_k_plus_plus(ff, k)
  sh = signals.min_k_plus_plus(fh, k)
  return dict(auc=stats.auc(sf, sh), scores_forget=sf, scores_holdout=sh, k=float(k),
              n_forget=int(sf.size), n_holdout=int(sh.size))


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
  """MUSE's PrivLeak: ``(AUC(Mu) - AUC(retrain)) / AUC(retrain) x 100``.

  Args:
    auc_unlearned: the MIA's AUC on the unlearned model, in [0, 1].
    auc_retrain: the same attack's AUC on the retrained model, in (0, 1].
  Returns:
    PrivLeak in percent (0 = as the retrained model; > 0 under-unlearning).
  """
  a_u = as_float_array(auc_unlearned, 'auc_unlearned', ndim=0)
  a_r = as_float_array(auc_retrain, 'auc_retrain', ndim=0)
  if not 0.0 <= a_u <= 1.0:
    raise AuditError(f'auc_unlearned must lie in [0, 1], got {float(a_u)}')
  if not 0.0 < a_r <= 1.0:
    raise AuditError(f'auc_retrain must lie in (0, 1], got {float(a_r)}')
  return float((a_u - a_r) / a_r * 100.0)


# -----------------------------------------------------------------------------
# Truth ratio and forget quality (TOFU).
# -----------------------------------------------------------------------------


def _positive_lengths(length: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
  arr = as_float_array(length, name)
  try:
    arr = np.broadcast_to(arr, shape)
  except ValueError:
    raise AuditError(f'{name} of shape {arr.shape} does not broadcast to {shape}') from None
  if not np.all(arr >= 1):
    raise AuditError(f'{name} must be answer lengths in tokens (>= 1)')
  return arr


def truth_ratios(logp_true: Any, logp_false: Any, len_true: Any = 1,
                 len_false: Any = 1) -> np.ndarray:
  """TOFU's truth ratio of each question.

  ``R_q = mean_j exp(logp_false[q, j] / len_false[q, j]) / exp(logp_true[q] / len_true[q])``,
  computed in logs (log-sum-exp), the mean over the question's given false
  answers (NaN entries of ``logp_false`` are missing answers, as the -1
  candidates of :func:`answer_logprobs`). R < 1: the model prefers the true answer.

  Args:
    logp_true: (Q,) finite log-prob of each question's true answer (summed over its tokens).
    logp_false: (Q, F) log-probs of the F false answers (NaN = missing).
    len_true: answer lengths in tokens, scalar or (Q,) (1 for single-token answers).
    len_false: scalar, (F,) or (Q, F).
  Returns:
    (Q,) float64 truth ratios; NaN for a question without any false answer.
  """
  lt = as_float_array(logp_true, 'logp_true', ndim=1)
  lf = as_float_array(logp_false, 'logp_false', ndim=2, finite=False)
  if lf.shape[0] != lt.shape[0]:
    raise AuditError(f'logp_false must have shape ({lt.shape[0]}, F); got {lf.shape}')
  if np.isinf(lf).any():
    raise AuditError('logp_false must be finite log-probs (NaN marks a missing answer)')
  if (lt > 1e-3).any() or (lf > 1e-3).any():
    raise AuditError('log-probs must be <= 0 (got a positive value: are these logits?)')
  nt = _positive_lengths(len_true, lt.shape, 'len_true')
  nf = _positive_lengths(len_false, lf.shape, 'len_false')
  given = ~np.isnan(lf)
  a = np.where(given, lf / nf, -np.inf)
  count = given.sum(-1)
  amax = np.where(count > 0, a.max(-1), 0.0)
  with np.errstate(divide='ignore', invalid='ignore'):
    log_mean_false = amax + np.log(np.exp(a - amax[:, None]).sum(-1) / count)
    return np.where(count > 0, np.exp(log_mean_false - lt / nt), np.nan)


def forget_quality(truth_ratios_unlearned: Any, truth_ratios_retain: Any) -> float:
  """TOFU's forget quality: the two-sample KS test p-value of the two truth-ratio samples.

  Args:
    truth_ratios_unlearned: (Q1,) truth ratios of the unlearned model.
    truth_ratios_retain: (Q2,) truth ratios of the model trained without Du.
    (NaN ratios, questions without a false answer, are left out.)
  Returns:
    The p-value of ``scipy.stats.ks_2samp`` (two-sided, method 'auto'), in [0, 1].
  """
  return _ks(truth_ratios_unlearned, truth_ratios_retain).p_value


def _ks(r_u: Any, r_r: Any) -> stats.TestResult:
  samples = []
  for name, r in (('truth_ratios_unlearned', r_u), ('truth_ratios_retain', r_r)):
    r = as_float_array(r, name, ndim=1, finite=False)
    r = r[~np.isnan(r)]
    if r.size == 0:
      raise AuditError(f'{name} holds no truth ratio (every question lacks a false answer)')
    samples.append(r)
  return stats.ks_2samp(*samples)


@functools.lru_cache(maxsize=16)
def _answer_program(model):
  import jax
  import jax.numpy as jnp
  from jaxaudit.models import make_apply_fn
  apply_fn = make_apply_fn(model)

  def one(params, x, pos, cand):   # x (B, T+1), pos (B,), cand (B, C) -> (B, C)
    logits = apply_fn(params, x)                                        # (B, T, V)
    row = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]  # (B, V)
    logp = jax.nn.log_softmax(row.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, cand, axis=1)

  def run(params, xb, pb, cb):     # leading axis: steps
    return jax.lax.map(lambda a: one(params, *a), (xb, pb, cb))

  return jax.jit(run)


def answer_logprobs(model, params, probes, candidates: Any = None, *,
                    batch_size: int = 128) -> np.ndarray:
  """Log-prob of each candidate answer token at each probe's answer position.

  Evaluated on the device in one compiled program per shape bucket
  (:func:`jaxaudit.train.evaluate.padded_layout`); only (Q, F+1) numbers come back.

  Args:
    model: a TransformerLM (any ``output``; evaluated as logits via
      ``model.clone(output='logits')``).
    params: its parameters (one model).
    probes: a :class:`jaxaudit.text.dataset.KnowledgeProbes`: ``tokens``
      (Q, T+1), ``answer_pos`` (Q,), ``answer`` (Q,), ``false_answers`` (Q, F).
    candidates: (Q, C) int token ids (-1: none, scored NaN), or None for
      ``[answer, *false_answers]`` (Q, F+1): column 0 the true answer.
    batch_size: probes per step.
  Returns:
    (Q, C) float32: ``log p(candidates[q, c] | tokens[q, :answer_pos[q]+1])``,
    NaN where the candidate is -1.
  """
  from jaxaudit.text.logprobs import logits_model
  from jaxaudit.train.evaluate import padded_layout
  model = logits_model(model)
  x = np.asarray(probes.tokens, np.float32)
  if x.ndim != 2 or x.shape[1] < 2:
    raise AuditError(f'probe tokens must have shape (Q, T+1); got {x.shape}')
  q, t = x.shape[0], x.shape[1] - 1
  pos = np.asarray(probes.answer_pos)
  if pos.shape != (q,) or pos.dtype.kind not in 'iu' or (pos < 0).any() or (pos >= t).any():
    raise AuditError(f'answer_pos must be ({q},) integers in [0, {t}); got shape {pos.shape} '
                     f'dtype {pos.dtype}')
  if candidates is None:
    candidates = np.concatenate([np.asarray(probes.answer)[:, None],
                                 np.asarray(probes.false_answers)], axis=1)
  cand = np.asarray(candidates)
  v = int(model.num_classes)
  if cand.ndim != 2 or cand.shape[0] != q or cand.dtype.kind not in 'iu':
    raise AuditError(f'candidates must be a ({q}, C) integer array; got shape {cand.shape} '
                     f'dtype {cand.dtype}')
  if (cand < -1).any() or (cand >= v).any():
    raise AuditError(f'candidates must be token ids in [0, {v}) or -1 (none)')
  steps, b = padded_layout(q, batch_size)
  xp = np.full((steps * b, t + 1), -1.0, np.float32)
  xp[:q] = x
  pp = np.zeros(steps * b, np.int32)
  pp[:q] = pos
  cp = np.zeros((steps * b, cand.shape[1]), np.int32)
  cp[:q] = np.maximum(cand, 0)
  out = _answer_program(model)(params, xp.reshape(steps, b, t + 1), pp.reshape(steps, b),
                               cp.reshape(steps, b, -1))
  out = np.asarray(out).reshape(steps * b, -1)[:q]
  return np.where(cand >= 0, out, np.nan).astype(np.float32)


# -----------------------------------------------------------------------------
# The report.
# -----------------------------------------------------------------------------


def lm_peer_report(features_forget_unlearned: Any, features_holdout_unlearned: Any,
                   features_forget_retrain: Any, features_holdout_retrain: Any,
                   answers_unlearned: Any = None, answers_retrain: Any = None, *,
                   k: float = 0.2, answer_lengths: Any = 1, alpha: float = 0.05,
                   retrain_wall_time_s: float = 0.0) -> dict[str, Any]:
  """MUSE PrivLeak and TOFU forget quality of Mu against a retrained model.

  Args:
    features_forget_unlearned: (n_f, T, 5) features of Mu on Du.
    features_holdout_unlearned: (n_h, T, 5) features of Mu on held-out records.
    features_forget_retrain: (n_f, T, 5) features of the retrained model on Du.
    features_holdout_retrain: (n_h, T, 5) the same on the held-out records.
    answers_unlearned: (Q, F+1) log-probs of Mu on the forget set's probe
      answers (column 0 the true answer; :func:`answer_logprobs`), or None to
      skip the truth ratio / forget quality.
    answers_retrain: (Q', F+1) the same for the retrained model.
    k: Min-K%++ fraction.
    answer_lengths: answer lengths in tokens, scalar or broadcastable to
      (Q, F+1) (1: single-token answers).
    alpha: level of the forget-quality decision.
    retrain_wall_time_s: the time it took to retrain (reported as cost).
  Returns:
    JSON-safe dict: ``privleak`` (percent), ``minkpp_auc`` {unlearned,
    retrain}, ``forget_quality`` (p-value or None), ``ks_statistic``,
    ``truth_ratio_mean`` {unlearned, retrain}, ``decision`` (forget quality
    at ``alpha``, or None), ``rule``, ``k``, ``alpha``, ``sizes``, and ``cost``
    {``models_trained``: 1 (the retrained model), ``retrained``,
    ``wall_time_s``: retraining plus this call}.
  """
  t0 = time.time()
  alpha = check_level(alpha, 'alpha')
  mu = minkpp_mia(features_forget_unlearned, features_holdout_unlearned, k)
  rt = minkpp_mia(features_forget_retrain, features_holdout_retrain, k)
  out: dict[str, Any] = dict(
      privleak=privleak(mu['auc'], rt['auc']),
      minkpp_auc=dict(unlearned=mu['auc'], retrain=rt['auc']),
      forget_quality=None, ks_statistic=None, truth_ratio_mean=None, decision=None,
      rule=FORGET_QUALITY_RULE, k=float(k), alpha=alpha,
      sizes=dict(forget=mu['n_forget'], holdout=mu['n_holdout'], questions=None))
  if (answers_unlearned is None) != (answers_retrain is None):
    raise AuditError('answers_unlearned and answers_retrain must be given together')
  if answers_unlearned is not None:
    ratios = {}
    for name, ans in (('unlearned', answers_unlearned), ('retrain', answers_retrain)):
      a = as_float_array(ans, f'answers_{name}', ndim=2, finite=False)
      if a.shape[1] < 2:
        raise AuditError(f'answers_{name} must have shape (Q, F+1) with F >= 1; got {a.shape}')
      lens = _positive_lengths(answer_lengths, a.shape, 'answer_lengths')
      ratios[name] = truth_ratios(a[:, 0], a[:, 1:], lens[:, 0], lens[:, 1:])
    ks = _ks(ratios['unlearned'], ratios['retrain'])
    out.update(forget_quality=ks.p_value, ks_statistic=ks.statistic,
               truth_ratio_mean={n: float(np.nanmean(r)) for n, r in ratios.items()},
               decision='forgotten' if ks.p_value >= alpha else 'not_forgotten')
    out['sizes']['questions'] = {n: int(np.sum(~np.isnan(r))) for n, r in ratios.items()}
  out['cost'] = dict(models_trained=1, retrained=['a model retrained without Du'],
                     wall_time_s=float(retrain_wall_time_s) + time.time() - t0)
  return io_utils.jsonable(out)


__all__ = ['FORGET_QUALITY_RULE', 'answer_logprobs', 'forget_quality', 'lm_peer_report',
           'minkpp_mia', 'privleak', 'truth_ratios']
