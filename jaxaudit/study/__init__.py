"""The study: sweeps of unlearning methods × data sets, fakes, validation, re-audits.

The experiment scripts in ``experiments/`` are thin absl front ends of this
package; everything they compute lives here and is tested in ``tests/study``.

  schema        row kinds and the names shared with the report (peers, fakes, families)
  cells         the plan of a sweep: cells, forget settings, per-cell configs
  groups        Group: one workdir's data, split, models, verifiers and shadows (lazy)
  peers         the one dispatch of the peer auditors for an audit request
  cost          FLOPs (XLA cost analysis) and the per-auditor cost of a request
  sweep         run_cell / run_sweep: the resumable results table of the study
  fakes         fake unlearning (a dishonest owner) and its detection table
  validation    soundness / completeness draws of the audit, with peers
  reaudit       re-auditing the checkpoints of one sweep group
  method_table  every registered method through the real CLI
  bench         run-time benchmarks of the methods and of ensemble training
  tables        Markdown tables and durations printed by the scripts
  script        the common start of the experiment scripts' ``main``

Only :mod:`schema` is imported here (the report imports it without JAX).
"""

from jaxaudit.study.schema import (AUDITOR_ORDER, FAKE_AUDITORS, FAKES, FAMILY_ORDER, ORIGINAL,
                                   ORIGINAL_FAMILY, PEER_NAMES, VOLATILE_KEYS)

__all__ = ['AUDITOR_ORDER', 'FAKE_AUDITORS', 'FAKES', 'FAMILY_ORDER', 'ORIGINAL',
           'ORIGINAL_FAMILY', 'PEER_NAMES', 'VOLATILE_KEYS']
