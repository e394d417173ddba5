"""Default config of the CLI: the embedded digits data set with an MLP.

Any field can be overridden on the command line, e.g. ``--config.train.epochs=5``.
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  # digits is small and easy: a wide MLP, a 30% forget set and a 30% reference
  # set give the audit enough power to decide (measured in BUILD_NOTES.md).
  c.model_kwargs.hidden = (512, 512)
  c.train.epochs = 60
  c.split.forget_fraction = 0.3
  c.split.ref_fraction = 0.3
  c.audit.num_verifiers = 8
  # Gradient ascent on this saturated MLP leaves Du untouched up to lr ~0.18
  # (5 epochs) and diverges or collapses just above (measured: BUILD_NOTES.md,
  # "The demo"); 0.08 is the untuned default, `jaxaudit tune` and the demo
  # search it.
  c.unlearn.hparams.gradient_ascent = {'lr': 0.08}
  if arg == 'tiny':   # used by tests
    c.model_kwargs.hidden = (64,)
    c.train.epochs = 5
  return c
