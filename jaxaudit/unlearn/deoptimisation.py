"""De-optimisation family: gradient ascent, GA + FT, NegGrad+.

These push the loss on Du up. Expected audit outcome: they damage the model
and leave Du *less* familiar than unseen data (the audit's two-sided test
catches this).
"""

from __future__ import annotations

import jax

from jaxaudit.unlearn import _common as C
from jaxaudit.train import loop as loops
from jaxaudit.unlearn.base import register
from jaxaudit.unlearn.objectives import CrossEntropy, NegGradPlus

FAMILY = 'de-optimisation'
# lr: the published NegGrad/GA setting (5 epochs at 1e-4: Jia et al. 2023's and Fan et al.
# 2024's (SalUn) public code). The former default 1e-2, 100x above it, drove the MNIST CNN and
# MLP to NaN weights; GA is unstable, and above ~1e-3 it collapses these small models.
GA_DEFAULTS = dict(C.FT_DEFAULTS, epochs=5, lr=1e-4, batch_size=32, weight_decay=0.0)


def _ascent(model, params, data, key, spec):
  x, y = C.pool(data)
  return loops.fit(model, params, x, y, [C.idx(data.forget)], key, spec,
                   CrossEntropy(sign=-1.0)).params


@register('gradient_ascent', FAMILY, dict(GA_DEFAULTS))
def gradient_ascent(**hp):
  """GA (NegGrad): minimise −CE on Df (SGD momentum, cosine schedule)."""
  spec = C.spec_from(hp)

  def unlearn(params, model, data, key):
    return _ascent(model, params, data, key, spec)

  return unlearn


@register('ga_finetune', FAMILY,
          dict(batch_size=32, momentum=0.9, weight_decay=0.0, optimizer='sgd',
               schedule='cosine', ga_epochs=5, ga_lr=1e-4, ft_epochs=3, ft_lr=0.02))
def ga_finetune(**hp):
  """GA + FT: gradient ascent on Df (``ga_epochs`` at ``ga_lr``, key ``fold_in(key, 0)``)
  then CE fine-tuning on Dr (``ft_epochs`` at ``ft_lr``, key ``fold_in(key, 1)``)."""
  ga_spec = C.spec_from(hp, 'ga_')
  ft_spec = C.spec_from(hp, 'ft_')

  def unlearn(params, model, data, key):
    params = _ascent(model, params, data, jax.random.fold_in(key, 0), ga_spec)
    return C.finetune(model, params, data, jax.random.fold_in(key, 1), ft_spec)

  return unlearn


@register('neggrad_plus', FAMILY, dict(C.FT_DEFAULTS, epochs=3, lr=0.01, alpha=0.95))
def neggrad_plus(**hp):
  """NegGrad+ (Kurmanji et al. 2023): minimise α · CE(Dr) − (1 − α) · CE(Df) on paired
  batches (each step: one Dr batch, leading the epoch, and one Df batch, cycled)."""
  spec = C.spec_from(hp)
  alpha = hp['alpha']
  C.check_fraction('alpha', alpha)
  loss = NegGradPlus(float(alpha))

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    return loops.fit(model, params, x, y, [C.idx(data.retain), C.idx(data.forget)], key,
                     spec, loss).params

  return unlearn
