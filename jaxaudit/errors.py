"""Errors raised at jaxaudit's public boundary.

Every check on user input raises a subclass of :class:`JaxAuditError` (itself a
``ValueError``) with a message that names the offending argument, so that bad
input never reaches XLA and never yields silently wrong numbers.
"""


class JaxAuditError(ValueError):
  """Base class of every error jaxaudit raises on bad input."""


class DataError(JaxAuditError):
  """A data set is unknown, missing, or has wrong shapes, dtypes or labels."""


class SplitError(JaxAuditError):
  """An audit split is inconsistent: overlaps, out-of-range or duplicated indices."""


class CheckpointError(JaxAuditError):
  """A checkpoint is missing, corrupt, or does not match the requested model/data."""


class ConfigError(JaxAuditError):
  """A configuration, method name or hyper-parameter is invalid."""


class AuditError(JaxAuditError):
  """Audit inputs are invalid (e.g. NaN logits, wrong class count, K < 2)."""


class OutputError(JaxAuditError):
  """An output path is unsafe: not writable, not ours to replace, or not a valid name."""


class TrainingError(JaxAuditError):
  """Training or unlearning produced a model that must not be saved (e.g. non-finite weights)."""
