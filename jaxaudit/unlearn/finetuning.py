"""Fine-tuning family: FT, CF-k, EU-k, ℓ1-sparse.

All train with cross-entropy on Dr only ("catastrophic forgetting" of Du),
SGD with momentum and a cosine schedule by default.
"""

from __future__ import annotations

import jax

from jaxaudit.unlearn import _common as C
from jaxaudit.unlearn import paramtree
from jaxaudit.unlearn.base import register
from jaxaudit.unlearn.objectives import L1Sparse

FAMILY = 'fine-tuning'


@register('finetune', FAMILY, dict(C.FT_DEFAULTS))
def finetune(**hp):
  """FT: CE fine-tuning of the original model on Dr (SGD momentum, cosine schedule)."""
  spec = C.spec_from(hp)

  def unlearn(params, model, data, key):
    return C.finetune(model, params, data, key, spec)

  return unlearn


@register('cf_k', FAMILY, dict(C.FT_DEFAULTS, k=2))
def cf_k(**hp):
  """CF-k (Goel et al. 2022): fine-tune only the last ``k`` parameter blocks on Dr.

  A block is a top-level entry of the params dict in forward order (see
  :mod:`jaxaudit.unlearn.paramtree`); the other blocks are frozen exactly
  (their updates are masked, so they stay bit-identical).
  """
  spec = C.spec_from(hp)
  k = hp['k']
  C.check_positive(k=k)

  def unlearn(params, model, data, key):
    names = paramtree.last_blocks(params, k, model, tuple(data.input_shape))
    scale = paramtree.block_scale(params, names)
    return C.finetune(model, params, data, key, spec, update_scale=scale)

  return unlearn


@register('eu_k', FAMILY, dict(C.FT_DEFAULTS, epochs=10, k=2))
def eu_k(**hp):
  """EU-k (Goel et al. 2022): re-initialise the last ``k`` blocks (the model's own
  initialisers, key ``fold_in(key, 0)``), then train only them on Dr (the
  other blocks frozen bit-identically) with ``fold_in(key, 1)``."""
  spec = C.spec_from(hp)
  k = hp['k']
  C.check_positive(k=k)

  def unlearn(params, model, data, key):
    names = paramtree.last_blocks(params, k, model, tuple(data.input_shape))
    fresh = C.fresh_params(model, jax.random.fold_in(key, 0), data)
    params = paramtree.replace_blocks(params, fresh, names)
    scale = paramtree.block_scale(params, names)
    return C.finetune(model, params, data, jax.random.fold_in(key, 1), spec,
                      update_scale=scale)

  return unlearn


@register('l1_sparse', FAMILY, dict(C.FT_DEFAULTS, gamma=5e-4))
def l1_sparse(**hp):
  """ℓ1-sparse unlearning (Jia et al. 2023): FT on Dr minimising
  CE + γ_t ‖θ‖₁ with γ_t = γ (1 − t / epochs) decaying linearly per epoch."""
  spec = C.spec_from(hp)
  C.check_nonneg(gamma=hp['gamma'])
  loss = L1Sparse(float(hp['gamma']))

  def unlearn(params, model, data, key):
    return C.finetune(model, params, data, key, spec, loss=loss)

  return unlearn
