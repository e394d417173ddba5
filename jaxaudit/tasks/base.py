"""What a task is: the one place that knows how a model's outputs become evidence.

The audit runner, the decision and the statistics work on arrays of per-record
signals; everything that depends on what the model predicts — how outputs
are validated, which membership score a record gets, which neighbourhood of
a record can be queried, what "correct" means — is a :class:`Task`.
``jaxaudit.tasks.classification`` is the task of image/tabular classifiers;
a language model's task lands beside it.

Conventions: ``A`` views (view 0 is the exact record), ``K`` verifiers,
``n`` records; a model's output for one record has shape ``output_shape``
(``(C,)`` logits for classification).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import numpy as np


class Signals(NamedTuple):
  """Per-record signals of one record set, as the audit uses them.

  Attributes:
    phi_target: (A, n) membership score φ of the audited model on each view
      (higher = more familiar; LiRA's logit-scaled confidence for classifiers).
    phi_verifiers: (A, K, n) the same score for each verifier.
    calibrated: (A, n) φ_target − mean_k φ_verifier (β = 1; the audit refits β, see
      :func:`jaxaudit.audit.decision.regression_calibrate`).
    loss_target: (A, n) the task's loss of the audited model.
    agreement: (A, K, n) in [0, 1], how much the audited model agrees with verifier k.
    kl: (A, K, n) divergence of the audited model's output from verifier k's.
    correct_target: (n,) in [0, 1], the audited model's per-record utility on
      the exact view (top-1 correctness for classifiers).
    correct_verifiers: (K, n) the same for each verifier.
    kl_ensemble: (A, n) divergence of the audited model's output from the
      verifier ensemble's (the mixture of their outputs), or None where the
      task has no such notion.
  """
  phi_target: np.ndarray
  phi_verifiers: np.ndarray
  calibrated: np.ndarray
  loss_target: np.ndarray
  agreement: np.ndarray
  kl: np.ndarray
  correct_target: np.ndarray
  correct_verifiers: np.ndarray
  kl_ensemble: np.ndarray | None = None


def nonfinite_records(outputs) -> np.ndarray:
  """Records whose outputs hold NaN or inf on any view.

  Args:
    outputs: (A, n, *output_shape) or (n, *output_shape) with a 1-D output per record.
  Returns:
    (n,) bool.
  """
  out = np.asarray(outputs)
  bad = ~np.isfinite(out)
  return bad.any(axis=-1) if out.ndim == 2 else bad.any(axis=-1).any(axis=0)


class Task(abc.ABC):
  """How model outputs become membership evidence (see the module docstring)."""

  name: str = 'task'

  @abc.abstractmethod
  def check_outputs(self, outputs, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Validates outputs (..., n, *output_shape); returns them as float32 (AuditError if not)."""

  def for_target(self, target) -> 'Task':
    """The task adapted to what ``target`` can answer (e.g. a log-prob file without the
    model's top-1 tokens); default: unchanged."""
    del target
    return self

  def query_model(self, model):
    """The Linen module that answers the audit's queries for a trained ``model`` (same
    params; a language model answers with per-token features instead of logits)."""
    return model

  def nonfinite(self, outputs) -> np.ndarray:
    """Records whose outputs are unusable (NaN/inf): (A, n, ...) or (n, ...) -> (n,) bool."""
    return nonfinite_records(outputs)

  def units(self, idx: np.ndarray) -> np.ndarray | None:
    """The unit of exchangeability of pool records ``idx`` (n,): (n,) int group ids, or
    None when every record is its own unit (the default).

    When a split draws whole groups (a person's documents), records of one group are
    not exchangeable one by one: the audit then averages every per-record statistic
    over each group and tests groups (:func:`jaxaudit.audit.runner.test`)."""
    del idx
    return None

  def initial_params(self) -> tuple[Any, str]:
    """(params every verifier starts from, or None for a fresh initialisation; a
    fingerprint of them for the verifier cache). A language model's verifiers
    fine-tune the base LM that M was fine-tuned from."""
    return None, ''

  @abc.abstractmethod
  def signals(self, target_outputs, verifier_outputs, targets) -> Signals:
    """Signals of one set: outputs (A, n, ...), verifier outputs (A, K, n, ...), targets (n, ...)."""

  def membership_score(self, outputs, targets) -> np.ndarray:
    """φ, the per-record membership score (higher = more familiar): outputs
    (..., n, *output_shape), targets (n, ...) -> (..., n). Needed by the
    per-record test (:mod:`jaxaudit.audit.records`); default: unavailable."""
    del outputs, targets
    from jaxaudit.errors import AuditError
    raise AuditError(f'task {self.name!r} has no per-record membership score')

  @abc.abstractmethod
  def utility(self, outputs, targets) -> np.ndarray:
    """Per-model utility in [0, 1]: outputs (..., n, ...), targets (n, ...) -> (...)."""

  def record_loss(self, outputs, targets) -> np.ndarray:
    """Per-record loss (lower = better fit; the population MIA's score): outputs
    (..., n, ...), targets (n, ...) -> (..., n) float64. Default: unavailable."""
    del outputs, targets
    from jaxaudit.errors import AuditError
    raise AuditError(f'task {self.name!r} has no per-record loss')

  def record_utility(self, outputs, targets) -> np.ndarray | None:
    """Per-record utility in [0, 1], the ``correct_*`` of :class:`Signals`: outputs
    (..., n, ...), targets (n, ...) -> (..., n); None (the default): unavailable, and the
    audit's utility test then uses D_ref alone (not the test records)."""
    del outputs, targets
    return None

  def test_units(self, test_idx: np.ndarray) -> np.ndarray | None:
    """The units of test records ``test_idx`` (n,), as :meth:`units` for pool records:
    (n,) ids, or None when every test record is its own unit."""
    del test_idx
    return None

  def default_views(self, input_shape: tuple[int, ...], flips: bool = False) -> tuple[str, ...]:
    """The neighbourhood queried by default (``identity`` first)."""
    del input_shape, flips
    return ('identity',)

  def query_views(self, x: np.ndarray, record_ids: np.ndarray, views: tuple[str, ...], *,
                  seed: int = 0, min_records: int = 0) -> np.ndarray:
    """(n, *input_shape) records -> (A, n, *input_shape) views (exact records only here;
    ``min_records``: a cap on n for shape buckets, see the classification task)."""
    del record_ids, seed, min_records
    if tuple(views) != ('identity',):
      from jaxaudit.errors import AuditError
      raise AuditError(f'task {self.name!r} has no neighbour views; got {views}')
    return np.asarray(x, np.float32)[None]

  def available_views(self) -> tuple[str, ...] | None:
    """Every view name this task can compute (None: any)."""
    return None

  def strata(self, targets) -> np.ndarray | None:
    """(n,) strata for matched sampling and stratified permutations (None: none)."""
    del targets
    return None

  def input_statistics(self, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-record summaries of inputs (n, ...) for the reference check: name -> (n,)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return {'input_mean': flat.mean(1), 'input_std': flat.std(1)}

  def output_statistics(self, verifier_outputs) -> dict[str, np.ndarray]:
    """Per-record summaries of the verifiers' exact outputs (K, n, ...): name -> (n,)."""
    del verifier_outputs
    return {}

  def extra_test(self, dataset: Any, split: Any, settings: Any,
                 query: Callable[[np.ndarray, str], tuple[np.ndarray, np.ndarray]],
                 alt_utility: float | None) -> tuple[dict[str, Any] | None, bool]:
    """A task-specific test that joins the record test (default: none).

    Args:
      dataset, split: the request.
      settings: the AuditSettings.
      query: ``query(pool_indices (m,), name, inputs=None) -> (Mu's outputs (m, ...),
        the verifiers' outputs (K, m, ...))`` on the exact records, or on ``inputs``
        (m, *input_shape) given by the task (e.g. a language model's knowledge
        probes; ``pool_indices`` then only name them) (memoised; a diverged Mu
        stops the audit with a collapse verdict).
      alt_utility: Mu's utility on its members (the alternative's level).
    Returns:
      (None, or a dict with ``correct_target`` (m,) and ``correct_verifiers``
      (K, m) bool — the runner tests them with
      :func:`jaxaudit.audit.decision.utility_level_test`, whose p joins the
      record test by Bonferroni — plus ``direction`` and any metadata to
      report; whether it covers every record of Du, so that its pass alone is
      evidence).
    """
    del dataset, split, settings, query, alt_utility
    return None, False

  def needs_unseen_verifiers(self, dataset: Any, split: Any, settings: Any) -> bool:
    """Whether the request needs verifiers that never saw *any* of Du (its extra test
    compares Mu with models ignorant of all of Du, e.g. of whole classes): a verifier
    bank, whose members are only OUT per record, cannot serve it (default: False)."""
    del dataset, split, settings
    return False

  def loss(self) -> Callable | None:
    """Per-example training loss ``(outputs (B, ...), targets (B, ...)) -> (B,)`` (None: CE)."""
    return None


__all__ = ['Task', 'Signals', 'nonfinite_records']
