"""Tasks: the modality seam. A task says how a model's outputs become per-record
membership signals, which neighbourhood of a record can be queried and how outputs
are validated; the audit runner, decision and statistics never see what a model
predicts. ``classification`` now; a language model's task lands here next.
"""

from jaxaudit.tasks.base import Signals, Task, nonfinite_records
from jaxaudit.tasks.classification import Classification


def for_dataset(dataset) -> Task:
  """The default task of a data set: classification with its class count."""
  return Classification(dataset.num_classes)


__all__ = ['Task', 'Signals', 'Classification', 'for_dataset', 'nonfinite_records']
