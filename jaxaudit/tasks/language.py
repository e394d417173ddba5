"""The language-model task: per-token features, document likelihoods and the knowledge test.

A record is one window of a document (``(T+1,)`` token ids, right-padded with
-1; :mod:`jaxaudit.text.dataset`). The model answers a record with per-position
features ``(T, 5)`` computed on the device (:mod:`jaxaudit.models.transformer`):
the log-probability of the actual next token, the mean and standard deviation
of the log-probabilities under the model's own next-token distribution (for
Min-K%++), its top-1 token and a validity flag. Every audit signal is a
function of these, so a user's own LM enters through a log-prob file
(:mod:`jaxaudit.text.logprobs`) exactly like our transformer.

Signals (per record, higher = more familiar):

  φ               the document's membership score, by default its mean token
                  log-likelihood (the LOSS attack); ``min_k`` and
                  ``min_k_plus_plus`` (Min-K%++) are options. The verifiers
                  calibrate it exactly as for classifiers (φ_Mu − mean φ_v: the
                  reference-model attack, with references that never saw Du).
  correct         the fraction of the record's tokens on which the model's top-1
                  prediction is the actual token.
  agreement       the fraction of positions where Mu's top-1 token is verifier k's.
  kl              mean over the record's tokens of |log p_Mu(x_t) − log p_v(x_t)|:
                  a divergence of Mu's next-token distribution from the
                  verifier's along the document (the full distributions are not
                  kept: a (T, V) output per record would not fit in memory).
  kl_ensemble     the same against the verifiers' mixture, log mean_k p_vk(x_t).

Neighbour views: ``paraphrase`` (a held-out paraphrase of the same content,
never trained on — the synthetic corpus has one per document) and
``perturb``/``perturb_j`` (10% of the record's tokens after the first replaced
by random vocabulary tokens, drawn from the record's id and the seed). A model
that masks only the exact text of Du still scores Du's paraphrases and
perturbed copies like M does, so the neighbour statistics catch it.

The knowledge test (the analogue of the whole-class test): when the data set
carries question/answer probes for the people of Du
(:class:`jaxaudit.text.dataset.KnowledgeProbes`), Mu's top-1 answer at each
probe's answer position is compared with the verifiers' — models that never saw
any of Du's people and can only guess — by the exact binomial test of
:func:`jaxaudit.audit.decision.utility_level_test` (H0: Mu's accuracy ≤ the best
verifier's + ``class_margin``); its p-value joins the record test by
Bonferroni, direction ``remembers_knowledge``. Such requests need verifiers
that never saw any of Du (no bank).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxaudit.errors import AuditError
from jaxaudit.tasks.base import Signals, Task

F_LOGP, F_MU, F_SIGMA, F_ARGMAX, F_VALID = range(5)
NUM_FEATURES = 5
PHI_SIGNALS = ('mean_loglik', 'min_k', 'min_k_plus_plus')
PERTURB_VIEWS = ('perturb',) + tuple(f'perturb_{j}' for j in range(1, 8))
PERTURB_RATE = 0.1


def params_fingerprint(params) -> str:
  """sha256 (24 hex digits) over :func:`jaxaudit.checkpoint.param_digests` of a pytree."""
  import hashlib
  import json
  from jaxaudit.checkpoint import param_digests
  return hashlib.sha256(json.dumps(param_digests(params), sort_keys=True).encode()
                        ).hexdigest()[:24]


def _valid(f: np.ndarray) -> np.ndarray:
  return np.asarray(f[..., F_VALID]) > 0.5


def _mean_valid(v: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Mean of v (..., T) over valid positions -> (...); NaN where a record has none."""
  cnt = valid.sum(-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(cnt > 0, np.where(valid, v, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def membership_scores(features: np.ndarray, signal: str = 'mean_loglik', k: float = 0.2
                      ) -> np.ndarray:
  """φ of each record: features (..., n, T, 5) -> (..., n) float64 (NaN: no valid token)."""
  from jaxaudit.text import signals as text_signals
  if signal not in PHI_SIGNALS:
    raise AuditError(f'unknown language-model signal {signal!r}; choose one of {PHI_SIGNALS}')
  return text_signals.compute(signal, np.asarray(features, np.float64), k=k)


def token_correct(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Fraction of valid tokens predicted top-1: (..., n, T, 5), targets (n, T) -> (..., n)."""
  f = np.asarray(features)
  valid = _valid(f)
  hit = np.rint(f[..., F_ARGMAX]).astype(np.int64) == np.asarray(targets, np.int64)
  return _mean_valid(hit.astype(np.float64), valid)


def token_accuracy(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Top-1 accuracy over every valid token of a record set: (..., n, T, 5), (n, T) -> (...)."""
  f = np.asarray(features)
  valid = _valid(f)
  hit = (np.rint(f[..., F_ARGMAX]).astype(np.int64) == np.asarray(targets, np.int64)) & valid
  return hit.sum((-1, -2)) / np.maximum(valid.sum((-1, -2)), 1)


def perturb_tokens(x: np.ndarray, record_ids: np.ndarray, view: str, vocab_size: int,
                   seed: int) -> np.ndarray:
  """Token-substituted copies of records: x (n, T+1) float ids (-1 pad) -> (n, T+1).

  Each valid token after the first is replaced, with probability
  :data:`PERTURB_RATE`, by a uniform random token; the draws are a function of
  (seed, record id, view) only, so a record's neighbour never depends on the set it is in.
  """
  draw = 0 if view == 'perturb' else int(view.split('_')[1])
  out = np.array(x, np.float32, copy=True)
  for i, rid in enumerate(np.asarray(record_ids, np.int64)):
    rng = np.random.default_rng([int(seed), int(rid) % (2**62), 7919, draw])
    row = out[i]
    valid = row >= 0
    valid[0] = False
    hit = valid & (rng.random(row.shape) < PERTURB_RATE)
    row[hit] = rng.integers(0, vocab_size, int(hit.sum()))
  return out


class LanguageModeling(Task):
  """A causal LM over ``vocab_size`` tokens whose outputs are (T, 5) features per record.

  Args:
    vocab_size: V.
    context: T.
    signal: φ, one of :data:`PHI_SIGNALS`.
    k: the fraction of Min-K% / Min-K%++.
    neighbours: view name -> (N, T+1) rows of the pool (``paraphrase``), or None.
    knowledge: :class:`jaxaudit.text.dataset.KnowledgeProbes` of the data set, or None.
    base_params: parameters of the base LM every fine-tuned model starts from (the
      verifiers start from it too), or None (verifiers start from scratch).
    base_id: a fingerprint of ``base_params`` (keys the verifier cache).
    groups: (N,) group id of each pool record (a person, an author), for the
      knowledge test; None: no knowledge test.
    test_groups: (M,) group id of each test record, or None (the units of the
      audit's utility test on test records, :meth:`test_units`).
  """

  name = 'language_model'

  def __init__(self, vocab_size: int, context: int, *, signal: str = 'mean_loglik',
               k: float = 0.2, neighbours: dict[str, np.ndarray] | None = None,
               knowledge: Any = None, base_params: Any = None, base_id: str = '',
               groups: np.ndarray | None = None, test_groups: np.ndarray | None = None):
    if int(vocab_size) < 2 or int(context) < 1:
      raise AuditError(f'a language-model task needs vocab_size >= 2 and context >= 1, got '
                       f'{vocab_size}, {context}')
    if signal not in PHI_SIGNALS:
      raise AuditError(f'unknown language-model signal {signal!r}; choose one of {PHI_SIGNALS}')
    if not 0 < k <= 1:
      raise AuditError(f'k must be in (0, 1], got {k}')
    self.vocab_size, self.context = int(vocab_size), int(context)
    self.signal, self.k = signal, float(k)
    self.neighbours = dict(neighbours or {})
    self.knowledge = knowledge
    if base_params is not None and not base_id:
      base_id = params_fingerprint(base_params)
    self.base_params, self.base_id = base_params, str(base_id)
    self.groups = None if groups is None else np.asarray(groups)
    self.test_groups = None if test_groups is None else np.asarray(test_groups)
    self.top1 = True        # the outputs carry the model's top-1 token (see for_target)

  @classmethod
  def for_dataset(cls, dataset, **kwargs) -> 'LanguageModeling':
    """The task of a :class:`jaxaudit.text.dataset.TextDataset` (its neighbours and probes)."""
    return cls(dataset.num_classes, dataset.input_shape[0] - 1,
               neighbours=getattr(dataset, 'neighbours', None),
               knowledge=getattr(dataset, 'knowledge', None),
               groups=getattr(dataset, 'groups', None),
               test_groups=getattr(dataset, 'test_groups', None), **kwargs)

  def __repr__(self) -> str:
    return (f'LanguageModeling(vocab_size={self.vocab_size}, context={self.context}, '
            f'signal={self.signal!r})')

  def for_target(self, target) -> 'LanguageModeling':
    """Adapts to a log-prob table without top-k (:mod:`jaxaudit.text.logprobs`): its
    top-1 tokens are unknown (-1), so agreement is left out of the test and a record's
    utility is its per-token probability exp(mean log p) for every model (Mu and
    verifiers alike); its mu/sigma are NaN, so Min-K%++ is refused."""
    table = getattr(target, 'table', None)
    if table is None:
      return self
    f = np.asarray(table['logits'])
    valid = f[..., F_VALID] > 0.5
    if not np.any(valid & (f[..., F_ARGMAX] < 0)):
      return self
    if self.signal == 'min_k_plus_plus':
      raise AuditError(f"{target.name}: Min-K%++ needs the model's top-k next-token "
                       'distribution; the log-prob file has none (add topk_ids/topk_logprobs, '
                       "or audit with signal='mean_loglik')")
    import copy
    out = copy.copy(self)
    out.top1 = False
    return out

  # -- outputs ---------------------------------------------------------------------------------
  def query_model(self, model):
    """The module that answers queries: a :class:`TransformerLM` with ``output='features'``."""
    if getattr(model, 'output', 'features') != 'features':
      return model.clone(output='features')
    return model

  def check_outputs(self, outputs, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """(..., n, T, 5) float features, checked; returned as float32."""
    out = np.asarray(outputs)
    if out.ndim < 3 or out.shape[-2:] != (self.context, NUM_FEATURES):
      raise AuditError(f'{name} must be per-token features of shape (..., n, {self.context}, '
                       f'{NUM_FEATURES}); got {out.shape}')
    if not np.issubdtype(out.dtype, np.floating):
      raise AuditError(f'{name} must be floating point, got {out.dtype}')
    valid = out[..., F_VALID]
    if np.any((valid != 0) & (valid != 1) & np.isfinite(valid)):
      raise AuditError(f'{name}: the validity feature must be 0 or 1')
    logp = np.where(valid > 0.5, out[..., F_LOGP], 0.0)
    if not allow_nonfinite:
      bad = ~np.isfinite(logp)
      if bad.any():
        rows = np.unique(np.nonzero(bad)[-2])
        raise AuditError(f'{name} holds NaN or inf log-probabilities in {len(rows)} record(s), '
                         f'e.g. at positions {rows[:5].tolist()}')
    if np.any(np.nan_to_num(logp) > 1e-3):
      raise AuditError(f'{name}: token log-probabilities must be <= 0')
    return out.astype(np.float32)

  def nonfinite(self, outputs) -> np.ndarray:
    """(A, n, T, 5) or (n, T, 5) -> (n,) bool: records with a NaN/inf log-prob at a valid token."""
    out = np.asarray(outputs)
    logp = np.where(out[..., F_VALID] > 0.5, out[..., F_LOGP], 0.0)
    bad = ~np.isfinite(logp).all(-1)
    return bad if bad.ndim == 1 else bad.any(tuple(range(bad.ndim - 1)))

  # -- signals ---------------------------------------------------------------------------------
  def membership_score(self, outputs, targets) -> np.ndarray:
    """φ (:func:`membership_scores` with the task's signal): (..., n, T, 5) -> (..., n)."""
    del targets
    return membership_scores(outputs, self.signal, self.k)

  def signals(self, target_outputs, verifier_outputs, targets) -> Signals:
    """(A, n, T, 5), (A, K, n, T, 5), targets (n, T) -> :class:`Signals` (module docstring)."""
    t = np.asarray(target_outputs, np.float64)
    v = np.asarray(verifier_outputs, np.float64)
    if v.ndim != 5 or v.shape[0] != t.shape[0] or v.shape[2:] != t.shape[1:]:
      raise AuditError(f'verifier outputs {v.shape} do not match target outputs {t.shape} '
                       'as (A, K, n, T, 5)')
    phi_t = membership_scores(t, self.signal, self.k)
    phi_v = membership_scores(v, self.signal, self.k)
    valid = _valid(t)[:, None]                                          # (A, 1, n, T)
    lp_t, lp_v = t[..., F_LOGP][:, None], v[..., F_LOGP]
    agreement = _mean_valid((np.rint(t[..., F_ARGMAX])[:, None] == np.rint(v[..., F_ARGMAX])
                             ).astype(np.float64), valid)
    kl = _mean_valid(np.abs(lp_t - lp_v), valid)
    m = v[..., F_LOGP].max(1, keepdims=True)
    log_mix = (m + np.log(np.exp(v[..., F_LOGP] - m).mean(1, keepdims=True)))[:, 0]
    kl_ens = _mean_valid(np.abs(t[..., F_LOGP] - log_mix), valid[:, 0])
    tgt = np.asarray(targets)
    return Signals(
        phi_target=phi_t, phi_verifiers=phi_v, calibrated=phi_t - phi_v.mean(1),
        loss_target=self.record_loss(t, tgt),
        agreement=agreement if self.top1 else None, kl=kl,
        correct_target=self.record_utility(t[0], tgt),
        correct_verifiers=self.record_utility(v[0], tgt), kl_ensemble=kl_ens)

  def record_loss(self, outputs, targets) -> np.ndarray:
    """Per-record mean token NLL (minus the ``mean_loglik`` signal): (..., n, T, 5), targets
    (n, T) -> (..., n) float64 (NaN for a record without a valid token)."""
    del targets
    return -membership_scores(outputs, 'mean_loglik')

  def record_utility(self, outputs, targets) -> np.ndarray:
    """Per-record utility (..., n, T, 5) -> (..., n): token top-1 accuracy, or without
    top-1 tokens the per-token probability exp(mean log p)."""
    f = np.asarray(outputs)
    if self.top1:
      return token_correct(f, targets)
    return np.exp(membership_scores(f, 'mean_loglik'))

  def test_units(self, test_idx: np.ndarray) -> np.ndarray | None:
    """The groups of test records test_idx (n,) -> (n,), None without groups."""
    return None if self.test_groups is None else self.test_groups[np.asarray(test_idx, np.int64)]

  def utility(self, outputs, targets) -> np.ndarray:
    """Token top-1 accuracy over all valid tokens (:func:`token_accuracy`; without top-1
    tokens: the per-token probability exp(mean log p) over all valid tokens):
    (..., n, T, 5), (n, T) -> (...)."""
    f = np.asarray(outputs)
    if not self.top1:
      valid = _valid(f)
      lp = np.where(valid, np.asarray(f[..., F_LOGP], np.float64), 0.0)
      return np.exp(lp.sum((-1, -2)) / np.maximum(valid.sum((-1, -2)), 1))
    return token_accuracy(f, targets)

  # -- views -----------------------------------------------------------------------------------
  def default_views(self, input_shape: tuple[int, ...], flips: bool = False) -> tuple[str, ...]:
    """identity, perturb, and paraphrase where the data set has paraphrases."""
    del input_shape, flips
    return ('identity', 'perturb') + (('paraphrase',) if 'paraphrase' in self.neighbours else ())

  def available_views(self) -> tuple[str, ...]:
    return ('identity',) + PERTURB_VIEWS + tuple(self.neighbours)

  def query_views(self, x: np.ndarray, record_ids: np.ndarray, views: tuple[str, ...], *,
                  seed: int = 0, min_records: int = 0) -> np.ndarray:
    """(n, T+1) records -> (A, n, T+1): the exact text, perturbed copies, paraphrases.

    A record without a paraphrase (a -1 row) keeps its own text in that view, so its
    neighbour statistic is its exact one (documented: only records with a
    paraphrase gain the paraphrase evidence).
    """
    del min_records
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != self.context + 1:
      raise AuditError(f'language-model records must have shape (n, {self.context + 1}); got '
                       f'{x.shape}')
    out = []
    for v in views:
      if v == 'identity':
        out.append(x)
      elif v in PERTURB_VIEWS:
        out.append(perturb_tokens(x, record_ids, v, self.vocab_size, seed))
      elif v in self.neighbours:
        rows = np.asarray(self.neighbours[v], np.float32)[np.asarray(record_ids, np.int64)]
        none = rows[:, 1] < 0
        out.append(np.where(none[:, None], x, rows))
      else:
        raise AuditError(f'unknown language-model view {v!r}; choose from '
                         f'{self.available_views()}')
    return np.stack(out)

  def input_statistics(self, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-record length (valid tokens) and mean token id: (n, T+1) -> name -> (n,)."""
    x = np.asarray(x, np.float64)
    valid = x >= 0
    return {'input_length': valid.sum(1).astype(np.float64),
            'input_mean': np.where(valid, x, 0).sum(1) / np.maximum(valid.sum(1), 1)}

  def output_statistics(self, verifier_outputs) -> dict[str, np.ndarray]:
    """The verifiers' mean next-token entropy per record: (K, n, T, 5) -> (n,)."""
    f = np.asarray(verifier_outputs, np.float64)
    return {'verifiers_entropy': np.nan_to_num(_mean_valid(-f[..., F_MU], _valid(f))).mean(0)}

  def units(self, idx: np.ndarray) -> np.ndarray | None:
    """The groups (people, speakers) of pool records idx (n,) -> (n,), None without groups."""
    return None if self.groups is None else self.groups[np.asarray(idx, np.int64)]

  def loss(self):
    """The training loss of the LM and its verifiers: mean token NLL (:class:`TokenCE`)."""
    from jaxaudit.train.loop import TokenCE
    return TokenCE()

  # -- verifiers and the knowledge test --------------------------------------------------------
  def initial_params(self):
    """(params of the base LM or None, its fingerprint) — the verifiers start from it."""
    return self.base_params, self.base_id

  def _probes_of(self, split) -> np.ndarray:
    """Indices of the knowledge probes of Du's groups (empty without probes)."""
    if self.knowledge is None or self.groups is None:
      return np.zeros(0, np.int64)
    du_groups = np.unique(self.groups[np.asarray(split.forget)])
    return np.flatnonzero(np.isin(np.asarray(self.knowledge.group), du_groups))

  def needs_unseen_verifiers(self, dataset, split, settings) -> bool:
    """True when the knowledge test applies (its verifiers must never have seen Du's people)."""
    del dataset
    return bool(settings.class_test and len(self._probes_of(split)))

  def extra_test(self, dataset, split, settings, query, alt_utility):
    """The knowledge test (module docstring): top-1 answers at the probes of Du's people."""
    del dataset, alt_utility
    if not settings.class_test:
      return None, False
    probes = self._probes_of(split)
    if not len(probes):
      return None, False
    if not getattr(query, 'answers_inputs', True) or not self.top1:
      return None, False      # a table answers its own records only: no knowledge test
    kp = self.knowledge
    pos = np.asarray(kp.answer_pos)[probes]
    answer = np.asarray(kp.answer)[probes]
    tl, vl = query(probes, 'knowledge', inputs=np.asarray(kp.tokens, np.float32)[probes])
    rows = np.arange(len(probes))
    top_t = np.rint(np.asarray(tl)[rows, pos, F_ARGMAX]).astype(np.int64)
    top_v = np.rint(np.asarray(vl)[:, rows, pos, F_ARGMAX]).astype(np.int64)
    return dict(correct_target=top_t == answer, correct_verifiers=top_v == answer[None],
                probes=int(len(probes)), people=int(len(np.unique(np.asarray(kp.group)[probes]))),
                direction='remembers_knowledge'), False


__all__ = ['LanguageModeling', 'membership_scores', 'token_correct', 'token_accuracy',
           'perturb_tokens',
           'PHI_SIGNALS', 'PERTURB_VIEWS', 'NUM_FEATURES']
