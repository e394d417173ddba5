"""The audit's record statistics: one registry of per-record evidence against ignorance.

Each statistic maps one record set (its difficulty-calibrated φ on every view,
the fitted exact-vs-neighbour gap and the task's :class:`jaxaudit.tasks.Signals`)
to one number per record. The ignorance test compares Du with D_ref under
every statistic of the family (two-sided Mann–Whitney) and adjusts the family
by max-T (:func:`jaxaudit.audit.stats.maxt_adjusted_mwu`) or Bonferroni, so
adding a statistic never costs the false-alarm guarantee: each is a fixed
function of the record and of models (Mu, the verifiers) that do not depend on
which records of Du ∪ D_ref are labelled "forget" — under H0 every one of them
is exchangeable between Du and D_ref, and the family-wise adjustment holds
whatever their dependence. What a statistic costs is power (a larger family
raises the bar of each member); what it buys is a fake that it alone catches.

Statistics (``A`` views, view 0 the exact record; ``K`` verifiers):

  exact          c_0(x): Mu's φ beyond the verifiers' prediction (calibrated).
  neighbours     mean over augmented views of c_a(x).
  gap            Mu's exact φ beyond what its own neighbours and the verifiers
                 predict (:func:`jaxaudit.audit.decision.neighbour_residual`).
  correct        Mu's top-1 correctness on the exact record minus the
                 verifiers' mean correctness: utility on Du kept above what
                 unseen data of the same difficulty gets (an owner who hides
                 confidence but keeps the answers), or lowered below it.
  kl             mean_k KL(Mu ‖ verifier k) on the exact record: how far Mu's
                 whole output distribution is from models that never saw the
                 record. φ is the true class only; a fake that rewrites Du's
                 outputs (matching φ, or the verifiers' distribution) changes
                 this divergence on Du and nowhere else.
  kl_neighbours  the same averaged over the augmented views: a rewrite on the
                 exact records that does not carry over to their neighbours.
  kl_ensemble    KL(Mu ‖ the mixture of the verifiers' distributions) on the
                 exact record: an owner who answers Du like an ensemble of
                 verifiers of its own comes closer to the auditor's ensemble
                 (trained alike) than M does on unseen data.
  kl_ensemble_neighbours  the same averaged over the augmented views.
  agreement      the fraction of verifiers whose top-1 answer is Mu's, on the
                 exact record: answers copied from verifier-like models agree
                 with the auditor's verifiers more than M's own answers do.
  B_spread       |B(x) − the median of B over Du ∪ D_ref| for a base statistic
                 B (exact, neighbours, gap, kl_ensemble): a scale test. Outputs
                 rewritten as a function of verifier-like models are too
                 regular — they spread less around the pool's centre than a
                 model's own outputs on unseen records (:func:`with_spreads`).

Each statistic names the direction a rejection means when it is the deciding
one: higher on Du than on D_ref, lower on Du. ``remembers`` (Du more familiar
than unseen data), ``damaged`` (less) or ``altered`` (Mu's outputs on Du
differ from its outputs on unseen data in a way that is neither: the
signature of an output manipulation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from jaxaudit.errors import AuditError
from jaxaudit.tasks.base import Signals


class RecordSet(NamedTuple):
  """What a statistic reads of one record set.

  Attributes:
    calibrated: (A, n) difficulty-calibrated φ (view 0 exact).
    gap: (n,) the fitted gap statistic, or None (then c_0 − mean of neighbours).
    signals: the task's Signals of the set (None where only φ is known).
  """
  calibrated: np.ndarray
  gap: np.ndarray | None
  signals: Signals | None


@dataclasses.dataclass(frozen=True)
class Statistic:
  """A per-record statistic of the ignorance test.

  Attributes:
    name: its key in reports.
    fn: RecordSet -> (n,) float64.
    up: direction of a rejection where Du scores higher than D_ref.
    down: direction where Du scores lower.
    needs_neighbours: defined only when A ≥ 2.
    needs_signals: the fields of the task's Signals it reads (none: calibrated φ only).
  """
  name: str
  fn: Callable[[RecordSet], np.ndarray]
  up: str
  down: str
  needs_neighbours: bool = False
  needs_signals: tuple[str, ...] = ()


def _neighbours(r: RecordSet) -> np.ndarray:
  return np.asarray(r.calibrated, np.float64)[1:].mean(0)


def _gap(r: RecordSet) -> np.ndarray:
  c = np.asarray(r.calibrated, np.float64)
  return c[0] - c[1:].mean(0) if r.gap is None else np.asarray(r.gap, np.float64)


def _correct(r: RecordSet) -> np.ndarray:
  s = r.signals
  return (np.asarray(s.correct_target, np.float64)
          - np.asarray(s.correct_verifiers, np.float64).mean(0))


def _kl(r: RecordSet) -> np.ndarray:
  return np.asarray(r.signals.kl[0], np.float64).mean(0)


def _kl_neighbours(r: RecordSet) -> np.ndarray:
  return np.asarray(r.signals.kl[1:], np.float64).mean((0, 1))


def _kl_ensemble(r: RecordSet) -> np.ndarray:
  return np.asarray(r.signals.kl_ensemble[0], np.float64)


def _kl_ensemble_neighbours(r: RecordSet) -> np.ndarray:
  return np.asarray(r.signals.kl_ensemble[1:], np.float64).mean(0)


def _agreement(r: RecordSet) -> np.ndarray:
  return np.asarray(r.signals.agreement[0], np.float64).mean(0)


STATISTICS: dict[str, Statistic] = {s.name: s for s in (
    Statistic('exact', lambda r: np.asarray(r.calibrated, np.float64)[0], 'remembers', 'damaged'),
    Statistic('neighbours', _neighbours, 'remembers', 'damaged', needs_neighbours=True),
    Statistic('gap', _gap, 'remembers', 'remembers', needs_neighbours=True),
    Statistic('correct', _correct, 'remembers', 'damaged',
              needs_signals=('correct_target', 'correct_verifiers')),
    Statistic('kl', _kl, 'altered', 'altered', needs_signals=('kl',)),
    Statistic('kl_neighbours', _kl_neighbours, 'altered', 'altered', needs_neighbours=True,
              needs_signals=('kl',)),
    Statistic('kl_ensemble', _kl_ensemble, 'altered', 'altered', needs_signals=('kl_ensemble',)),
    Statistic('kl_ensemble_neighbours', _kl_ensemble_neighbours, 'altered', 'altered',
              needs_neighbours=True, needs_signals=('kl_ensemble',)),
    Statistic('agreement', _agreement, 'altered', 'altered', needs_signals=('agreement',)),
)}
# Spread statistics: name -> base statistic (:func:`with_spreads`). How far each record lies
# from the pooled median of its base statistic: an owner who answers Du with a function of
# verifier-like models of its own makes Du *too regular* — its calibrated scores spread less
# around the pool's centre than a model's own scores on unseen records do.
SPREADS = {f'{b}_spread': b for b in ('exact', 'neighbours', 'gap', 'kl_ensemble')}
for _spread, _base in SPREADS.items():
  _b = STATISTICS[_base]
  STATISTICS[_spread] = Statistic(_spread, _b.fn, 'altered', 'altered', _b.needs_neighbours,
                                  _b.needs_signals)
del _spread, _base, _b
# The φ statistics of the first audits (the family before issue 17).
PHI_STATISTICS = ('exact', 'neighbours', 'gap')


def check_names(names) -> tuple[str, ...]:
  """Validates a family of statistic names (non-empty, known, 'exact' first)."""
  names = tuple(names)
  unknown = [n for n in names if n not in STATISTICS]
  if unknown or not names:
    raise AuditError(f'statistics must be a non-empty subset of {tuple(STATISTICS)}, got '
                     f'{names!r}')
  if names[0] != 'exact' or len(set(names)) != len(names):
    raise AuditError(f"statistics must start with 'exact' and not repeat a name, got {names!r}")
  return names


def family(names, num_views: int, signals: Signals | None) -> tuple[str, ...]:
  """The statistics of ``names`` that are defined for A views and the available signals."""
  have = lambda f: signals is not None and getattr(signals, f, None) is not None
  return tuple(n for n in check_names(names)
               if (num_views > 1 or not STATISTICS[n].needs_neighbours)
               and all(have(f) for f in STATISTICS[n].needs_signals))


def compute(names, record_set: RecordSet) -> dict[str, np.ndarray]:
  """name -> (n,) per-record values of the per-set statistics of ``names`` (a :func:`family`).

  Spread statistics (:data:`SPREADS`) need both sets: see :func:`with_spreads`.
  """
  out = {}
  for n in names:
    if n in SPREADS:
      continue
    v = np.asarray(STATISTICS[n].fn(record_set), np.float64).reshape(-1)
    if v.shape != (np.shape(record_set.calibrated)[1],):
      raise AuditError(f'statistic {n!r} returned shape {v.shape} for '
                       f'{np.shape(record_set.calibrated)[1]} records')
    out[n] = v
  return out


def with_spreads(names, s_du: dict[str, np.ndarray], s_ref: dict[str, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Adds the spread statistics of ``names`` whose base statistic is in both sets.

  ``B_spread(x) = |B(x) − median of B over Du ∪ D_ref|``: a symmetric function of
  the pooled records, so exchangeability under H0 is untouched.

  Args:
    names: the family (spread names are picked from it).
    s_du, s_ref: name -> (n,) per-set statistics (:func:`compute`).
  Returns:
    (s_du, s_ref) with the spreads added, in the order of ``names``.
  """
  out_du, out_ref = {}, {}
  for n in names:
    if n in SPREADS:
      b = SPREADS[n]
      if b not in s_du or b not in s_ref:
        continue
      med = float(np.median(np.concatenate([s_du[b], s_ref[b]])))
      out_du[n], out_ref[n] = np.abs(s_du[b] - med), np.abs(s_ref[b] - med)
    elif n in s_du and n in s_ref:
      out_du[n], out_ref[n] = s_du[n], s_ref[n]
  return out_du, out_ref


def direction(name: str, higher_on_du: bool) -> str:
  """What a rejection by statistic ``name`` means, by the side Du lies on."""
  s = STATISTICS[name]
  return s.up if higher_on_du else s.down


__all__ = ['RecordSet', 'Statistic', 'STATISTICS', 'PHI_STATISTICS', 'SPREADS', 'check_names',
           'family', 'compute', 'with_spreads', 'direction']
