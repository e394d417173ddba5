"""Names shared by the study's results rows and the study report.

A results row is one JSON object per line (written by
:func:`jaxaudit.io_utils.append_jsonl`) with a unique ``key`` and a ``kind``:
``sweep`` (one cell of :mod:`jaxaudit.study.sweep`), ``fake`` (one fake of
:mod:`jaxaudit.study.fakes`) or ``cli_methods`` (:mod:`jaxaudit.study.method_table`).
"""

from __future__ import annotations

# Peer auditors of a sweep row (``row['peers']``), in report order.
PEER_NAMES = ('population_mia', 'lira', 'rmia', 'heuristics', 'neurips23', 'ulira')
# Every auditor of a sweep row (jaxaudit's is ``ours``), in cost-table order.
AUDITOR_ORDER = ('ours', 'population_mia', 'heuristics', 'rmia', 'lira', 'ulira', 'neurips23')
# The fakes of a dishonest model owner (``honest_retrain`` is the control).
FAKES = ('honest_retrain', 'noop', 'lazy', 'mask_scale', 'mask_uniform', 'temperature', 'noise',
         'laundering', 'adaptive', 'adaptive_aug', 'adaptive_ce', 'adaptive_aug_ce',
         'adaptive_unseen', 'adaptive_aug_unseen', 'adaptive_kl', 'adaptive_kl_aug',
         'adaptive_correct', 'adaptive_full', 'adaptive_full_ce')
# The auditors run on every fake.
FAKE_AUDITORS = ('ours', 'population_mia', 'lira', 'rmia', 'heuristics')
# The method name of the reference row (M itself, no unlearning) and its family.
ORIGINAL = 'original'
ORIGINAL_FAMILY = 'none (original M)'
# Method families in display order (methods of unknown families come last).
FAMILY_ORDER = (ORIGINAL_FAMILY, 'retraining', 'fine-tuning', 'relabelling', 'distillation',
                'challenge', 'de-optimisation', 'curvature')
# Keys of a row that depend on timing (ignored when comparing tables).
VOLATILE_KEYS = ('timing', 'cost', 'provenance')


def peer_not_forgotten(row: dict, name: str) -> bool | None:
  """Whether peer ``name`` of a row decided not_forgotten (None: no decision)."""
  d = ((row.get('peers') or {}).get(name) or {}).get('decision')
  return None if d is None else d == 'not_forgotten'


def fake_flagged(row: dict, auditor: str) -> bool | None:
  """Whether ``auditor`` refused the fake of a ``fake`` row (None: no result).

  jaxaudit (``ours``) refuses with any decision but ``forgotten`` (no
  certificate); a peer with its not_forgotten rule.
  """
  if auditor == 'ours':
    d = (row.get('ours') or {}).get('decision')
    return None if d is None else d != 'forgotten'
  return peer_not_forgotten(row, auditor)
