"""Retraining family: retrain, SISA, warm-start retraining and fine-tuning.

These are the exact (or exact-by-construction) baselines: the result never saw
Du, so a sound audit must pass them.
"""

from __future__ import annotations

import numpy as np

from jaxaudit.errors import ConfigError
from jaxaudit.train.ensemble import stack, train_ensemble, train_model
from jaxaudit.train.sisa import sisa_unlearn
from jaxaudit.unlearn import _common as C
from jaxaudit.unlearn.base import Unlearner, register

FAMILY = 'retraining'


@register('retrain', FAMILY, {}, vmappable=False)
def retrain():
  """Retrain from scratch on Dr with the original recipe (``data.recipe``).

  ``unlearn(params, model, data, key)`` ignores ``params`` and returns
  ``train_model(model, data.x, data.y, data.retain, key, data.recipe).params``
  exactly. Several seeds run as one :func:`jaxaudit.train.train_ensemble`.
  """

  def unlearn(params, model, data, key):
    return train_model(model, data.x, data.y, np.asarray(data.retain), key, data.recipe).params

  def batched(params, model, data, keys):
    subsets = np.tile(np.asarray(data.retain)[None], (keys.shape[0], 1))
    return train_ensemble(model, data.x, data.y, subsets, keys, data.recipe).params

  return Unlearner(unlearn, batched)


@register('sisa', FAMILY, {}, vmappable=False, output='ensemble')
def sisa():
  """SISA unlearning (Bourtoule et al. 2021) of a SISA-trained ensemble.

  Needs ``data.sisa``, the :class:`jaxaudit.train.sisa.SisaState` returned by
  :func:`jaxaudit.train.sisa.train_sisa` for the original model (``params``
  is then that ensemble and is not read: the state holds every checkpoint).
  Each shard holding a Du record restarts from its checkpoint saved before the
  first slice holding one and is retrained on its remaining slices without Du;
  the stored shard keys are reused (``key`` is unused) so the result equals
  SISA training from scratch on ``layout.without(Du)``. Returns the
  constituents stacked (S, ...); predict with
  :func:`jaxaudit.train.sisa.sisa_predict_proba` (mean of softmax).
  ``data.retain`` is not read: Dr is the layout minus Du.
  """

  def unlearn(params, model, data, key):
    del params, key
    if data.sisa is None:
      raise ConfigError('method "sisa" needs data.sisa, the SisaState of the original SISA '
                        'training (jaxaudit.train.sisa.train_sisa)')
    state = sisa_unlearn(data.sisa, model, data.x, data.y, np.asarray(data.forget))
    return state.final_params

  return unlearn


def _init_checkpoint(data, name):
  if data.init_checkpoint_params is None:
    raise ConfigError(f'method {name!r} needs data.init_checkpoint_params (params of a model '
                      f'that never saw Du); none was given')
  return data.init_checkpoint_params


@register('warmstart_retrain', FAMILY, {}, vmappable=False)
def warmstart_retrain():
  """Retrain on Dr with the original recipe, starting from ``data.init_checkpoint_params``
  (a model that never saw Du) instead of a random initialisation; ``params`` is unused."""

  def unlearn(params, model, data, key):
    init = _init_checkpoint(data, 'warmstart_retrain')
    return train_model(model, data.x, data.y, np.asarray(data.retain), key, data.recipe,
                       init_params=init).params

  def batched(params, model, data, keys):
    init = _init_checkpoint(data, 'warmstart_retrain')
    k = keys.shape[0]
    subsets = np.tile(np.asarray(data.retain)[None], (k, 1))
    return train_ensemble(model, data.x, data.y, subsets, keys, data.recipe,
                          init_params=stack([init] * k)).params

  return Unlearner(unlearn, batched)


@register('warmstart_finetune', FAMILY, dict(C.FT_DEFAULTS, epochs=3))
def warmstart_finetune(**hp):
  """A few epochs of CE fine-tuning on Dr (SGD momentum, cosine) starting from
  ``data.init_checkpoint_params`` (a model that never saw Du); ``params`` is unused."""
  spec = C.spec_from(hp)

  def unlearn(params, model, data, key):
    init = _init_checkpoint(data, 'warmstart_finetune')
    return C.finetune(model, init, data, key, spec)

  return unlearn
