"""Moved: the unlearning methods' loop is :mod:`jaxaudit.train.loop`, the one
training loop of jaxaudit (shared with ensemble training). Re-exported here so
that ``jaxaudit.unlearn.loops.fit`` and friends keep working."""

from jaxaudit.train.loop import (Batch, FitResult, LossFn, StepInfo, fit, make_spec,
                                 mean_gradient, steps_per_epoch)

__all__ = ['Batch', 'FitResult', 'LossFn', 'StepInfo', 'fit', 'make_spec', 'mean_gradient',
           'steps_per_epoch']
